"""Digest nonce-counts (RFC 7616): each nonce usable once per count, the count increasing.

Key layout (``P`` is the conference store's prefix)::

    P:nonce:{<sha256 hex of the nonce, 32 digits>}   string  the highest nc accepted
                                                             with that nonce (decimal);
                                                             expires (PX) ttl after
                                                             the nonce's first use

The nonce itself is stateless (``secconf.core.digest.make_nonce``: an HMAC of
its timestamp, salt, Call-ID and flow, checked without Redis); what it cannot
tell is whether a request with it was seen before.  RFC 7616 §3.4 (``nc``):
"The purpose of this parameter is to allow the server to detect request
replays by maintaining its own copy of this count -- if the same nc value is
seen twice, then the request is a replay."  RFC 7616 §5.4 (Limited-Use Nonce
Values): "a server MAY choose to allow each nonce value to be used only once
by maintaining a record of whether, or not each recently issued nonce has been
returned".  Here a nonce is usable once per nonce-count value and only with a
count **strictly greater** than every count accepted with it before (a count
seen twice, or an older one, is a replay), which is what RFC 7616 §5.5
(Replay Attacks) calls for where "no possibility of replay attack can be
tolerated": the server remembers "which nonce values have been used until the
nonce time-stamp (and hence the digest built with it) has expired".

One Lua script decides and records, atomically across every Kamailio worker
and node sharing the Redis (one key, so any Redis Cluster slot; the key's
hash tag is the nonce's own hash).  Only the nonce's hash is stored, never
the nonce, a user name or a response.  Bounded: the key is written with a TTL
(``PX``) when the nonce is first used and keeps it (``KEEPTTL``, Redis >= 6.0)
on later counts, so every key disappears one nonce lifetime (plus a clock
margin) after its first use, and only nonces that passed the HMAC check and
the password check are ever recorded (no key per stranger's request).
Synchronous (``redis.Redis``): called inside Kamailio workers; a dead Redis is
503 (:func:`~secconf.store.redis.redis_errors`): the request is refused, never
accepted unchecked.
"""

from __future__ import annotations

import math
from typing import Final

import redis

from ._names import check_prefix, nonce_key
from .redis import redis_errors, register_script

__all__ = ["NONCE_CLOCK_MARGIN", "DigestNonces"]

#: Seconds a nonce record outlives the nonce's lifetime: the nonce's timestamp is whole
#: seconds, a nonce up to 1 s in the future is accepted, and nodes' clocks differ a
#: little (keep them within a few seconds: NTP).
NONCE_CLOCK_MARGIN: Final = 10
_MAX_COUNT: Final = 0xFFFFFFFF

# KEYS[1] the nonce's record; ARGV[1] the presented count (decimal), ARGV[2] the TTL (ms).
# 1: accepted and recorded; 0: a count not above the recorded one (a replay), nothing written.
_USE: Final = """
local last = redis.call('GET', KEYS[1])
local count = tonumber(ARGV[1])
if last and tonumber(last) >= count then
  return 0
end
if last then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class DigestNonces:
    """The nonce-counts every worker and node of the focus shares (one Redis, one script)."""

    def __init__(self, client: redis.Redis, prefix: str = "secconf") -> None:
        self._redis = client
        self._prefix = check_prefix(prefix)
        self._use = register_script(client, _USE)

    def __repr__(self) -> str:
        return f"DigestNonces(prefix={self._prefix!r})"

    def key(self, nonce: str) -> str:
        return nonce_key(self._prefix, nonce)

    def use(self, nonce: str, count: int, lifetime: float) -> bool:
        """True if *count* is new for *nonce* (now recorded), False for a replay (nothing written).

        *lifetime*: seconds the nonce is fresh; its record lives that long
        plus :data:`NONCE_CLOCK_MARGIN` from its first use.  One round trip
        (``EVALSHA``).  Raises ``ServiceUnavailable`` if Redis does not answer.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_COUNT:
            raise ValueError("the nonce-count is 1 to 2**32 - 1")
        if not (
            isinstance(lifetime, int | float)
            and not isinstance(lifetime, bool)
            and math.isfinite(lifetime)
            and lifetime > 0
        ):
            raise ValueError("lifetime must be a positive number of seconds")
        ttl_ms = math.ceil((lifetime + NONCE_CLOCK_MARGIN) * 1000)
        with redis_errors("check the digest nonce-count"):
            result = self._use(keys=[self.key(nonce)], args=[count, ttl_ms])
        return bool(int(result))

    def count(self, nonce: str) -> int | None:
        """The highest count accepted with *nonce*, or ``None`` (never used, or expired)."""
        with redis_errors("read a digest nonce-count"):
            value = self._redis.get(self.key(nonce))
        return None if value is None else int(value)
