"""The names that become Redis keys: their validation, and the key names built from them.

A key shared by two classes (a conference's REFER stream, written by the focus and read
by the watcher) is named here once.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, TypeGuard

from .errors import InvalidRecord

MAX_IDENTITY_LENGTH: Final = 256
MAX_PREFIX_LENGTH: Final = 64
_CONFERENCE_ID_RE: Final = re.compile(r"^[0-9a-z]{1,64}$")


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


def check_conference_id(conference_id: object) -> None:
    """:class:`InvalidRecord` unless *conference_id* is 1 to 64 lower-case letters or digits."""
    if not isinstance(conference_id, str) or not _CONFERENCE_ID_RE.match(conference_id):
        raise InvalidRecord("conference id must be 1 to 64 lower-case letters or digits")


def dialog_id(call_id: str) -> str:
    """The id of a dialog's record: hex SHA-256 of its Call-ID (any length, any bytes)."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).hexdigest()


def conference_key(prefix: str, conference_id: str, part: str = "") -> str:
    """``P:conf:{<id>}`` or ``P:conf:{<id>}:<part>``: a key of one conference (one slot)."""
    check_conference_id(conference_id)
    suffix = f":{part}" if part else ""
    return f"{prefix}:conf:{{{conference_id}}}{suffix}"


def refer_stream_key(prefix: str, conference_id: str) -> str:
    """``P:conf:{<id>}:refer``: the REFERs the focus accepted, which the dial-out watcher reads."""
    return conference_key(prefix, conference_id, "refer")


def dialout_stream_key(prefix: str, conference: str) -> str:
    """``P:dialout:<c>``: the dial-outs the watcher made (its own single-key stream)."""
    return f"{prefix}:dialout:{conference}"


class ConferenceKeys:
    """The keys of the conference store under one prefix (docs: :mod:`.conferences`).

    One instance is shared by the store's parts, so each key name is built in one place.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"ConferenceKeys(prefix={self.prefix!r})"

    def conference(self, conference_id: str, part: str = "") -> str:
        """``P:conf:{<id>}`` or one of its parts (``allowed``, ``members``, ``epochs``, ...)."""
        return conference_key(self.prefix, conference_id, part)

    def dialog(self, conference_id: str, call_id: str) -> str:
        """``P:conf:{<id>}:dialog:<sha256 of the Call-ID>``: one dialog of a conference."""
        return self.conference(conference_id, f"dialog:{dialog_id(call_id)}")

    def refer_stream(self, conference_id: str) -> str:
        """``P:conf:{<id>}:refer``: the REFERs accepted for a conference (the watcher reads it)."""
        return refer_stream_key(self.prefix, conference_id)

    def rekey_failed(self, conference_id: str) -> str:
        """``P:conf:{<id>}:rekey-failed``: re-INVITEs with a new epoch that a participant refused."""
        return self.conference(conference_id, "rekey-failed")

    def identity(self, identity: str) -> str:
        """``P:ident:{<hash>}``: the conference dialogs an identity holds (its own slot)."""
        return f"{self.prefix}:ident:{{{dialog_id(identity)}}}"
