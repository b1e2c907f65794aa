"""RFC 3261 §12 dialogs, §9.1 CANCEL, §13.3.1.4 2xx retransmission."""

from __future__ import annotations

import pytest

from secconf.core.errors import CallDoesNotExist, MalformedSipMessage, RequestOutOfOrder
from secconf.core.sip.builders import build_cancel, build_response
from secconf.core.sip.dialog import (
    AnswerRetransmitter,
    Dialog,
    DialogState,
    parse_sipfrag_status,
    sipfrag,
)
from secconf.core.sip.headers import Address, Via
from secconf.core.sip.message import SipRequest, SipResponse
from secconf.core.sip.transaction import Send, StartTimer, Terminated, TimedOut, Timer

from .conftest import FakeClock, load

VIA = Via.build("UDP", "client.atlanta.example.com", 5060, "z9hG4bKnew")


def rfc3665_dialogs() -> tuple[SipRequest, SipResponse, Dialog, Dialog]:
    invite = SipRequest.parse(load("rfc3665-s3.1-f1-invite.sip"))
    ok = SipResponse.parse(load("rfc3665-s3.1-f3-200.sip"))
    uac = Dialog.as_uac(invite, ok)
    uas = Dialog.as_uas(
        invite, local_tag="8321234356", local_contact=Address("sip:bob@client.biloxi.example.com")
    )
    return invite, ok, uac, uas


def test_uac_dialog_from_rfc3665_and_its_ack_matches_f4() -> None:
    invite, _ok, uac, _ = rfc3665_dialogs()
    assert (uac.call_id, uac.local_tag, uac.remote_tag) == (
        "3848276298220188511@atlanta.example.com", "9fxced76sl", "8321234356",
    )  # fmt: skip
    assert uac.remote_target == "sip:bob@client.biloxi.example.com;transport=tcp"
    ack = uac.create_ack(invite, via=VIA)
    expected = SipRequest.parse(load("rfc3665-s3.1-f4-ack.sip"))
    # §13.2.2.4: Request-URI is the remote target, CSeq number the INVITE's, To has the tag.
    assert ack.uri.startswith(expected.uri)
    assert str(ack.cseq) == str(expected.cseq) == "1 ACK"
    assert ack.to.tag == expected.to.tag
    assert ack.from_.tag == expected.from_.tag
    assert uac.local_seq == 1  # an ACK does not advance the CSeq


def test_uas_dialog_bye_matches_rfc3665_f5() -> None:
    _invite, _ok, _uac, uas = rfc3665_dialogs()
    bye = uas.create_request("BYE", via=VIA)
    expected = SipRequest.parse(load("rfc3665-s3.1-f5-bye.sip"))
    assert bye.uri.startswith(expected.uri)  # the RFC text drops ;transport=tcp
    assert str(bye.cseq) == "1 BYE"  # the UAS's own count starts here
    assert bye.from_.tag == expected.from_.tag
    assert bye.to.tag == expected.to.tag
    assert bye.get("contact") is None  # BYE is not a target refresh


def test_in_dialog_requests_advance_cseq_and_refresh_target() -> None:
    _invite, _ok, uac, uas = rfc3665_dialogs()
    reinvite = uac.create_request(
        "INVITE", via=VIA, body=b"v=0\r\n", content_type="application/sdp"
    )
    assert reinvite.cseq.number == 2
    assert reinvite.get("contact")
    reinvite.set("Contact", "<sip:alice@new.example.com>")
    uas.receive_request(reinvite)
    assert uas.remote_target == "sip:alice@new.example.com"
    with pytest.raises(RequestOutOfOrder) as info:
        uas.receive_request(reinvite)  # same CSeq again
    assert info.value.status_code == 500
    stranger = SipRequest.parse(bytes(reinvite).replace(b"tag=9fxced76sl", b"tag=other"))
    with pytest.raises(CallDoesNotExist):
        uas.receive_request(stranger)
    refer = uac.create_refer(
        "sip:carol@example.com", via=VIA, body=b"\x01", content_type="application/mikey"
    )
    assert refer.get("refer-to") == "<sip:carol@example.com>"
    assert refer.get("r")
    assert refer.body == b"\x01"
    assert refer.cseq.number == 3
    bye = uac.create_request("BYE", via=VIA)
    uas.receive_request(refer)
    uas.receive_request(bye)
    assert uas.state is DialogState.TERMINATED
    uac.receive_response(bye, build_response(bye, 200))
    assert uac.state is DialogState.TERMINATED
    with pytest.raises(ValueError, match="terminated"):
        uac.create_request("BYE", via=VIA)


def test_route_set_loose_and_strict() -> None:
    invite = SipRequest.parse(load("rfc3665-s3.1-f1-invite.sip"))
    ok = SipResponse.parse(load("rfc3665-s3.1-f3-200.sip"))
    ok.add("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
    uac = Dialog.as_uac(invite, ok)
    assert uac.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]  # reversed
    bye = uac.create_request("BYE", via=VIA)
    assert bye.uri == uac.remote_target
    assert bye.get_all("route") == uac.route_set
    uac.route_set = ["<sip:strict.example.com>"]
    bye = uac.create_request("BYE", via=VIA)
    assert bye.uri == "sip:strict.example.com"  # §12.2.1.1 strict router
    assert bye.get_all("route")[-1] == f"<{uac.remote_target}>"


def test_uas_response_copies_record_route_and_adds_tag() -> None:
    invite = SipRequest.parse(load("sipp-uac-invite.sip"))
    invite.add("Record-Route", "<sip:proxy;lr>")
    ok = build_response(invite, 200, to_tag="mine", contact=Address("sip:me@127.0.0.1"))
    assert ok.to.tag == "mine"
    assert ok.get("record-route") == "<sip:proxy;lr>"
    assert [v.branch for v in ok.vias] == [v.branch for v in invite.vias]
    trying = build_response(invite, 100, to_tag="mine")
    assert trying.to.tag is None
    assert not trying.has("record-route")


def test_cancel_per_section_9_1() -> None:
    invite = SipRequest.parse(load("sipp-uac-invite.sip"))
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.get_all("via") == invite.get_all("via")[:1]
    assert str(cancel.cseq) == "1 CANCEL"
    assert cancel.get("to") == invite.get("to")
    assert cancel.get("from") == invite.get("from")
    assert cancel.body == b""


def test_dialog_creation_needs_tags_and_contact() -> None:
    invite = SipRequest.parse(load("sipp-uac-invite.sip"))
    ok = build_response(invite, 200)  # no To tag
    with pytest.raises(MalformedSipMessage):
        Dialog.as_uac(invite, ok)
    invite.remove("contact")
    with pytest.raises(MalformedSipMessage):
        Dialog.as_uas(invite, local_tag="x", local_contact=Address("sip:a@b"))


def test_2xx_retransmitted_until_ack_unreliable() -> None:
    invite = SipRequest.parse(load("sipp-uac-invite.sip"))
    ok = build_response(invite, 200, to_tag="t", contact=Address("sip:me@h"))
    machine = AnswerRetransmitter(ok, reliable=False)
    clock = FakeClock(machine.timer_fired)
    clock.apply(machine.start())
    clock.advance(8.0)
    sent = [t for t, a in clock.log if isinstance(a, Send)]
    assert sent == [0.5, 1.5, 3.5, 7.5]  # T1, doubling, capped at T2 (§13.3.1.4)
    assert machine.ack_received()[-1] == Terminated()
    assert machine.timer_fired(Timer.RETRANSMIT_2XX) == []


def test_2xx_without_ack_times_out_after_64_t1() -> None:
    invite = SipRequest.parse(load("sipp-uac-invite.sip"))
    machine = AnswerRetransmitter(build_response(invite, 200, to_tag="t"), reliable=True)
    clock = FakeClock(machine.timer_fired)
    assert clock.apply(machine.start()) == [StartTimer(Timer.ACK_WAIT, 32.0)]
    out = clock.advance(32.0)
    assert TimedOut(Timer.ACK_WAIT) in out


def test_sipfrag() -> None:
    assert parse_sipfrag_status(sipfrag(200, "OK")) == 200
    assert parse_sipfrag_status(b"SIP/2.0 100 Trying\r\nVia: x\r\n") == 100
    for bad in (b"", b"hello", b"SIP/2.0 999 x"):
        with pytest.raises(MalformedSipMessage):
            parse_sipfrag_status(bad)
