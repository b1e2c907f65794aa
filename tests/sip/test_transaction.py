"""RFC 3261 §17 state machines, transition by transition, on a fake clock."""

from __future__ import annotations

import pytest

from secconf.core.sip.builders import build_request, build_response
from secconf.core.sip.headers import Address, Via
from secconf.core.sip.message import SipRequest, parse_message
from secconf.core.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    CancelTimer,
    ClientTransaction,
    DeliverToTU,
    Send,
    ServerTransaction,
    StartTimer,
    State,
    Terminated,
    TimedOut,
    Timer,
    TimerConfig,
    TransportFailed,
    client_key,
    server_key,
)

from .conftest import FakeClock, load


def make_request(method: str = "INVITE", branch: str = "z9hG4bKtest1") -> SipRequest:
    return build_request(
        method,
        "sip:bob@192.0.2.2",
        from_=Address("sip:alice@example.com").with_tag("a1"),
        to=Address("sip:bob@example.com"),
        call_id="c1@host",
        cseq=1,
        via=Via.build("UDP", "192.0.2.1", 5060, branch),
        contact=Address("sip:alice@192.0.2.1"),
    )


def sends(actions: list) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Send)]


def first_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


# -- INVITE client (§17.1.1) -----------------------------------------------------------


def test_ict_calling_retransmits_with_timer_a_doubling_then_times_out_with_b() -> None:
    invite = make_request()
    txn = ClientTransaction(invite, reliable=False)
    clock = FakeClock(txn.timer_fired)
    start = clock.apply(txn.start())
    assert start == [Send(bytes(invite)), StartTimer(Timer.A, 0.5), StartTimer(Timer.B, 32.0)]
    assert txn.state is State.CALLING
    clock.advance(31.9)
    retransmits = [t for t, a in clock.log if isinstance(a, Send)]
    # sent at 0, then 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (A = 0.5, 1, 2, 4, 8, 16)
    assert retransmits == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    out = clock.advance(0.2)
    assert TimedOut(Timer.B) in out
    assert out[-1] == Terminated()
    assert txn.state is State.TERMINATED


def test_ict_reliable_never_retransmits() -> None:
    txn = ClientTransaction(make_request(), reliable=True)
    actions = txn.start()
    assert [a for a in actions if isinstance(a, StartTimer)] == [StartTimer(Timer.B, 32.0)]


def test_ict_provisional_stops_retransmission_and_is_delivered() -> None:
    invite = make_request()
    txn = ClientTransaction(invite, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    ringing = build_response(invite, 180, to_tag="b1")
    out = clock.apply(txn.receive(ringing))
    assert txn.state is State.PROCEEDING
    assert CancelTimer(Timer.A) in out
    assert DeliverToTU(ringing) in out
    assert clock.advance(100) == []  # no retransmission, no timeout in Proceeding
    assert clock.apply(txn.receive(ringing)) == [DeliverToTU(ringing)]


@pytest.mark.parametrize("first", [None, 183])
def test_ict_non2xx_final_sends_ack_and_waits_timer_d(first: int | None) -> None:
    invite = make_request()
    txn = ClientTransaction(invite, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    if first:
        clock.apply(txn.receive(build_response(invite, first, to_tag="b1")))
    busy = build_response(invite, 486, to_tag="b1")
    out = clock.apply(txn.receive(busy))
    assert txn.state is State.COMPLETED
    (ack_bytes,) = sends(out)
    ack = parse_message(ack_bytes)
    # §17.1.1.3: same Request-URI, top Via, From, Call-ID, CSeq number; To of the response.
    assert first_line(ack_bytes) == b"ACK sip:bob@192.0.2.2 SIP/2.0"
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.to.tag == "b1"
    assert str(ack.cseq) == "1 ACK"
    assert DeliverToTU(busy) in out
    assert StartTimer(Timer.D, 32.0) in out
    # a retransmitted final response is answered with the same ACK, not delivered again
    assert txn.receive(busy) == [Send(ack_bytes)]
    assert clock.advance(32.0)[-1] == Terminated()


def test_ict_non2xx_on_reliable_terminates_at_once() -> None:
    invite = make_request()
    txn = ClientTransaction(invite, reliable=True)
    txn.start()
    out = txn.receive(build_response(invite, 404, to_tag="x"))
    assert txn.state is State.TERMINATED
    assert out[-1] == Terminated()
    assert len(sends(out)) == 1  # the ACK still goes out


def test_ict_2xx_goes_to_accepted_and_passes_retransmissions_up() -> None:
    invite = make_request()
    txn = ClientTransaction(invite, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    ok = build_response(invite, 200, to_tag="b1")
    out = clock.apply(txn.receive(ok))
    assert txn.state is State.ACCEPTED  # RFC 6026 §8.4
    assert sends(out) == []  # the TU ACKs a 2xx, not the transaction (§13.2.2.4)
    assert DeliverToTU(ok) in out
    assert StartTimer(Timer.M, 32.0) in out
    assert txn.receive(ok) == [DeliverToTU(ok)]
    assert clock.advance(32.0)[-1] == Terminated()


def test_ict_transport_error() -> None:
    txn = ClientTransaction(make_request(), reliable=False)
    txn.start()
    out = txn.transport_error()
    assert TransportFailed() in out
    assert out[-1] == Terminated()
    assert CancelTimer(Timer.A) in out
    assert CancelTimer(Timer.B) in out


# -- non-INVITE client (§17.1.2) ---------------------------------------------------------


def test_nict_timer_e_caps_at_t2_and_f_times_out() -> None:
    request = make_request("OPTIONS")
    txn = ClientTransaction(request, reliable=False)
    clock = FakeClock(txn.timer_fired)
    assert clock.apply(txn.start())[1:] == [StartTimer(Timer.E, 0.5), StartTimer(Timer.F, 32.0)]
    clock.advance(31.99)
    intervals = [
        a.seconds for _, a in clock.log if isinstance(a, StartTimer) and a.timer is Timer.E
    ]
    assert intervals[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert max(intervals) == 4.0
    out = clock.advance(0.02)
    assert TimedOut(Timer.F) in out
    assert txn.state is State.TERMINATED


def test_nict_proceeding_retransmits_every_t2() -> None:
    request = make_request("REFER")
    txn = ClientTransaction(request, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    clock.apply(txn.receive(build_response(request, 100)))
    assert txn.state is State.PROCEEDING
    out = clock.advance(0.5)
    assert out == [Send(bytes(request)), StartTimer(Timer.E, 4.0)]


@pytest.mark.parametrize("status", [200, 202, 404, 503])
def test_nict_final_response_completes_then_k(status: int) -> None:
    request = make_request("SUBSCRIBE")
    txn = ClientTransaction(request, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    final = build_response(request, status, to_tag="n")
    out = clock.apply(txn.receive(final))
    assert txn.state is State.COMPLETED
    assert DeliverToTU(final) in out
    assert StartTimer(Timer.K, 5.0) in out
    assert txn.receive(final) == []  # absorbed
    assert clock.advance(5.0)[-1] == Terminated()


def test_nict_reliable_final_terminates_at_once() -> None:
    request = make_request("BYE")
    txn = ClientTransaction(request, reliable=True)
    assert [a for a in txn.start() if isinstance(a, StartTimer)] == [StartTimer(Timer.F, 32.0)]
    out = txn.receive(build_response(request, 200))
    assert out[-1] == Terminated()
    assert CancelTimer(Timer.F) in out


# -- INVITE server (§17.2.1) --------------------------------------------------------------


def test_ist_sends_100_and_delivers_then_absorbs_retransmissions() -> None:
    invite = make_request()
    txn = ServerTransaction(invite, reliable=False)
    out = txn.start()
    assert txn.state is State.PROCEEDING
    trying = parse_message(sends(out)[0])
    assert trying.status == 100
    assert trying.to.tag is None
    assert DeliverToTU(invite) in out
    assert sends(txn.receive(invite)) == sends(out)  # retransmission: last response again
    ringing = build_response(invite, 180, to_tag="t")
    assert txn.respond(ringing) == [Send(bytes(ringing))]
    assert txn.receive(invite) == [Send(bytes(ringing))]


def test_ist_non2xx_retransmits_with_g_until_ack_then_i() -> None:
    invite = make_request()
    txn = ServerTransaction(invite, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    busy = build_response(invite, 486, to_tag="t")
    out = clock.apply(txn.respond(busy))
    assert out == [Send(bytes(busy)), StartTimer(Timer.G, 0.5), StartTimer(Timer.H, 32.0)]
    clock.advance(7.6)
    intervals = [
        a.seconds for _, a in clock.log if isinstance(a, StartTimer) and a.timer is Timer.G
    ]
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0]  # min(2*G, T2)
    ack = SipRequest.parse(
        bytes(invite).replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    )
    out = clock.apply(txn.receive(ack))
    assert txn.state is State.CONFIRMED
    assert CancelTimer(Timer.G) in out
    assert StartTimer(Timer.I, 5.0) in out
    assert txn.receive(ack) == []
    assert clock.advance(5.0)[-1] == Terminated()


def test_ist_timer_h_without_ack() -> None:
    invite = make_request()
    txn = ServerTransaction(invite, reliable=False)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    clock.apply(txn.respond(build_response(invite, 603, to_tag="t")))
    out = clock.advance(32.0)
    assert TimedOut(Timer.H) in out
    assert txn.state is State.TERMINATED


def test_ist_2xx_goes_to_accepted_for_timer_l() -> None:
    invite = make_request()
    txn = ServerTransaction(invite, reliable=True)
    clock = FakeClock(txn.timer_fired)
    clock.apply(txn.start())
    ok = build_response(invite, 200, to_tag="t")
    out = clock.apply(txn.respond(ok))
    assert txn.state is State.ACCEPTED
    assert StartTimer(Timer.L, 32.0) in out
    assert txn.receive(invite) == []  # RFC 6026 §7.1: absorbed
    assert txn.respond(ok) == [Send(bytes(ok))]  # TU retransmission passes through
    assert clock.advance(32.0)[-1] == Terminated()


def test_ist_reliable_ack_terminates_at_once() -> None:
    invite = make_request()
    txn = ServerTransaction(invite, reliable=True)
    txn.start()
    out = txn.respond(build_response(invite, 486, to_tag="t"))
    assert [a for a in out if isinstance(a, StartTimer)] == [StartTimer(Timer.H, 32.0)]
    ack = SipRequest.parse(
        bytes(invite).replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    )
    assert txn.receive(ack)[-1] == Terminated()


def test_ist_refuses_a_second_final_response() -> None:
    invite = make_request()
    txn = ServerTransaction(invite, reliable=False)
    txn.start()
    txn.respond(build_response(invite, 486, to_tag="t"))
    with pytest.raises(ValueError, match="cannot send"):
        txn.respond(build_response(invite, 200, to_tag="t"))


# -- non-INVITE server (§17.2.2) -------------------------------------------------------------


def test_nist_trying_proceeding_completed_j() -> None:
    request = make_request("BYE")
    txn = ServerTransaction(request, reliable=False)
    clock = FakeClock(txn.timer_fired)
    assert clock.apply(txn.start()) == [DeliverToTU(request)]
    assert txn.receive(request) == []  # Trying: retransmission discarded
    trying = build_response(request, 100)
    clock.apply(txn.respond(trying))
    assert txn.state is State.PROCEEDING
    assert txn.receive(request) == [Send(bytes(trying))]
    ok = build_response(request, 200)
    out = clock.apply(txn.respond(ok))
    assert txn.state is State.COMPLETED
    assert StartTimer(Timer.J, 32.0) in out
    assert txn.receive(request) == [Send(bytes(ok))]
    assert clock.advance(32.0)[-1] == Terminated()


def test_nist_reliable_final_terminates_at_once() -> None:
    request = make_request("REFER")
    txn = ServerTransaction(request, reliable=True)
    txn.start()
    assert txn.respond(build_response(request, 202))[-1] == Terminated()


# -- tables and matching --------------------------------------------------------------------


def test_every_row_leads_somewhere_valid() -> None:
    for table in (INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER, NON_INVITE_SERVER):
        for (state, _event), (next_state, _steps) in table.items():
            assert state is not State.TERMINATED
            assert isinstance(next_state, State)


def test_timers_scale_with_t1() -> None:
    txn = ClientTransaction(
        make_request(), reliable=False, timers=TimerConfig(t1=0.1, t2=0.8, t4=1)
    )
    assert txn.start()[1:] == [StartTimer(Timer.A, 0.1), StartTimer(Timer.B, 6.4)]


def test_matching_rules() -> None:
    invite = make_request()
    ok = build_response(invite, 200, to_tag="x")
    assert client_key(invite) == client_key(ok)
    cancel_ok = build_response(make_request("CANCEL"), 200)
    assert client_key(cancel_ok) != client_key(invite)  # CSeq method differs (§17.1.3)
    ack = SipRequest.parse(
        bytes(invite).replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    )
    assert server_key(ack) == server_key(invite)  # ACK matches its INVITE (§17.2.3)
    other_host = SipRequest.parse(bytes(invite).replace(b"192.0.2.1:5060", b"192.0.2.9:5060"))
    assert server_key(other_host) != server_key(invite)  # sent-by is part of the key
    old = SipRequest.parse(load("rfc4475/inv2543.dat"))
    assert server_key(old).branch.startswith("rfc2543|")


def test_ack_has_no_transaction_and_start_twice_is_refused() -> None:
    ack = SipRequest.parse(
        bytes(make_request()).replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    )
    with pytest.raises(ValueError, match="ACK"):
        ClientTransaction(ack, reliable=False)
    txn = ClientTransaction(make_request(), reliable=False)
    txn.start()
    with pytest.raises(ValueError, match="already"):
        txn.start()


def test_cancelled_timer_firing_late_is_ignored() -> None:
    invite = make_request()
    txn = ClientTransaction(invite, reliable=False)
    txn.start()
    txn.receive(build_response(invite, 180, to_tag="t"))
    assert txn.timer_fired(Timer.A) == []
    assert txn.timer_fired(Timer.B) == []
