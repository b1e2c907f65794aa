"""Conference state shared by every Kamailio worker and node: one Redis, atomic scripts.

This store is **synchronous** (``redis.Redis``): it runs inside Kamailio
workers, which have no event loop and must not start threads.  Every call has
the client's socket timeout (see :func:`connect_blocking`) and a dead or slow
Redis surfaces as :class:`~secconf.core.errors.ServiceUnavailable` (503).

Key layout (``P`` is the prefix; ``{id}`` is the conference id in braces, a
Redis Cluster hash tag: every key of one conference, its dialogs and streams
included, lives in one slot)::

    P:conf:{id}                    hash  state ("active"/"ended"), mode, creator, uri,
                                         created, epoch (current key epoch), suite,
                                         kms_legs (dialogs keyed in KMS mode)
    P:conf:{id}:allowed            set   identities allowed to join
    P:conf:{id}:members            hash  identity -> number of its dialogs (pending or up)
    P:conf:{id}:epochs             hash  epoch number -> wrapped key||salt
                                         (context ``conf-epoch:<id>:<n>``); for an epoch
                                         from the KMS also ``ticket:<n>`` -> the wrapped
                                         group epoch ticket (``conf-epoch-ticket:<id>:<n>``,
                                         secconf.core.mikey.group), deleted with the epochs
    P:conf:{id}:ssrcs              hash  SSRC (decimal) -> dialog id holding it
    P:conf:{id}:dialog:<dialog id> hash  conference, identity, leg, state ("pending"/"up"),
                                         ssrcs (comma list), creator ("1" for the creating call),
                                         mode (how this leg is keyed: "sdes"/"kms"),
                                         dialout ("1" for a dial-out dialog)
    P:conf:{id}:refer              stream  accepted REFERs to the focus (referrer, target,
                                         mode, ...): consumed by the dial-out watcher
                                         (secconf.store.watcher.ReferQueue);
                                         expires with the conference
    P:conf:{id}:rekey-failed       stream  re-INVITEs carrying a new epoch that a
                                         participant refused (leg, identity, call_id,
                                         status, epoch, ...): consumed by the watcher;
                                         expires with the conference
    P:dialout:<id>                 stream  dial-outs the watcher made (target, result, ...;
                                         no keys): the watcher's own single-key stream
                                         (XADD + EXPIRE of that key only, any slot;
                                         secconf.store.watcher.WatcherJournal)

A dial-out dialog (the mixer called a participant after a REFER, or to replace a
leg) has ``dialout`` = "1"; its SSRCs come from the participant's answer
(:meth:`ConferenceStore.dialout_answered`).

Once its 2xx passed a dialog record also holds ``epoch`` (the key epoch its edge
leg sends under) and ``media`` (JSON: the negotiated streams with their crypto
tags, the edge's external and internal addresses), which rekey re-INVITEs use.

The dialog id is the SHA-256 of the SIP Call-ID (hex).  A dialog is addressed
by its conference and its Call-ID: the Kamailio module puts the conference id
into its Record-Route (``;sc-conf=<id>``), so every in-dialog request from
either side names it, and the reply and failure routes carry it in the
transaction's state.  Every script declares every key it touches in ``KEYS``
and all of them share the ``{id}`` tag: one round trip, one slot, on a single
Redis, behind Sentinel or on Redis Cluster alike.  The replay cache of a REFER's
TRANSFER_INIT (``P:replay:<sha256>``, another slot) is a separate single-key
``SET NX`` before the script, undone if the script refuses.

Every multi-key change is one Lua script: a refusal (unknown conference, not
allowed, SSRC taken, duplicate dialog) writes nothing.  When the last dialog of
a conference is released the conference is marked ended, its key epochs are
deleted at once, and its other keys expire after ``ended_ttl`` seconds; if
that dialog was the creating call and never answered, the conference never
existed and every key is deleted.  Dialog records expire after ``dialog_ttl``.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis

from secconf.core.errors import (
    CallDoesNotExist,
    Forbidden,
    NotAcceptable,
    RateLimited,
    ReplayedMessage,
    ServiceUnavailable,
)
from secconf.core.focus import ConferenceNotFound, SsrcCollision
from secconf.core.gate import AckHops, DialogPeers, Direction
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES

from ._names import check_identity, check_prefix
from .errors import Conflict, CorruptRecord, InvalidRecord
from .keywrap import KeyWrapper
from .redis import connect_blocking, redis_errors, register_script

__all__ = [
    "REKEY_FAILED_MAX",
    "Answered",
    "ConferenceExists",
    "ConferenceInfo",
    "ConferenceStore",
    "DialogExists",
    "DialogRecord",
    "Released",
    "conference_key",
    "connect_blocking",
    "dialog_id",
    "epoch_context",
    "epoch_ticket_context",
]

_CONFERENCE_ID_RE: Final = re.compile(r"^[0-9a-z]{1,64}$")
_LEG_RE: Final = re.compile(r"^[0-9A-Za-z._-]{1,128}$")
MAX_SSRCS: Final = 64
#: Entries kept in a conference's REFER stream (approximate trim, XADD MAXLEN ~).
REFER_STREAM_MAX: Final = 1000
#: Entries kept in a conference's rekey-failure stream.
REKEY_FAILED_MAX: Final = 1000


def dialog_id(call_id: str) -> str:
    """The id of a dialog's record: hex SHA-256 of its Call-ID (any length, any bytes)."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).hexdigest()


def conference_key(prefix: str, conference_id: str, part: str = "") -> str:
    """``P:conf:{<id>}`` or ``P:conf:{<id>}:<part>``: a key of one conference (one slot).

    Also how :class:`~secconf.store.watcher.ReferQueue` names the REFER stream it reads.
    """
    _check_conference_id(conference_id)
    suffix = f":{part}" if part else ""
    return f"{prefix}:conf:{{{conference_id}}}{suffix}"


def epoch_context(conference_id: str, epoch: int) -> bytes:
    """Key-wrapping context of one epoch's key: binds the blob to that conference and epoch."""
    return f"conf-epoch:{conference_id}:{epoch}".encode("ascii")


def epoch_ticket_context(conference_id: str, epoch: int) -> bytes:
    """Key-wrapping context of one KMS epoch's ticket material (GTGK, MPKs, RANDRi)."""
    return f"conf-epoch-ticket:{conference_id}:{epoch}".encode("ascii")


class ConferenceExists(Conflict):
    """A conference id already in use (ids are random: mint another)."""


class DialogExists(Conflict):
    """A Call-ID that already has a record (a retransmission that got past the proxy)."""


@dataclass(frozen=True, slots=True)
class DialogRecord:
    """A participant's dialog with the focus."""

    conference_id: str
    identity: str
    leg: str
    state: str = "pending"
    ssrcs: tuple[int, ...] = ()
    creator: bool = False
    epoch: int | None = None  # the epoch its leg sends under (set once its 2xx passed)
    media: str = ""  # JSON: streams, edge addresses (set once its 2xx passed)
    mode: str = ""  # how this leg is keyed ("sdes"/"kms"; "" in records older than this field)
    #: a dial-out dialog (the mixer called the participant: the mixer is the dialog's caller)
    dialout: bool = False
    #: both sides' tags, flows and contacts, recorded at the 2xx (secconf.core.gate.DialogPeers
    #: JSON; no key material): in-dialog requests are accepted only from them
    peers: str = ""


@dataclass(frozen=True, slots=True)
class ConferenceInfo:
    conference_id: str
    state: str
    mode: str
    creator: str
    uri: str
    epoch: int
    suite: str
    created: float
    kms_legs: int = 0  # dialogs keyed in KMS mode (their epochs must come from the KMS)


@dataclass(frozen=True, slots=True)
class Released:
    """What :meth:`ConferenceStore.release` removed."""

    dialog: DialogRecord
    conference_ended: bool


@dataclass(frozen=True, slots=True)
class Answered:
    """A dialog marked up, and the conference key it must get."""

    dialog: DialogRecord
    group_key: GroupKey = field(repr=False)


# KEYS: conf, allowed, members, epochs, ssrcs, dialog
# ARGV: mode, creator, uri, now, suite, wrapped, dialog_ttl, leg, dialog_id, conference_id,
#       n_ssrc, ssrc..., allowed...
_CREATE = """
if redis.call('EXISTS', KEYS[6]) == 1 then return 'dialog-exists' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'conf-exists' end
local n = tonumber(ARGV[11])
local kms = 0
if ARGV[1] == 'kms' then kms = 1 end
redis.call('HSET', KEYS[1], 'state', 'active', 'mode', ARGV[1], 'creator', ARGV[2],
  'uri', ARGV[3], 'created', ARGV[4], 'epoch', '1', 'suite', ARGV[5], 'kms_legs', kms)
redis.call('SADD', KEYS[2], ARGV[2])
for i = 12 + n, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[4], '1', ARGV[6])
local ssrcs = {}
for i = 12, 11 + n do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[9])
  ssrcs[#ssrcs + 1] = ARGV[i]
end
redis.call('HSET', KEYS[6], 'conference', ARGV[10], 'identity', ARGV[2], 'leg', ARGV[8],
  'state', 'pending', 'ssrcs', table.concat(ssrcs, ','), 'creator', '1', 'mode', ARGV[1])
redis.call('EXPIRE', KEYS[6], ARGV[7])
return 'ok'
"""

# KEYS: conf, allowed, members, ssrcs, dialog
# ARGV: identity, leg, dialog_id, dialog_ttl, conference_id, required mode ('' = any),
#       leg mode, ssrc...
_JOIN = """
local c = redis.call('HMGET', KEYS[1], 'state', 'mode')
if c[1] ~= 'active' then return 'not-found' end
if ARGV[6] ~= '' and c[2] ~= ARGV[6] then return 'mode' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return 'forbidden' end
if redis.call('EXISTS', KEYS[5]) == 1 then return 'dialog-exists' end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') >= tonumber(ARGV[8]) then
  return 'limit'
end
for i = 9, #ARGV do
  if redis.call('HEXISTS', KEYS[4], ARGV[i]) == 1 then return 'ssrc' end
end
local ssrcs = {}
for i = 9, #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[3])
  ssrcs[#ssrcs + 1] = ARGV[i]
end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[5], 'conference', ARGV[5], 'identity', ARGV[1], 'leg', ARGV[2],
  'state', 'pending', 'ssrcs', table.concat(ssrcs, ','), 'creator', '0', 'mode', ARGV[7])
if ARGV[7] == 'kms' then redis.call('HINCRBY', KEYS[1], 'kms_legs', 1) end
redis.call('EXPIRE', KEYS[5], ARGV[4])
return redis.call('HGET', KEYS[1], 'epoch')
"""

# KEYS: conf, allowed, members, dialog
# ARGV: identity, leg, dialog_id, dialog_ttl, conference_id, required conference mode
# ('' = any: policy.mixed_modes), leg mode ('sdes'/'kms').  A dial-out from the mixer:
# like a join, no SSRCs yet (they come with the answer).
_DIALOUT = """
local c = redis.call('HMGET', KEYS[1], 'state', 'mode')
if c[1] ~= 'active' then return 'not-found' end
if ARGV[6] ~= '' and c[2] ~= ARGV[6] then return 'mode' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return 'forbidden' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'dialog-exists' end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[4], 'conference', ARGV[5], 'identity', ARGV[1], 'leg', ARGV[2],
  'state', 'pending', 'ssrcs', '', 'creator', '0', 'dialout', '1', 'mode', ARGV[7])
if ARGV[7] == 'kms' then redis.call('HINCRBY', KEYS[1], 'kms_legs', 1) end
redis.call('EXPIRE', KEYS[4], ARGV[4])
return redis.call('HGET', KEYS[1], 'epoch')
"""

# KEYS: dialog, conf, ssrcs; ARGV: dialog_id, media JSON, leg epoch, peers JSON, the two
# sender fingerprints (participant, mixer), the next hops JSON (AckHops), ssrc...
# A dial-out's 2xx: its SSRCs (from the participant's answer) checked and registered,
# the dialog marked up on *epoch* with its peers.  A collision writes nothing.
_DIALOUT_ANSWERED = """
if redis.call('HGET', KEYS[1], 'dialout') ~= '1' then return 'no-dialog' end
if redis.call('HGET', KEYS[2], 'state') ~= 'active' then return 'not-found' end
for i = 8, #ARGV do
  local holder = redis.call('HGET', KEYS[3], ARGV[i])
  if holder and holder ~= ARGV[1] then return 'ssrc' end
end
local ssrcs = {}
for i = 8, #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[1])
  ssrcs[#ssrcs + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], 'state', 'up', 'media', ARGV[2], 'epoch', ARGV[3],
  'peers', ARGV[4], 'sent-p', ARGV[5], 'sent-m', ARGV[6], 'hops', ARGV[7],
  'ssrcs', table.concat(ssrcs, ','))
return 'ok'
"""

# KEYS: dialog, conf, epochs; ARGV: media JSON, leg epoch ('' = the current one), peers JSON,
# the two sender fingerprints, the next hops JSON.
# Marks the dialog up with its peers; returns it with the current epoch's key.
_ANSWERED = """
local d = redis.call('HMGET', KEYS[1], 'conference', 'identity', 'leg', 'ssrcs', 'creator')
if not d[1] then return {'no-dialog'} end
local c = redis.call('HMGET', KEYS[2], 'state', 'epoch', 'suite')
if c[1] ~= 'active' then return {'not-found'} end
local blob = redis.call('HGET', KEYS[3], c[2])
if not blob then return {'no-key'} end
local epoch = ARGV[2]
if epoch == '' then epoch = c[2] end
redis.call('HSET', KEYS[1], 'state', 'up', 'media', ARGV[1], 'epoch', epoch, 'peers', ARGV[3],
  'sent-p', ARGV[4], 'sent-m', ARGV[5], 'hops', ARGV[6])
return {'ok', d[1], d[2], d[3], d[4], d[5], c[2], c[3], blob}
"""

# KEYS: dialog; ARGV: epoch.  The dialog's leg now sends under a newer epoch.
_SWITCHED = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then return 'no-dialog' end
if tonumber(ARGV[1]) > tonumber(e) then redis.call('HSET', KEYS[1], 'epoch', ARGV[1]) end
return 'ok'
"""

# KEYS: conf, epochs; ARGV: epoch.  Undo an epoch just added (the edge refused it).
_DROP_EPOCH = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 'stale' end
redis.call('HDEL', KEYS[2], ARGV[1], 'ticket:' .. ARGV[1])
redis.call('HSET', KEYS[1], 'epoch', tostring(tonumber(ARGV[1]) - 1))
return 'ok'
"""

# KEYS: conf, stream; ARGV: max length, field, value, ...
_REKEY_FAILED = """
if not redis.call('HGET', KEYS[1], 'state') then return 'not-found' end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return id
"""

# KEYS: dialog, conf, allowed, members, ssrcs, epochs, refer stream, rekey-failed stream
# ARGV: dialog_id, ended_ttl_ms.
_RELEASE = """
local d = redis.call('HMGET', KEYS[1], 'conference', 'identity', 'leg', 'ssrcs', 'creator',
  'state', 'mode')
if not d[1] then return {'no-dialog'} end
redis.call('DEL', KEYS[1])
if d[7] == 'kms' and redis.call('HEXISTS', KEYS[2], 'kms_legs') == 1 then
  redis.call('HINCRBY', KEYS[2], 'kms_legs', -1)
end
local left = redis.call('HINCRBY', KEYS[4], d[2], -1)
if left <= 0 then redis.call('HDEL', KEYS[4], d[2]) end
for s in string.gmatch(d[4] or '', '[^,]+') do
  if redis.call('HGET', KEYS[5], s) == ARGV[1] then
    redis.call('HDEL', KEYS[5], s)
  end
end
local ended = 0
if redis.call('HLEN', KEYS[4]) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  ended = 1
  redis.call('DEL', KEYS[6])
  local rest = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7], KEYS[8]}
  if d[5] == '1' and d[6] == 'pending' then
    -- the creating call failed: the conference never existed
    for _, k in ipairs(rest) do redis.call('DEL', k) end
  else
    redis.call('HSET', KEYS[2], 'state', 'ended')
    for _, k in ipairs(rest) do redis.call('PEXPIRE', k, ARGV[2]) end
  end
end
return {'ok', d[1], d[2], d[3], d[4], d[5], d[6], ended}
"""

# KEYS: dialog; ARGV: the sender's fingerprint (flow|from tag|to tag).
# The gate of an in-dialog request other than INVITE/REFER: which side sent it ('p'
# participant, 'm' mixer) and the peers, or why not.  Nothing is written.
_SENDER = """
local s = redis.call('HMGET', KEYS[1], 'state', 'sent-p', 'sent-m', 'peers', 'hops')
if not s[1] or (s[1] ~= 'up' and s[1] ~= 'closing') or not s[4] then return {'no-dialog'} end
local side = ''
if ARGV[1] == s[2] then side = 'p' elseif ARGV[1] == s[3] then side = 'm' end
if side == '' then return {'not-peer'} end
return {'ok', side, s[5] or s[4], s[1]}
"""

# _RELEASE behind the sender's check (a BYE: one round trip).  KEYS as _RELEASE;
# ARGV: dialog_id, ended ttl ms, the sender's fingerprint.  A closing dialog just goes.
_RELEASE_FROM = (
    """
local s = redis.call('HMGET', KEYS[1], 'state', 'sent-p', 'sent-m', 'peers', 'hops')
if not s[1] or (s[1] ~= 'up' and s[1] ~= 'closing') or not s[4] then return {'no-dialog'} end
local side = ''
if ARGV[3] == s[2] then side = 'p' elseif ARGV[3] == s[3] then side = 'm' end
if side == '' then return {'not-peer'} end
local hops = s[5] or s[4]
if s[1] == 'closing' then
  redis.call('DEL', KEYS[1])
  return {'closing', side, hops}
end
local released = (function()
"""
    + "\n".join("  " + line for line in _RELEASE.strip().splitlines())
    + """
end)()
return {'released', side, hops, unpack(released)}
"""
)

# KEYS: conf, allowed, members, stream
# ARGV: referrer, target, (unused), stream max length, mode ('' = any), field, value, ...
_REFER = """
local c = redis.call('HMGET', KEYS[1], 'state', 'mode')
if c[1] ~= 'active' then return 'not-found' end
if ARGV[5] ~= '' and c[2] ~= ARGV[5] then return 'mode' end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 'not-member' end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then return 'target' end
local sent = tonumber(redis.call('GET', KEYS[5]) or '0')
if sent >= tonumber(ARGV[6]) then return 'rate:' .. redis.call('PTTL', KEYS[5]) end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
redis.call('INCR', KEYS[5])
if sent == 0 then redis.call('PEXPIRE', KEYS[5], 60000) end
return id
"""

# KEYS: the identity's dialogs (a sorted set); ARGV: member, limit, max age in ms.
# One more concurrent dialog for an identity, or 'full:<ms until the oldest ages out>'.
# Members older than the max age are dropped first (a BYE that never came).
_HOLD_DIALOG = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'ok' end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return 'full:' .. (tonumber(oldest[2]) + tonumber(ARGV[3]) - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'ok'
"""

# KEYS: conf, epochs; ARGV: new epoch, wrapped key, wrapped ticket ('' = none).
# Only the next epoch of an active conference.
_ADD_EPOCH = """
local c = redis.call('HMGET', KEYS[1], 'state', 'epoch')
if c[1] ~= 'active' then return 'not-found' end
if tonumber(c[2]) + 1 ~= tonumber(ARGV[1]) then return 'stale' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'ticket:' .. ARGV[1], ARGV[3]) end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
return 'ok'
"""


#: The dialog record's fields for its peers, in the order the scripts take them.
_PEER_FIELDS = ("peers", "sent-p", "sent-m", "hops")


def _peer_fields(peers: DialogPeers | None) -> tuple[str, str, str, str]:
    """The peers' JSON, each side's sender fingerprint and the next hops, as the record keeps them.

    The fingerprints are what the in-dialog scripts compare; the hops (AckHops JSON) are
    what they hand back, so a passing request is relayed without the peers being parsed.
    """
    if peers is None:
        return "", "", "", ""
    hops = peers.hops
    return peers.to_json(), hops.from_participant, hops.from_mixer, hops.encode()


def _released(raw: Sequence[bytes]) -> Released:
    """_RELEASE's answer ``{'ok', conference, identity, leg, ssrcs, creator, state, ended}``."""
    conference_id, identity, leg, ssrcs, creator, state = (_text(item) for item in raw[1:7])
    record = DialogRecord(conference_id, identity, leg, state, _ssrcs(ssrcs), creator == "1")
    return Released(record, int(raw[7]) == 1)


def _sender_result(raw: Sequence[bytes]) -> tuple[Direction, tuple[str, str], str]:
    """Who sent it, where it goes (Request-URI, destination URI), the state or the outcome."""
    status = _text(raw[0])
    if status == "no-dialog":
        raise CallDoesNotExist("no such conference dialog")
    if status == "not-peer":
        raise Forbidden("in-dialog request not from a peer of the dialog")
    side = _text(raw[1])
    direction = Direction.FROM_PARTICIPANT if side == "p" else Direction.FROM_MIXER
    recorded = _text(raw[2])
    hops = AckHops.decode(recorded)
    if hops is None:  # a record from before the hops were kept: its peers
        hops = DialogPeers.from_json(recorded).hops
    return direction, hops.receiver(direction), (_text(raw[3]) if status == "ok" else status)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _ssrcs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part)
    except ValueError:
        raise CorruptRecord("dialog record: bad SSRC list") from None


class ConferenceStore:
    """Conferences, allowed sets, rosters, dialogs, SSRCs and wrapped key epochs."""

    def __init__(
        self,
        client: redis.Redis,
        wrapper: KeyWrapper,
        prefix: str = "secconf",
        *,
        ended_ttl: float = 60.0,
        dialog_ttl: int = 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(ended_ttl, int | float) and ended_ttl > 0):
            raise ValueError("ended_ttl must be positive")
        self._redis = client
        self._wrapper = wrapper
        self._prefix = check_prefix(prefix)
        self._ended_ttl_ms = max(1, math.ceil(ended_ttl * 1000))
        self._dialog_ttl = int(dialog_ttl)
        self._clock = clock
        self._create = register_script(client, _CREATE)
        self._join = register_script(client, _JOIN)
        self._answered = register_script(client, _ANSWERED)
        self._release = register_script(client, _RELEASE)
        self._add_epoch = register_script(client, _ADD_EPOCH)
        self._refer = register_script(client, _REFER)
        self._switched = register_script(client, _SWITCHED)
        self._drop_epoch = register_script(client, _DROP_EPOCH)
        self._rekey_failed = register_script(client, _REKEY_FAILED)
        self._dialout = register_script(client, _DIALOUT)
        self._dialout_answered = register_script(client, _DIALOUT_ANSWERED)
        self._hold_dialog = register_script(client, _HOLD_DIALOG)
        self._sender = register_script(client, _SENDER)
        self._release_from = register_script(client, _RELEASE_FROM)

    def __repr__(self) -> str:
        return f"ConferenceStore(prefix={self._prefix!r})"

    @property
    def client(self) -> redis.Redis:
        return self._redis

    # -- key names ---------------------------------------------------------------

    def conference_key(self, conference_id: str, part: str = "") -> str:
        return conference_key(self._prefix, conference_id, part)

    def dialog_key(self, conference_id: str, call_id: str) -> str:
        """``P:conf:{<id>}:dialog:<sha256 of the Call-ID>``: one dialog of a conference."""
        return self.conference_key(conference_id, f"dialog:{dialog_id(call_id)}")

    # -- writes --------------------------------------------------------------------

    def create(
        self,
        conference_id: str,
        *,
        creator: str,
        uri: str,
        group_key: GroupKey,
        call_id: str,
        leg: str,
        allowed: Iterable[str] = (),
        ssrcs: Sequence[int] = (),
        mode: str = "sdes",
    ) -> None:
        """Record a new conference with its creator's dialog (pending) and key epoch 1.

        Raises :class:`DialogExists` (this Call-ID already has a record in this
        conference: a retransmission) or :class:`ConferenceExists` (the id is
        taken); nothing written.
        """
        check_identity(creator, "creator")
        members = [check_identity(identity, "allowed identity") for identity in allowed]
        _check_leg(leg)
        ssrc_list = _check_ssrcs(ssrcs)
        if group_key.epoch != 1:
            raise InvalidRecord("a conference starts at key epoch 1")
        blob = self._wrapper.wrap(group_key.key + group_key.salt, epoch_context(conference_id, 1))
        keys = [
            self.conference_key(conference_id),
            self.conference_key(conference_id, "allowed"),
            self.conference_key(conference_id, "members"),
            self.conference_key(conference_id, "epochs"),
            self.conference_key(conference_id, "ssrcs"),
            self.dialog_key(conference_id, call_id),
        ]
        args: list[Any] = [
            mode,
            creator,
            uri,
            repr(float(self._clock())),
            group_key.suite.name,
            blob,
            self._dialog_ttl,
            leg,
            dialog_id(call_id),
            conference_id,
            len(ssrc_list),
            *ssrc_list,
            *members,
        ]
        with redis_errors("create a conference"):
            result = _text(self._create(keys=keys, args=args))
        if result == "conf-exists":
            raise ConferenceExists(f"conference {conference_id} exists")
        if result == "dialog-exists":
            raise DialogExists("dialog already recorded")
        if result != "ok":
            raise CorruptRecord(f"create script answered {result!r}")

    def join(
        self,
        conference_id: str,
        *,
        identity: str,
        call_id: str,
        leg: str,
        ssrcs: Sequence[int] = (),
        mode: str | None = None,
        mixed: bool = False,
        limit: int = 1_000_000,
    ) -> int:
        """Add *identity*'s dialog (pending) to the conference; return the current epoch.

        *identity* may hold at most *limit* dialogs in the conference (the roster counts
        them): one more is :class:`~secconf.core.errors.RateLimited`, nothing written.

        *mode* is how this leg is keyed (recorded in the dialog); unless *mixed*
        (``policy.mixed_modes``) it must be the conference's mode.

        Refusals, with nothing written: :class:`ConferenceNotFound` (404, no
        such active conference), :class:`~secconf.core.errors.Forbidden` (403,
        not in the allowed set), :class:`SsrcCollision` (488),
        :class:`~secconf.core.errors.NotAcceptable` (488, the conference is
        keyed in another *mode*), :class:`DialogExists`.
        """
        check_identity(identity)
        _check_leg(leg)
        ssrc_list = _check_ssrcs(ssrcs)
        keys = [
            self.conference_key(conference_id),
            self.conference_key(conference_id, "allowed"),
            self.conference_key(conference_id, "members"),
            self.conference_key(conference_id, "ssrcs"),
            self.dialog_key(conference_id, call_id),
        ]
        args: list[Any] = [
            identity,
            leg,
            dialog_id(call_id),
            self._dialog_ttl,
            conference_id,
            "" if mixed else (mode or ""),
            mode or "",
            int(limit),
            *ssrc_list,
        ]
        with redis_errors("join a conference"):
            result = _text(self._join(keys=keys, args=args))
        if result == "limit":
            raise RateLimited(f"{identity} holds {limit} dialogs in this conference already", 30)
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "mode":
            raise NotAcceptable(f"this conference is not keyed in {mode} mode")
        if result == "forbidden":
            raise Forbidden("not a member of this conference")
        if result == "ssrc":
            raise SsrcCollision("an offered SSRC is already used in this conference")
        if result == "dialog-exists":
            raise DialogExists("dialog already recorded")
        try:
            return int(result)
        except ValueError:
            raise CorruptRecord(f"join script answered {result!r}") from None

    def dialout(
        self,
        conference_id: str,
        *,
        identity: str,
        call_id: str,
        leg: str,
        mixed: bool = False,
        mode: str = "sdes",
    ) -> int:
        """Record the mixer's dial-out to *identity* (pending); return the current epoch.

        Like :meth:`join`, one script that checks before it writes:
        :class:`ConferenceNotFound` (404), :class:`~secconf.core.errors.Forbidden`
        (403, *identity* not in the allowed set), :class:`~secconf.core.errors.NotAcceptable`
        (488, the conference is keyed in another mode than the leg's *mode*, unless
        *mixed*), :class:`DialogExists`.  The dialog's mode is *mode* (``sdes``, or
        ``kms``: counted in the conference's ``kms_legs``).  The record has
        ``dialout`` = "1"; its SSRCs come with the participant's answer
        (:meth:`dialout_answered`).
        """
        check_identity(identity)
        _check_leg(leg)
        if mode not in ("sdes", "kms"):
            raise ValueError("a dial-out leg is keyed in sdes or kms mode")
        keys = [
            self.conference_key(conference_id),
            self.conference_key(conference_id, "allowed"),
            self.conference_key(conference_id, "members"),
            self.dialog_key(conference_id, call_id),
        ]
        args: list[Any] = [
            identity, leg, dialog_id(call_id), self._dialog_ttl, conference_id,
            "" if mixed else mode, mode,
        ]  # fmt: skip
        with redis_errors("record a dial-out"):
            result = _text(self._dialout(keys=keys, args=args))
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "mode":
            raise NotAcceptable(f"this conference is not keyed in {mode} mode")
        if result == "forbidden":
            raise Forbidden("the dial-out target is not allowed in this conference")
        if result == "dialog-exists":
            raise DialogExists("dialog already recorded")
        try:
            return int(result)
        except ValueError:
            raise CorruptRecord(f"dial-out script answered {result!r}") from None

    def dialout_answered(
        self,
        conference_id: str,
        call_id: str,
        *,
        media: str,
        epoch: int,
        ssrcs: Sequence[int] = (),
        peers: DialogPeers | None = None,
    ) -> None:
        """A dial-out's 2xx passed: its SSRCs registered, the dialog up on *epoch*.

        :class:`SsrcCollision` (an SSRC of another dialog) and
        :class:`ConferenceNotFound` write nothing.  One script, one slot: the
        dialog, the conference and its SSRC map (all under ``{conference_id}``).
        """
        ssrc_list = _check_ssrcs(ssrcs)
        keys = [
            self.dialog_key(conference_id, call_id),
            self.conference_key(conference_id),
            self.conference_key(conference_id, "ssrcs"),
        ]
        args: list[Any] = [dialog_id(call_id), media, int(epoch), *_peer_fields(peers),
                           *ssrc_list]  # fmt: skip
        with redis_errors("record a dial-out's answer"):
            result = _text(self._dialout_answered(keys=keys, args=args))
        if result == "ssrc":
            raise SsrcCollision("an answered SSRC is already used in this conference")
        if result != "ok":
            raise ConferenceNotFound(f"dial-out dialog or conference gone ({result})")

    def dialout_stream_key(self, conference_id: str) -> str:
        """``P:dialout:<id>``: the watcher's dial-out results (no key material)."""
        _check_conference_id(conference_id)
        return f"{self._prefix}:dialout:{conference_id}"

    def answered(
        self,
        conference_id: str,
        call_id: str,
        *,
        media: str = "",
        epoch: int | None = None,
        peers: DialogPeers | None = None,
    ) -> Answered:
        """Mark the dialog up (its 2xx passed) and return the conference's current key.

        *media* (JSON, no key material) and the leg's *epoch* (default: the
        current one) are kept in the dialog record for later re-INVITEs.  One
        round trip.  Raises :class:`ConferenceNotFound` if the dialog or its
        conference is gone.
        """
        keys = [
            self.dialog_key(conference_id, call_id),
            self.conference_key(conference_id),
            self.conference_key(conference_id, "epochs"),
        ]
        fields = _peer_fields(peers)
        args: list[Any] = [media, "" if epoch is None else int(epoch), *fields]
        with redis_errors("read the conference key"):
            raw = cast(list[bytes], self._answered(keys=keys, args=args))
        status = _text(raw[0])
        if status != "ok":
            raise ConferenceNotFound(f"dialog or conference gone ({status})")
        conference_id, identity, leg, ssrcs, creator, epoch_text, suite_name = (
            _text(item) for item in raw[1:8]
        )
        leg_epoch = epoch
        epoch = int(epoch_text)
        suite = SUITES.get(suite_name)
        if suite is None:
            raise CorruptRecord("conference record: unknown suite")
        material = self._wrapper.unwrap(raw[8], epoch_context(conference_id, epoch))
        key = GroupKey(epoch, suite, material[: suite.key_length], material[suite.key_length :])
        record = DialogRecord(
            conference_id,
            identity,
            leg,
            "up",
            _ssrcs(ssrcs),
            creator == "1",
            epoch if leg_epoch is None else int(leg_epoch),
            media,
            peers=fields[0],
        )
        return Answered(record, key)

    def release(self, conference_id: str, call_id: str) -> Released | None:
        """Remove a dialog, its roster count and SSRCs; end the conference if it was the last.

        Idempotent: ``None`` when the dialog has no record (already released).
        """
        keys = self._release_keys(conference_id, call_id)
        with redis_errors("release a dialog"):
            raw = cast(
                list[bytes],
                self._release(keys=keys, args=[dialog_id(call_id), self._ended_ttl_ms]),
            )
        if _text(raw[0]) != "ok":
            return None
        return _released(raw)

    def _release_keys(self, conference_id: str, call_id: str) -> list[str]:
        return [
            self.dialog_key(conference_id, call_id),
            *(
                self.conference_key(conference_id, part)
                for part in ("", "allowed", "members", "ssrcs", "epochs")
            ),
            self.refer_stream_key(conference_id),
            self.rekey_failed_key(conference_id),
        ]

    def closing(self, conference_id: str, call_id: str, peers: DialogPeers, ttl: int = 300) -> None:
        """Keep only a dialog's peers after its answer was refused (every stream rejected).

        The SIP dialog still exists between the two sides (a proxy cannot turn a 2xx into a
        failure, RFC 3261 §16.7): its ACK and BYE must reach the other side, and only from
        its peers.  The record has no member, key or leg; it expires after *ttl* seconds or
        goes with the BYE (:meth:`forget_closing`).
        """
        key = self.dialog_key(conference_id, call_id)
        with redis_errors("record a closing dialog"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "conference": conference_id, "identity": "", "leg": "",
                    "state": "closing",
                    **dict(zip(_PEER_FIELDS, _peer_fields(peers), strict=True)),
                },
            )  # fmt: skip
            pipe.expire(key, ttl)
            pipe.execute()

    def sender(
        self, conference_id: str, call_id: str, fingerprint: str
    ) -> tuple[Direction, tuple[str, str], str]:
        """The gate's read for an in-dialog request other than INVITE/REFER: one round trip.

        Returns which side sent it, its next hop (the other side's recorded Contact and
        destination URI, :class:`~secconf.core.gate.AckHops`) and the dialog's state
        (``up``/``closing``);
        :class:`~secconf.core.errors.CallDoesNotExist` (481) without an answered dialog,
        :class:`~secconf.core.errors.Forbidden` (403) when *fingerprint* (the request's
        flow and tags, :func:`secconf.core.gate.sender_fingerprint`) is neither side's.
        """
        with redis_errors("read a dialog's peers"):
            raw = cast(
                list[bytes],
                self._sender(keys=[self.dialog_key(conference_id, call_id)], args=[fingerprint]),
            )
        return _sender_result(raw)

    def release_from(
        self, conference_id: str, call_id: str, fingerprint: str
    ) -> tuple[Direction, tuple[str, str], Released | None]:
        """A BYE: the sender's check and :meth:`release` in one script (one round trip).

        The release happens only when *fingerprint* is one side's (else 403, 481 as
        :meth:`sender`); a closing dialog's record just goes (``None``: nothing released).
        """
        keys = self._release_keys(conference_id, call_id)
        with redis_errors("release a dialog"):
            raw = cast(
                list[bytes],
                self._release_from(
                    keys=keys, args=[dialog_id(call_id), self._ended_ttl_ms, fingerprint]
                ),
            )
        direction, hop, status = _sender_result(raw)
        if status != "released" or _text(raw[3]) != "ok":
            return direction, hop, None
        return direction, hop, _released(raw[3:])

    def forget_closing(self, conference_id: str, call_id: str) -> None:
        """The BYE of a closing dialog passed: its record goes."""
        with redis_errors("forget a closing dialog"):
            self._redis.delete(self.dialog_key(conference_id, call_id))

    def add_epoch(
        self, conference_id: str, group_key: GroupKey, ticket: bytes | None = None
    ) -> None:
        """Store the next epoch's key and make it current (the rekey step uses this).

        *ticket*: for an epoch from the KMS, the stored form of its group epoch
        ticket (:meth:`secconf.core.mikey.group.GroupEpochTicket.to_bytes`),
        wrapped under the KEK like the key, in the same script.
        """
        blob = self._wrapper.wrap(
            group_key.key + group_key.salt, epoch_context(conference_id, group_key.epoch)
        )
        ticket_blob = (
            b""
            if ticket is None
            else self._wrapper.wrap(ticket, epoch_ticket_context(conference_id, group_key.epoch))
        )
        keys = [self.conference_key(conference_id), self.conference_key(conference_id, "epochs")]
        with redis_errors("store a key epoch"):
            result = _text(self._add_epoch(keys=keys, args=[group_key.epoch, blob, ticket_blob]))
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "stale":
            raise Conflict("epoch is not the next one")

    def drop_epoch(self, conference_id: str, epoch: int) -> None:
        """Undo :meth:`add_epoch` of *epoch* if it is still the newest (the edge refused it)."""
        keys = [self.conference_key(conference_id), self.conference_key(conference_id, "epochs")]
        with redis_errors("drop a key epoch"):
            result = _text(self._drop_epoch(keys=keys, args=[int(epoch)]))
        if result != "ok":
            raise Conflict("epoch is not the newest any more")

    def switched(self, conference_id: str, call_id: str, epoch: int) -> None:
        """The dialog's edge leg now sends under *epoch* (a re-INVITE's 2xx passed)."""
        with redis_errors("record a leg's epoch"):
            self._switched(keys=[self.dialog_key(conference_id, call_id)], args=[int(epoch)])

    def rekey_failed_key(self, conference_id: str) -> str:
        """``P:conf:{<id>}:rekey-failed``: re-INVITEs with a new epoch that a participant refused."""
        return self.conference_key(conference_id, "rekey-failed")

    def rekey_failed(
        self,
        conference_id: str,
        fields: Sequence[tuple[str, str]],
        *,
        max_entries: int = REKEY_FAILED_MAX,
    ) -> str | None:
        """Append a failed rekey to the conference's stream (for the watcher); its entry id.

        ``None`` when the conference record is gone (nothing to report to).
        The stream expires with the conference's other keys.
        """
        flat: list[str] = []
        for name, value in fields:
            flat += [name, value]
        keys = [self.conference_key(conference_id), self.rekey_failed_key(conference_id)]
        with redis_errors("report a failed rekey"):
            result = _text(self._rekey_failed(keys=keys, args=[int(max_entries), *flat]))
        return None if result == "not-found" else result

    def rekey_failures(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The rekey-failure stream's entries, oldest first (tests and operators)."""
        with redis_errors("read rekey failures"):
            raw = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self._redis.xrange(self.rekey_failed_key(conference_id)),
            )
        return [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in raw]

    def refer_stream_key(self, conference_id: str) -> str:
        """``P:conf:{<id>}:refer``: the REFERs accepted for a conference, for the dial-out watcher."""
        return self.conference_key(conference_id, "refer")

    def refer(
        self,
        conference_id: str,
        *,
        referrer: str,
        target: str,
        fields: Sequence[tuple[str, str]] = (),
        replay_key: str | None = None,
        replay_ttl: float = 0.0,
        max_entries: int = REFER_STREAM_MAX,
        mode: str | None = None,
        per_minute: int = 1_000_000,
    ) -> str:
        """Append an accepted REFER to the conference's stream; return the entry id.

        One script checks, then writes: the conference is active
        (:class:`ConferenceNotFound`, 404), *referrer* has a dialog in it
        (:class:`~secconf.core.errors.Forbidden`, 403), *target* is in the
        allowed set (403), the conference is keyed in *mode* (the referrer was
        authenticated the way the conference requires, 403), and *replay_key* (a replay-cache key, see
        :mod:`secconf.store.replay`) is new (``ReplayedMessage``, 403); a
        refusal writes nothing, an acceptance remembers the replay key for
        *replay_ttl* seconds and appends ``referrer``, ``target`` and *fields*.
        The replay key lies in another Cluster slot: it is set first (``SET NX
        PX``, one key) and deleted again if the script then refuses; two
        round trips when a replay key is given, one otherwise.
        """
        check_identity(referrer, "referrer")
        check_identity(target, "refer target")
        keys = [
            self.conference_key(conference_id),
            self.conference_key(conference_id, "allowed"),
            self.conference_key(conference_id, "members"),
            self.refer_stream_key(conference_id),
            self.conference_key(conference_id, f"refer-rate:{dialog_id(referrer)}"),
        ]
        ttl_ms = max(1, math.ceil(replay_ttl * 1000)) if replay_key else 0
        flat: list[str] = ["referrer", referrer, "target", target]
        for name, value in fields:
            flat += [name, value]
        args: list[Any] = [
            referrer, target, ttl_ms, int(max_entries), mode or "", int(per_minute), *flat,
        ]  # fmt: skip
        if replay_key:
            with redis_errors("check a REFER for replay"):
                fresh = self._redis.set(replay_key, b"1", nx=True, px=ttl_ms)
            if not fresh:
                raise ReplayedMessage("MIKEY message replayed")
        try:
            with redis_errors("record a REFER"):
                result = _text(self._refer(keys=keys, args=args))
        except BaseException:
            if replay_key:
                self._forget_replay(replay_key)
            raise
        if replay_key and (
            result in ("not-found", "not-member", "target", "mode") or result.startswith("rate:")
        ):
            self._forget_replay(replay_key)
        if result.startswith("rate:"):
            wait_ms = int(result.split(":", 1)[1] or 0)
            raise RateLimited(
                f"more than {per_minute} REFERs a minute", math.ceil(max(wait_ms, 1) / 1000)
            )
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "not-member":
            raise Forbidden("the referrer is not in this conference")
        if result == "target":
            raise Forbidden("the refer target is not allowed in this conference")
        if result == "mode":
            raise Forbidden(f"this conference does not take {mode}-mode authentication")
        if result == "replay":
            raise ReplayedMessage("MIKEY message replayed")
        return result

    def identity_key(self, identity: str) -> str:
        """``P:ident:{<hash>}``: the conference dialogs an identity holds (its own slot)."""
        return f"{self._prefix}:ident:{{{dialog_id(identity)}}}"

    def hold_dialog(
        self, identity: str, conference_id: str, call_id: str, *, limit: int, max_age: int = 86400
    ) -> None:
        """Count one more concurrent dialog for *identity*, or :class:`RateLimited`.

        A retransmission (the same dialog again) is no new one.  Entries older than
        *max_age* seconds are dropped (a dialog whose end was never seen); the key
        expires with the newest entry.  One round trip, one slot (the identity's).
        """
        check_identity(identity, "identity")
        member = f"{conference_id}/{dialog_id(call_id)}"
        with redis_errors("count an identity's dialogs"):
            result = _text(
                self._hold_dialog(
                    keys=[self.identity_key(identity)],
                    args=[member, int(limit), int(max_age) * 1000],
                )
            )
        if result.startswith("full:"):
            wait_ms = int(result.split(":", 1)[1] or 0)
            raise RateLimited(
                f"{identity} holds {limit} conference dialogs already",
                math.ceil(max(wait_ms, 1000) / 1000),
            )

    def drop_dialog(self, identity: str, conference_id: str, call_id: str) -> None:
        """The dialog ended: it no longer counts for *identity* (idempotent)."""
        if not identity:
            return
        with redis_errors("release an identity's dialog"):
            self._redis.zrem(self.identity_key(identity), f"{conference_id}/{dialog_id(call_id)}")

    def _forget_replay(self, replay_key: str) -> None:
        """Undo the replay-cache entry of a REFER that was then refused (best effort)."""
        try:
            with redis_errors("undo a replay-cache entry"):
                self._redis.delete(replay_key)
        except ServiceUnavailable:
            pass  # the entry expires on its own; the refusal stands

    def refers(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The stream's entries, oldest first (tests and operators)."""
        with redis_errors("read REFERs"):
            raw = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self._redis.xrange(self.refer_stream_key(conference_id)),
            )
        return [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in raw]

    # -- reads ---------------------------------------------------------------------

    def get(self, conference_id: str) -> ConferenceInfo | None:
        with redis_errors("read a conference"):
            raw = cast(dict[bytes, bytes], self._redis.hgetall(self.conference_key(conference_id)))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return ConferenceInfo(
                conference_id,
                fields["state"],
                fields["mode"],
                fields["creator"],
                fields["uri"],
                int(fields["epoch"]),
                fields["suite"],
                float(fields["created"]),
                int(fields.get("kms_legs", "0")),
            )
        except (KeyError, ValueError):
            raise CorruptRecord("conference record incomplete") from None

    def allowed(self, conference_id: str) -> frozenset[str]:
        with redis_errors("read an allowed set"):
            raw = cast(
                set[bytes], self._redis.smembers(self.conference_key(conference_id, "allowed"))
            )
        return frozenset(_text(item) for item in raw)

    def members(self, conference_id: str) -> dict[str, int]:
        with redis_errors("read a roster"):
            raw = cast(
                dict[bytes, bytes],
                self._redis.hgetall(self.conference_key(conference_id, "members")),
            )
        return {_text(k): int(v) for k, v in raw.items()}

    def ssrcs(self, conference_id: str) -> frozenset[int]:
        with redis_errors("read SSRCs"):
            raw = cast(list[bytes], self._redis.hkeys(self.conference_key(conference_id, "ssrcs")))
        return frozenset(int(item) for item in raw)

    def dialog(self, conference_id: str, call_id: str) -> DialogRecord | None:
        """The record of the dialog *call_id* in *conference_id*, ``None`` if it has none."""
        with redis_errors("read a dialog"):
            raw = cast(
                dict[bytes, bytes], self._redis.hgetall(self.dialog_key(conference_id, call_id))
            )
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return DialogRecord(
                fields["conference"],
                fields["identity"],
                fields["leg"],
                fields["state"],
                _ssrcs(fields.get("ssrcs", "")),
                fields.get("creator") == "1",
                int(fields["epoch"]) if fields.get("epoch") else None,
                fields.get("media", ""),
                fields.get("mode", ""),
                fields.get("dialout") == "1",
                fields.get("peers", ""),
            )
        except (KeyError, ValueError):
            raise CorruptRecord("dialog record incomplete") from None

    def epoch_ticket(self, conference_id: str, epoch: int) -> bytes | None:
        """The unwrapped stored group epoch ticket of *epoch* (``None``: not a KMS epoch)."""
        with redis_errors("read an epoch ticket"):
            blob = self._redis.hget(self.conference_key(conference_id, "epochs"), f"ticket:{epoch}")
        if blob is None:
            return None
        return self._wrapper.unwrap(cast(bytes, blob), epoch_ticket_context(conference_id, epoch))

    def group_key(self, conference_id: str, epoch: int | None = None) -> GroupKey:
        """The key of *epoch* (the current one by default), unwrapped."""
        info = self.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        number = info.epoch if epoch is None else epoch
        with redis_errors("read a key epoch"):
            blob = self._redis.hget(self.conference_key(conference_id, "epochs"), str(number))
        if blob is None:
            raise ConferenceNotFound(f"no key for epoch {number}")
        suite = SUITES[info.suite]
        material = self._wrapper.unwrap(cast(bytes, blob), epoch_context(conference_id, number))
        return GroupKey(number, suite, material[: suite.key_length], material[suite.key_length :])


def _check_conference_id(conference_id: object) -> None:
    if not isinstance(conference_id, str) or not _CONFERENCE_ID_RE.match(conference_id):
        raise InvalidRecord("conference id must be 1 to 64 lower-case letters or digits")


def _check_leg(leg: object) -> None:
    if not isinstance(leg, str) or not _LEG_RE.match(leg):
        raise InvalidRecord("leg id must be 1 to 128 of [0-9A-Za-z._-]")


def _check_ssrcs(ssrcs: Sequence[int]) -> list[str]:
    values = sorted(set(ssrcs))
    if len(values) > MAX_SSRCS or any(
        isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF for v in values
    ):
        raise InvalidRecord(f"at most {MAX_SSRCS} SSRCs, each 0..2**32-1")
    return [str(v) for v in values]
