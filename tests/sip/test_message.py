"""The SIP codec against real messages: sipp captures, RFC 3665 flows, RFC 4475 torture tests."""

from __future__ import annotations

import hashlib

import pytest

from secconf.core import errors
from secconf.core.sip.headers import Address
from secconf.core.sip.message import (
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE_BYTES,
    Header,
    SipRequest,
    SipResponse,
    StreamFramer,
    parse_message,
)

from .conftest import SIP_DIR, load, provenance

PROVENANCE = provenance()
ACCEPTED = sorted(name for name, entry in PROVENANCE.items() if entry["expect"] == "accept")
REJECTED = sorted(name for name, entry in PROVENANCE.items() if entry["expect"] == "reject")


def test_every_file_has_provenance_and_matches_it() -> None:
    files = {
        str(p.relative_to(SIP_DIR)) for p in SIP_DIR.rglob("*") if p.suffix in (".sip", ".dat")
    }
    assert files == set(PROVENANCE)
    for name, entry in PROVENANCE.items():
        data = load(name)
        assert len(data) == entry["bytes"], name
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_messages_round_trip_exactly(name: str) -> None:
    data = load(name)
    message = parse_message(data)
    assert bytes(message) == data
    # The parsed views of the mandatory headers are usable.
    assert message.call_id
    assert message.cseq.number >= 0
    assert message.top_via.transport


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_messages_raise_the_recorded_error(name: str) -> None:
    error = getattr(errors, str(PROVENANCE[name]["error"]))
    with pytest.raises(error) as info:
        parse_message(load(name))
    assert isinstance(info.value, errors.ProtocolError)


def test_sipp_uac_invite_fields() -> None:
    invite = SipRequest.parse(load("sipp-uac-invite.sip"))
    assert invite.method == "INVITE"
    assert invite.uri == "sip:service@127.0.0.1:44528"
    assert invite.from_.tag == "15203SIPpTag001"
    assert invite.from_.display_name == "sipp"
    assert invite.to.tag is None
    assert invite.top_via.branch == "z9hG4bK-15203-1-0"
    assert invite.top_via.sent_by == ("127.0.0.1", 48342)
    assert invite.get("content-length") == "130"  # "Content-Length:   130" with its spaces
    assert invite.get("l") == "130"
    assert invite.content_type == "application/sdp"
    assert invite.body.startswith(b"v=0\r\n")
    assert str(invite.cseq) == "1 INVITE"


def test_sipp_uas_200_contact_and_to_tag() -> None:
    ok = SipResponse.parse(load("sipp-uas-200.sip"))
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.to.tag == "15204SIPpTag011"
    contact = Address.parse(ok.get_all("m")[0])
    assert contact.sip_uri.port == 35866
    assert contact.sip_uri.transport == "udp"


def test_rfc3665_folded_via_is_unfolded_in_the_value_and_kept_in_the_bytes() -> None:
    data = load("rfc3665-s3.1-f3-200.sip")
    ok = parse_message(data)
    assert ok.get("via") == (
        "SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9 ;received=192.0.2.101"
    )
    assert ok.top_via.received == "192.0.2.101"
    assert b"\r\n ;received=" in bytes(ok)


def test_rfc4475_wsinv_tortuous_invite() -> None:
    invite = SipRequest.parse(load("rfc4475/wsinv.dat"))
    assert [via.branch for via in invite.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert invite.vias[1].transport == "TCP"
    assert invite.to.tag == "1918181833n"
    assert invite.from_.display_name == 'J Rosenberg \\"'
    assert invite.cseq.number == 9


def test_rfc4475_regbadct_contact_is_refused_when_parsed() -> None:
    message = parse_message(load("rfc4475/regbadct.dat"))
    contact = message.get_all("contact")[0]
    # sip:user@example.com?Route=... without <>: not allowed (RFC 3261 §20.10)
    with pytest.raises(errors.MalformedSipMessage, match="must be in <>"):
        Address.parse(contact)


def test_compact_and_long_forms_are_the_same_header() -> None:
    message = parse_message(load("rfc4475/esc02.dat"))
    assert message.get("From") == message.get("f")
    for compact, long in [("v", "Via"), ("i", "Call-ID"), ("t", "To"), ("l", "Content-Length")]:
        assert message.get(compact) == message.get(long)


def test_list_headers_split_on_commas_outside_quotes_and_brackets() -> None:
    request = SipRequest("OPTIONS", "sip:a@b")
    request.add("Contact", '"Doe, John" <sip:j@x;a=1,2>, <sip:k@y>')
    request.add("Route", "<sip:p1;lr>,<sip:p2;lr>")
    request.add("Route", "<sip:p3;lr>")
    request.add("Subject", "hello, world")
    assert request.get_all("m") == ['"Doe, John" <sip:j@x;a=1,2>', "<sip:k@y>"]
    assert request.get_all("route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert request.get_all("subject") == ["hello, world"]  # not a list header


def test_headers_keep_order_and_spelling_and_unpack_as_pairs() -> None:
    message = parse_message(load("rfc4475/esc02.dat"))
    names = [name for name, _ in message.headers]
    assert names[0] == "To"
    assert all(isinstance(h, Header) for h in message.headers)


def test_edits_rewrite_only_the_edited_header() -> None:
    data = load("rfc3665-s3.1-f3-200.sip")
    ok = parse_message(data)
    ok.set("CSeq", "2 INVITE")
    out = bytes(ok)
    assert out == data.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")
    ok.set_body(b"x", "text/plain")
    assert parse_message(bytes(ok)).body == b"x"


def test_body_must_match_content_length() -> None:
    data = load("sipp-uas-180.sip")
    with pytest.raises(errors.MalformedSipMessage, match="Content-Length"):
        parse_message(data + b"extra")


def test_missing_content_length_is_fine_on_datagrams_not_on_streams() -> None:
    data = load("rfc3665-s3.1-f5-bye.sip").replace(b"Content-Length: 0\r\n", b"")
    assert parse_message(data).body == b""
    with pytest.raises(errors.MalformedSipMessage, match="stream"):
        parse_message(data, require_content_length=True)
    with pytest.raises(errors.MalformedSipMessage, match="stream"):
        StreamFramer().feed(data)


def test_limits() -> None:
    base = load("rfc3665-s3.1-f5-bye.sip")
    head, _, _ = base.partition(b"\r\n\r\n")
    with pytest.raises(errors.SipMessageTooLarge):
        parse_message(base + b"x" * MAX_MESSAGE_BYTES)
    many = head + b"\r\n" + b"X-A: 1\r\n" * MAX_HEADERS + b"\r\n"
    with pytest.raises(errors.SipMessageTooLarge) as info:
        parse_message(many)
    assert info.value.status_code == 413
    long_line = head + b"\r\nX-Long: " + b"a" * MAX_HEADER_LINE + b"\r\n\r\n"
    with pytest.raises(errors.SipMessageTooLarge):
        parse_message(long_line)
    folded = head + b"\r\nX-Fold: a" + b"\r\n b" * (MAX_HEADER_LINE // 3) + b"\r\n\r\n"
    with pytest.raises(errors.SipMessageTooLarge):
        parse_message(folded)
    assert issubclass(errors.SipMessageTooLarge, errors.MessageTooLarge)
    assert issubclass(errors.MalformedSipMessage, errors.MalformedMessage)


def test_lf_only_messages_are_accepted_and_kept() -> None:
    data = load("rfc3665-s3.1-f5-bye.sip").replace(b"\r\n", b"\n")
    assert bytes(parse_message(data)) == data


def test_leading_crlf_keepalives_are_skipped() -> None:
    data = load("rfc3665-s3.1-f5-bye.sip")
    assert bytes(parse_message(b"\r\n\r\n" + data)) == data


def test_nul_and_bare_cr_in_the_head_are_refused() -> None:
    data = load("rfc3665-s3.1-f5-bye.sip")
    for bad in (b"Max-Forwards: 7\x000", b"Max-Forwards: 7\r0"):
        with pytest.raises(errors.MalformedSipMessage):
            parse_message(data.replace(b"Max-Forwards: 70", bad))


def test_repr_shows_no_body_or_header_values() -> None:
    invite = parse_message(load("rfc3665-s3.1-f1-invite.sip"))
    invite.set_body(b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETSECRET", "application/sdp")
    invite.add("Authorization", "Digest response=SECRETSECRET")
    assert "SECRET" not in repr(invite)
    assert "SECRET" not in repr(invite.headers)


def test_stream_framer_splits_a_stream_at_any_boundary() -> None:
    messages = [load("rfc3665-s3.1-f1-invite.sip"), load("rfc3665-s3.1-f3-200.sip"),
                load("rfc3665-s3.1-f5-bye.sip")]  # fmt: skip
    stream = b"\r\n\r\n".join(messages)  # with CRLF keep-alives in between
    for chunk in (1, 7, 100, len(stream)):
        framer = StreamFramer()
        frames: list[bytes] = []
        for start in range(0, len(stream), chunk):
            frames += framer.feed(stream[start : start + chunk])
        assert frames == messages
        assert framer.buffered == 0


def test_stream_framer_limits() -> None:
    with pytest.raises(errors.SipMessageTooLarge):
        StreamFramer().feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 20000)
    with pytest.raises(errors.SipMessageTooLarge):
        StreamFramer().feed(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999\r\n\r\n")
    with pytest.raises(errors.MalformedSipMessage):
        StreamFramer().feed(b"INVITE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n")
