"""The notifier's side of the conference event package (secconf.core.events), no sockets.

SUBSCRIBE header checks (Event, Accept, Expires), the Subscription-State values, and one
subscription's notifier: versions, CSeqs, full then partial documents, one NOTIFY in
flight with changes coalescing, Timer F, expiry, the endings; and a Hypothesis property:
whatever the history and the order of replies, the documents sent, applied by the
subscriber (core.confinfo.receive), give the state a fresh full document gives.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secconf.core import events
from secconf.core.confinfo import ConferenceInfo, Verdict, full_document, receive
from secconf.core.errors import BadEvent, MalformedSipMessage, NoAcceptableType
from secconf.core.events import BodyKind, NotifierState, Phase, Termination
from secconf.core.focus import OfferMode
from tests.fixtures.confinfo import assert_valid, histories, infos

CONF = "sip:conf-7@focus.example.com"


@pytest.mark.parametrize(
    "value",
    ["conference", "conference ;foo=bar", "conference\t"],
)
def test_event_conference_is_accepted(value: str) -> None:
    assert events.check_event(value) is None


@pytest.mark.parametrize(
    "value",
    [None, "presence", "Conference", "conference;id=1", "conference;ID=x", "conference.x", ""],
)
def test_other_events_are_489(value: str | None) -> None:
    with pytest.raises(BadEvent) as raised:
        events.check_event(value)
    assert raised.value.status_code == 489


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, OfferMode.SDES),
        ("application/conference-info+xml", OfferMode.SDES),
        ("text/plain, Application/Conference-Info+XML;q=0.5", OfferMode.SDES),
        ("application/pkcs7-mime, application/conference-info+xml", OfferMode.KMS),
        ("*/*", OfferMode.KMS),
        ("application/*", OfferMode.SDES),
    ],
)
def test_accept_naming_a_type_we_send_is_taken(value: str | None, mode: OfferMode) -> None:
    assert events.check_accept(value, mode) is None


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, OfferMode.KMS),
        ("application/conference-info+xml", OfferMode.KMS),
        ("application/pkcs7-mime", OfferMode.SDES),
        ("text/plain", OfferMode.SDES),
        ("", OfferMode.SDES),
    ],
)
def test_accept_without_a_type_we_send_is_406(value: str | None, mode: OfferMode) -> None:
    with pytest.raises(NoAcceptableType) as raised:
        events.check_accept(value, mode)
    assert raised.value.status_code == 406


@pytest.mark.parametrize(
    ("value", "granted"),
    [
        *[(None, 600), ("0", 0), ("1", 60), ("59", 60), ("60", 60), ("600", 600)],
        *[("3600", 3600), ("3601", 3600), ("4294967295", 3600), (" 120 ", 120)],
    ],
)
def test_expires_is_clamped(value: str | None, granted: int) -> None:
    assert events.granted_expires(value) == granted


@pytest.mark.parametrize("value", ["", "-1", "1.5", "ten", "99999999999", "0x10"])
def test_unreadable_expires_is_400(value: str) -> None:
    with pytest.raises(MalformedSipMessage):
        events.granted_expires(value)


def test_subscription_state_values() -> None:
    assert events.subscription_state(expires_left=599) == "active;expires=599"
    for reason in Termination:
        value = events.subscription_state(reason=reason)
        assert value == f"terminated;reason={reason.value}"
    with pytest.raises(ValueError, match="seconds"):
        events.subscription_state()


def _info(seed: ConferenceInfo) -> ConferenceInfo:
    return dataclasses.replace(seed, entity=CONF)


@settings(max_examples=25)
@given(infos)
def test_first_notify_is_full_state_then_nothing_until_a_change(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state = events.started(CONF, 1000.0, 600)
    state, notify = events.plan(state, 1000.5, info)
    assert notify is not None
    assert (notify.kind, notify.version, notify.cseq) == (BodyKind.FULL, 1, 1)
    assert notify.subscription_state == "active;expires=600"
    assert notify.document == full_document(info, 1)
    assert notify.document is not None
    assert_valid(notify.document)
    state = events.answered(state, 1, 200)
    assert state.in_flight is None
    assert events.plan(state, 1001.0, info) == (state, None)


@settings(max_examples=25)
@given(histories(max_size=4))
def test_changes_while_a_notify_is_in_flight_coalesce(history: list[ConferenceInfo]) -> None:
    history = [_info(info) for info in history]
    state, first = events.plan(events.started(CONF, 0.0, 600), 0.0, history[0])
    assert first is not None
    for info in history[1:]:
        blocked, nothing = events.plan(state, 1.0, info)
        assert (blocked, nothing) == (state, None)
    state = events.answered(state, first.cseq, 200)
    state, notify = events.plan(state, 2.0, history[-1])
    if history[-1] == history[0]:
        assert notify is None
        return
    assert notify is not None
    assert (notify.kind, notify.version, notify.cseq) == (BodyKind.PARTIAL, 2, 2)
    assert notify.document is not None
    view = receive(receive(None, first.document or b"").view, notify.document).view
    assert view is not None
    assert view.info == history[-1]


def _sent(state: NotifierState, now: float, info: ConferenceInfo | None) -> events.Notify:
    _, notify = events.plan(state, now, info)
    assert notify is not None
    return notify


@settings(max_examples=25)
@given(infos)
def test_refresh_sends_full_state_with_the_new_expiry(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state, _ = events.plan(events.started(CONF, 0.0, 600), 0.0, info)
    state = events.answered(state, 1, 200)
    state = events.refreshed(state, 300.0, 3600)
    notify = _sent(state, 300.0, info)
    assert (notify.kind, notify.version, notify.cseq) == (BodyKind.FULL, 2, 2)
    assert notify.subscription_state == "active;expires=3600"


@settings(max_examples=25)
@given(infos)
def test_unsubscribe_waits_for_the_notify_in_flight_then_ends_timeout(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state, _ = events.plan(events.started(CONF, 0.0, 600), 0.0, info)
    state = events.refreshed(state, 1.0, 0)
    assert state.phase is Phase.ENDING
    assert events.plan(state, 2.0, info) == (state, None)
    state = events.answered(state, 1, 200)
    state, final = events.plan(state, 3.0, info)
    assert final is not None
    assert (final.subscription_state, final.kind, final.document) == (
        "terminated;reason=timeout",
        BodyKind.NONE,
        None,
    )
    assert state.phase is Phase.FINAL_SENT
    assert events.answered(state, final.cseq, 481).phase is Phase.DONE
    assert events.answered(state, final.cseq, 200).phase is Phase.DONE


@settings(max_examples=25)
@given(infos)
def test_expiry_ends_with_timeout(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state, _ = events.plan(events.started(CONF, 0.0, 60), 0.0, info)
    state = events.answered(state, 1, 200)
    assert events.plan(state, 59.9, info) == (state, None)
    assert _sent(state, 60.0, info).subscription_state == "terminated;reason=timeout"


@settings(max_examples=25)
@given(infos)
def test_a_departed_member_is_ended_rejected_without_state(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state, _ = events.plan(events.started(CONF, 0.0, 600), 0.0, info)
    state = events.answered(state, 1, 200)
    state = events.end(state, Termination.REJECTED)
    state = events.end(state, Termination.TIMEOUT)  # the first reason decided stays
    final = _sent(state, 1.0, info)
    assert (final.subscription_state, final.document) == ("terminated;reason=rejected", None)


@settings(max_examples=25)
@given(infos)
def test_an_ended_conference_sends_a_deleted_document_noresource(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state, _ = events.plan(events.started(CONF, 0.0, 600), 0.0, info)
    state = events.answered(state, 1, 200)
    final = _sent(state, 1.0, None)
    assert final.subscription_state == "terminated;reason=noresource"
    assert (final.kind, final.version) == (BodyKind.DELETED, 2)
    assert final.document is not None
    assert_valid(final.document)
    held = receive(None, full_document(info, 1)).view
    assert receive(held, final.document).verdict is Verdict.ENDED


@pytest.mark.parametrize("status", [481, 408, 500, 603])
def test_a_failed_notify_drops_the_subscription(status: int) -> None:
    state = events.started(CONF, 0.0, 600)
    state = dataclasses.replace(state, in_flight=events.InFlight(1, 32.0))
    assert events.answered(state, 1, status).phase is Phase.DONE
    assert events.answered(state, 2, status) == state  # another CSeq: not ours
    assert events.answered(state, 1, 180) == state  # provisional: still waiting


def test_timer_f_drops_the_subscription_without_a_notify() -> None:
    state = dataclasses.replace(events.started(CONF, 0.0, 600), in_flight=events.InFlight(1, 32.0))
    assert events.plan(state, 31.9, None) == (state, None)
    late, notify = events.plan(state, 32.0, None)
    assert (late.phase, late.in_flight, notify) == (Phase.DONE, None, None)


@settings(max_examples=25)
@given(infos)
def test_next_due_is_now_with_something_to_send_else_the_earliest_timer(
    seed: ConferenceInfo,
) -> None:
    info = _info(seed)
    state = events.started(CONF, 1000.0, 600)
    assert events.next_due(state) == float("-inf")  # the first full state is owed
    state, notify = events.plan(state, 1000.5, info)
    assert notify is not None
    assert state.in_flight is not None
    assert events.next_due(state) == min(1600.0, state.in_flight.deadline)  # Timer F
    state = events.answered(state, 1, 200)
    assert events.next_due(state) == 1600.0  # only the expiry is left
    # nothing moves the state before then (plan would say the same)
    assert events.plan(state, 1599.9, info) == (state, None)
    ending = events.end(state, Termination.REJECTED)
    assert events.next_due(ending) == float("-inf")  # its final NOTIFY is owed


def test_transitions_are_a_table() -> None:
    done = dataclasses.replace(events.started(CONF, 0.0, 600), phase=Phase.DONE)
    assert events.refreshed(done, 1.0, 600) == done  # over: a refresh revives nothing
    assert (Phase.DONE, events.Input.REFRESH) not in events.TRANSITIONS
    assert events.TRANSITIONS[(Phase.ACTIVE, events.Input.TIMER_F)] is Phase.DONE
    with pytest.raises(ValueError, match="positive"):
        events.started(CONF, 0.0, 0)


@settings(max_examples=25)
@given(infos)
def test_the_snapshot_reads_back(seed: ConferenceInfo) -> None:
    info = _info(seed)
    assert events.info_from_snapshot(events.snapshot(info)) == info


_step = st.one_of(
    st.tuples(st.just("change"), st.integers(0, 1000)),
    st.tuples(st.just("ack"), st.integers(0, 0)),
    st.tuples(st.just("refresh"), st.integers(0, 0)),
    st.tuples(st.just("tick"), st.integers(0, 0)),
)


@settings(max_examples=60)
@given(histories(max_size=6), st.lists(_step, max_size=30))
def test_documents_sent_applied_give_what_a_fresh_full_document_gives(
    history: list[ConferenceInfo], steps: list[tuple[str, int]]
) -> None:
    history = [_info(info) for info in history]
    current, state, now = history[0], events.started(CONF, 0.0, 3600), 0.0
    held = None
    versions: list[int] = []
    for action, pick in [*steps, ("ack", 0), ("tick", 0)]:
        now += 1.0
        if action == "change":
            current = history[pick % len(history)]
        elif action == "ack" and state.in_flight is not None:
            state = events.answered(state, state.in_flight.cseq, 200)
        elif action == "refresh":
            state = events.refreshed(state, now, 3600)
        state, notify = events.plan(state, now, current)
        if notify is None or notify.document is None:
            continue
        versions.append(notify.version)
        received = receive(held, notify.document)
        assert received.verdict is Verdict.APPLIED
        held = received.view
    assert versions == list(range(1, len(versions) + 1))
    assert held is not None
    assert state.sent is not None
    assert held == receive(None, full_document(state.sent, held.version)).view


@settings(max_examples=25)
@given(infos)
def test_a_fetch_is_one_full_notify_that_ends_it(seed: ConferenceInfo) -> None:
    info = _info(seed)
    state = events.fetched(CONF, 100.0)
    assert state.phase is Phase.FETCH
    state, notify = events.plan(state, 100.0, info)
    assert notify is not None
    assert (notify.kind, notify.version, notify.cseq) == (BodyKind.FULL, 1, 1)
    assert notify.subscription_state == "terminated;reason=timeout"
    assert notify.document is not None
    assert_valid(notify.document)
    assert receive(None, notify.document).view is not None
    assert state.phase is Phase.FINAL_SENT
    assert events.plan(state, 101.0, info) == (state, None)  # nothing more
    assert events.answered(state, 1, 200).phase is Phase.DONE
    late, nothing = events.plan(state, 100.0 + events.TIMER_F, info)
    assert (late.phase, nothing) == (Phase.DONE, None)


@given(infos)
def test_a_fetch_of_a_gone_conference_or_by_a_departed_member_sends_no_state(
    seed: ConferenceInfo,
) -> None:
    info = _info(seed)
    gone, deleted = events.plan(events.fetched(CONF, 0.0), 0.0, None)
    assert deleted is not None
    assert deleted.kind is BodyKind.DELETED
    assert deleted.subscription_state == "terminated;reason=noresource"
    left = events.end(events.fetched(CONF, 0.0), Termination.REJECTED)
    left, bodiless = events.plan(left, 0.0, info)
    assert bodiless is not None
    assert (bodiless.kind, bodiless.document) == (BodyKind.NONE, None)
    assert bodiless.subscription_state == "terminated;reason=rejected"
    assert gone.phase is left.phase is Phase.FINAL_SENT
