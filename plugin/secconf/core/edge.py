"""The media edge's decisions, sans-IO: conference key epochs, legs, SSRCs, switch verification.

The asyncio relay (:mod:`secconf.media`) owns sockets, pylibsrtp sessions and
key bytes; this module owns what the edge *decides* and knows no key at all
(epochs are named by number and fingerprint).  Clock readings (``now``, in
seconds of any monotonic origin) and random sources are passed in.  Nothing
here reads a clock, draws randomness or does I/O (docs/edge.md).

Epochs (R6).  An epoch is one group key with a number.  A conference holds any
number of epochs while they are needed; in practice the current one and the
next.  A leg's *outbound* epoch (what the edge protects towards the
participant with) moves forward only, by :meth:`ConferenceState.switch`, at the
moment that leg's 200 OK passes (linphone switches its receive key exactly
then).  Inbound (KMS mode, where participants send under the group key) a leg
accepts every live epoch at or above its outbound epoch, newest first, and the
epoch it switched away from for ``grace`` seconds after the switch.  An epoch
older than the newest is destroyed once no leg sends with it any more and a
further ``grace`` has passed (:class:`EpochDestroyed`).

SSRCs (R4).  :class:`SsrcRegistry` knows every SSRC of a conference, in both
directions, and every SSRC used earlier under a still-live epoch: one group key
must never protect two streams with the same SSRC (RFC 3711 §3.3.1: the
keystream depends on key, SSRC and index only), so an SSRC that a departed leg
used stays reserved until every epoch it was used under is gone.

Switch verification.  A 200 OK proves nothing (baresip 1.0.0 answers the new
key and keeps decrypting with the old one, DESIGN.md §2).  After a switch,
:class:`SwitchCheck` reads the leg's RTCP report blocks about the edge's
outbound SSRC: the extended highest sequence number received (RFC 3550 §6.4.1)
must move past the last packet sent under the old epoch; if it stalls, or the
cumulative loss jumps, the leg did not follow.  No report at all before the
deadline leaves the leg *unverified* (the rekey policy decides).  An SRTCP index
that restarts right after a key change (linphone does, under its unchanged
sending key) is tolerated once per change (:meth:`ConferenceState.allow_srtcp_restart`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .errors import ProtocolError
from .rtp import ReportBlock

__all__ = [
    "MAX_LEGS_PER_CONFERENCE",
    "MAX_SUITES_PER_EPOCH",
    "RELAYED_SUITES",
    "Action",
    "BadEdgeRequest",
    "ConferenceState",
    "Direction",
    "EdgeConflict",
    "EdgeNotFound",
    "EpochDestroyed",
    "EpochInfo",
    "LegMode",
    "LegState",
    "RxEpochsChanged",
    "SsrcCollision",
    "SsrcRegistry",
    "SwitchCheck",
    "SwitchState",
    "SwitchVerdict",
    "VerifyPolicy",
    "srtcp_index",
]

#: More legs than a ConfBridge ever holds; bounds memory per conference.
MAX_LEGS_PER_CONFERENCE = 1024
MAX_SUITES_PER_EPOCH = 8  # one key per SRTP suite the edge relays (a bound, not a policy)
#: Attempts to draw an unused SSRC before giving up (each fails with p < 2^-22).
_SSRC_DRAWS = 64
_SEQ_HALF = 0x8000


class BadEdgeRequest(ProtocolError):
    """A control request with a bad value (HTTP 400)."""

    status_code = 400
    reason = "Bad Request"


class EdgeNotFound(ProtocolError):
    """No such conference, leg or epoch (HTTP 404)."""

    status_code = 404
    reason = "Not Found"


class EdgeConflict(ProtocolError):
    """The request contradicts the edge's state: duplicate SSRC, older epoch, ... (HTTP 409)."""

    status_code = 409
    reason = "Conflict"


class LegMode(enum.Enum):
    """How a participant sends: with its own SDES key, or with the group key (MIKEY-TICKET)."""

    SDES = "sdes"
    KMS = "kms"


class Direction(enum.Enum):
    """Direction of a stream, seen from the participant's side of the edge."""

    INBOUND = "inbound"  # participant -> edge (the participant's SSRC)
    OUTBOUND = "outbound"  # edge -> participant (an SSRC the edge chose)


class SwitchState(enum.Enum):
    NONE = "none"  # the leg never switched
    PENDING = "pending"
    FOLLOWED = "followed"
    NOT_FOLLOWED = "not-followed"
    UNVERIFIED = "unverified"  # deadline passed without a usable report


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    """Thresholds of switch verification, in seconds and packets."""

    settle: float = 0.5  # reports arriving sooner may predate the switch: ignored
    deadline: float = 12.0  # no usable report by then -> UNVERIFIED (RTCP: 5 s x 0.5..1.5)
    min_packets: int = 10  # sent under the new epoch before a report can prove anything
    loss_fraction: float = 0.5  # cumulative loss growth (share of packets sent) -> not followed
    srtcp_restart_window: float = 10.0  # an SRTCP index restart is tolerated this long

    def __post_init__(self) -> None:
        for name in ("settle", "deadline", "srtcp_restart_window"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < 86400):
                raise BadEdgeRequest(f"{name} must be 0..86400 seconds")
        if not 1 <= self.min_packets <= 1_000_000:
            raise BadEdgeRequest("min_packets must be 1..1000000")
        if not 0 < self.loss_fraction <= 1:
            raise BadEdgeRequest("loss_fraction must be in (0, 1]")


# -- actions (what the adapter must do) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochDestroyed:
    """Drop every session of this epoch and forget its key bytes."""

    conference: str
    epoch: int


@dataclass(frozen=True, slots=True)
class RxEpochsChanged:
    """The set of epochs a leg accepts inbound shrank: rebuild its receive list."""

    conference: str
    leg: str


@dataclass(frozen=True, slots=True)
class SwitchVerdict:
    """Switch verification of a leg came to a conclusion (report it to the rekey logic)."""

    conference: str
    leg: str
    epoch: int
    state: SwitchState
    reason: str


Action = EpochDestroyed | RxEpochsChanged | SwitchVerdict


# -- SSRC registry --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SsrcCollision:
    """An SSRC claimed twice in one conference (R4): the second claimant was refused."""

    ssrc: int
    leg: str
    direction: Direction
    owner_leg: str
    owner_direction: Direction
    at: float

    def as_dict(self) -> dict[str, object]:
        return {
            "ssrc": self.ssrc,
            "leg": self.leg,
            "direction": self.direction.value,
            "owner_leg": self.owner_leg,
            "owner_direction": self.owner_direction.value,
            "at": self.at,
        }


class SsrcRegistry:
    """Every SSRC of one conference: live owners, plus retired ones still under a live key.

    A retired SSRC remembers the newest epoch that was live when it was
    released; it is forgotten once that epoch is destroyed.
    """

    __slots__ = ("_live", "_retired", "collisions")

    MAX_COLLISIONS = 64  # kept for reports; older ones are dropped

    def __init__(self) -> None:
        self._live: dict[int, tuple[str, Direction]] = {}
        self._retired: dict[int, tuple[str, Direction, int]] = {}
        self.collisions: list[SsrcCollision] = []

    def owner(self, ssrc: int) -> tuple[str, Direction] | None:
        live = self._live.get(ssrc)
        if live is not None:
            return live
        retired = self._retired.get(ssrc)
        return None if retired is None else (retired[0], retired[1])

    def is_free(self, ssrc: int) -> bool:
        return ssrc not in self._live and ssrc not in self._retired

    def claim(self, ssrc: int, leg: str, direction: Direction, now: float) -> SsrcCollision | None:
        """Record *leg*'s use of *ssrc*; a collision (nothing recorded) if anyone else has it."""
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise BadEdgeRequest("SSRC must be 0..2^32-1")
        owner = self.owner(ssrc)
        if owner is None:
            self._live[ssrc] = (leg, direction)
            return None
        if owner == (leg, direction) and ssrc in self._live:
            return None
        collision = SsrcCollision(ssrc, leg, direction, owner[0], owner[1], now)
        self.collisions.append(collision)
        del self.collisions[: -self.MAX_COLLISIONS]
        return collision

    def allocate(self, leg: str, random_u32: Callable[[], int], now: float) -> int:
        """A fresh outbound SSRC for *leg*, unused in this conference, from *random_u32*."""
        for _ in range(_SSRC_DRAWS):
            ssrc = random_u32() & 0xFFFFFFFF
            if self.is_free(ssrc):
                self._live[ssrc] = (leg, Direction.OUTBOUND)
                return ssrc
        raise EdgeConflict("no unused SSRC found (random source broken?)")

    def release(self, ssrc: int, newest_epoch: int) -> None:
        """*ssrc* is no longer sent; keep it reserved while *newest_epoch* (or older) lives."""
        owner = self._live.pop(ssrc, None)
        if owner is not None:
            self._retired[ssrc] = (owner[0], owner[1], newest_epoch)

    def release_leg(self, leg: str, newest_epoch: int) -> list[int]:
        mine = [ssrc for ssrc, owner in self._live.items() if owner[0] == leg]
        for ssrc in mine:
            self.release(ssrc, newest_epoch)
        return mine

    def forget_leg(self, leg: str) -> None:
        """Undo every claim of *leg* without retiring them (it never sent or received)."""
        for ssrc in [s for s, owner in self._live.items() if owner[0] == leg]:
            del self._live[ssrc]

    def live(self) -> dict[int, tuple[str, Direction]]:
        return dict(self._live)

    def forget_before(self, oldest_live_epoch: int) -> None:
        """Retired SSRCs last used under epochs all older than *oldest_live_epoch* are free."""
        for ssrc in [s for s, r in self._retired.items() if r[2] < oldest_live_epoch]:
            del self._retired[ssrc]

    def of_leg(self, leg: str) -> dict[int, Direction]:
        return {ssrc: owner[1] for ssrc, owner in self._live.items() if owner[0] == leg}

    def retired(self) -> dict[int, tuple[str, Direction, int]]:
        return dict(self._retired)

    def restore_retired(self, ssrc: int, leg: str, direction: Direction, epoch: int) -> None:
        """Re-create a retired entry read back from storage (restart)."""
        if ssrc not in self._live:
            self._retired[ssrc] = (leg, direction, epoch)

    def __len__(self) -> int:
        return len(self._live) + len(self._retired)


# -- switch verification ----------------------------------------------------------------------


class SwitchCheck:
    """Did the leg's receiver follow an outbound key switch?  Fed by its report blocks.

    *seq_at_switch* is the (16-bit) sequence number of the last packet sent
    under the old epoch; *sent_at_switch* the leg's outbound packet count then.
    *baseline_lost* is the cumulative loss of the last report before the switch.
    """

    __slots__ = (
        "baseline_lost",
        "decided_at",
        "epoch",
        "old_inbound",
        "policy",
        "reason",
        "reports",
        "sent_at_switch",
        "seq_at_switch",
        "started_at",
        "state",
    )

    def __init__(
        self,
        epoch: int,
        started_at: float,
        seq_at_switch: int | None,
        sent_at_switch: int,
        policy: VerifyPolicy,
        baseline_lost: int | None = None,
    ) -> None:
        self.epoch = epoch
        self.started_at = started_at
        self.seq_at_switch = seq_at_switch
        self.sent_at_switch = sent_at_switch
        self.policy = policy
        self.baseline_lost = baseline_lost
        self.state = SwitchState.PENDING
        self.reason = ""
        self.decided_at: float | None = None
        self.reports = 0
        self.old_inbound = 0

    def _decide(self, state: SwitchState, reason: str, now: float) -> bool:
        self.state, self.reason, self.decided_at = state, reason, now
        return True

    def on_report(self, block: ReportBlock, now: float, sent_total: int) -> bool:
        """One report block about the edge's outbound SSRC; True when the state changed."""
        if self.state is not SwitchState.PENDING or now < self.started_at + self.policy.settle:
            return False
        sent_since = sent_total - self.sent_at_switch
        if sent_since < self.policy.min_packets:
            return False
        self.reports += 1
        if self.baseline_lost is not None:
            grown = block.cumulative_lost - self.baseline_lost
            if grown >= max(self.policy.min_packets, self.policy.loss_fraction * sent_since):
                return self._decide(SwitchState.NOT_FOLLOWED, "loss-jump", now)
        if self.seq_at_switch is None:
            # Nothing was sent before the switch: any report after it shows reception.
            return self._decide(SwitchState.FOLLOWED, "receiving", now)
        advance = (block.highest_sequence - self.seq_at_switch) & 0xFFFF
        if 0 < advance < _SEQ_HALF:
            return self._decide(SwitchState.FOLLOWED, "receiving", now)
        return self._decide(SwitchState.NOT_FOLLOWED, "stalled", now)

    def on_old_inbound(self, now: float) -> bool:
        """KMS mode: the participant still sends under the epoch the leg switched away from."""
        if self.state is not SwitchState.PENDING or now < self.started_at + self.policy.settle:
            return False
        self.old_inbound += 1
        if self.old_inbound >= self.policy.min_packets:
            return self._decide(SwitchState.NOT_FOLLOWED, "inbound-old-epoch", now)
        return False

    def expire(self, now: float, sent_total: int) -> bool:
        if self.state is not SwitchState.PENDING or now < self.started_at + self.policy.deadline:
            return False
        if sent_total - self.sent_at_switch < self.policy.min_packets:
            return self._decide(SwitchState.UNVERIFIED, "nothing-sent", now)
        return self._decide(SwitchState.UNVERIFIED, "no-report", now)

    @property
    def deadline(self) -> float:
        return self.started_at + self.policy.deadline


# -- conference state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochInfo:
    """What the core knows of an epoch: never the key.

    *keys*: (suite, fingerprint) of each key the epoch holds, first added
    first.  Legs of different SRTP suites share the epoch (its number, its
    switch and retirement) but not the key bytes: one key per suite in use
    (docs/mikey-decisions.md #30).
    """

    number: int
    keys: tuple[tuple[str, str], ...]
    added_at: float

    @property
    def suite(self) -> str:  # the first key's: the conference's creation suite
        return self.keys[0][0]

    @property
    def fingerprint(self) -> str:
        return self.keys[0][1]

    @property
    def suites(self) -> tuple[str, ...]:
        return tuple(suite for suite, _ in self.keys)

    def fingerprint_for(self, suite: str) -> str | None:
        return next((fp for each, fp in self.keys if each == suite), None)

    def with_key(self, suite: str, fingerprint: str) -> EpochInfo:
        return EpochInfo(self.number, (*self.keys, (suite, fingerprint)), self.added_at)


@dataclass(slots=True)
class LegState:
    leg_id: str
    mode: LegMode
    out_ssrc: int
    tx_epoch: int  # epoch the edge protects towards this participant with
    joined_epoch: int
    created_at: float
    suite: str  # the participant side's SRTP suite: the leg uses the epochs' keys in it
    previous_tx_epoch: int | None = None
    switched_at: float | None = None
    fallback_open: bool = False  # previous_tx_epoch still accepted inbound
    check: SwitchCheck | None = None
    last_lost: int | None = None  # cumulative loss in the last report about out_ssrc
    last_highest: int | None = None
    srtcp_restart_until: float | None = None
    srtcp_restarts: int = 0
    switches: int = 0

    @property
    def switch_state(self) -> SwitchState:
        return SwitchState.NONE if self.check is None else self.check.state


class ConferenceState:
    """Epochs, legs and SSRCs of one conference; events in, :data:`Action` lists out."""

    __slots__ = (
        "_released_at",
        "conference_id",
        "epochs",
        "grace",
        "legs",
        "policy",
        "ssrcs",
    )

    def __init__(self, conference_id: str, *, grace: float, policy: VerifyPolicy) -> None:
        if not 0 <= grace <= 3600:
            raise BadEdgeRequest("grace must be 0..3600 seconds")
        self.conference_id = conference_id
        self.grace = grace
        self.policy = policy
        self.epochs: dict[int, EpochInfo] = {}
        self.legs: dict[str, LegState] = {}
        self.ssrcs = SsrcRegistry()
        # epoch -> when its last outbound user left (or it was superseded unused)
        self._released_at: dict[int, float] = {}

    # -- epochs --

    @property
    def newest_epoch(self) -> int | None:
        return max(self.epochs) if self.epochs else None

    def check_epoch(self, number: int, suite: str, fingerprint: str) -> bool:
        """Would :meth:`add_epoch` change anything?  Raises what it would raise; no change."""
        if not 0 <= number <= 0xFFFFFFFF:
            raise BadEdgeRequest("epoch must be 0..2^32-1")
        known = self.epochs.get(number)
        if known is not None:
            held = known.fingerprint_for(suite)
            if held == fingerprint:
                return False
            if held is not None:
                raise EdgeConflict(f"epoch {number} already holds another {suite} key")
            if len(known.keys) >= MAX_SUITES_PER_EPOCH:
                raise EdgeConflict(f"epoch {number} already holds {len(known.keys)} suites")
            return True
        newest = self.newest_epoch
        if newest is not None and number < newest:
            raise EdgeConflict(f"epoch {number} is older than epoch {newest}")
        return True

    def add_epoch(self, number: int, suite: str, fingerprint: str, now: float) -> bool:
        """Add epoch *number*'s key in *suite*; False if that key is already there (idempotent).

        Refused: a new number below the newest, another key under a known
        (number, suite).  A known number takes a key in a further suite (#30).
        """
        if not self.check_epoch(number, suite, fingerprint):
            return False
        known = self.epochs.get(number)
        if known is not None:
            self.epochs[number] = known.with_key(suite, fingerprint)
            return True
        newest = self.newest_epoch
        if newest is not None and not self._users(newest):
            self._released_at.setdefault(newest, now)
        self.epochs[number] = EpochInfo(number, ((suite, fingerprint),), now)
        return True

    def restore_epoch(self, info: EpochInfo) -> None:
        self.epochs[info.number] = info

    def restored(self, now: float) -> None:
        """After a restart: epochs older than the newest that no leg uses retire after grace."""
        newest = self.newest_epoch
        for epoch in self.epochs:
            if epoch != newest and not self._users(epoch):
                self._released_at.setdefault(epoch, now)

    def _users(self, epoch: int) -> list[str]:
        return [leg.leg_id for leg in self.legs.values() if leg.tx_epoch == epoch]

    def epoch_users(self, epoch: int) -> list[str]:
        """Legs the edge still protects towards with *epoch*."""
        return self._users(epoch)

    def retire_at(self, epoch: int) -> float | None:
        """When *epoch* will be destroyed (None: in use, or the newest)."""
        released = self._released_at.get(epoch)
        if released is None or epoch == self.newest_epoch or self._users(epoch):
            return None
        return released + self.grace

    def drop_epoch(self, epoch: int) -> list[Action]:
        """Destroy *epoch* now (operator/rekey logic), refused while a leg sends with it."""
        if epoch not in self.epochs:
            raise EdgeNotFound(f"no epoch {epoch} in this conference")
        users = self._users(epoch)
        if users:
            raise EdgeConflict(f"epoch {epoch} still protects {len(users)} leg(s)")
        if epoch == self.newest_epoch:
            raise EdgeConflict("the newest epoch cannot be dropped")
        return self._destroy(epoch)

    def _destroy(self, epoch: int) -> list[Action]:
        del self.epochs[epoch]
        self._released_at.pop(epoch, None)
        actions: list[Action] = [EpochDestroyed(self.conference_id, epoch)]
        for leg in self.legs.values():
            if leg.fallback_open and leg.previous_tx_epoch == epoch:
                leg.fallback_open = False
                actions.append(RxEpochsChanged(self.conference_id, leg.leg_id))
        if self.epochs:
            self.ssrcs.forget_before(min(self.epochs))
        return actions

    # -- legs --

    def add_leg(
        self,
        leg_id: str,
        mode: LegMode,
        now: float,
        random_u32: Callable[[], int],
        *,
        epoch: int | None = None,
        suite: str | None = None,
        participant_ssrcs: Iterable[int] = (),
    ) -> LegState:
        """A new leg sending under *epoch* (default: the newest) with a fresh outbound SSRC.

        *suite*: the leg's SRTP suite (default: the epoch's first); the epoch
        must hold a key in it.

        Declared participant SSRCs (``a=ssrc``) are claimed at once; any that
        is taken refuses the whole leg (409) and nothing is recorded.
        """
        if leg_id in self.legs:
            raise EdgeConflict("leg id already in use")
        if len(self.legs) >= MAX_LEGS_PER_CONFERENCE:
            raise EdgeConflict("conference is full")
        newest = self.newest_epoch
        if newest is None:
            raise EdgeConflict("the conference has no group key epoch yet")
        tx = newest if epoch is None else epoch
        info = self.epochs.get(tx)
        if info is None:
            raise EdgeNotFound(f"no epoch {tx} in this conference")
        suite = info.suite if suite is None else suite
        if info.fingerprint_for(suite) is None:
            raise EdgeNotFound(f"epoch {tx} holds no {suite} key")
        declared = list(dict.fromkeys(participant_ssrcs))
        for ssrc in declared:
            if not 0 <= ssrc <= 0xFFFFFFFF:
                raise BadEdgeRequest("SSRC must be 0..2^32-1")
            owner = self.ssrcs.owner(ssrc)
            if owner is not None:
                collision = SsrcCollision(ssrc, leg_id, Direction.INBOUND, *owner, now)
                self.ssrcs.collisions.append(collision)
                del self.ssrcs.collisions[: -SsrcRegistry.MAX_COLLISIONS]
                raise EdgeConflict(f"SSRC {ssrc} is already used in this conference")
        for ssrc in declared:
            self.ssrcs.claim(ssrc, leg_id, Direction.INBOUND, now)
        out = self.ssrcs.allocate(leg_id, random_u32, now)
        leg = LegState(leg_id, mode, out, tx, tx, now, suite)
        self.legs[leg_id] = leg
        self._released_at.pop(tx, None)
        return leg

    def restore_leg(self, leg: LegState) -> None:
        """Re-create a leg read back from storage (its SSRCs claimed by the caller)."""
        self.legs[leg.leg_id] = leg
        self._released_at.pop(leg.tx_epoch, None)

    def discard_leg(self, leg_id: str) -> None:
        """Undo :meth:`add_leg` of a leg that never carried media (e.g. persisting it failed)."""
        self.legs.pop(leg_id, None)
        self.ssrcs.forget_leg(leg_id)

    def leg(self, leg_id: str) -> LegState:
        leg = self.legs.get(leg_id)
        if leg is None:
            raise EdgeNotFound("no such leg")
        return leg

    def remove_leg(self, leg_id: str, now: float) -> LegState:
        """The participant left: the leg stops now; its SSRCs stay reserved under live keys."""
        leg = self.leg(leg_id)
        del self.legs[leg_id]
        self.ssrcs.release_leg(leg_id, self.newest_epoch or 0)
        self._note_release(leg.tx_epoch, now)
        return leg

    def reassign_ssrc(self, leg_id: str, now: float, random_u32: Callable[[], int]) -> int:
        """Give *leg* a new outbound SSRC (its old one stays reserved under live epochs)."""
        leg = self.leg(leg_id)
        self.ssrcs.release(leg.out_ssrc, self.newest_epoch or 0)
        leg.out_ssrc = self.ssrcs.allocate(leg_id, random_u32, now)
        leg.last_lost = leg.last_highest = None
        return leg.out_ssrc

    def _note_release(self, epoch: int, now: float) -> None:
        if epoch in self.epochs and not self._users(epoch):
            self._released_at[epoch] = now

    def switch(
        self, leg_id: str, epoch: int, now: float, *, seq: int | None, sent_total: int
    ) -> bool:
        """Protect towards *leg* under *epoch* from now on (its 200 OK passed).

        *seq*: last outbound RTP sequence number sent (None if none yet),
        *sent_total*: outbound packets so far.  False if the leg already uses
        *epoch*; an older epoch is refused (409).
        """
        leg = self.leg(leg_id)
        info = self.epochs.get(epoch)
        if info is None:
            raise EdgeNotFound(f"no epoch {epoch} in this conference")
        if info.fingerprint_for(leg.suite) is None:
            # A rekey delivers each leg its own suite's key: never switch a leg to
            # an epoch that has none in the leg's suite (#30).
            raise EdgeNotFound(f"epoch {epoch} holds no {leg.suite} key")
        if epoch == leg.tx_epoch:
            return False
        if epoch < leg.tx_epoch:
            raise EdgeConflict(f"leg already uses the newer epoch {leg.tx_epoch}")
        previous = leg.tx_epoch
        leg.previous_tx_epoch, leg.tx_epoch = previous, epoch
        leg.switched_at = now
        leg.fallback_open = True
        leg.switches += 1
        leg.check = SwitchCheck(epoch, now, seq, sent_total, self.policy, leg.last_lost)
        leg.srtcp_restart_until = now + self.policy.srtcp_restart_window
        self._released_at.pop(epoch, None)
        self._note_release(previous, now)
        return True

    def participant_rekeyed(self, leg_id: str, now: float) -> None:
        """SDES: the participant now sends with a new key (its SRTCP index may restart)."""
        self.leg(leg_id).srtcp_restart_until = now + self.policy.srtcp_restart_window

    def rx_epochs(self, leg_id: str) -> tuple[int, ...]:
        """Epochs *leg* accepts inbound (KMS mode), newest first (see module doc)."""
        leg = self.leg(leg_id)
        floor = leg.tx_epoch
        if leg.fallback_open and leg.previous_tx_epoch is not None:
            floor = leg.previous_tx_epoch
        floor = max(floor, leg.joined_epoch)
        usable = (e for e, info in self.epochs.items() if e >= floor and leg.suite in info.suites)
        return tuple(sorted(usable, reverse=True))

    # -- what the relay observes --

    def on_inbound_ssrc(self, leg_id: str, ssrc: int, now: float) -> SsrcCollision | None:
        """A participant's packet authenticated under a new SSRC; a collision refuses it."""
        self.leg(leg_id)
        return self.ssrcs.claim(ssrc, leg_id, Direction.INBOUND, now)

    def on_report(
        self, leg_id: str, block: ReportBlock, now: float, sent_total: int
    ) -> list[Action]:
        """A report block from the participant; only blocks about the leg's outbound SSRC count."""
        leg = self.leg(leg_id)
        if block.ssrc != leg.out_ssrc:
            return []
        actions: list[Action] = []
        if leg.check is not None and leg.check.on_report(block, now, sent_total):
            actions.append(self._verdict(leg))
        leg.last_lost = block.cumulative_lost
        leg.last_highest = block.highest_sequence
        return actions

    def on_old_inbound(self, leg_id: str, now: float) -> list[Action]:
        """A KMS-mode packet authenticated only under the epoch the leg switched away from."""
        leg = self.leg(leg_id)
        if leg.check is not None and leg.check.on_old_inbound(now):
            return [self._verdict(leg)]
        return []

    def allow_srtcp_restart(self, leg_id: str, now: float) -> bool:
        """An SRTCP packet failed the replay check with a lower index: may the session reset?

        Once per key change, within the window after it (linphone restarts its
        SRTCP index under an unchanged key on any key change).  Otherwise it is
        a replay.
        """
        leg = self.leg(leg_id)
        if leg.srtcp_restart_until is None or now > leg.srtcp_restart_until:
            return False
        leg.srtcp_restart_until = None
        leg.srtcp_restarts += 1
        return True

    def _verdict(self, leg: LegState) -> SwitchVerdict:
        check = leg.check
        if check is None:  # pragma: no cover - callers check
            raise EdgeNotFound("no switch to report on")
        return SwitchVerdict(self.conference_id, leg.leg_id, check.epoch, check.state, check.reason)

    # -- time --

    def tick(self, now: float, sent_totals: Mapping[str, int]) -> list[Action]:
        """Everything due at *now*: verdicts on deadline, closed fallbacks, destroyed epochs."""
        actions: list[Action] = []
        for leg in self.legs.values():
            if leg.check is not None and leg.check.expire(now, sent_totals.get(leg.leg_id, 0)):
                actions.append(self._verdict(leg))
            if (
                leg.fallback_open
                and leg.switched_at is not None
                and now >= leg.switched_at + self.grace
            ):
                leg.fallback_open = False
                actions.append(RxEpochsChanged(self.conference_id, leg.leg_id))
        for epoch in sorted(self.epochs):
            retire = self.retire_at(epoch)
            if retire is not None and now >= retire:
                actions.extend(self._destroy(epoch))
        return actions

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has something to do (None: nothing pending)."""
        times: list[float] = []
        for leg in self.legs.values():
            if leg.check is not None and leg.check.state is SwitchState.PENDING:
                times.append(leg.check.deadline)
            if leg.fallback_open and leg.switched_at is not None:
                times.append(leg.switched_at + self.grace)
        times.extend(t for t in map(self.retire_at, self.epochs) if t is not None)
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class _SrtcpLayout:
    tag: int
    index_after_tag: bool


# SRTCP trailer per suite: AES-CM puts E||index before the tag (RFC 3711 §3.4), AEAD
# after it (RFC 7714 §9); the SRTCP tag is 10 bytes for both HMAC-SHA1 suites.
_SRTCP: dict[str, _SrtcpLayout] = {
    "AES_CM_128_HMAC_SHA1_80": _SrtcpLayout(10, False),
    "AES_CM_128_HMAC_SHA1_32": _SrtcpLayout(10, False),
    "AES_256_CM_HMAC_SHA1_80": _SrtcpLayout(10, False),  # RFC 6188 Tables 3-4: SRTCP tag
    "AES_256_CM_HMAC_SHA1_32": _SrtcpLayout(10, False),  # 80 bits in both suites
    "AEAD_AES_128_GCM": _SrtcpLayout(16, True),
    "AEAD_AES_256_GCM": _SrtcpLayout(16, True),
}


#: The SRTP suites the edge relays on a participant's leg (it must read their SRTCP index).
RELAYED_SUITES: frozenset[str] = frozenset(_SRTCP)


def srtcp_index(packet: bytes, suite: str) -> int | None:
    """The 31-bit SRTCP index of a protected SRTCP packet (no MKI), or None if unreadable."""
    layout = _SRTCP.get(suite)
    if layout is None or len(packet) < 8 + 4 + layout.tag:
        return None
    end = len(packet) if layout.index_after_tag else len(packet) - layout.tag
    return int.from_bytes(packet[end - 4 : end], "big") & 0x7FFFFFFF
