"""The Lua scripts of the conference store, as data (one script = one atomic Redis step).

Each script declares every key it touches in ``KEYS``; all keys of one script share the
conference's ``{id}`` hash tag (one slot), except :data:`HOLD_DIALOG` (the identity's own
key).  A script checks before it writes: a refusal writes nothing.  The comment above each
script is its calling convention (``KEYS`` and ``ARGV`` in order); the classes that run
them are in :mod:`.conferences`, :mod:`.conference_admission`, :mod:`.conference_dialogs`,
:mod:`.conference_dialouts`, :mod:`.conference_refers` and :mod:`.identity_dialogs`.
"""

from __future__ import annotations

from typing import Final

#: Departures kept per conference (``P:conf:{<id>}:departures``), the newest.
DEPARTURES_MAX: Final = 32

# KEYS: conf, allowed, members, epochs, ssrcs, dialog, dialogs (index), events (counter)
# ARGV: mode, creator, uri, now, suite, wrapped, dialog_ttl, leg, dialog_id, conference_id,
#       n_ssrc, ssrc..., allowed...
CREATE: Final = """
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
redis.call('SADD', KEYS[7], ARGV[9])
redis.call('INCR', KEYS[8])
return 'ok'
"""

# KEYS: conf, allowed, members, ssrcs, dialog, dialogs (index), events (counter)
# ARGV: identity, leg, dialog_id, dialog_ttl, conference_id, required mode ('' = any),
#       leg mode, ssrc...
JOIN: Final = """
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
redis.call('SADD', KEYS[6], ARGV[3])
redis.call('INCR', KEYS[7])
return redis.call('HGET', KEYS[1], 'epoch')
"""

# KEYS: conf, allowed, members, dialog, dialogs (index), events (counter)
# ARGV: identity, leg, dialog_id, dialog_ttl, conference_id, required conference mode
# ('' = any: policy.mixed_modes), leg mode ('sdes'/'kms').  A dial-out from the mixer:
# like a join, no SSRCs yet (they come with the answer).
DIALOUT: Final = """
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
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('INCR', KEYS[6])
return redis.call('HGET', KEYS[1], 'epoch')
"""

# KEYS: dialog, conf, ssrcs, events; ARGV: dialog_id, media JSON, leg epoch, peers JSON, the two
# sender fingerprints (participant, mixer), the next hops JSON (AckHops), ssrc...
# A dial-out's 2xx: its SSRCs (from the participant's answer) checked and registered,
# the dialog marked up on *epoch* with its peers.  A collision writes nothing.
DIALOUT_ANSWERED: Final = """
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
  'ssrcs', table.concat(ssrcs, ','), 'joined', redis.call('TIME')[1])
redis.call('INCR', KEYS[4])
return 'ok'
"""

# KEYS: dialog, conf, epochs, events; ARGV: media JSON, leg epoch ('' = the current one), peers JSON,
# the two sender fingerprints, the next hops JSON.
# Marks the dialog up with its peers; returns it with the current epoch's key.
ANSWERED: Final = """
local d = redis.call('HMGET', KEYS[1], 'conference', 'identity', 'leg', 'ssrcs', 'creator')
if not d[1] then return {'no-dialog'} end
local c = redis.call('HMGET', KEYS[2], 'state', 'epoch', 'suite')
if c[1] ~= 'active' then return {'not-found'} end
local blob = redis.call('HGET', KEYS[3], c[2])
if not blob then return {'no-key'} end
local epoch = ARGV[2]
if epoch == '' then epoch = c[2] end
redis.call('HSET', KEYS[1], 'state', 'up', 'media', ARGV[1], 'epoch', epoch, 'peers', ARGV[3],
  'sent-p', ARGV[4], 'sent-m', ARGV[5], 'hops', ARGV[6], 'joined', redis.call('TIME')[1])
redis.call('INCR', KEYS[4])
return {'ok', d[1], d[2], d[3], d[4], d[5], c[2], c[3], blob}
"""

# KEYS: dialog; ARGV: epoch.  The dialog's leg now sends under a newer epoch.
SWITCHED: Final = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then return 'no-dialog' end
if tonumber(ARGV[1]) > tonumber(e) then redis.call('HSET', KEYS[1], 'epoch', ARGV[1]) end
return 'ok'
"""

# KEYS: conf, epochs, events; ARGV: epoch.  Undo an epoch just added (the edge refused it).
DROP_EPOCH: Final = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 'stale' end
redis.call('HDEL', KEYS[2], ARGV[1], 'ticket:' .. ARGV[1])
redis.call('HSET', KEYS[1], 'epoch', tostring(tonumber(ARGV[1]) - 1))
redis.call('INCR', KEYS[3])
return 'ok'
"""

# KEYS: conf, stream; ARGV: max length, field, value, ...
REKEY_FAILED: Final = """
if not redis.call('HGET', KEYS[1], 'state') then return 'not-found' end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return id
"""

# KEYS: dialog, conf, allowed, members, ssrcs, epochs, refer stream, rekey-failed stream,
# dialogs (index), events (counter), departures (list)
# ARGV: dialog_id, ended_ttl_ms, and (RELEASE only) how it left: departed/booted/failed.
# The body uses a local ``how`` (RELEASE: ARGV[3], '' for a withdrawn dialog: no departure;
# RELEASE_FROM: from the BYE's side).  A member's dialog leaves a departure (JSON, the newest DEPARTURES_MAX kept); every release
# bumps the events counter, in the same script (docs/event-package.md).
RELEASE_BODY: Final = """
local d = redis.call('HMGET', KEYS[1], 'conference', 'identity', 'leg', 'ssrcs', 'creator',
  'state', 'mode', 'joined', 'dialout')
if not d[1] then return {'no-dialog'} end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[9], ARGV[1])
redis.call('INCR', KEYS[10])
if d[2] and d[2] ~= '' and how ~= '' then
  redis.call('RPUSH', KEYS[11], cjson.encode({identity = d[2], dialog = ARGV[1], method = how,
    when = tonumber(redis.call('TIME')[1]), joined = tonumber(d[8] or ''),
    dialout = d[9] == '1'}))
  redis.call('LTRIM', KEYS[11], -DEPARTURES_MAX, -1)
end
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
  local rest = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
    KEYS[11]}
  if d[5] == '1' and d[6] == 'pending' then
    -- the creating call failed: the conference never existed
    for _, k in ipairs(rest) do redis.call('DEL', k) end
  else
    redis.call('HSET', KEYS[2], 'state', 'ended')
    for _, k in ipairs(rest) do redis.call('PEXPIRE', k, ARGV[2]) end
  end
end
return {'ok', d[1], d[2], d[3], d[4], d[5], d[6], ended}
""".replace("DEPARTURES_MAX", str(DEPARTURES_MAX))

RELEASE: Final = "local how = ARGV[3]" + RELEASE_BODY

# KEYS: dialog; ARGV: the sender's fingerprint (flow|from tag|to tag).
# The gate of an in-dialog request other than INVITE/REFER: which side sent it ('p'
# participant, 'm' mixer) and the peers, or why not.  Nothing is written.
SENDER: Final = """
local s = redis.call('HMGET', KEYS[1], 'state', 'sent-p', 'sent-m', 'peers', 'hops')
if not s[1] or (s[1] ~= 'up' and s[1] ~= 'closing') or not s[4] then return {'no-dialog'} end
local side = ''
if ARGV[1] == s[2] then side = 'p' elseif ARGV[1] == s[3] then side = 'm' end
if side == '' then return {'not-peer'} end
return {'ok', side, s[5] or s[4], s[1]}
"""

# RELEASE behind the sender's check (a BYE: one round trip).  KEYS as RELEASE;
# ARGV: dialog_id, ended ttl ms, the sender's fingerprint.  A closing dialog just goes.
RELEASE_FROM: Final = (
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
-- RFC 4575 §5.7.6: its own BYE, it departed; the mixer's (a ConfBridge kick), booted.
local how = 'departed'
if side == 'm' then how = 'booted' end
local released = (function()
"""
    + "\n".join("  " + line for line in RELEASE_BODY.strip().splitlines())
    + """
end)()
return {'released', side, hops, unpack(released)}
"""
)

# KEYS: conf, allowed, members, stream, the referrer's rate counter (a minute)
# ARGV: referrer, target, (unused), stream max length, mode ('' = any), per-minute limit,
#       field, value, ...
REFER: Final = """
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
HOLD_DIALOG: Final = """
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

# KEYS: conf, epochs, events; ARGV: new epoch, wrapped key, wrapped ticket ('' = none).
# Only the next epoch of an active conference; ``rekeyed`` is when (Redis's clock).
ADD_EPOCH: Final = """
local c = redis.call('HMGET', KEYS[1], 'state', 'epoch')
if c[1] ~= 'active' then return 'not-found' end
if tonumber(c[2]) + 1 ~= tonumber(ARGV[1]) then return 'stale' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'ticket:' .. ARGV[1], ARGV[3]) end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'rekeyed', redis.call('TIME')[1])
redis.call('INCR', KEYS[3])
return 'ok'
"""
