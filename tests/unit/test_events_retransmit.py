"""Timer E for the NOTIFYs the focus sends whole over UDP (secconf.core.events), no sockets.

RFC 3261 §17.1.2.2: the NOTIFY in flight leaves again after T1 = 0.5 s, then at intervals
doubling up to T2 = 4 s (0.5, 1, 2, 4, 4 ...) until a final response or Timer F (32 s); a
1xx keeps Timer E at T2; a reliable flow (TLS, TCP) never retransmits.
"""

from __future__ import annotations

import pytest

from secconf.core import events
from secconf.core.confinfo import ConferenceInfo
from secconf.core.events import NotifierState, Phase

CONF = "sip:conf-7@focus.example.com"
TICK = 0.05
INFO = ConferenceInfo(CONF)


def _sent(info: ConferenceInfo, *, retransmit: bool) -> NotifierState:
    state, notify = events.plan(events.started(CONF, 0.0, 600), 0.0, info, retransmit=retransmit)
    assert notify is not None
    assert state.in_flight is not None
    return state


def _resends(state: NotifierState, info: ConferenceInfo, until: float) -> list[float]:
    """Tick every 50 ms as the node's timer does: the times a copy leaves again."""
    times: list[float] = []
    for step in range(1, round(until / TICK) + 1):
        now = step * TICK
        state, notify = events.plan(state, now, info, retransmit=True)
        assert notify is None  # nothing new while one is in flight
        state, again = events.retransmission(state, now)
        if again:
            times.append(now)
    return times


@pytest.mark.parametrize("retransmit", [True, False])
def test_the_first_notify_starts_timer_e_only_when_asked(retransmit: bool) -> None:
    flight = _sent(INFO, retransmit=retransmit).in_flight
    assert flight is not None
    assert flight.deadline == events.TIMER_F
    if retransmit:
        assert flight.retransmit == events.Retransmit(0.5, 0.5)
    else:
        assert flight.retransmit is None


def test_the_schedule_doubles_to_t2_until_timer_f() -> None:
    state = _sent(INFO, retransmit=True)
    times = _resends(state, INFO, events.TIMER_F - TICK)
    gaps = [round(b - a, 6) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert set(gaps[3:]) == {4.0}
    assert times[-1] == pytest.approx(31.5)  # 0.5 + 1 + 2 + 4*7: the last one before F
    # Timer F: the subscription is dropped, nothing sent, nothing resent
    for step, now in enumerate([events.TIMER_F, events.TIMER_F + 4]):
        held, again = events.retransmission(state, now)
        assert (held, again) == (state, False), step
    late, notify = events.plan(state, events.TIMER_F, INFO)
    assert (late.phase, late.in_flight, notify) == (Phase.DONE, None, None)


@pytest.mark.parametrize("status", [200, 202, 481, 500])
def test_a_final_response_stops_it(status: int) -> None:
    state = _sent(INFO, retransmit=True)
    state, again = events.retransmission(state, 0.5)
    assert again
    answered = events.answered(state, 1, status)
    assert answered.in_flight is None
    assert events.retransmission(answered, 1.5) == (answered, False)
    assert events.retransmission(answered, 20.0) == (answered, False)


def test_a_1xx_keeps_timer_e_at_t2_and_stops_nothing() -> None:
    state = _sent(INFO, retransmit=True)
    state = events.provisional(state, 1)
    assert events.provisional(state, 2) == state  # another CSeq: not ours
    times = _resends(state, INFO, 13.0)
    assert times == pytest.approx([0.5, 4.5, 8.5, 12.5])
    assert events.answered(state, 1, 180) == state  # a 1xx is not a final response


def test_a_reliable_flow_never_retransmits() -> None:
    state = _sent(INFO, retransmit=False)
    for now in (0.5, 1.5, 3.5, 31.9):
        assert events.retransmission(state, now) == (state, False)
    assert events.provisional(state, 1) == state


def test_the_final_notify_is_retransmitted_too() -> None:
    state = events.answered(_sent(INFO, retransmit=True), 1, 200)
    state = events.end(state, events.Termination.REJECTED)
    state, final = events.plan(state, 10.0, INFO, retransmit=True)
    assert final is not None
    assert final.kind is events.BodyKind.NONE
    assert state.in_flight is not None
    assert state.in_flight.retransmit == events.Retransmit(10.5, 0.5)
    assert events.retransmission(state, 10.5)[1]
