"""Errors of the Redis state layer, grafted onto :mod:`secconf.core.errors`.

    SecconfError
    ├── ProtocolError
    │   └── Forbidden                 403 Forbidden
    │       ├── UnknownUser           no such KMS identity
    │       ├── RevokedUser           the identity exists but was revoked
    │       └── TicketLimitReached    the initiator holds its limit of live tickets
    │                                 (also a MikeyError: ERR 12 "Unspecified error")
    ├── InvalidRecord                 400 Bad Request (also a ValueError)
    ├── Conflict                      409 Conflict
    │   ├── UserExists
    │   └── TicketExists
    ├── UnknownTicket                 404 Not Found
    ├── KeyUnwrapError                500 wrapped key material does not open
    ├── CorruptRecord                 500 a record in Redis is not what this code wrote
    ├── RedisRefused                  500 Redis (or redis-py) refused a command: out of memory,
    │                                 read-only replica, wrong type, ... (only where a
    │                                 caller asked for it: secconf.store.redis.all_redis_errors)
    ├── KeyFileError                  500 the KEK file is missing, malformed or too open
    └── ServiceUnavailable            503 Redis did not answer (raised by secconf.store.redis)

``UnknownUser`` and ``RevokedUser`` share status and reason so that an adapter
answering a peer tells it nothing about which identities exist.  409 and 404 are
HTTP codes: only operator and KMS-internal calls raise them, never a SIP path.

Messages never contain key material.  Identities quoted in a message go through
:func:`secconf.core.errors.redact_line`.
"""

from __future__ import annotations

from secconf.core.errors import Forbidden, MikeyError, MikeyErrorNo, SecconfError, redact_line

__all__ = [
    "Conflict",
    "CorruptRecord",
    "InvalidRecord",
    "KeyFileError",
    "KeyUnwrapError",
    "RedisRefused",
    "RevokedUser",
    "TicketExists",
    "TicketLimitReached",
    "UnknownTicket",
    "UnknownUser",
    "UserExists",
]


def quote_identity(identity: object) -> str:
    """*identity* fit for an error message: printable, shortened."""
    return repr(redact_line(identity if isinstance(identity, str) else repr(identity)))


class KeyUnwrapError(SecconfError):
    """A wrapped secret did not open: wrong KEK, wrong record, tampered or unknown format.

    The message says which check failed, never anything about the secret.
    """

    status_code = 500
    reason = "Server Internal Error"


class CorruptRecord(SecconfError):
    """A record read back from Redis lacks a field or holds a value this code never writes."""

    status_code = 500
    reason = "Server Internal Error"


class RedisRefused(SecconfError):
    """Redis answered a command with an error, or redis-py refused to send it: not an outage.

    Raised only by :func:`secconf.store.redis.all_redis_errors`, for callers that must
    outlive any answer (the watcher's loops log it and go on).  The message names the
    action and redis-py's error class, never an argument of the command.
    """

    status_code = 500
    reason = "Server Internal Error"


class KeyFileError(SecconfError):
    """The key-encryption-key file cannot be used (missing, malformed, readable by others)."""

    status_code = 500
    reason = "Server Internal Error"


class InvalidRecord(SecconfError, ValueError):
    """A value refused before anything is written (bad identity, short PSK, bad times)."""

    status_code = 400
    reason = "Bad Request"


class Conflict(SecconfError):
    """The record already exists and the call did not ask to replace it."""

    status_code = 409
    reason = "Conflict"


class UserExists(Conflict):
    """``UserStore.add`` of an identity that is already there, without ``replace=True``."""


class TicketExists(Conflict):
    """``TicketStore.record`` of a ticket id that is already recorded."""


class UnknownTicket(SecconfError):
    """A ticket id with no record, where the operation needs one."""

    status_code = 404
    reason = "Not Found"


class UnknownUser(Forbidden):
    """No KMS identity of that name: 403, like :class:`RevokedUser`."""


class RevokedUser(Forbidden):
    """The KMS identity exists but was revoked: 403, like :class:`UnknownUser`."""


class TicketLimitReached(MikeyError, Forbidden):
    """``TicketStore.record`` for an initiator that already holds its limit of live tickets.

    403 and MIKEY error 12 "Unspecified error" (RFC 3830 §6.12 has no number for
    a quota; docs/kms.md "Tickets per user" says why not 0 or 15).  The message
    names the initiator and the limit, nothing else.
    """

    status_code = 403
    reason = "Forbidden"
    error_no = MikeyErrorNo.UNSPECIFIED
