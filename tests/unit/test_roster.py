"""The roster tracker and its debounced rekey decisions (secconf.core.roster), pure."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import ProtocolError
from secconf.core.roster import (
    ConfbridgeEnd,
    ConfbridgeJoin,
    ConfbridgeLeave,
    ConfbridgeStart,
    ConferenceEnded,
    ConferenceStarted,
    Member,
    MemberJoined,
    MemberLeft,
    RekeyPolicy,
    RekeyReason,
    RosterSnapshot,
    RosterTracker,
    event_from_ami,
    replay,
)

CONF = "0123456789abcdef"


def join(n: int) -> ConfbridgeJoin:
    return ConfbridgeJoin(CONF, f"PJSIP/kamailio-{n:08x}", f"sys-1.{n}", f"user{n}")


def leave(n: int) -> ConfbridgeLeave:
    return ConfbridgeLeave(CONF, f"PJSIP/kamailio-{n:08x}", f"sys-1.{n}", f"user{n}")


def test_first_member_and_start_cause_no_rekey() -> None:
    tracker = RosterTracker()
    assert tracker.handle(ConfbridgeStart(CONF), 0.0) == [ConferenceStarted(CONF)]
    outputs = tracker.handle(join(1), 0.1)
    assert outputs == [
        MemberJoined(CONF, Member("PJSIP/kamailio-00000001", "sys-1.1", "user1", 0.1))
    ]
    assert tracker.next_deadline() is None
    assert tracker.poll(100.0) == []


def test_second_join_rekeys_after_the_debounce_window() -> None:
    tracker = RosterTracker()
    tracker.handle(join(1), 0.0)
    tracker.handle(join(2), 1.0)
    assert tracker.next_deadline() == 3.0
    assert tracker.poll(2.9) == []
    (rekey,) = tracker.poll(3.0)
    assert rekey.reasons == frozenset({RekeyReason.JOIN})
    assert rekey.joined == frozenset({"PJSIP/kamailio-00000002"})
    assert rekey.channels == ("PJSIP/kamailio-00000001", "PJSIP/kamailio-00000002")
    assert rekey.first_change == 1.0
    assert tracker.next_deadline() is None


def test_leave_always_rekeys_and_the_leaver_is_not_a_member() -> None:
    tracker = RosterTracker(RekeyPolicy(rekey_on_join=False))
    for n in (1, 2, 3):
        tracker.handle(join(n), 0.0)
    assert tracker.next_deadline() is None  # joins alone: no rekey with this policy
    assert tracker.handle(leave(2), 5.0) == [
        MemberLeft(CONF, Member("PJSIP/kamailio-00000002", "sys-1.2", "user2", 0.0))
    ]
    (rekey,) = tracker.poll(7.0)
    assert rekey.reasons == frozenset({RekeyReason.LEAVE})
    assert "PJSIP/kamailio-00000002" not in rekey.channels
    assert rekey.left == frozenset({"PJSIP/kamailio-00000002"})


def test_last_leave_and_end_clear_everything() -> None:
    tracker = RosterTracker()
    tracker.handle(join(1), 0.0)
    tracker.handle(join(2), 0.5)
    tracker.handle(leave(1), 1.0)
    tracker.handle(leave(2), 1.5)
    assert tracker.next_deadline() is None
    assert tracker.handle(ConfbridgeEnd(CONF), 2.0) == [ConferenceEnded(CONF)]
    assert tracker.conferences() == ()


def test_leave_debounce_closes_a_join_window_sooner() -> None:
    tracker = RosterTracker(RekeyPolicy(debounce=5.0, leave_debounce=0.5))
    tracker.handle(join(1), 0.0)
    tracker.handle(join(2), 0.0)
    tracker.handle(join(3), 1.0)
    assert tracker.next_deadline() == 5.0
    tracker.handle(leave(3), 2.0)
    assert tracker.next_deadline() == 2.5
    (rekey,) = tracker.poll(2.5)
    assert rekey.reasons == {RekeyReason.JOIN, RekeyReason.LEAVE}
    # 3 joined and left within the batch: only 2 counts as joined
    assert rekey.joined == frozenset({"PJSIP/kamailio-00000002"})


def test_min_interval_and_periodic() -> None:
    tracker = RosterTracker(RekeyPolicy(debounce=1.0, min_interval=10.0, periodic=60.0))
    tracker.handle(join(1), 0.0)
    tracker.handle(join(2), 0.0)
    assert [r.at for r in tracker.poll(1.0)] == [1.0]
    tracker.handle(join(3), 2.0)
    assert tracker.next_deadline() == 11.0  # last rekey at 1 + min_interval
    assert [r.at for r in tracker.poll(11.0)] == [11.0]
    assert tracker.next_deadline() == 71.0
    (periodic,) = tracker.poll(71.0)
    assert periodic.reasons == frozenset({RekeyReason.PERIODIC})


def test_snapshot_after_reconnect_derives_missed_changes() -> None:
    tracker = RosterTracker()
    for n in (1, 2, 3):
        tracker.handle(join(n), 0.0)
    tracker.poll(10.0)
    members = (Member("PJSIP/kamailio-00000001"), Member("PJSIP/kamailio-00000004"))
    outputs = tracker.handle(RosterSnapshot(CONF, members), 20.0)
    assert {type(o).__name__ for o in outputs} == {"MemberLeft", "MemberJoined"}
    (rekey,) = tracker.poll(22.0)
    assert rekey.channels == ("PJSIP/kamailio-00000001", "PJSIP/kamailio-00000004")
    assert RekeyReason.LEAVE in rekey.reasons
    assert tracker.handle(RosterSnapshot(CONF, ()), 30.0)[-1] == ConferenceEnded(CONF)


def test_repeated_and_unknown_events_change_nothing() -> None:
    tracker = RosterTracker()
    tracker.handle(join(1), 0.0)
    assert tracker.handle(join(1), 1.0) == []
    assert tracker.handle(leave(9), 1.0) == []
    assert tracker.handle(ConfbridgeEnd("nope"), 1.0) == []
    assert tracker.next_deadline() is None


def test_event_from_ami() -> None:
    fields = {
        "Event": "ConfbridgeJoin",
        "Conference": CONF,
        "Channel": "PJSIP/kamailio-00000000",
        "CallerIDNum": "alice",
        "Uniqueid": "secconf-test-1.0",
    }
    assert event_from_ami(fields) == ConfbridgeJoin(
        CONF, "PJSIP/kamailio-00000000", "secconf-test-1.0", "alice"
    )
    assert event_from_ami({"event": "ConfbridgeEnd", "conference": CONF}) == ConfbridgeEnd(CONF)
    assert event_from_ami({"Event": "Newchannel"}) is None
    with pytest.raises(ProtocolError):
        event_from_ami({"Event": "ConfbridgeLeave", "Conference": CONF})
    with pytest.raises(ProtocolError):
        event_from_ami({"Event": "ConfbridgeStart"})


def test_policy_validation() -> None:
    with pytest.raises(ProtocolError):
        RekeyPolicy(debounce=-1)
    with pytest.raises(ProtocolError):
        RekeyPolicy(periodic=0)
    with pytest.raises(ProtocolError):
        RekeyPolicy(min_interval=math.inf)
    assert RekeyPolicy.from_mapping({"debounce": 5, "rekey_on_join": False}) == RekeyPolicy(
        debounce=5.0, rekey_on_join=False
    )
    with pytest.raises(ProtocolError):
        RekeyPolicy.from_mapping({"debounse": 5})


# -- properties ------------------------------------------------------------------------

burst_times = st.lists(
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False), min_size=30, max_size=30
)


@given(times=burst_times)
def test_a_burst_of_30_joins_in_3_seconds_costs_at_most_2_rekeys(times: list[float]) -> None:
    tracker = RosterTracker()  # default: 2 s window
    tracker.handle(join(0), -1.0)  # someone is already there: every join counts
    events = [(at, join(n + 1)) for n, at in enumerate(sorted(times))]
    rekeys = replay(tracker, events, until=100.0)
    assert 1 <= len(rekeys) <= 2
    # Every join is covered: the last rekey's members are all 31.
    assert len(rekeys[-1].members) == 31


timeline = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
        st.booleans(),
        st.integers(min_value=0, max_value=7),
    ),
    max_size=60,
)
policies = st.builds(
    RekeyPolicy,
    debounce=st.floats(min_value=0.0, max_value=5.0),
    leave_debounce=st.none() | st.floats(min_value=0.0, max_value=5.0),
    rekey_on_join=st.booleans(),
    min_interval=st.floats(min_value=0.0, max_value=10.0),
)


def emptied_between(events: list[tuple[float, object]], start: float, end: float) -> bool:
    present: set[str] = set()
    for at, event in events:
        if isinstance(event, ConfbridgeJoin):
            present.add(event.channel)
        elif isinstance(event, ConfbridgeLeave) and event.channel in present:
            present.discard(event.channel)
            if not present and start <= at <= end:
                return True
    return False


@given(steps=timeline, policy=policies)
def test_every_leave_is_followed_by_a_rekey_without_the_leaver(
    steps: list[tuple[float, bool, int]], policy: RekeyPolicy
) -> None:
    tracker = RosterTracker(policy)
    events = [(at, join(n) if is_join else leave(n)) for at, is_join, n in sorted(steps)]
    rekeys = replay(tracker, events, until=1000.0)
    present: set[str] = set()
    for at, event in events:
        channel = event.channel
        if isinstance(event, ConfbridgeJoin):
            present.add(channel)
            continue
        if channel not in present:
            continue
        present.discard(channel)
        if not present:
            continue
        bound = at + max(policy.leave_window, policy.min_interval) + 1e-9
        if emptied_between(events, at, bound):
            continue  # everyone else left before the rekey was due: nobody holds the key
        # A rekey by the bound that counts this leave and no longer keys the leaver
        # (unless it came back).  A rekey due at the very instant of the leave may still
        # key it (it was there when the rekey started); a later one in the bound must not.
        timely = [r for r in rekeys if at <= r.at <= bound and channel in r.left]
        assert timely, f"leave of {channel} at {at} not rekeyed by {bound}"

        def rejoined_by(who: str, since: float, when: float) -> bool:
            return any(
                isinstance(e, ConfbridgeJoin) and e.channel == who and since <= t <= when
                for t, e in events
            )

        assert any(channel not in r.channels or rejoined_by(channel, at, r.at) for r in timely), (
            f"every rekey after the leave of {channel} at {at} still keys it"
        )


@given(steps=timeline, policy=policies)
def test_rekeys_respect_min_interval_and_never_come_from_nothing(
    steps: list[tuple[float, bool, int]], policy: RekeyPolicy
) -> None:
    tracker = RosterTracker(policy)
    events = [(at, join(n) if is_join else leave(n)) for at, is_join, n in sorted(steps)]
    rekeys = replay(tracker, events, until=1000.0)
    for earlier, later in itertools.pairwise(rekeys):
        assert later.at - earlier.at >= policy.min_interval - 1e-9
    for rekey in rekeys:
        assert rekey.reasons
        assert rekey.first_change <= rekey.at
        assert len(rekey.members) >= 1
        if not policy.rekey_on_join:
            assert RekeyReason.LEAVE in rekey.reasons


# -- after a rekey: verdicts per leg and the removal policy ----------------------------

from secconf.core.roster import (  # noqa: E402
    FailurePolicy,
    LegObservation,
    LegVerdict,
    judge_leg,
    leg_settled,
    plan_after_rekey,
)


def _leg(channel: str = "PJSIP/kamailio-1", **kwargs: object) -> LegObservation:
    values: dict[str, object] = {"epoch": 2, "switch_state": "followed", "switch_epoch": 2}
    values.update(kwargs)
    return LegObservation(channel, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("observation", "verdict", "settled"),
    [
        (_leg(), LegVerdict.FOLLOWED, True),
        (_leg(switch_state="not-followed"), LegVerdict.NOT_FOLLOWED, True),
        (_leg(switch_state="unverified"), LegVerdict.UNVERIFIED, True),
        (_leg(switch_state="pending"), LegVerdict.UNVERIFIED, False),  # time ran out
        (_leg(epoch=1, switch_epoch=None, refused=True), LegVerdict.REFUSED, True),
        (_leg(epoch=1, switch_epoch=None), LegVerdict.NO_ANSWER, False),
        (_leg(epoch=None), LegVerdict.GONE, True),
        (_leg(present=False), LegVerdict.GONE, True),
        (_leg(epoch=3, switch_epoch=3), LegVerdict.UNVERIFIED, False),  # a later rekey took it
    ],
)
def test_each_leg_gets_one_verdict(
    observation: LegObservation, verdict: LegVerdict, settled: bool
) -> None:
    assert judge_leg(observation, 2) is verdict
    assert leg_settled(observation, 2) is settled


def test_legs_still_on_the_old_key_or_deaf_are_removed_unverified_ones_kept() -> None:
    outcome = plan_after_rekey(
        [
            _leg("A"),
            _leg("B", switch_state="unverified"),
            _leg("C", switch_state="not-followed"),
            _leg("D", epoch=1, refused=True),
            _leg("E", epoch=1),
            _leg("F", present=False),
        ],
        2,
    )
    assert outcome.remove == ("C", "D", "E")
    assert not outcome.complete
    strict = plan_after_rekey([_leg("A"), _leg("B", switch_state="unverified")], 2,
                              accept_unverified=False)  # fmt: skip
    assert strict.remove == ("B",)
    assert plan_after_rekey([_leg("A"), _leg("F", present=False)], 2).complete


def test_replace_acts_on_the_same_legs_as_remove() -> None:
    legs = [_leg("A"), _leg("B", switch_state="not-followed"), _leg("C", epoch=1, refused=True)]
    remove = plan_after_rekey(legs, 2, policy=FailurePolicy.REMOVE)
    replace = plan_after_rekey(legs, 2, policy=FailurePolicy.REPLACE)
    assert replace.remove == remove.remove == ("B", "C")
    with pytest.raises(ProtocolError):
        plan_after_rekey(legs, 2, policy="other")  # type: ignore[arg-type]


def test_a_quiet_replacement_leaves_and_joins_without_a_rekey() -> None:
    tracker = RosterTracker(RekeyPolicy(debounce=1.0))
    for event in (
        ConfbridgeStart("c"),
        ConfbridgeJoin("c", "PJSIP/a", "u-a", "alice"),
        ConfbridgeJoin("c", "PJSIP/b", "u-b", "bob"),
    ):
        tracker.handle(event, 0.0)
    assert [r.conference for r in tracker.poll(5.0)] == ["c"]  # bob's join
    tracker.quiet("c", "PJSIP/b")
    tracker.quiet("c", "u-b2")
    tracker.handle(ConfbridgeLeave("c", "PJSIP/b", "u-b", "bob"), 10.0)
    tracker.handle(ConfbridgeJoin("c", "PJSIP/b2", "u-b2", "bob"), 10.5)
    assert tracker.next_deadline() is None
    assert {m.channel for m in tracker.members("c")} == {"PJSIP/a", "PJSIP/b2"}
    # Only once: the next leave of that member is a departure again.
    tracker.handle(ConfbridgeLeave("c", "PJSIP/b2", "u-b2", "bob"), 20.0)
    assert tracker.next_deadline() == 21.0


@given(
    st.lists(
        st.builds(
            LegObservation,
            channel=st.text("abc", min_size=1, max_size=3),
            epoch=st.none() | st.integers(0, 4),
            switch_state=st.sampled_from(
                ["none", "pending", "followed", "not-followed", "unverified"]
            ),
            switch_epoch=st.none() | st.integers(0, 4),
            refused=st.booleans(),
            present=st.booleans(),
        ),
        max_size=6,
    ),
    st.integers(1, 4),
)
def test_no_present_leg_below_the_new_epoch_is_ever_kept(
    observations: list[LegObservation], epoch: int
) -> None:
    outcome = plan_after_rekey(observations, epoch)
    last = {o.channel: o for o in observations}  # the plan keys by channel: the last one wins
    for channel, observation in last.items():
        below = observation.present and observation.epoch is not None and observation.epoch < epoch
        if below:
            assert channel in outcome.remove
        if not observation.present or observation.epoch is None:
            assert channel not in outcome.remove
