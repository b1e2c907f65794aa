"""One error tree for everything secconf refuses.

Modelled on h11's ``ProtocolError``: each error carries the status a refusal
should use, so an adapter (the Kamailio module, the KMS's HTTP layer) turns any
``ProtocolError`` into a precise answer without a lookup table of its own.

    SecconfError
    ├── ProtocolError                 (status_code, reason)
    │   ├── MalformedMessage          400 Bad Request
    │   │   ├── MalformedSdp
    │   │   └── MessageTooLarge       413 Request Entity Too Large
    │   ├── NotAcceptable             488 Not Acceptable Here
    │   │   ├── InvalidCryptoAttribute
    │   │   │   └── UnsupportedCryptoSuite
    │   │   └── InsecureMedia
    │   └── Forbidden                 403 Forbidden
    └── ServiceUnavailable            503 Service Unavailable

Messages never contain key material: anything quoted from input goes through
:func:`redact_line` first.
"""

from __future__ import annotations

import re

__all__ = [
    "Forbidden",
    "InsecureMedia",
    "InvalidCryptoAttribute",
    "MalformedMessage",
    "MalformedSdp",
    "MessageTooLarge",
    "NotAcceptable",
    "ProtocolError",
    "SecconfError",
    "ServiceUnavailable",
    "UnsupportedCryptoSuite",
    "redact_line",
]

_MAX_QUOTED = 80

# Everything that can carry key material in SDP: SDES inline keys (RFC 4568
# §9.1, also inside FEC_KEY=), k= lines (RFC 4566 §5.12) and key-mgmt data
# (RFC 4567 §3).  The whole remainder of the token is replaced.
_SECRET_PATTERNS = (
    re.compile(r"(inline:)[^\s;]*", re.IGNORECASE),
    re.compile(r"^(k=).*$", re.IGNORECASE),
    re.compile(r"(key-mgmt:\s*\S+\s+)\S.*$", re.IGNORECASE),
)


def redact_line(line: str) -> str:
    """Return *line* fit for an error message or a log: secrets masked, shortened.

    Non-printable characters are shown as escapes so that a message never
    carries control bytes from the input.
    """
    text = line
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "<redacted>", text)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 3] + "..."
    return text


class SecconfError(Exception):
    """Base of every error secconf raises on purpose."""

    status_code: int = 500
    reason: str = "Server Internal Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(SecconfError):
    """The peer sent something we refuse; ``status_code`` is the SIP answer to give."""

    status_code = 400
    reason = "Bad Request"


class MalformedMessage(ProtocolError):
    """Input that does not follow the grammar it claims to follow."""


class MalformedSdp(MalformedMessage):
    """An SDP body that is not valid RFC 8866 (RFC 4566) SDP.

    ``line_number`` is 1-based and ``None`` when the error concerns the whole body.
    """

    def __init__(self, message: str, line_number: int | None = None, line: str | None = None):
        if line_number is not None and line is not None:
            message = f"{message} (line {line_number}: {redact_line(line)!r})"
        elif line_number is not None:
            message = f"{message} (line {line_number})"
        super().__init__(message)
        self.line_number = line_number


class MessageTooLarge(MalformedMessage):
    """Input over a size limit; refused before any parsing work is done."""

    status_code = 413
    reason = "Request Entity Too Large"


class NotAcceptable(ProtocolError):
    """Well-formed, but the media or its security cannot be accepted here."""

    status_code = 488
    reason = "Not Acceptable Here"


class InvalidCryptoAttribute(NotAcceptable):
    """An ``a=crypto`` value that breaks the RFC 4568 §9 grammar or §6 rules.

    RFC 4568 §7.1.2: an answerer that finds no valid, supported crypto
    attribute rejects the stream, hence 488 rather than 400.
    """


class UnsupportedCryptoSuite(InvalidCryptoAttribute):
    """A syntactically valid crypto attribute whose suite we do not implement."""


class InsecureMedia(NotAcceptable):
    """A media stream without usable protection in a secure conference (R3)."""


class Forbidden(ProtocolError):
    """The requester is authenticated but not allowed to do this."""

    status_code = 403
    reason = "Forbidden"


class ServiceUnavailable(SecconfError):
    """A backing service (Redis, the KMS, Asterisk) did not answer in time.

    Not a ``ProtocolError``: the peer did nothing wrong, and may retry.
    """

    status_code = 503
    reason = "Service Unavailable"
