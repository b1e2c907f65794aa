"""SIP digest credentials of the focus's users (SDES mode), HA1 values wrapped at rest.

Key layout (``P`` is the prefix)::

    P:sipuser:<identity>   hash   realm    the digest realm the HA1 values are for
                                  MD5      wrapped HA1 (hex text) for algorithm MD5
                                  SHA-256  wrapped HA1 for SHA-256 (RFC 7616)

Neither the password nor an HA1 (which is password-equivalent for its realm)
is ever stored in clear: each HA1 is wrapped with the KEK under the context
``sip-ha1:<identity>:<algorithm>``, so a blob copied to another user or
algorithm does not open.  Synchronous (``redis.Redis``): it is read inside
Kamailio workers, with the client's timeout; a dead Redis is 503.
"""

from __future__ import annotations

from typing import Final, cast

import redis

from secconf.core.digest import ALGORITHMS, compute_ha1

from ._names import check_prefix, sip_user_key
from .errors import InvalidRecord
from .keywrap import KeyWrapper
from .redis import redis_errors

__all__ = ["MIN_PASSWORD_LENGTH", "SipUserStore", "ha1_context"]

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 256


def ha1_context(identity: str, algorithm: str) -> bytes:
    return f"sip-ha1:{identity}:{algorithm}".encode()


class SipUserStore:
    """``add`` / ``remove`` a user's digest credentials; ``ha1`` reads one back unwrapped."""

    def __init__(self, client: redis.Redis, wrapper: KeyWrapper, prefix: str = "secconf") -> None:
        self._redis = client
        self._wrapper = wrapper
        self._prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"SipUserStore(prefix={self._prefix!r})"

    def key(self, identity: str) -> str:
        return sip_user_key(self._prefix, identity)

    def add(self, identity: str, username: str, realm: str, password: str) -> None:
        """Store the HA1 values of *password* (every algorithm), replacing any earlier ones."""
        if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise InvalidRecord(
                f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
            )
        if not username or ":" in username or not realm or ":" in realm:
            raise InvalidRecord("username and realm must be non-empty, without ':'")
        fields: dict[str, bytes | str] = {"realm": realm, "username": username}
        for algorithm in ALGORITHMS:
            ha1 = compute_ha1(username, realm, password, algorithm).encode("ascii")
            fields[algorithm] = self._wrapper.wrap(ha1, ha1_context(identity, algorithm))
        key = self.key(identity)
        with redis_errors("store SIP credentials"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.execute()

    def remove(self, identity: str) -> bool:
        with redis_errors("remove SIP credentials"):
            return bool(self._redis.delete(self.key(identity)))

    def ha1(self, identity: str, algorithm: str, realm: str) -> str | None:
        """The HA1 of *identity* for *algorithm* in *realm*, or ``None`` (unknown user)."""
        if algorithm not in ALGORITHMS:
            return None
        with redis_errors("read SIP credentials"):
            raw = cast(
                list[bytes | None], self._redis.hmget(self.key(identity), ["realm", algorithm])
            )
        stored_realm, blob = raw
        if blob is None or stored_realm is None or stored_realm.decode() != realm:
            return None
        return self._wrapper.unwrap(blob, ha1_context(identity, algorithm)).decode("ascii")
