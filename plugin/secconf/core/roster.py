"""Conference rosters from ConfBridge events, and when to rekey (R6), sans-IO.

Asterisk reports who is in which ConfBridge over AMI (``ConfbridgeStart``,
``ConfbridgeJoin``, ``ConfbridgeLeave``, ``ConfbridgeEnd``; ARI sees none of
them).  :class:`RosterTracker` takes those events, already parsed into the
dataclasses below, plus the current time, and returns what changed and when a
conference must be rekeyed.  It reads no clock, does no I/O and draws no
randomness: ``now`` (seconds, any monotonic origin) is passed in, and the
driver (:mod:`secconf.asterisk.roster`) asks :meth:`RosterTracker.poll` at
:meth:`RosterTracker.next_deadline`.

Rekey policy (:class:`RekeyPolicy`; docs/asterisk.md compares it with Jitsi and
Zoom):

* a **leave** always rekeys while anyone remains: the departed member knew
  the group key and must not read what is said after it left (forward
  secrecy towards it);
* a **join** rekeys unless ``rekey_on_join`` is off: the newcomer must not
  decrypt what was sent before it came, e.g. ciphertext it recorded earlier
  (backward secrecy);
* changes are **batched**: the first change not yet covered by a rekey opens a
  window; the rekey fires when the window closes, ``debounce`` seconds (2 s by
  default) after that first change (``leave_debounce`` when a leave is in the
  batch and that is sooner), and covers every change that came in meanwhile.
  The window is anchored at its first change and is *not* pushed back by later
  ones (unlike a trailing debounce, which a steady trickle of joins could
  postpone forever): no change waits longer than the window plus
  ``min_interval``;
* two rekeys of one conference are at least ``min_interval`` apart;
* with ``periodic`` set, a conference with members is rekeyed that long after
  its last rekey even if nobody came or went;
* the first member of an empty conference and the last one leaving cause no
  rekey (the conference's first key comes with its creation; nobody is left to
  protect).

A burst of joins spread over ``d`` seconds therefore costs at most
``ceil(d / debounce) + 1`` rekeys (30 joins in 3 s with the default 2 s: at
most 2).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import ProtocolError

__all__ = [
    "ConfbridgeEnd",
    "ConfbridgeJoin",
    "ConfbridgeLeave",
    "ConfbridgeStart",
    "ConferenceEnded",
    "ConferenceStarted",
    "Event",
    "FailurePolicy",
    "LegObservation",
    "LegVerdict",
    "Member",
    "MemberJoined",
    "MemberLeft",
    "Output",
    "Rekey",
    "RekeyOutcome",
    "RekeyPolicy",
    "RekeyReason",
    "RosterSnapshot",
    "RosterTracker",
    "event_from_ami",
    "judge_leg",
    "leg_settled",
    "plan_after_rekey",
    "replay",
]


# -- policy --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RekeyPolicy:
    """When roster changes turn into rekeys (all durations in seconds)."""

    #: Batch window opened by the first uncovered change.
    debounce: float = 2.0
    #: Window when the batch holds a leave (``None``: the same as ``debounce``).
    leave_debounce: float | None = None
    #: Whether a join alone causes a rekey.
    rekey_on_join: bool = True
    #: Least time between two rekeys of one conference.
    min_interval: float = 0.0
    #: Rekey a conference with members this long after its last rekey (``None``: never).
    periodic: float | None = None

    def __post_init__(self) -> None:
        for name in ("debounce", "min_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ProtocolError(f"rekey policy: {name} must be a finite number >= 0")
        for name in ("leave_debounce", "periodic"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ProtocolError(f"rekey policy: {name} must be a finite number >= 0")
        if self.periodic is not None and self.periodic <= 0:
            raise ProtocolError("rekey policy: periodic must be > 0")

    @property
    def leave_window(self) -> float:
        return self.debounce if self.leave_debounce is None else self.leave_debounce

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> RekeyPolicy:
        """From a TOML table (``[rekey]``); unknown keys are refused."""
        known = {"debounce", "leave_debounce", "rekey_on_join", "min_interval", "periodic"}
        unknown = set(data) - known
        if unknown:
            raise ProtocolError(f"rekey policy: unknown keys {sorted(unknown)}")
        values: dict[str, float | bool | None] = {}
        for name, value in data.items():
            if name == "rekey_on_join":
                if not isinstance(value, bool):
                    raise ProtocolError("rekey policy: rekey_on_join must be true or false")
                values[name] = value
            elif value is None:
                values[name] = None
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
            else:
                raise ProtocolError(f"rekey policy: {name} must be a number")
        return cls(**values)  # type: ignore[arg-type]


# -- events in -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfbridgeStart:
    conference: str


@dataclass(frozen=True, slots=True)
class ConfbridgeJoin:
    conference: str
    channel: str
    uniqueid: str = ""
    caller_id: str = ""


@dataclass(frozen=True, slots=True)
class ConfbridgeLeave:
    conference: str
    channel: str
    uniqueid: str = ""
    caller_id: str = ""


@dataclass(frozen=True, slots=True)
class ConfbridgeEnd:
    conference: str


@dataclass(frozen=True, slots=True)
class RosterSnapshot:
    """The whole membership of one conference as Asterisk lists it now (``ConfbridgeList``).

    Used after an AMI reconnect: joins and leaves missed while disconnected are
    derived from the difference, and a missed leave rekeys like a seen one.
    An empty snapshot means the conference is gone.
    """

    conference: str
    members: tuple[Member, ...]


Event = ConfbridgeStart | ConfbridgeJoin | ConfbridgeLeave | ConfbridgeEnd | RosterSnapshot


def _field(fields: Mapping[str, str], name: str) -> str:
    for key, value in fields.items():
        if key.lower() == name.lower():
            return value
    return ""


def event_from_ami(fields: Mapping[str, str]) -> Event | None:
    """An AMI event (header name → value) as a roster event; ``None`` if not one.

    Header names are matched without regard to case (AMI is not consistent).
    A Confbridge event without a conference, or a join/leave without a
    channel, is malformed (:class:`ProtocolError`).
    """
    name = _field(fields, "Event")
    if name not in ("ConfbridgeStart", "ConfbridgeJoin", "ConfbridgeLeave", "ConfbridgeEnd"):
        return None
    conference = _field(fields, "Conference")
    if not conference:
        raise ProtocolError(f"{name} without a Conference")
    if name == "ConfbridgeStart":
        return ConfbridgeStart(conference)
    if name == "ConfbridgeEnd":
        return ConfbridgeEnd(conference)
    channel = _field(fields, "Channel")
    if not channel:
        raise ProtocolError(f"{name} without a Channel")
    uniqueid = _field(fields, "Uniqueid")
    caller_id = _field(fields, "CallerIDNum")
    if name == "ConfbridgeJoin":
        return ConfbridgeJoin(conference, channel, uniqueid, caller_id)
    return ConfbridgeLeave(conference, channel, uniqueid, caller_id)


# -- outputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One channel in a ConfBridge."""

    channel: str
    uniqueid: str = ""
    caller_id: str = ""
    joined_at: float = 0.0


class RekeyReason(enum.Enum):
    JOIN = "join"
    LEAVE = "leave"
    PERIODIC = "periodic"
    #: asked again after a rekey that failed half-way (the driver's ``request_rekey``)
    RETRY = "retry"
    #: a watcher took over a conference whose previous watcher's lease lapsed
    TAKEOVER = "takeover"


@dataclass(frozen=True, slots=True)
class ConferenceStarted:
    conference: str


@dataclass(frozen=True, slots=True)
class ConferenceEnded:
    conference: str


@dataclass(frozen=True, slots=True)
class MemberJoined:
    conference: str
    member: Member


@dataclass(frozen=True, slots=True)
class MemberLeft:
    conference: str
    member: Member


@dataclass(frozen=True, slots=True)
class Rekey:
    """Rekey *conference* now: a new group key epoch for exactly ``members``.

    ``joined``/``left`` are the channels of the batch this rekey covers;
    ``reasons`` says why (a leave in the batch, a join, the periodic timer).
    ``first_change`` is when the batch's window opened (latency = now - that).
    """

    conference: str
    at: float
    members: tuple[Member, ...]
    joined: frozenset[str]
    left: frozenset[str]
    reasons: frozenset[RekeyReason]
    first_change: float

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(member.channel for member in self.members)


Output = ConferenceStarted | ConferenceEnded | MemberJoined | MemberLeft | Rekey


# -- state ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Conference:
    members: dict[str, Member] = field(default_factory=dict)
    last_rekey: float | None = None
    #: when the open batch's window opened (None: nothing pending)
    pending_since: float | None = None
    pending_due: float | None = None
    joined: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)
    reasons: set[RekeyReason] = field(default_factory=set)
    #: when the periodic timer started counting (first member or last rekey)
    periodic_from: float | None = None


class RosterTracker:
    """Rosters of every ConfBridge and the debounced rekey decisions (see the module doc)."""

    def __init__(self, policy: RekeyPolicy | None = None) -> None:
        self.policy = policy or RekeyPolicy()
        self._conferences: dict[str, _Conference] = {}
        #: (conference, channel or uniqueid) whose next leave/join is not a change
        self._quiet: set[tuple[str, str]] = set()

    def quiet(self, conference: str, name: str) -> None:
        """The next leave of channel *name*, or join of Uniqueid *name*, asks for no rekey.

        For replacement calls: the member hung up and dialled back in is the same
        identity, still allowed, and the new call gets the current epoch, which the
        old call already held; rekeying for it would only make a phone that cannot
        follow a rekey be replaced again, for ever.  The roster still changes.
        """
        self._quiet.add((conference, name))

    def unquiet(self, conference: str, name: str) -> None:
        """Forget :meth:`quiet` for *name* (the replacement never joined)."""
        self._quiet.discard((conference, name))

    # -- queries --------------------------------------------------------------------

    def conferences(self) -> tuple[str, ...]:
        return tuple(sorted(self._conferences))

    def members(self, conference: str) -> tuple[Member, ...]:
        state = self._conferences.get(conference)
        if state is None:
            return ()
        return tuple(state.members.values())

    def pending(self, conference: str) -> float | None:
        """When the pending rekey of *conference* is due (``None``: none pending)."""
        state = self._conferences.get(conference)
        return None if state is None else state.pending_due

    def last_rekey(self, conference: str) -> float | None:
        state = self._conferences.get(conference)
        return None if state is None else state.last_rekey

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`poll` has something to return (``None``: nothing planned)."""
        deadlines = [
            due
            for state in self._conferences.values()
            for due in (state.pending_due, self._periodic_due(state))
            if due is not None
        ]
        return min(deadlines, default=None)

    # -- events ---------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Output]:
        """Apply one event at *now*; the roster changes it caused (rekeys come from :meth:`poll`)."""
        if isinstance(event, ConfbridgeStart):
            return self._start(event.conference, now)
        if isinstance(event, ConfbridgeEnd):
            return self._end(event.conference)
        if isinstance(event, ConfbridgeJoin):
            member = Member(event.channel, event.uniqueid, event.caller_id, now)
            return self._join(event.conference, member, now)
        if isinstance(event, ConfbridgeLeave):
            return self._leave(event.conference, event.channel, now)
        return self._snapshot(event, now)

    def request_rekey(self, conference: str, now: float, reason: RekeyReason) -> None:
        """Ask for a rekey of *conference* as if a change of *reason* happened at *now*.

        For the driver: a rekey that failed half-way (Asterisk gone, the edge
        refusing) is asked for again this way.
        """
        state = self._conferences.get(conference)
        if state is None or not state.members:
            return
        self._note_change(state, now, reason, None, None)

    def poll(self, now: float) -> list[Rekey]:
        """Every rekey due at *now* (call it at :meth:`next_deadline` or later)."""
        due: list[Rekey] = []
        for name in sorted(self._conferences):
            state = self._conferences[name]
            periodic_due = self._periodic_due(state)
            if state.pending_due is not None and state.pending_due <= now:
                first = state.pending_since if state.pending_since is not None else now
                due.append(self._fire(name, state, now, first))
            elif periodic_due is not None and periodic_due <= now:
                state.reasons.add(RekeyReason.PERIODIC)
                due.append(self._fire(name, state, now, periodic_due))
        return due

    # -- internals ------------------------------------------------------------------

    def _state(self, conference: str) -> tuple[_Conference, list[Output]]:
        state = self._conferences.get(conference)
        if state is not None:
            return state, []
        state = _Conference()
        self._conferences[conference] = state
        return state, [ConferenceStarted(conference)]

    def _start(self, conference: str, now: float) -> list[Output]:
        _, outputs = self._state(conference)
        return outputs

    def _end(self, conference: str) -> list[Output]:
        state = self._conferences.pop(conference, None)
        if state is None:
            return []
        outputs: list[Output] = [
            MemberLeft(conference, member) for member in state.members.values()
        ]
        outputs.append(ConferenceEnded(conference))
        return outputs

    def _join(self, conference: str, member: Member, now: float) -> list[Output]:
        state, outputs = self._state(conference)
        if member.channel in state.members:
            return outputs  # a repeated event (resync, or AMI replay): nothing changed
        had_members = bool(state.members)
        state.members[member.channel] = member
        outputs.append(MemberJoined(conference, member))
        if not had_members:
            # The first member gets the key the conference was created with.
            state.periodic_from = now
            return outputs
        if (conference, member.uniqueid) in self._quiet:
            self._quiet.discard((conference, member.uniqueid))
            return outputs
        if self.policy.rekey_on_join:
            self._note_change(state, now, RekeyReason.JOIN, member.channel, None)
        return outputs

    def _leave(self, conference: str, channel: str, now: float) -> list[Output]:
        state = self._conferences.get(conference)
        if state is None or channel not in state.members:
            return []
        member = state.members.pop(channel)
        outputs: list[Output] = [MemberLeft(conference, member)]
        state.joined.discard(channel)
        if not state.members:
            # Nobody left to protect: nothing pending either.
            self._clear_pending(state)
            state.periodic_from = None
            return outputs
        if (conference, channel) in self._quiet:
            self._quiet.discard((conference, channel))
            return outputs
        self._note_change(state, now, RekeyReason.LEAVE, None, channel)
        return outputs

    def _snapshot(self, snapshot: RosterSnapshot, now: float) -> list[Output]:
        conference = snapshot.conference
        if not snapshot.members:
            return self._end(conference)
        outputs: list[Output] = []
        if conference not in self._conferences:
            outputs.extend(self._start(conference, now))
        current = {member.channel for member in snapshot.members}
        state = self._conferences[conference]
        for channel in [channel for channel in state.members if channel not in current]:
            outputs.extend(self._leave(conference, channel, now))
        for member in snapshot.members:
            outputs.extend(
                self._join(
                    conference,
                    Member(member.channel, member.uniqueid, member.caller_id, now),
                    now,
                )
            )
        return outputs

    def _note_change(
        self,
        state: _Conference,
        now: float,
        reason: RekeyReason,
        joined: str | None,
        left: str | None,
    ) -> None:
        if joined is not None:
            state.joined.add(joined)
        if left is not None:
            state.left.add(left)
        state.reasons.add(reason)
        window = self.policy.leave_window if reason is RekeyReason.LEAVE else self.policy.debounce
        if state.pending_since is None or state.pending_due is None:
            # The first uncovered change opens the window; later ones do not move it,
            # except that a leave may close it sooner (leave_debounce < debounce).
            state.pending_since = now
            due = now + window
        else:
            due = min(state.pending_due, now + window)
        if state.last_rekey is not None:
            due = max(due, state.last_rekey + self.policy.min_interval)
        state.pending_due = due

    def _periodic_due(self, state: _Conference) -> float | None:
        if self.policy.periodic is None or len(state.members) < 2:
            return None
        if state.pending_due is not None:
            return None
        start = state.last_rekey if state.last_rekey is not None else state.periodic_from
        if start is None:
            return None
        due = start + self.policy.periodic
        if state.last_rekey is not None:
            due = max(due, state.last_rekey + self.policy.min_interval)
        return due

    def _fire(self, name: str, state: _Conference, now: float, first: float) -> Rekey:
        rekey = Rekey(
            conference=name,
            at=now,
            members=tuple(state.members.values()),
            joined=frozenset(state.joined & set(state.members)),
            left=frozenset(state.left),
            reasons=frozenset(state.reasons),
            first_change=first,
        )
        state.last_rekey = now
        self._clear_pending(state)
        return rekey

    @staticmethod
    def _clear_pending(state: _Conference) -> None:
        state.pending_since = None
        state.pending_due = None
        state.joined.clear()
        state.left.clear()
        state.reasons.clear()


def replay(
    tracker: RosterTracker, events: Iterable[tuple[float, Event]], until: float
) -> list[Rekey]:
    """Feed timed events (sorted by time) and poll at every deadline up to *until*.

    What a driver does, as a pure function: for tests, simulations and the
    docs' worked examples.
    """
    rekeys: list[Rekey] = []
    for at, event in events:
        deadline = tracker.next_deadline()
        while deadline is not None and deadline <= at:
            rekeys.extend(tracker.poll(deadline))
            deadline = tracker.next_deadline()
        tracker.handle(event, at)
    deadline = tracker.next_deadline()
    while deadline is not None and deadline <= until:
        rekeys.extend(tracker.poll(deadline))
        deadline = tracker.next_deadline()
    return rekeys


# -- after a rekey: what each leg did, and what to do about it ------------------------
#
# The driver (secconf.asterisk.watcher) observes; these functions decide.  A leg is
# one member's media path at the edge.  What matters for the departed member is the
# *edge's* outbound epoch: once a leg is switched the edge sends to it under the new
# key only, whether or not the phone followed.  A leg still on an old epoch (the
# phone refused the re-INVITE, or never answered it) is still sent to under a key the
# departed member knew: it must go.  A leg that was switched but whose phone did not
# follow (baresip 1.0.0) hears nothing: it must be replaced or removed too, for the
# member's sake.  A leg without RTCP cannot be verified: accepted by default.


class LegVerdict(enum.Enum):
    FOLLOWED = "followed"  # on the new epoch; its receiver reports prove the phone followed
    UNVERIFIED = "unverified"  # on the new epoch; no usable report in time
    NOT_FOLLOWED = "not-followed"  # on the new epoch at the edge; the phone kept the old key
    REFUSED = "refused"  # the phone refused the re-INVITE (leg stays on its old epoch)
    NO_ANSWER = "no-answer"  # the leg never reached the new epoch in time
    GONE = "gone"  # left the bridge meanwhile (nothing to do)


class FailurePolicy(enum.Enum):
    """What happens to a leg that did not follow a rekey.

    ``REMOVE``: hang the channel up.  ``REPLACE``: hang it up and dial the same
    identity back into the bridge (the new call is keyed with the current epoch);
    a replacement that fails leaves the member removed.  Both act on the same
    channels (:func:`plan_after_rekey`).
    """

    REMOVE = "remove"
    REPLACE = "replace"


_SWITCH_TERMINAL = frozenset({"followed", "not-followed", "unverified"})


@dataclass(frozen=True, slots=True)
class LegObservation:
    """What the driver saw of one member's leg after asking for rekey epoch *n*.

    ``epoch``: the edge leg's outbound epoch (``None``: no leg at the edge);
    ``switch_state``/``switch_epoch``: the edge's switch verification
    (``GET /v1/conferences/{c}``); ``refused``: a ``rekey-failed`` entry for this
    leg's call at epoch *n*; ``present``: the channel is still in the bridge.
    """

    channel: str
    epoch: int | None
    switch_state: str = "none"
    switch_epoch: int | None = None
    refused: bool = False
    present: bool = True


def leg_settled(observation: LegObservation, epoch: int) -> bool:
    """True when waiting longer cannot change this leg's verdict for *epoch*."""
    if not observation.present or observation.epoch is None or observation.refused:
        return True
    if observation.epoch < epoch:
        return False  # its re-INVITE has not been answered (yet)
    return observation.switch_epoch == epoch and observation.switch_state in _SWITCH_TERMINAL


def judge_leg(observation: LegObservation, epoch: int) -> LegVerdict:
    """The verdict for one leg once it settled or the driver stopped waiting."""
    if not observation.present or observation.epoch is None:
        return LegVerdict.GONE
    if observation.epoch < epoch:
        return LegVerdict.REFUSED if observation.refused else LegVerdict.NO_ANSWER
    if observation.switch_epoch != epoch:
        # On the new epoch without a switch check of it (switched by a later rekey, or
        # the participant's own re-INVITE): nothing proves either way.
        return LegVerdict.UNVERIFIED
    if observation.switch_state == "followed":
        return LegVerdict.FOLLOWED
    if observation.switch_state == "not-followed":
        return LegVerdict.NOT_FOLLOWED
    return LegVerdict.UNVERIFIED  # "unverified", or still "pending" when time ran out


@dataclass(frozen=True, slots=True)
class RekeyOutcome:
    """Verdicts of one rekey and the channels to act on (``remove``, in channel order)."""

    epoch: int
    verdicts: Mapping[str, LegVerdict]
    remove: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every remaining member is on the new epoch and nobody is to be removed."""
        return not self.remove and all(
            verdict in (LegVerdict.FOLLOWED, LegVerdict.UNVERIFIED, LegVerdict.GONE)
            for verdict in self.verdicts.values()
        )


def plan_after_rekey(
    observations: Iterable[LegObservation],
    epoch: int,
    *,
    policy: FailurePolicy = FailurePolicy.REMOVE,
    accept_unverified: bool = True,
) -> RekeyOutcome:
    """Judge every leg and pick the channels the policy removes.

    Refused and unanswered legs are always acted on (the edge still sends to them
    under a key the departed member knew); not-followed legs too (they hear
    nothing); unverified legs only if *accept_unverified* is false.
    """
    if policy not in (FailurePolicy.REMOVE, FailurePolicy.REPLACE):
        raise ProtocolError(f"unknown failure policy {policy!r}")
    verdicts: dict[str, LegVerdict] = {}
    for observation in observations:
        verdicts[observation.channel] = judge_leg(observation, epoch)
    failing = {LegVerdict.REFUSED, LegVerdict.NO_ANSWER, LegVerdict.NOT_FOLLOWED}
    if not accept_unverified:
        failing.add(LegVerdict.UNVERIFIED)
    remove = tuple(sorted(channel for channel, verdict in verdicts.items() if verdict in failing))
    return RekeyOutcome(epoch, verdicts, remove)
