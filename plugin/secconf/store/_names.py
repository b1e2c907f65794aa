"""Validation of the names that become parts of Redis keys."""

from __future__ import annotations

from typing import Final, TypeGuard

from .errors import InvalidRecord

MAX_IDENTITY_LENGTH: Final = 256
MAX_PREFIX_LENGTH: Final = 64


def check_prefix(prefix: object) -> str:
    """*prefix* if it is usable as the first part of every key (printable ASCII, no spaces)."""
    if (
        not isinstance(prefix, str)
        or not 0 < len(prefix) <= MAX_PREFIX_LENGTH
        or not prefix.isascii()
        or not prefix.isprintable()
        or " " in prefix
    ):
        raise ValueError(
            f"the key prefix must be 1 to {MAX_PREFIX_LENGTH} printable ASCII characters, no spaces"
        )
    return prefix


def is_identity(identity: object) -> TypeGuard[str]:
    """True if *identity* is a non-empty printable string of at most 256 characters."""
    return (
        isinstance(identity, str)
        and 0 < len(identity) <= MAX_IDENTITY_LENGTH
        and identity.isprintable()
    )


def check_identity(identity: object, what: str = "identity") -> str:
    """*identity* if :func:`is_identity`, else :class:`InvalidRecord` naming *what*."""
    if not is_identity(identity):
        raise InvalidRecord(
            f"{what} must be a non-empty printable string of at most "
            f"{MAX_IDENTITY_LENGTH} characters"
        )
    return identity
