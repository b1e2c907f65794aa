"""The media edge's sans-IO core: epochs, grace, SSRC registry, switch verification."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.edge import (
    MAX_SUITES_PER_EPOCH,
    ConferenceState,
    Direction,
    EdgeConflict,
    EdgeNotFound,
    EpochDestroyed,
    LegMode,
    RxEpochsChanged,
    SsrcRegistry,
    SwitchCheck,
    SwitchState,
    SwitchVerdict,
    VerifyPolicy,
    srtcp_index,
)
from secconf.core.rtp import ReportBlock

POLICY = VerifyPolicy(settle=0.5, deadline=5.0, min_packets=10, loss_fraction=0.5)


def counter(start: int = 1) -> object:
    values = iter(range(start, 1 << 32))
    return lambda: next(values)


def block(ssrc: int, highest: int, lost: int = 0) -> ReportBlock:
    return ReportBlock(ssrc, 0, lost, highest, 0, 0, 0)


def conference(grace: float = 2.0) -> ConferenceState:
    state = ConferenceState("c", grace=grace, policy=POLICY)
    state.add_epoch(1, "AES_CM_128_HMAC_SHA1_80", "fp1", 0.0)
    return state


def test_epochs_only_move_forward_and_put_is_idempotent() -> None:
    state = conference()
    assert state.add_epoch(1, "AES_CM_128_HMAC_SHA1_80", "fp1", 1.0) is False
    with pytest.raises(EdgeConflict):
        state.add_epoch(1, "AES_CM_128_HMAC_SHA1_80", "other", 1.0)
    assert state.add_epoch(3, "AES_CM_128_HMAC_SHA1_80", "fp3", 1.0)
    with pytest.raises(EdgeConflict):
        state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 1.0)


def test_leg_needs_an_epoch_and_switch_never_goes_back() -> None:
    empty = ConferenceState("c", grace=1.0, policy=POLICY)
    with pytest.raises(EdgeConflict):
        empty.add_leg("a", LegMode.SDES, 0.0, counter())
    state = conference()
    state.add_leg("a", LegMode.KMS, 0.0, counter())
    state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 1.0)
    with pytest.raises(EdgeNotFound):
        state.switch("a", 7, 1.0, seq=1, sent_total=1)
    assert state.switch("a", 2, 1.0, seq=1, sent_total=1)
    assert not state.switch("a", 2, 1.1, seq=1, sent_total=1)
    with pytest.raises(EdgeConflict):
        state.switch("a", 1, 1.2, seq=1, sent_total=1)


def test_inbound_tries_newest_first_and_falls_back_only_within_grace() -> None:
    state = conference(grace=2.0)
    state.add_leg("a", LegMode.KMS, 0.0, counter())
    state.add_leg("b", LegMode.KMS, 0.0, counter(100))
    state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 1.0)
    assert state.rx_epochs("a") == (2, 1)  # the participant may switch first
    state.switch("a", 2, 10.0, seq=5, sent_total=5)
    assert state.rx_epochs("a") == (2, 1)
    assert state.tick(11.9, {}) == []
    actions = state.tick(12.0, {})
    assert RxEpochsChanged("c", "a") in actions
    assert state.rx_epochs("a") == (2,)
    assert state.rx_epochs("b") == (2, 1)  # b still on epoch 1


def test_old_epoch_destroyed_one_grace_after_its_last_user_left() -> None:
    state = conference(grace=2.0)
    state.add_leg("a", LegMode.SDES, 0.0, counter())
    state.add_leg("b", LegMode.SDES, 0.0, counter(100))
    state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 1.0)
    state.switch("a", 2, 5.0, seq=1, sent_total=0)
    assert not any(isinstance(a, EpochDestroyed) for a in state.tick(100.0, {}))  # b uses 1
    state.remove_leg("b", 101.0)
    assert state.retire_at(1) == 103.0
    assert not any(isinstance(a, EpochDestroyed) for a in state.tick(102.9, {}))
    assert EpochDestroyed("c", 1) in state.tick(103.0, {})
    assert list(state.epochs) == [2]
    with pytest.raises(EdgeConflict):
        state.drop_epoch(2)  # newest


def test_declared_ssrc_collision_refuses_the_leg_without_recording_it() -> None:
    state = conference()
    leg = state.add_leg("a", LegMode.SDES, 0.0, counter(), participant_ssrcs=[42])
    for taken in (42, leg.out_ssrc):
        with pytest.raises(EdgeConflict):
            state.add_leg("b", LegMode.SDES, 1.0, counter(500), participant_ssrcs=[7, taken])
        assert "b" not in state.legs
        assert state.ssrcs.owner(7) is None
    assert state.ssrcs.collisions[-1].owner_direction is Direction.OUTBOUND


def test_departed_ssrcs_stay_reserved_while_their_epoch_lives() -> None:
    state = conference(grace=1.0)
    leg = state.add_leg("a", LegMode.KMS, 0.0, counter())
    assert state.on_inbound_ssrc("a", 77, 0.1) is None
    state.remove_leg("a", 1.0)
    # a newcomer under the same key may not reuse either SSRC (same keystream)
    state.add_leg("b", LegMode.KMS, 2.0, counter(500))
    assert state.on_inbound_ssrc("b", 77, 2.1) is not None
    assert not state.ssrcs.is_free(leg.out_ssrc)
    state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 3.0)
    state.switch("b", 2, 3.0, seq=None, sent_total=0)
    state.tick(10.0, {})
    assert 1 not in state.epochs
    assert state.ssrcs.is_free(77)
    assert state.ssrcs.is_free(leg.out_ssrc)


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 7)), max_size=40))
def test_registry_never_hands_out_a_live_or_retired_ssrc(ops: list[tuple[str, int]]) -> None:
    registry = SsrcRegistry()
    draws = random.Random(0)
    # a tiny SSRC space makes collisions certain
    rand = lambda: draws.randrange(16)  # noqa: E731
    given_out: set[int] = set()
    for leg, action in ops:
        if action < 4:
            try:
                ssrc = registry.allocate(leg, rand, 0.0)
            except EdgeConflict:
                continue
            assert ssrc not in given_out
            given_out.add(ssrc)
        elif action < 6:
            registry.release_leg(leg, 1)
        else:
            claimed = registry.claim(action + 100, leg, Direction.INBOUND, 0.0)
            owner = registry.owner(action + 100)
            if claimed is None:
                assert owner == (leg, Direction.INBOUND)
            else:
                assert claimed.owner_leg == owner[0] if owner else False
    live = registry.live()
    assert len(live) == len(set(live))


@given(st.integers(0, 0xFFFF), st.integers(1, 0x7FFF))
def test_reports_past_the_switch_point_mean_followed(seq: int, advance: int) -> None:
    check = SwitchCheck(2, 0.0, seq, 100, POLICY, baseline_lost=0)
    assert check.on_report(block(1, (seq + advance) & 0xFFFF), 1.0, 200)
    assert check.state is SwitchState.FOLLOWED


@given(st.integers(0, 0xFFFF), st.integers(0x8000, 0x10000))
def test_reports_stuck_at_or_before_the_switch_mean_not_followed(seq: int, back: int) -> None:
    check = SwitchCheck(2, 0.0, seq, 100, POLICY, baseline_lost=0)
    assert check.on_report(block(1, (seq + back) & 0xFFFF | 0x10000), 1.0, 200)
    assert (check.state, check.reason) == (SwitchState.NOT_FOLLOWED, "stalled")


def test_switch_check_waits_for_settle_and_enough_packets_then_deadline() -> None:
    check = SwitchCheck(2, 10.0, 500, 100, POLICY, baseline_lost=3)
    assert not check.on_report(block(1, 500), 10.2, 200)  # before settle: may predate switch
    assert not check.on_report(block(1, 500), 11.0, 105)  # too few packets sent since
    assert check.state is SwitchState.PENDING
    assert check.on_report(block(1, 600, lost=60), 11.0, 200)  # lost grew by > half
    assert check.reason == "loss-jump"
    late = SwitchCheck(2, 10.0, 500, 100, POLICY)
    assert not late.expire(14.9, 500)
    assert late.expire(15.0, 500)
    assert (late.state, late.reason) == (
        SwitchState.UNVERIFIED,
        "no-report",
    )


def test_conference_reports_verdicts_and_old_inbound() -> None:
    state = conference()
    leg = state.add_leg("a", LegMode.KMS, 0.0, counter())
    state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 1.0)
    state.switch("a", 2, 1.0, seq=10, sent_total=10)
    assert state.on_report("a", block(leg.out_ssrc + 1, 11), 2.0, 100) == []  # other SSRC
    verdicts = []
    for _ in range(POLICY.min_packets):
        verdicts += state.on_old_inbound("a", 2.0)
    assert verdicts == [SwitchVerdict("c", "a", 2, SwitchState.NOT_FOLLOWED, "inbound-old-epoch")]


def test_srtcp_restart_tolerated_once_per_key_change_within_the_window() -> None:
    state = conference()
    state.add_leg("a", LegMode.SDES, 0.0, counter())
    assert not state.allow_srtcp_restart("a", 0.5)  # no key change: a replay
    state.add_epoch(2, "AES_CM_128_HMAC_SHA1_80", "fp2", 1.0)
    state.switch("a", 2, 1.0, seq=None, sent_total=0)
    assert state.allow_srtcp_restart("a", 2.0)
    assert not state.allow_srtcp_restart("a", 2.1)  # once
    state.participant_rekeyed("a", 20.0)
    assert not state.allow_srtcp_restart("a", 31.0)  # window over


def test_srtcp_index_read_from_the_trailer() -> None:
    body = b"\x80\xc9\x00\x01" + b"\x00" * 4 + b"payload!"
    cm = body + (0x80000000 | 1234).to_bytes(4, "big") + b"T" * 10
    gcm = body + b"T" * 16 + (0x80000000 | 99).to_bytes(4, "big")
    assert srtcp_index(cm, "AES_CM_128_HMAC_SHA1_80") == 1234
    assert srtcp_index(gcm, "AEAD_AES_128_GCM") == 99
    assert srtcp_index(b"\x80", "AES_CM_128_HMAC_SHA1_80") is None
    assert srtcp_index(cm, "NO_SUCH_SUITE") is None


def test_discarded_leg_frees_its_ssrcs() -> None:
    state = conference()
    leg = state.add_leg("a", LegMode.SDES, 0.0, counter(), participant_ssrcs=[5])
    state.discard_leg("a")
    assert state.ssrcs.is_free(5)
    assert state.ssrcs.is_free(leg.out_ssrc)


CM_256 = "AES_256_CM_HMAC_SHA1_80"


def test_an_epoch_holds_one_key_per_suite_and_legs_use_their_own() -> None:
    """Per-leg suites (docs/mikey-decisions.md #30): one epoch number, a key per suite."""
    state = conference()
    assert state.check_epoch(1, CM_256, "fp1-256") is True
    assert state.epochs[1].suites == ("AES_CM_128_HMAC_SHA1_80",)  # a check changes nothing
    assert state.add_epoch(1, CM_256, "fp1-256", 1.0)
    assert state.add_epoch(1, CM_256, "fp1-256", 1.0) is False
    with pytest.raises(EdgeConflict):
        state.add_epoch(1, CM_256, "another", 1.0)
    assert state.epochs[1].fingerprint_for(CM_256) == "fp1-256"
    assert state.epochs[1].fingerprint == "fp1"  # the first key stays the epoch's first
    with pytest.raises(EdgeNotFound):
        state.add_leg("x", LegMode.KMS, 1.0, counter(), suite="AES_256_CM_HMAC_SHA1_32")
    assert "x" not in state.legs
    old = state.add_leg("a", LegMode.KMS, 1.0, counter(10))
    new = state.add_leg("b", LegMode.KMS, 1.0, counter(20), suite=CM_256)
    assert (old.suite, new.suite) == ("AES_CM_128_HMAC_SHA1_80", CM_256)
    state.add_epoch(2, CM_256, "fp2-256", 2.0)
    # epoch 2 has no key in leg a's suite: no switch, and a's inbound list ignores it
    with pytest.raises(EdgeNotFound):
        state.switch("a", 2, 2.0, seq=None, sent_total=0)
    assert state.legs["a"].tx_epoch == 1
    assert state.rx_epochs("a") == (1,)
    assert state.rx_epochs("b") == (2, 1)
    assert state.switch("b", 2, 2.0, seq=None, sent_total=0)


def test_an_epoch_holds_a_bounded_number_of_suites() -> None:
    state = conference()
    for index in range(MAX_SUITES_PER_EPOCH - 1):
        state.add_epoch(1, f"S{index}", f"fp{index}", 1.0)
    with pytest.raises(EdgeConflict):
        state.add_epoch(1, "one-too-many", "fp", 1.0)
    assert len(state.epochs[1].keys) == MAX_SUITES_PER_EPOCH
