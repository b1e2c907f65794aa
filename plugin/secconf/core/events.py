"""The notifier's side of the conference event package (RFC 6665 + RFC 4575), sans-IO.

Two parts, no clock, no randomness, no I/O (the caller passes ``now`` in, in seconds):

- reading a SUBSCRIBE: :func:`check_event` (``Event: conference`` without ``id``, else
  489 with ``Allow-Events: conference``), :func:`check_accept` (406 when ``Accept`` names
  no type we can send in the conference's mode), :func:`granted_expires` (``Expires``
  clamped to [60, 3600] s, 600 when absent, 0 = un-SUBSCRIBE);
- one subscription's notifier, :class:`NotifierState` (frozen: every transition returns
  a new one): the RFC 4575 ``version`` (§5.2: per subscription, +1 for every NOTIFY with a
  body), our CSeq, the last state sent (partial documents are computed against it), the
  one NOTIFY in flight (RFC 6665 §4.2.2: no new NOTIFY before the last one's final
  response; changes made meanwhile coalesce into the next one) with its Timer F deadline,
  the expiry, and the termination waiting to be sent; over an unreliable flow without a
  transaction layer, the NOTIFY in flight's Timer E (:func:`retransmission`, RFC 3261
  §17.1.2.2); a fetch (:func:`fetched`, RFC 6665 §4.4.3) sends one full NOTIFY and ends.

The phases and what moves between them are a table (:data:`TRANSITIONS`), as in
``core.sip.transaction``; :func:`plan` decides the next NOTIFY, :func:`answered` takes its
final response.  docs/event-package.md, "The focus's side", says how the focus uses them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

from secconf.core import cms
from secconf.core.confinfo import (
    CONFERENCE_INFO_TYPE,
    ConferenceInfo,
    deleted_document,
    full_document,
    info_from_element,
    partial_document,
    read_document,
)
from secconf.core.errors import BadEvent, MalformedSipMessage, NoAcceptableType
from secconf.core.focus import OfferMode
from secconf.core.sip.headers import MAX_CSEQ, parse_params, split_header_values
from secconf.core.sip.transaction import TimerConfig

__all__ = [
    "ALLOW_EVENTS",
    "DEFAULT_EXPIRES",
    "EVENT",
    "MAX_EXPIRES",
    "MIN_EXPIRES",
    "TIMER_F",
    "TRANSITIONS",
    "BodyKind",
    "Input",
    "NotifierState",
    "Notify",
    "Phase",
    "Retransmit",
    "Termination",
    "answered",
    "check_accept",
    "check_event",
    "end",
    "fetched",
    "granted_expires",
    "info_from_snapshot",
    "next_due",
    "plan",
    "provisional",
    "refreshed",
    "retransmission",
    "snapshot",
    "started",
    "subscription_state",
]

#: The event package (RFC 4575 §3.1); also the ``Allow-Events`` value of a 489.
EVENT = "conference"
ALLOW_EVENTS = EVENT
#: ``Expires`` bounds (docs/event-package.md): shorter asks are raised to a minute (rather
#: than 423, which the RFC allows), longer ones cut to an hour (RFC 6665 §4.2.1.1: the
#: notifier may shorten, never lengthen); no ``Expires`` gets the package's default.
MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 600
#: A NOTIFY without a final response this long after it left ends the subscription
#: (RFC 3261 Timer F = 64*T1; RFC 6665 §4.2.2: a NOTIFY that times out removes it).
TIMER_F = 32.0
#: T1 and T2 of RFC 3261 §17.1.1.1 (Timer E, below), as the transaction layer has them.
_TIMERS = TimerConfig()


class Termination(enum.StrEnum):
    """``Subscription-State: terminated`` reasons we send (RFC 6665 §4.1.3)."""

    #: the subscriber is no longer a member (left, removed): no more state for him.
    REJECTED = "rejected"
    #: expired, or ended by the subscriber's ``Expires: 0``.
    TIMEOUT = "timeout"
    #: the conference is gone (after a ``state="deleted"`` document).
    NORESOURCE = "noresource"
    #: the focus ends it for another reason (shutdown, a bound); the subscriber may retry.
    DEACTIVATED = "deactivated"


def check_event(value: str | None) -> None:
    """RFC 6665 §8.2.1 / §4.2.1: ``Event: conference`` (exact), without ``id`` parameter.

    We keep one subscription per dialog and never use ``id``; a SUBSCRIBE with one is a
    package usage we do not offer: 489 as for another package (the caller adds
    ``Allow-Events: conference``, §8.2.2).
    """
    if value is None:
        raise BadEvent("SUBSCRIBE without Event")
    event_type, _, rest = value.partition(";")
    if event_type.strip(" \t") != EVENT:
        raise BadEvent("SUBSCRIBE for another event package")
    try:
        params = {key.lower() for key, _ in parse_params(";" + rest if rest else "")}
    except MalformedSipMessage:
        raise BadEvent("SUBSCRIBE with an unreadable Event") from None
    if "id" in params:
        raise BadEvent("SUBSCRIBE with an Event id (one subscription per dialog here)")


def _sendable(mode: OfferMode) -> frozenset[str]:
    if mode is OfferMode.KMS:
        return frozenset({cms.mime.MEDIA_TYPE})
    return frozenset({CONFERENCE_INFO_TYPE})


def check_accept(value: str | None, mode: OfferMode) -> None:
    """RFC 6665 §4.2.1 / RFC 4575 §3.3: 406 unless ``Accept`` names a type we can send.

    No ``Accept`` means the package's default type (RFC 6665 §7.2), which in KMS mode we
    never send in the clear: refused there.  ``*/*`` and ``application/*`` are taken.
    """
    sendable = _sendable(mode)
    if value is None:
        if CONFERENCE_INFO_TYPE in sendable:
            return
        raise NoAcceptableType("SUBSCRIBE without Accept in KMS mode (bodies are CMS)")
    for item in split_header_values(value):
        media_type = item.partition(";")[0].strip(" \t").lower()
        if media_type in sendable or media_type in ("*/*", "application/*"):
            return
    raise NoAcceptableType("Accept names no type the focus sends in this conference's mode")


def granted_expires(value: str | None) -> int:
    """The duration granted: 0 for an un-SUBSCRIBE, else clamped to [60, 3600] s."""
    if value is None:
        return DEFAULT_EXPIRES
    text = value.strip(" \t")
    if not text.isdigit() or len(text) > 10:
        raise MalformedSipMessage("Expires is not a number of seconds (RFC 3261 §20.19)")
    seconds = int(text)
    if seconds == 0:
        return 0
    return min(MAX_EXPIRES, max(MIN_EXPIRES, seconds))


def subscription_state(
    *, expires_left: int | None = None, reason: Termination | None = None
) -> str:
    """The ``Subscription-State`` value (RFC 6665 §8.4): active with seconds, or terminated."""
    if reason is not None:
        return f"terminated;reason={reason.value}"
    if expires_left is None or expires_left < 0:
        raise ValueError("an active subscription needs the seconds it has left")
    return f"active;expires={expires_left}"


def snapshot(info: ConferenceInfo) -> bytes:
    """The last state sent, as stored (a full document: version 0 is never sent)."""
    return full_document(info, 0)


def info_from_snapshot(body: bytes) -> ConferenceInfo:
    """Read back :func:`snapshot`'s bytes (our own, from the store; still fully parsed)."""
    return info_from_element(read_document(body).root)


class Phase(enum.StrEnum):
    """Where one subscription is: live, its final NOTIFY due or out, or over."""

    ACTIVE = "active"
    #: a fetch (RFC 6665 §4.4.3): one NOTIFY with full state ends it.
    FETCH = "fetch"
    #: a termination is decided: its NOTIFY leaves as soon as none is in flight.
    ENDING = "ending"
    #: the final NOTIFY is out (or could not be sent): the record goes at its reply.
    FINAL_SENT = "final-sent"
    #: nothing more to send or wait for: the caller removes the record.
    DONE = "done"


class Input(enum.StrEnum):
    """What moves a subscription between phases."""

    REFRESH = "refresh"
    END = "end"
    SEND_FINAL = "send-final"
    REPLY_2XX = "reply-2xx"
    REPLY_FAILURE = "reply-failure"
    TIMER_F = "timer-f"


#: ``(phase, input) -> next phase``; a pair not listed is refused (``ValueError``) by
#: :func:`_next`, except where a function documents that it ignores it.
TRANSITIONS: dict[tuple[Phase, Input], Phase] = {
    (Phase.ACTIVE, Input.REFRESH): Phase.ACTIVE,
    (Phase.ACTIVE, Input.END): Phase.ENDING,
    (Phase.ACTIVE, Input.REPLY_2XX): Phase.ACTIVE,
    # §4.2.2: a NOTIFY refused (481 or any other failure) or unanswered ends it at once.
    (Phase.ACTIVE, Input.REPLY_FAILURE): Phase.DONE,
    (Phase.ACTIVE, Input.TIMER_F): Phase.DONE,
    # a fetch whose subscriber left, or un-SUBSCRIBEs, before its NOTIFY: a bodiless end
    (Phase.FETCH, Input.END): Phase.ENDING,
    (Phase.FETCH, Input.SEND_FINAL): Phase.FINAL_SENT,
    (Phase.ENDING, Input.END): Phase.ENDING,
    (Phase.ENDING, Input.REPLY_2XX): Phase.ENDING,
    (Phase.ENDING, Input.REPLY_FAILURE): Phase.DONE,
    (Phase.ENDING, Input.TIMER_F): Phase.DONE,
    (Phase.ENDING, Input.SEND_FINAL): Phase.FINAL_SENT,
    (Phase.FINAL_SENT, Input.END): Phase.FINAL_SENT,
    (Phase.FINAL_SENT, Input.REPLY_2XX): Phase.DONE,
    (Phase.FINAL_SENT, Input.REPLY_FAILURE): Phase.DONE,
    (Phase.FINAL_SENT, Input.TIMER_F): Phase.DONE,
    (Phase.DONE, Input.END): Phase.DONE,
}


def _next(phase: Phase, event: Input) -> Phase:
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise ValueError(f"no transition from {phase.value} on {event.value}") from None


@dataclass(frozen=True, slots=True)
class Retransmit:
    """Timer E of a NOTIFY in flight over an unreliable flow (RFC 3261 §17.1.2.2).

    Only for the NOTIFYs the focus sends whole, statelessly (no tm transaction retransmits
    them, docs/event-package.md): the same bytes leave again at ``at``; Timer E starts at
    T1 and doubles up to T2 (after a 1xx it stays at T2), until a final response or Timer F.
    """

    #: when the next copy leaves
    at: float
    #: the value Timer E was last set to
    interval: float


@dataclass(frozen=True, slots=True)
class InFlight:
    """The NOTIFY awaiting its final response (one at most, RFC 6665 §4.2.2)."""

    cseq: int
    #: Timer F: without a final response by then, the subscription is dropped.
    deadline: float
    #: Timer E when we retransmit it ourselves; None over TLS/TCP or when tm does.
    retransmit: Retransmit | None = None


class BodyKind(enum.StrEnum):
    NONE = "none"
    FULL = "full"
    PARTIAL = "partial"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Notify:
    """One NOTIFY to send: the caller adds the dialog's headers and protects the body."""

    cseq: int
    subscription_state: str
    kind: BodyKind
    #: the RFC 4575 document (plain; KMS mode protects it before it leaves), or None.
    document: bytes | None
    version: int


@dataclass(frozen=True, slots=True)
class NotifierState:
    """One subscription's notifier: everything :func:`plan` needs, nothing it does not."""

    phase: Phase
    #: the conference's URI (the documents' ``entity``, §5.1).
    entity: str
    #: the RFC 4575 version of the last document sent (0: none yet; §5.2 starts at 1).
    version: int
    #: the CSeq of our next NOTIFY in this dialog (RFC 3261 §12.2.1.1: +1 per request).
    next_cseq: int
    expires_at: float
    #: the state the subscriber holds after our last document (None: send full state).
    sent: ConferenceInfo | None
    in_flight: InFlight | None = None
    #: why it ends, once decided.
    ending: Termination | None = None


def started(entity: str, now: float, expires: int) -> NotifierState:
    """A new subscription, granted *expires* seconds: its first NOTIFY is full state."""
    if expires <= 0:
        raise ValueError("a subscription is started with a positive duration")
    return NotifierState(Phase.ACTIVE, entity, 0, 1, now + expires, None)


def fetched(entity: str, now: float) -> NotifierState:
    """A fetch (RFC 6665 §4.4.3: ``Expires: 0`` outside a dialog): one NOTIFY, full state,
    ``terminated;reason=timeout`` (§4.2.1.4: the subscription ends at once), then over."""
    return NotifierState(Phase.FETCH, entity, 0, 1, now, None)


def refreshed(state: NotifierState, now: float, expires: int) -> NotifierState:
    """A refresh: a new expiry and full state next (RFC 6665 §4.2.1.2; RFC 4575 §4.6).

    ``expires`` 0 (un-SUBSCRIBE) ends it with ``reason=timeout`` (§4.2.1.4: the final
    NOTIFY follows).  A subscription already ending keeps its reason.
    """
    if expires == 0:
        return end(state, Termination.TIMEOUT)
    if state.phase is not Phase.ACTIVE:
        return state
    _next(state.phase, Input.REFRESH)
    return replace(state, expires_at=now + expires, sent=None)


def end(state: NotifierState, reason: Termination) -> NotifierState:
    """Decide the end; the first reason decided is the one sent."""
    phase = _next(state.phase, Input.END)
    return replace(state, phase=phase, ending=state.ending or reason)


def _notify(
    state: NotifierState, now: float, notify: Notify, phase: Phase, retransmit: bool
) -> NotifierState:
    cseq = notify.cseq + 1 if notify.cseq < MAX_CSEQ else notify.cseq
    timer_e = Retransmit(now + _TIMERS.t1, _TIMERS.t1) if retransmit else None
    return replace(
        state,
        phase=phase,
        next_cseq=cseq,
        version=notify.version,
        in_flight=InFlight(notify.cseq, now + TIMER_F, timer_e),
    )


def _final(state: NotifierState, now: float, retransmit: bool) -> tuple[NotifierState, Notify]:
    """The terminating NOTIFY; when the conference is gone it carries a deleted document."""
    reason = state.ending or Termination.DEACTIVATED
    header = subscription_state(reason=reason)
    phase = _next(state.phase, Input.SEND_FINAL)
    if reason is Termination.NORESOURCE:
        version = state.version + 1
        document = deleted_document(state.entity, version)
        notify = Notify(state.next_cseq, header, BodyKind.DELETED, document, version)
    else:
        notify = Notify(state.next_cseq, header, BodyKind.NONE, None, state.version)
    return _notify(state, now, notify, phase, retransmit), notify


def plan(
    state: NotifierState,
    now: float,
    current: ConferenceInfo | None,
    *,
    retransmit: bool = False,
) -> tuple[NotifierState, Notify | None]:
    """The NOTIFY to send now, if any, for the conference as it is (*current*; None: gone).

    *retransmit*: the caller sends it over an unreliable flow with no transaction layer
    of its own, so the NOTIFY in flight gets Timer E (:func:`retransmission`).

    In order: a NOTIFY in flight blocks everything (Timer F past: DONE, nothing sent); an
    ended conference or a past expiry decides the end; an end decided sends the final
    NOTIFY; otherwise full state if the subscriber holds none from us, else the partial
    change since the last document (none: nothing to send).
    """
    if state.phase in (Phase.DONE, Phase.FINAL_SENT) and state.in_flight is None:
        return state, None
    if state.in_flight is not None:
        if now >= state.in_flight.deadline:
            return replace(state, phase=_next(state.phase, Input.TIMER_F), in_flight=None), None
        return state, None
    if state.phase in (Phase.ACTIVE, Phase.FETCH) and current is None:
        state = end(state, Termination.NORESOURCE)
    elif state.phase is Phase.ACTIVE and now >= state.expires_at:
        state = end(state, Termination.TIMEOUT)
    if state.phase is Phase.ENDING:
        return _final(state, now, retransmit)
    if current is None:  # unreachable: a live state without a conference ended above
        raise ValueError("no conference state for an active subscription")
    if state.phase is Phase.FETCH:
        return _fetch_notify(state, now, current, retransmit)
    return _active_notify(state, now, current, retransmit)


def _fetch_notify(
    state: NotifierState, now: float, current: ConferenceInfo, retransmit: bool
) -> tuple[NotifierState, Notify]:
    """A fetch's one NOTIFY: full state, and the end (RFC 6665 §4.4.3, §4.2.1.4)."""
    version = state.version + 1
    header = subscription_state(reason=Termination.TIMEOUT)
    notify = Notify(
        state.next_cseq, header, BodyKind.FULL, full_document(current, version), version
    )
    phase = _next(state.phase, Input.SEND_FINAL)
    fetched_state = replace(state, ending=Termination.TIMEOUT, sent=current)
    return _notify(fetched_state, now, notify, phase, retransmit), notify


def _active_notify(
    state: NotifierState, now: float, current: ConferenceInfo, retransmit: bool
) -> tuple[NotifierState, Notify | None]:
    if state.sent == current:  # the common tick: nothing changed since the last document
        return state, None
    version = state.version + 1
    if state.sent is None:
        kind, document = BodyKind.FULL, full_document(current, version)
    else:
        partial = partial_document(state.sent, current, version)
        if partial is None:
            return state, None
        kind, document = BodyKind.PARTIAL, partial
    left = max(0, math.ceil(state.expires_at - now))
    notify = Notify(state.next_cseq, subscription_state(expires_left=left), kind, document, version)
    return replace(_notify(state, now, notify, state.phase, retransmit), sent=current), notify


def answered(state: NotifierState, cseq: int, status: int) -> NotifierState:
    """The final response to the NOTIFY with *cseq*; another CSeq's changes nothing.

    2xx clears the way for the next NOTIFY; 481 or any other final failure ends the
    subscription at once (RFC 6665 §4.2.2), without a final NOTIFY.
    """
    if state.in_flight is None or state.in_flight.cseq != cseq or status < 200:
        return state
    event = Input.REPLY_2XX if status < 300 else Input.REPLY_FAILURE
    return replace(state, phase=_next(state.phase, event), in_flight=None)


def next_due(state: NotifierState) -> float:
    """When :func:`plan` or :func:`retransmission` can next act on *state* with no input.

    Without a refresh, a reply or a change of the conference, only time moves a
    subscription: its expiry, Timer F of the NOTIFY in flight, Timer E of one we
    retransmit.  ``-inf``: something is to be sent now (the first full state, a final
    NOTIFY decided) — a timer may skip a subscription until then, and no longer.
    """
    flight = state.in_flight
    if state.phase is Phase.DONE:
        return -math.inf
    if flight is None and (state.phase in (Phase.ENDING, Phase.FETCH) or state.sent is None):
        return -math.inf
    times = [state.expires_at]
    if flight is not None:
        times.append(flight.deadline)
        if flight.retransmit is not None:
            times.append(flight.retransmit.at)
    return min(times)


def retransmission(state: NotifierState, now: float) -> tuple[NotifierState, bool]:
    """Timer E (RFC 3261 §17.1.2.2): whether the NOTIFY in flight leaves again now.

    True when its Timer E has fired and Timer F has not: the caller resends the very same
    bytes (same Via branch, same CSeq); Timer E is set again to twice its value, at most
    T2.  At Timer F :func:`plan` drops the subscription; a final response
    (:func:`answered`) ends the retransmissions.
    """
    flight = state.in_flight
    if flight is None or flight.retransmit is None or now >= flight.deadline:
        return state, False
    if now < flight.retransmit.at:
        return state, False
    interval = min(2 * flight.retransmit.interval, _TIMERS.t2)
    timer_e = Retransmit(now + interval, interval)
    return replace(state, in_flight=replace(flight, retransmit=timer_e)), True


def provisional(state: NotifierState, cseq: int) -> NotifierState:
    """A 1xx to the NOTIFY with *cseq*: Proceeding, Timer E continues at T2 (§17.1.2.2).

    A 1xx ends nothing (only a final response does); another CSeq's changes nothing.
    """
    flight = state.in_flight
    if flight is None or flight.cseq != cseq or flight.retransmit is None:
        return state
    timer_e = replace(flight.retransmit, interval=_TIMERS.t2)
    return replace(state, in_flight=replace(flight, retransmit=timer_e))
