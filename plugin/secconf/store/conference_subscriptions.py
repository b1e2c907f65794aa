"""Conference event subscriptions (RFC 6665 + RFC 4575) at the focus: records and indexes.

Keys (``P`` the prefix; docs/store.md)::

    P:conf:{id}:sub:<sub id>   hash  one subscription: its dialog (call_id, sub_tag,
                                     our_tag), subscriber, identity, contact (remote
                                     target), the flow (transport, source, socket), node,
                                     mode, epoch, the notifier's state (``notifier``,
                                     JSON of scalars), the last document sent (``sent``:
                                     the plain conference-info document — roster data, not
                                     key material) and in KMS mode the subscription's
                                     event KEK, wrapped (``event_kek``, context
                                     ``conf-sub-key:<id>:<sub id>``) with its key id
                                     (``event_key_id``, hex: ``0x02 || CSB ID``, not secret);
                                     ``wire``: the NOTIFY in flight as sent, while the timer
                                     retransmits it (KMS mode over UDP: the body is the CMS
                                     envelope, ciphertext; the headers hold no key)
    P:conf:{id}:subs           hash  sub id -> identity: the conference's subscriptions
    P:subnode:<node>           zset  "<id>/<sub id>" scored by creation time: the
                                     subscriptions whose flow the Kamailio node holds

The sub id is the SHA-256 of the SUBSCRIBE's Call-ID (as a dialog id).  The record and
the conference index share the conference's slot and are written by one script, which
first checks that the conference is active and in the mode asked, that the identity
still holds a dialog in it (``members``), and the bounds (per conference, per identity);
a refusal writes nothing.  The node index lies in another slot: it is written after the
script and read only as a list of candidates (an entry whose record is gone is dropped
by the reader), so a crash between the two leaves at most a stale index entry.

A member's last dialog ending does not touch these keys: the notifier's tick sees the
identity gone from ``members`` and ends the subscription with ``reason=rejected``
(docs/event-package.md, "The focus's side").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis

from secconf.core import cms, events
from secconf.core.confinfo import ConferenceInfo
from secconf.core.errors import Forbidden, RateLimited, ReplayedMessage
from secconf.core.events import InFlight, NotifierState, Phase, Retransmit, Termination
from secconf.core.focus import ConferenceNotFound

from ._names import ConferenceKeys, check_identity, dialog_id
from .conference_records import text
from .keywrap import KeyWrapper
from .redis import redis_errors, register_script
from .replay import forget_replay_key

__all__ = ["SubscriptionRecord", "Subscriptions"]

#: The record's text fields, in SubscriptionRecord's order.
_TEXT_FIELDS: Final = (
    "call_id", "sub_tag", "our_tag", "subscriber", "identity", "contact",
    "transport", "source", "socket", "node", "mode",
)  # fmt: skip

#: Distinct last documents whose parsed form a process keeps (the timer's, mostly).
SENT_CACHE_MAX: Final = 1024
#: Seconds a node's wake-up counter outlives its last bump.
WAKE_TTL: Final = 3600

#: A record outlives its expiry by this much (the final NOTIFY and its Timer F).
RECORD_SLACK: Final = 120

# KEYS: conf, members, subs, record; ARGV: identity, sub id, mode, max per conference,
# max per identity, ttl ms, then field/value pairs.  Index entries whose record is gone
# (expired with a node that stopped ticking) do not count, and are dropped on success;
# their record names are built from KEYS[1] (``<conf key>:sub:<sub id>``, the same slot).
CREATE: Final = """
local c = redis.call('HMGET', KEYS[1], 'state', 'mode')
if c[1] ~= 'active' then return 'not-found' end
if ARGV[3] ~= '' and c[2] ~= ARGV[3] then return 'mode' end
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') < 1 then return 'not-member' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'exists' end
local entries = redis.call('HGETALL', KEYS[3])
local count, mine, stale = 0, 0, {}
for i = 1, #entries, 2 do
  if redis.call('EXISTS', KEYS[1] .. ':sub:' .. entries[i]) == 1 then
    count = count + 1
    if entries[i + 1] == ARGV[1] then mine = mine + 1 end
  else
    stale[#stale + 1] = entries[i]
  end
end
if count >= tonumber(ARGV[4]) then return 'full-conference' end
if mine >= tonumber(ARGV[5]) then return 'full-identity' end
if #stale > 0 then redis.call('HDEL', KEYS[3], unpack(stale)) end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[4], unpack(fields))
redis.call('PEXPIRE', KEYS[4], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return 'ok'
"""

# KEYS: record; ARGV: ttl ms, the refresh applied (its seq), the reply consumed (its
# CSeq or ''), then field/value pairs.  Only a record that still exists; the reply fields
# are cleared only if they still hold the reply consumed (a newer one stays).
SAVE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = {'applied_refresh', ARGV[2]}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'reply_cseq') == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'reply_cseq', 'reply_status')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: record; ARGV: ttl ms ('' = keep), then field/value pairs; 'refresh' = 1 counts
# one more refresh.  An input from a worker for the node's timer (refresh, a NOTIFY's
# reply): only a record that exists, and never the notifier's own fields.
INPUT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'refresh_seq', 1) end
if ARGV[1] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return redis.call('HGET', KEYS[1], 'node') or ''
"""

# KEYS: record, subs; ARGV: sub id.
REMOVE: Final = """
redis.call('DEL', KEYS[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One subscription as stored: the dialog, the flow, who, and the notifier's state."""

    conference_id: str
    call_id: str
    sub_tag: str
    our_tag: str
    subscriber: str
    identity: str
    contact: str
    transport: str
    source: str
    socket: str
    node: str
    mode: str
    epoch: int
    notifier: NotifierState
    event_key: cms.EventKey | None = field(default=None, repr=False)
    #: refreshes taken by workers (their count, the last one's time and ``Expires``)
    refresh_seq: int = 0
    refresh: tuple[float, int] | None = None
    #: the refreshes the notifier applied (all of them when equal to refresh_seq)
    applied_refresh: int = 0
    #: the final reply a worker saw to a NOTIFY (CSeq, status), not yet applied
    reply: tuple[int, int] | None = None
    #: the CSeq of the last NOTIFY a worker saw a 1xx to (applying it twice is harmless)
    provisional: int | None = None
    #: the NOTIFY in flight as sent, while the timer retransmits it (Timer E)
    wire: bytes | None = field(default=None, repr=False)

    @property
    def sub_id(self) -> str:
        return dialog_id(self.call_id)


def _flight_json(flight: InFlight | None) -> list[float] | None:
    if flight is None:
        return None
    timer_e = (
        [] if flight.retransmit is None else [flight.retransmit.at, flight.retransmit.interval]
    )
    return [flight.cseq, flight.deadline, *timer_e]


def _flight(data: list[Any] | None) -> InFlight | None:
    if not data:
        return None
    timer_e = Retransmit(float(data[2]), float(data[3])) if len(data) >= 4 else None
    return InFlight(int(data[0]), float(data[1]), timer_e)


def _state_json(state: NotifierState) -> str:
    return json.dumps(
        {
            "phase": state.phase.value,
            "entity": state.entity,
            "version": state.version,
            "next_cseq": state.next_cseq,
            "expires_at": state.expires_at,
            "in_flight": _flight_json(state.in_flight),
            "ending": state.ending.value if state.ending else None,
        },
        separators=(",", ":"),
    )


def _state(raw: str, sent: ConferenceInfo | None) -> NotifierState:
    data = json.loads(raw)
    return NotifierState(
        phase=Phase(data["phase"]),
        entity=str(data["entity"]),
        version=int(data["version"]),
        next_cseq=int(data["next_cseq"]),
        expires_at=float(data["expires_at"]),
        sent=sent,
        in_flight=_flight(data["in_flight"]),
        ending=Termination(data["ending"]) if data["ending"] else None,
    )


def _state_fields(state: NotifierState, sent: bytes) -> list[str | bytes]:
    return ["notifier", _state_json(state), "sent", sent]


def _ttl_ms(state: NotifierState, now: float) -> int:
    return max(1000, math.ceil((state.expires_at - now + RECORD_SLACK) * 1000))


class Subscriptions:
    """The focus's conference subscriptions (``ConferenceStore``-style part, sync Redis)."""

    def __init__(self, client: redis.Redis, keys: ConferenceKeys, wrapper: KeyWrapper) -> None:
        self._redis = client
        self._keys = keys
        self._wrapper = wrapper
        self._create = register_script(client, CREATE)
        self._save = register_script(client, SAVE)
        self._input = register_script(client, INPUT)
        self._sent_cache: dict[bytes, ConferenceInfo] = {}
        # The other way: a state to its stored bytes.  One change is saved for every
        # subscription of the conference with the same state: written once, not per save.
        self._snapshot_cache: dict[ConferenceInfo, bytes] = {}
        self._remove = register_script(client, REMOVE)

    def __repr__(self) -> str:
        return f"Subscriptions(prefix={self._keys.prefix!r})"

    def _context(self, conference_id: str, sub_id: str) -> bytes:
        return f"conf-sub-key:{conference_id}:{sub_id}".encode()

    def create(
        self,
        record: SubscriptionRecord,
        *,
        now: float,
        max_per_conference: int,
        max_per_identity: int,
        replay_key: str | None = None,
        replay_ttl: float = 0.0,
    ) -> None:
        """Store a new subscription, or refuse with nothing written.

        :class:`ConferenceNotFound` (404) for a conference not active, ``Forbidden`` (403)
        for another mode or an identity without a dialog in it (or the same dialog twice),
        :class:`RateLimited` (403 + Retry-After) beyond a bound.  *replay_key* (the KMS-mode
        SUBSCRIBE's TRANSFER_INIT in the replay cache, another slot) is set first (``SET NX
        PX``: a replay is ``ReplayedMessage``, 403) and deleted again if the script refuses,
        as :meth:`.ReferStream.add` does.
        """
        check_identity(record.identity, "identity")
        conf, sub = record.conference_id, record.sub_id
        fields: list[str | bytes] = [
            "call_id", record.call_id, "sub_tag", record.sub_tag, "our_tag", record.our_tag,
            "subscriber", record.subscriber, "identity", record.identity,
            "contact", record.contact, "transport", record.transport, "source", record.source,
            "socket", record.socket, "node", record.node, "mode", record.mode,
            "epoch", str(record.epoch), *_state_fields(record.notifier, self._snapshot(record.notifier)),
        ]  # fmt: skip
        if record.event_key is not None:
            wrapped = self._wrapper.wrap(record.event_key.kek, self._context(conf, sub))
            fields += ["event_kek", wrapped, "event_key_id", record.event_key.key_id.hex()]
        keys = [
            self._keys.conference(conf),
            self._keys.conference(conf, "members"),
            self._keys.subscriptions(conf),
            self._keys.subscription(conf, sub),
        ]
        args: list[Any] = [
            record.identity, sub, record.mode, int(max_per_conference), int(max_per_identity),
            _ttl_ms(record.notifier, now), *fields,
        ]  # fmt: skip
        if replay_key:
            ttl_ms = max(1, math.ceil(replay_ttl * 1000))
            with redis_errors("check a SUBSCRIBE for replay"):
                if not self._redis.set(replay_key, b"1", nx=True, px=ttl_ms):
                    raise ReplayedMessage("MIKEY message replayed")
        try:
            with redis_errors("record a subscription"):
                result = text(self._create(keys=keys, args=args))
            _raise_refusal(result)
        except BaseException:
            if replay_key:
                forget_replay_key(self._redis, replay_key)
            raise
        with redis_errors("index a subscription"):
            self._redis.zadd(self._keys.subscription_node(record.node), {f"{conf}/{sub}": now})
            self._wake(record.node)

    def get(self, conference_id: str, sub_id: str) -> SubscriptionRecord | None:
        """The record, or None if there is none."""
        with redis_errors("read a subscription"):
            raw = cast(
                dict[bytes, bytes],
                self._redis.hgetall(self._keys.subscription(conference_id, sub_id)),
            )
        return self._decode(conference_id, sub_id, raw) if raw else None

    def get_many(self, pairs: Sequence[tuple[str, str]]) -> list[SubscriptionRecord | None]:
        """The records of ``(conference id, sub id)`` pairs, one pipeline (the timer's read)."""
        if not pairs:
            return []
        with redis_errors("read subscriptions"):
            pipe = self._redis.pipeline(transaction=False)
            for conference_id, sub_id in pairs:
                pipe.hgetall(self._keys.subscription(conference_id, sub_id))
            raws = cast(list[dict[bytes, bytes]], pipe.execute())
        return [
            self._decode(conf, sub, raw) if raw else None
            for (conf, sub), raw in zip(pairs, raws, strict=True)
        ]

    def _snapshot(self, state: NotifierState) -> bytes:
        """The bytes that store *state*'s last document sent (written once per distinct one)."""
        if state.sent is None:
            return b""
        body = self._snapshot_cache.get(state.sent)
        if body is None:
            body = events.snapshot(state.sent)
            self._remember(body, state.sent)
        return body

    def _remember(self, body: bytes, info: ConferenceInfo) -> None:
        if len(self._snapshot_cache) >= SENT_CACHE_MAX:
            self._snapshot_cache.clear()
            self._sent_cache.clear()
        self._snapshot_cache[info] = body
        self._sent_cache[hashlib.sha256(body).digest()] = info

    def _sent(self, body: bytes) -> ConferenceInfo | None:
        """The last document sent, read once per distinct document (the timer reads it
        every tick; parsing is the costly part)."""
        if not body:
            return None
        info = self._sent_cache.get(hashlib.sha256(body).digest())
        if info is None:
            info = events.info_from_snapshot(body)
            self._remember(body, info)
        return info

    def _decode(
        self, conference_id: str, sub_id: str, raw: Mapping[bytes, bytes]
    ) -> SubscriptionRecord:
        def field_text(name: str) -> str:
            return text(raw.get(name.encode(), b""))

        wrapped = raw.get(b"event_kek")
        key = None
        if wrapped:
            kek = self._wrapper.unwrap(wrapped, self._context(conference_id, sub_id))
            key = cms.EventKey(bytes.fromhex(field_text("event_key_id")), kek)
        return SubscriptionRecord(
            conference_id=conference_id,
            **{name: field_text(name) for name in _TEXT_FIELDS},
            epoch=int(field_text("epoch") or 0),
            notifier=_state(field_text("notifier"), self._sent(raw.get(b"sent", b""))),
            event_key=key,
            refresh_seq=int(field_text("refresh_seq") or 0),
            refresh=(float(field_text("refresh_at")), int(field_text("refresh_expires")))
            if raw.get(b"refresh_at")
            else None,
            applied_refresh=int(field_text("applied_refresh") or 0),
            reply=(int(field_text("reply_cseq")), int(field_text("reply_status")))
            if raw.get(b"reply_cseq")
            else None,
            provisional=int(field_text("prov_cseq")) if raw.get(b"prov_cseq") else None,
            wire=raw.get(b"wire") or None,
        )

    def save(
        self,
        record: SubscriptionRecord,
        state: NotifierState,
        *,
        now: float,
        wire: bytes | None = None,
    ) -> bool:
        """The node's timer writes the notifier's new state (it alone writes it).

        The inputs *record* carried are marked consumed (its refresh's sequence number,
        its reply); inputs that arrived since stay for the next tick.  *wire*: the NOTIFY
        just sent, kept while the timer retransmits it; the stored one is dropped once no
        NOTIFY in flight has Timer E.  False if the record is gone (nothing written).
        """
        consumed = "" if record.reply is None else str(record.reply[0])
        fields = _state_fields(state, self._snapshot(state))
        if wire is not None:
            fields += ["wire", wire]
        elif state.in_flight is None or state.in_flight.retransmit is None:
            fields += ["wire", b""]
        args: list[Any] = [_ttl_ms(state, now), record.refresh_seq, consumed, *fields]
        key = self._keys.subscription(record.conference_id, record.sub_id)
        with redis_errors("update a subscription"):
            saved = self._save(keys=[key], args=args)
        return bool(saved)

    def refresh(self, conference_id: str, sub_id: str, *, now: float, expires: int) -> bool:
        """A worker took an in-dialog SUBSCRIBE: the timer applies it at its next tick."""
        ttl = "" if expires == 0 else str(math.ceil((expires + RECORD_SLACK) * 1000))
        args: list[Any] = [ttl, "1", "refresh_at", repr(float(now)), "refresh_expires", expires]
        return self._leave_input(conference_id, sub_id, args, "refresh a subscription")

    def reply(self, conference_id: str, sub_id: str, *, cseq: int, status: int) -> bool:
        """A NOTIFY's final reply, seen by a worker: the timer applies it at its next tick."""
        args: list[Any] = ["", "0", "reply_cseq", int(cseq), "reply_status", int(status)]
        return self._leave_input(conference_id, sub_id, args, "record a NOTIFY's reply")

    def provisional(self, conference_id: str, sub_id: str, *, cseq: int) -> bool:
        """A 1xx to a NOTIFY, seen by a worker: its Timer E goes on at T2 (the timer's)."""
        args: list[Any] = ["", "0", "prov_cseq", int(cseq)]
        return self._leave_input(conference_id, sub_id, args, "record a NOTIFY's 1xx")

    def _leave_input(self, conference_id: str, sub_id: str, args: list[Any], what: str) -> bool:
        """The input beside the record, then the wake-up of the node whose timer owns it.

        Two commands (the node's counter is in another slot than the record in a Cluster):
        the input first, so a timer that sees the new count finds the input.
        """
        key = self._keys.subscription(conference_id, sub_id)
        with redis_errors(what):
            node = self._input(keys=[key], args=args)
            if node is None:
                return False
            if node:
                self._wake(text(node))
        return True

    def _wake(self, node: str) -> None:
        """Bump the node's wake-up counter (kept an hour after its last bump: a node that
        went away leaves nothing for ever; a counter that expired and restarts still
        differs from what a live timer saw)."""
        key = self._keys.subscription_node_wake(node)
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, WAKE_TTL)
        pipe.execute()

    def wake_count(self, node: str) -> int:
        """How many inputs the node's workers left (a timer compares it with the last seen)."""
        with redis_errors("read the node's wake-up counter"):
            value = self._redis.get(self._keys.subscription_node_wake(node))
        return int(value) if value else 0

    def remove(self, conference_id: str, sub_id: str, node: str) -> None:
        """Forget the subscription (idempotent): the record, then its node index entry."""
        keys = [
            self._keys.subscription(conference_id, sub_id),
            self._keys.subscriptions(conference_id),
        ]
        with redis_errors("remove a subscription"):
            self._remove(keys=keys, args=[sub_id])
            self._redis.zrem(self._keys.subscription_node(node), f"{conference_id}/{sub_id}")

    def of_node(self, node: str, *, limit: int, offset: int = 0) -> list[tuple[str, str]]:
        """Up to *limit* ``(conference id, sub id)`` the node holds, oldest first, from
        *offset* (the timer walks a long index a slice per tick)."""
        start = max(0, offset)
        with redis_errors("list a node's subscriptions"):
            raw = cast(
                list[bytes],
                self._redis.zrange(
                    self._keys.subscription_node(node), start, start + max(1, limit) - 1
                ),
            )
        pairs = [text(entry).partition("/") for entry in raw]
        return [(conf, sub) for conf, _, sub in pairs if conf and sub]

    def of_conference(self, conference_id: str) -> dict[str, str]:
        """sub id -> identity for the conference (tests, operators, the release path)."""
        with redis_errors("list a conference's subscriptions"):
            raw = cast(
                dict[bytes, bytes],
                self._redis.hgetall(self._keys.subscriptions(conference_id)),
            )
        return {text(sub): text(who) for sub, who in raw.items()}

    def drop_index_entries(self, node: str, entries: Sequence[tuple[str, str]]) -> None:
        """Forget node index entries whose records are gone (the reader found none)."""
        if entries:
            with redis_errors("clean a node's index"):
                self._redis.zrem(
                    self._keys.subscription_node(node), *[f"{c}/{s}" for c, s in entries]
                )


def _raise_refusal(result: str) -> None:
    """The create script's refusal as the error the focus answers with."""
    if result == "ok":
        return
    if result == "not-found":
        raise ConferenceNotFound("no such conference")
    if result == "mode":
        raise Forbidden("this conference does not take this mode's subscriptions")
    if result == "not-member":
        raise Forbidden("only a member of the conference may subscribe to it")
    if result == "exists":
        raise Forbidden("this dialog already holds a subscription")
    if result == "full-conference":
        raise RateLimited("the conference has as many subscriptions as it takes", 60)
    if result == "full-identity":
        raise RateLimited("this identity has as many subscriptions here as it may", 60)
    raise ValueError(f"unexpected answer from the subscription script: {result!r}")
