"""Join tokens for the mixer: a keyed MAC that Asterisk's dialplan checks with ``SHA1()`` alone.

Every INVITE the focus relays to Asterisk to create or join a conference carries
``X-Secconf-Token: <expiry>.<mac>``; the dialplan (dialplan/extensions.conf,
``[secconf-conferences]``) recomputes the MAC and refuses the call (``Hangup(21)``,
SIP 403) before ``ConfBridge()`` unless it matches and has not expired.  So a
request that reaches Asterisk some other way (relayed by Kamailio without the
module, or sent straight to its SIP port from Kamailio's address) never lands in
a bridge.

Asterisk 22 has no HMAC dialplan function: it has ``SHA1()`` (func_sha1) and
``MD5()``, nothing of the SHA-2 family (checked in the pinned tree).  The MAC is
therefore NMAC over SHA-1 with hexadecimal encodings (docs/asterisk.md, "Join
tokens"; the reasoning is there)::

    K_in  = hex(HMAC-SHA256(S, "secconf mixer token v1 inner"))   64 ASCII bytes
    K_out = hex(HMAC-SHA256(S, "secconf mixer token v1 outer"))   64 ASCII bytes
    m     = "secconf-join-v1 " || conference || " " || expiry || " " || Call-ID
    mac   = hex(SHA1(K_out || hex(SHA1(K_in || m))))

``S`` is the 32-byte secret shared by the module and the Asterisk renderer; only
``K_in || K_out`` reaches Asterisk (:meth:`MixerTokenKeys.key_file_text`).  The
expiry is ten decimal digits (Unix time), the conference id lowercase letters
and digits, so *m* decodes uniquely.  Sans-IO: the time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Final

from .errors import SecconfError

__all__ = [
    "EXPIRY_DIGITS",
    "HEADER",
    "KEY_FILE_LENGTH",
    "LABEL",
    "MAC_HEX_LENGTH",
    "SECRET_LENGTH",
    "TOKEN_LENGTH",
    "MixerTokenError",
    "MixerTokenKeys",
    "check_token",
    "make_token",
    "token_mac",
    "token_message",
]

#: The SIP header that carries the token from the focus to the mixer.
HEADER: Final = "X-Secconf-Token"
#: Domain separation: the first words of every MAC'd message (a new purpose gets a new label).
LABEL: Final = "secconf-join-v1"
SECRET_LENGTH: Final = 32
EXPIRY_DIGITS: Final = 10
MAC_HEX_LENGTH: Final = 40
#: ``<10 digits>.<40 hex>``
TOKEN_LENGTH: Final = EXPIRY_DIGITS + 1 + MAC_HEX_LENGTH
#: What Asterisk's key file holds: K_in then K_out, 64 hex digits each, nothing else.
KEY_FILE_LENGTH: Final = 128

_INNER_LABEL: Final = b"secconf mixer token v1 inner"
_OUTER_LABEL: Final = b"secconf mixer token v1 outer"
_CONFERENCE: Final = re.compile(r"[0-9a-z]{1,64}")
_LINE_BREAK_OR_NUL: Final = re.compile("[\r\n\0]")
_TOKEN: Final = re.compile(r"([0-9]{10})\.([0-9a-f]{40})")


class MixerTokenError(SecconfError):
    """A token cannot be made (bad input) or does not check; the message names no secret."""


@dataclass(frozen=True, slots=True)
class MixerTokenKeys:
    """The two NMAC key blocks derived from the shared secret; never shown by ``repr``."""

    inner: bytes = field(repr=False)
    outer: bytes = field(repr=False)

    @classmethod
    def derive(cls, secret: bytes) -> MixerTokenKeys:
        """K_in and K_out from the 32-byte shared secret (HMAC-SHA256 with two labels)."""
        if not isinstance(secret, bytes) or len(secret) != SECRET_LENGTH:
            raise MixerTokenError(f"the mixer token secret must be {SECRET_LENGTH} bytes")
        inner = hmac.new(secret, _INNER_LABEL, hashlib.sha256).hexdigest()
        outer = hmac.new(secret, _OUTER_LABEL, hashlib.sha256).hexdigest()
        return cls(inner.encode("ascii"), outer.encode("ascii"))

    def key_file_text(self) -> str:
        """The content of Asterisk's key file: K_in || K_out (128 hex digits, no newline)."""
        return (self.inner + self.outer).decode("ascii")

    def __repr__(self) -> str:
        return "MixerTokenKeys(<hidden>)"


def token_message(conference_id: str, call_id: str, expiry: int) -> bytes:
    """*m*: the label, the conference id, the ten-digit expiry and the Call-ID, space-separated."""
    if not isinstance(conference_id, str) or not _CONFERENCE.fullmatch(conference_id):
        raise MixerTokenError("a conference id is 1 to 64 lowercase letters and digits")
    if not isinstance(call_id, str) or not call_id or _LINE_BREAK_OR_NUL.search(call_id):
        raise MixerTokenError("the Call-ID is empty or holds CR, LF or NUL")
    if not isinstance(expiry, int) or not 0 <= expiry < 10**EXPIRY_DIGITS:
        raise MixerTokenError(f"the expiry must be a Unix time of {EXPIRY_DIGITS} digits")
    text = f"{LABEL} {conference_id} {expiry:0{EXPIRY_DIGITS}d} "
    return text.encode("ascii") + call_id.encode("utf-8", "surrogateescape")


def token_mac(keys: MixerTokenKeys, conference_id: str, call_id: str, expiry: int) -> str:
    """hex(SHA1(K_out || hex(SHA1(K_in || m)))): 40 lowercase hex digits."""
    message = token_message(conference_id, call_id, expiry)
    inner = hashlib.sha1(keys.inner + message).hexdigest()  # noqa: S324 - NMAC, see the docstring
    return hashlib.sha1(keys.outer + inner.encode("ascii")).hexdigest()  # noqa: S324


def make_token(keys: MixerTokenKeys, conference_id: str, call_id: str, now: float, ttl: int) -> str:
    """The header value for one leg: ``<expiry>.<mac>``, valid until ``int(now) + ttl``."""
    if not isinstance(ttl, int) or ttl <= 0:
        raise MixerTokenError("the token lifetime must be a positive number of seconds")
    expiry = int(now) + ttl
    return f"{expiry:0{EXPIRY_DIGITS}d}.{token_mac(keys, conference_id, call_id, expiry)}"


def check_token(
    keys: MixerTokenKeys, token: str | None, conference_id: str, call_id: str, now: float
) -> None:
    """What the dialplan checks, in the same order; raises :class:`MixerTokenError` if refused.

    The shape first (ten digits, a dot, forty lowercase hex digits), then the MAC
    (compared in constant time), then the expiry (``now`` past it: refused; the
    dialplan compares with ``${EPOCH}``, the same whole seconds).
    """
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise MixerTokenError("no token of the expected shape")
    expiry = int(match.group(1))
    expected = token_mac(keys, conference_id, call_id, expiry)
    if not hmac.compare_digest(expected, match.group(2)):
        raise MixerTokenError("the token's MAC does not match")
    if expiry < int(now):
        raise MixerTokenError("the token has expired")
