"""The node's NOTIFY timer: every 50 ms, what each subscription it holds must be told.

Run by Kamailio's ``rtimer`` in one process of its own per node (docs/kamailio.md): that
process alone writes the notifier's state of the node's subscriptions; workers only leave
inputs beside it (a refresh, a NOTIFY's final reply: store.conference_subscriptions).
One :meth:`Notifier.tick`:

1. the node's subscriptions (at most ``[events] scan_per_tick``) and their records, one
   pipeline;
2. the change counters of their conferences (one MGET); for a conference whose counter
   moved, its facts (one round trip) and :func:`~secconf.core.confinfo.describe`;
3. per subscription, its inputs applied (refresh -> full state; reply -> the next NOTIFY
   may go, or the subscription is dropped), the end decided (the member gone: ``rejected``;
   the conference gone: ``noresource``; expired: ``timeout``), then
   :func:`secconf.core.events.plan`;
4. each NOTIFY to send (at most ``[events] notifies_per_tick``; the rest wait a tick) as a
   plain :class:`NotifyRequest`, its body protected in KMS mode with the subscription's
   event key (``cms.protect``), and the new state saved; a subscription that is over is
   removed.

Nothing here talks SIP on the wire: the handler sends each request over the subscriber's
flow, with ``KSR.tm.t_uac_send`` or, built whole here (``NotifyRequest.wire``), with
``send_data``; it hands the replies back (:meth:`Notifier.on_reply`).  The NOTIFYs sent
whole over UDP have no tm transaction: the timer retransmits them itself (Timer E, the
same bytes, :func:`secconf.core.events.retransmission`); the retransmissions count
against ``notifies_per_tick``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from secconf.core import cms, events
from secconf.core.confinfo import CONFERENCE_INFO_TYPE, ConferenceFacts, ConferenceInfo, describe
from secconf.core.errors import SecconfError
from secconf.core.events import NotifierState, Notify, Phase, Termination
from secconf.core.focus import TargetKind, classify_target
from secconf.core.sip.headers import MAGIC_COOKIE
from secconf.store.conference_subscriptions import SubscriptionRecord, Subscriptions
from secconf.store.conferences import dialog_id

from ..settings import Settings
from .subscriptions import local_contact

__all__ = ["ConferenceSource", "Notifier", "NotifyRequest"]

#: Conferences whose described state the timer keeps between ticks.
MAX_CACHED_CONFERENCES: Final = 4096
#: Seconds between full walks of the node's subscriptions even when nothing signalled a
#: change (a safety net: the wake-up counter, the change counters and the deadlines say
#: when a walk is needed; this bounds what a missed signal could delay).
FULL_SWEEP: Final = 1.0


class ConferenceSource(Protocol):
    """What the timer reads of the conferences (``ConferenceStore``)."""

    def event_counters(self, conference_ids: Sequence[str]) -> list[int | None]: ...

    def event_facts(self, conference_id: str) -> ConferenceFacts | None: ...


@dataclass(frozen=True, slots=True)
class NotifyRequest:
    """One NOTIFY for ``t_uac_send``: the Request-URI, next hop, socket, headers, body."""

    ruri: str
    #: the subscriber's flow, as a destination URI (a TLS connection it opened is reused)
    next_hop: str
    #: our socket the SUBSCRIBE came in on (``proto:ip:port``)
    socket: str
    #: every header line, CRLF-terminated (tm adds Via, Max-Forwards, Content-Length)
    headers: str
    body: bytes = field(repr=False)
    #: the whole message, for ``send_data`` (a binary body; a NOTIFY we retransmit, and
    #: its retransmissions: the same bytes); None: ``t_uac_send`` builds it
    wire: bytes | None = field(default=None, repr=False)

    @property
    def binary(self) -> bool:
        """A body that is not text (CMS): it cannot pass a KEMI string (kamailio.adapter)."""
        try:
            return "\0" in self.body.decode("utf-8")
        except UnicodeDecodeError:
            return True


@dataclass(frozen=True, slots=True)
class _Described:
    counter: int | None
    info: ConferenceInfo | None  # None: the conference is gone or ended
    members: frozenset[str]


def _safe(value: str) -> str:
    """A header value we copy from a record: never a line break (header injection)."""
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("a line break in a recorded header value")
    return value


def _own_transaction(record: SubscriptionRecord) -> bool:
    """Whether the timer retransmits this subscription's NOTIFYs itself (Timer E).

    KMS mode over UDP: its bodies are binary, sent whole by ``send_data`` with no tm
    transaction, and UDP loses datagrams; all its NOTIFYs take that one path (the bodiless
    final one too).  TLS/TCP never retransmit (RFC 3261 §17.1.2.2); SDES NOTIFYs (text)
    are tm's.
    """
    return record.mode == "kms" and record.transport.lower() == "udp"


def _next_hop(record: SubscriptionRecord) -> str:
    return f"sip:{_safe(record.source)};transport={_safe(record.transport)}"


@dataclass
class Notifier:
    """The tick of one node (``FocusService.notifier``)."""

    settings: Settings
    subscriptions: Subscriptions
    conferences: ConferenceSource
    clock: Callable[[], float] = field(repr=False)
    random_bytes: Callable[[int], bytes] = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)
    _described: dict[str, _Described] = field(default_factory=dict, repr=False)
    _offset: int = field(default=0, repr=False)
    # The fast idle path (_quiet): when the last full walk was, what it saw, and the
    # earliest deadline of the subscriptions it left.
    _swept: float = field(default=-math.inf, repr=False)
    _due: float = field(default=-math.inf, repr=False)
    _wake_seen: int = field(default=-1, repr=False)
    _watched: frozenset[str] = field(default=frozenset(), repr=False)

    def tick(self) -> list[NotifyRequest]:
        """The NOTIFYs this node sends now (each already recorded as in flight)."""
        now = self.clock()
        if self._quiet(now):
            return []
        limits = self.settings.events
        node = limits.node_id
        wake = self.subscriptions.wake_count(node)
        pairs = self.subscriptions.of_node(node, limit=limits.scan_per_tick, offset=self._offset)
        # a long index is walked a slice per tick, then from the start again
        partial_walk = len(pairs) >= limits.scan_per_tick or self._offset > 0
        self._offset = 0 if len(pairs) < limits.scan_per_tick else self._offset + len(pairs)
        self._due = -math.inf if partial_walk else math.inf
        self._swept, self._wake_seen, self._watched = now, wake, frozenset()
        if not pairs:
            return []
        records = self.subscriptions.get_many(pairs)
        gone = [pair for pair, record in zip(pairs, records, strict=True) if record is None]
        self.subscriptions.drop_index_entries(node, gone)
        live = [record for record in records if record is not None]
        self._watched = frozenset(record.conference_id for record in live)
        self._describe(set(self._watched))
        out: list[NotifyRequest] = []
        for record in live:
            if len(out) >= limits.notifies_per_tick:
                self._due = -math.inf  # the rest at the next tick (50 ms)
                break
            request = self._one(record, now)
            if request is not None:
                out.append(request)
        return out

    def _quiet(self, now: float) -> bool:
        """Nothing for this tick to do: no input left, no conference changed, no timer due.

        The idle tick reads two things (the node's wake-up counter, the change counters of
        its conferences) instead of every subscription record; a full walk still happens
        every :data:`FULL_SWEEP` seconds, so nothing waits longer than that whatever it is.
        """
        if now >= self._due or now - self._swept >= FULL_SWEEP:
            return False
        if self.subscriptions.wake_count(self.settings.events.node_id) != self._wake_seen:
            return False
        ids = sorted(self._watched)
        for conference_id, counter in zip(ids, self.conferences.event_counters(ids), strict=True):
            held = self._described.get(conference_id)
            if held is None or counter is None or held.counter != counter:
                return False
        return True

    def _note(self, state: NotifierState) -> None:
        """The subscription needs the timer again at its next deadline (``events.next_due``)."""
        self._due = min(self._due, events.next_due(state))

    def _describe(self, conference_ids: set[str]) -> None:
        """Refresh the described state of every conference whose change counter moved."""
        ids = sorted(conference_ids)
        counters = self.conferences.event_counters(ids)
        for conference_id, counter in zip(ids, counters, strict=True):
            held = self._described.get(conference_id)
            if held is not None and counter is not None and held.counter == counter:
                continue
            facts = self.conferences.event_facts(conference_id)
            if facts is None or not facts.active:
                described = _Described(counter, None, frozenset())
            else:
                members = frozenset(member.identity for member in facts.members)
                described = _Described(counter, describe(facts), members)
            if len(self._described) >= MAX_CACHED_CONFERENCES:
                self._described.clear()
            self._described[conference_id] = described

    def _one(self, record: SubscriptionRecord, now: float) -> NotifyRequest | None:
        """Apply the record's inputs, decide, save; the NOTIFY to send, if any."""
        described = self._described.get(record.conference_id)
        state = self._inputs_applied(record)
        current = None if described is None else described.info
        if (
            current is not None
            and described is not None
            and record.identity not in described.members
            and state.phase in (Phase.ACTIVE, Phase.FETCH)
        ):
            state = events.end(state, Termination.REJECTED)  # he left: nothing more for him
        ours = _own_transaction(record)
        state, notify = events.plan(state, now, current, retransmit=ours)
        if state.phase is Phase.DONE:
            self.subscriptions.remove(record.conference_id, record.sub_id, record.node)
            self.log("info", f"secconf: subscription in {record.conference_id} ended")
            return None
        if notify is None:
            state, again = events.retransmission(state, now)
            self._note(state)
            if again:
                return self._resend(record, state, now)
        inputs = record.reply is not None or record.refresh_seq != record.applied_refresh
        if notify is None and state == record.notifier and not inputs:
            return None
        if notify is None:
            self.subscriptions.save(record, state, now=now)
            return None
        self._note(state)
        try:
            request = self._request(record, notify, whole=ours)
        except (SecconfError, ValueError) as exc:
            # A NOTIFY we cannot build (a bound, a damaged record): the subscription ends
            # without it rather than stall with a NOTIFY that never leaves.
            message = exc.message if isinstance(exc, SecconfError) else str(exc)
            self.log("err", f"secconf: NOTIFY not built, subscription dropped: {message}")
            self.subscriptions.remove(record.conference_id, record.sub_id, record.node)
            return None
        if not self.subscriptions.save(record, state, now=now, wire=request.wire if ours else None):
            return None  # removed meanwhile (e.g. by an operator): nothing to send
        return request

    def _resend(
        self, record: SubscriptionRecord, state: NotifierState, now: float
    ) -> NotifyRequest | None:
        """Timer E fired: the NOTIFY in flight again, byte for byte (RFC 3261 §17.1.2.2)."""
        if not self.subscriptions.save(record, state, now=now) or record.wire is None:
            return None  # gone, or nothing kept to resend (Timer F ends it)
        return NotifyRequest(
            ruri=_safe(record.contact),
            next_hop=_next_hop(record),
            socket=_safe(record.socket),
            headers="",
            body=b"",
            wire=record.wire,
        )

    def _inputs_applied(self, record: SubscriptionRecord) -> NotifierState:
        state = record.notifier
        if record.refresh is not None and record.refresh_seq != record.applied_refresh:
            at, expires = record.refresh
            state = events.refreshed(state, at, expires)
        if record.provisional is not None:
            state = events.provisional(state, record.provisional)
        if record.reply is not None:
            cseq, status = record.reply
            state = events.answered(state, cseq, status)
        return state

    def _request(self, record: SubscriptionRecord, notify: Notify, *, whole: bool) -> NotifyRequest:
        """The NOTIFY as plain values; built whole (``wire``) when it leaves by
        ``send_data``: a binary body, or a subscription whose NOTIFYs we retransmit."""
        entity = _safe(record.notifier.entity)
        lines = [
            f"From: <{entity}>;tag={_safe(record.our_tag)}",
            f"To: <{_safe(record.subscriber)}>;tag={_safe(record.sub_tag)}",
            f"Call-ID: {_safe(record.call_id)}",
            f"CSeq: {notify.cseq} NOTIFY",
            f"Contact: <{self._contact(record)}>",
            f"Event: {events.EVENT}",
            f"Subscription-State: {notify.subscription_state}",
        ]
        body = b""
        if notify.document is not None:
            body, content_lines = self._body(record, notify.document)
            lines += content_lines
        request = NotifyRequest(
            ruri=_safe(record.contact),
            next_hop=_next_hop(record),
            socket=_safe(record.socket),
            headers="".join(f"{line}\r\n" for line in lines),
            body=body,
        )
        if whole or request.binary:
            return replace(request, wire=self.wire_message(request))
        return request

    def _contact(self, record: SubscriptionRecord) -> str:
        user = self.settings.conference_user.format(id=record.conference_id)
        return local_contact(user, _safe(record.socket))

    def _body(self, record: SubscriptionRecord, document: bytes) -> tuple[bytes, list[str]]:
        """The plain document (SDES mode, TLS only) or its CMS envelope (KMS mode)."""
        if record.mode != "kms":
            return document, [f"Content-Type: {CONFERENCE_INFO_TYPE}"]
        key = record.event_key
        if key is None:
            raise ValueError("a KMS-mode subscription without its event key")
        protected = cms.protect(
            cms.inner_entity(CONFERENCE_INFO_TYPE, document),
            kek=key.kek,
            kek_id=key.key_id,
            random_bytes=self.random_bytes,
        )
        return protected, [
            f"Content-Type: {cms.CONTENT_TYPE}",
            f"Content-Disposition: {cms.CONTENT_DISPOSITION}",
        ]

    def wire_message(self, request: NotifyRequest) -> bytes:
        """*request* as a whole SIP message from our socket (for a stateless send).

        Via names our socket and a fresh branch (RFC 3261 §8.1.1.7), ``rport`` (RFC 3581);
        Max-Forwards 70; Content-Length counts the body's bytes.
        """
        transport, _, rest = request.socket.partition(":")
        address, _, port = rest.rpartition(":")
        host = f"[{address}]" if ":" in address else address
        branch = MAGIC_COOKIE + self.random_bytes(12).hex()
        head = (
            f"NOTIFY {request.ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"{request.headers}"
            f"Content-Length: {len(request.body)}\r\n\r\n"
        )
        return head.encode("utf-8") + request.body

    def on_reply(self, call_id: str, from_user: str | None, cseq: int, status: int) -> bool:
        """A reply to one of our NOTIFYs (seen by a worker): the timer applies it.

        The conference is the From's user (our From is the conference URI); the
        subscription, the Call-ID.  False when it names none of ours.
        """
        target = classify_target(from_user, self.settings.factory, self.settings.conference)
        if target.kind is not TargetKind.CONFERENCE or target.conference_id is None:
            return False
        if status < 200:  # ends nothing; Timer E goes on at T2 (RFC 3261 §17.1.2.2)
            return self.subscriptions.provisional(
                target.conference_id, dialog_id(call_id), cseq=cseq
            )
        return self.subscriptions.reply(
            target.conference_id, dialog_id(call_id), cseq=cseq, status=status
        )
