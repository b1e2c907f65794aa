"""Redis state of the KMS, the focus, the watcher and the edge; key material wrapped at rest.

The only package that talks to Redis (import contract ``redis-only-in-store``).

This is an adapter, not the core: it does network I/O (``redis.asyncio``),
reads the clock (injectable) and draws nonces from ``os.urandom``.  Every Redis
call has a timeout and a dead or slow Redis surfaces as
:class:`~secconf.core.errors.ServiceUnavailable` (503).  See docs/store.md for
the key layout.
"""

from __future__ import annotations

from .errors import (
    Conflict,
    CorruptRecord,
    InvalidRecord,
    KeyFileError,
    KeyUnwrapError,
    RevokedUser,
    TicketExists,
    TicketLimitReached,
    UnknownTicket,
    UnknownUser,
    UserExists,
)
from .keywrap import KeyWrapper, generate_key_file, load_key_file
from .redis import connect, redis_errors, translate_redis_errors
from .replay import BlockingReplayCache, ReplayCache
from .tickets import DEFAULT_MARGIN_SECONDS, DEFAULT_MAX_PER_USER, TicketRecord, TicketStore
from .users import UserInfo, UserStore

__all__ = [
    "DEFAULT_MARGIN_SECONDS",
    "DEFAULT_MAX_PER_USER",
    "BlockingReplayCache",
    "Conflict",
    "CorruptRecord",
    "InvalidRecord",
    "KeyFileError",
    "KeyUnwrapError",
    "KeyWrapper",
    "ReplayCache",
    "RevokedUser",
    "TicketExists",
    "TicketLimitReached",
    "TicketRecord",
    "TicketStore",
    "UnknownTicket",
    "UnknownUser",
    "UserExists",
    "UserInfo",
    "UserStore",
    "connect",
    "generate_key_file",
    "load_key_file",
    "redis_errors",
    "translate_redis_errors",
]
