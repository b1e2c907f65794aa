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
    "NoUsableKey",
    "NotAcceptable",
    "ProtocolError",
    "RateLimited",
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
    #: The refusal may tell the sender why (a Warning): set once the sender is authenticated.
    #: An unauthenticated sender gets the status code only (issue 12: no oracle for probes).
    detailed: bool = False

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


class NoUsableKey(NotAcceptable):
    """A stream offers no usable ``a=crypto`` in the suite asked (another suite may do)."""


class Forbidden(ProtocolError):
    """The requester is authenticated but not allowed to do this."""

    status_code = 403
    reason = "Forbidden"


class RateLimited(Forbidden):
    """A limit on an authenticated identity (dialogs held, REFERs per minute): 403.

    *retry_after* (seconds) goes into a Retry-After header (RFC 3261 §20.33): the request is
    not forbidden for ever, only now.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class ServiceUnavailable(SecconfError):
    """A backing service (Redis, the KMS, Asterisk) did not answer in time.

    Not a ``ProtocolError``: the peer did nothing wrong, and may retry.
    """

    status_code = 503
    reason = "Service Unavailable"


# -- MIKEY (RFC 3830, RFC 6043) ------------------------------------------------
#
#     ProtocolError
#     └── MikeyError                  error_no (ERR payload code), 400 unless stated
#         ├── MalformedMikey          400, error_no 12 (also a MalformedMessage)
#         │   └── MikeyTooLarge       413 (also a MessageTooLarge)
#         ├── UnsupportedMikey        488, error_no per the value refused
#         ├── AuthenticationFailed    403, error_no 0
#         └── InvalidTimestamp        403, error_no 1
#             └── ReplayedMessage     403, error_no 1

from enum import IntEnum  # noqa: E402 - kept with the MIKEY section it serves

__all__ += [
    "AuthenticationFailed",
    "InvalidTimestamp",
    "MalformedMikey",
    "MikeyError",
    "MikeyErrorNo",
    "MikeyTooLarge",
    "ReplayedMessage",
    "TicketRejected",
    "UnsupportedMikey",
]


class MikeyErrorNo(IntEnum):
    """Error no of the MIKEY ERR payload (RFC 3830 §6.12, RFC 4738 §3.9.2, RFC 6043 §6.9)."""

    AUTH_FAILURE = 0
    INVALID_TS = 1
    INVALID_PRF = 2
    INVALID_MAC = 3
    INVALID_EA = 4
    INVALID_HA = 5
    INVALID_DH = 6
    INVALID_ID = 7
    INVALID_CERT = 8
    INVALID_SP = 9
    INVALID_SPPAR = 10
    INVALID_DT = 11
    UNSPECIFIED = 12
    UNSUPPORTED_MESSAGE_TYPE = 13  # RFC 4738; RFC 3830-only peers know 12 instead
    INVALID_TICKET = 14  # RFC 6043
    INVALID_TPPAR = 15  # RFC 6043


class MikeyError(ProtocolError):
    """A MIKEY message we refuse.

    ``error_no`` is the code an ERR payload answering it would carry (RFC 3830
    §6.12); ``status_code`` is the SIP answer (400 unless a subclass says
    otherwise).  Messages never quote key material, only field names and sizes.
    """

    error_no: int = MikeyErrorNo.UNSPECIFIED

    def __init__(self, message: str, error_no: int | None = None) -> None:
        super().__init__(message)
        if error_no is not None:
            self.error_no = int(error_no)


class MalformedMikey(MikeyError, MalformedMessage):
    """Bytes that do not frame as a MIKEY message: 400, ERR "Unspecified error" (12).

    RFC 4738 §3.5 suggests 13 for unparseable messages but lets RFC 3830 peers
    answer 12; 12 is understood by every peer (docs/mikey-decisions.md).
    """

    status_code = 400
    reason = "Bad Request"


class MikeyTooLarge(MalformedMikey, MessageTooLarge):
    """A MIKEY message over the size or payload-count limit: 413, refused unread."""

    status_code = 413
    reason = "Request Entity Too Large"


class UnsupportedMikey(MikeyError, NotAcceptable):
    """Well-formed, but names an algorithm, type or version we do not implement.

    488 Not Acceptable Here, as RFC 4567 §4.1.2 asks of an answerer rejecting
    key management; ``error_no`` names what was refused (e.g. 1 Invalid TS for
    an unknown TS type, 3 Invalid MAC, 4 Invalid EA, 5 Invalid HA, 6 Invalid DH).
    """

    status_code = 488
    reason = "Not Acceptable Here"


class AuthenticationFailed(MikeyError):
    """A MAC or signature did not verify: 403, ERR "Auth failure" (0).

    RFC 3830 §5.1.2: sending an Error for this is optional and better left
    unauthenticated; the message is discarded and never enters the replay cache.
    """

    status_code = 403
    reason = "Forbidden"
    error_no = MikeyErrorNo.AUTH_FAILURE


class InvalidTimestamp(MikeyError):
    """A timestamp outside the allowed clock skew (RFC 3830 §5.4): 403, ERR 1."""

    status_code = 403
    reason = "Forbidden"
    error_no = MikeyErrorNo.INVALID_TS


class ReplayedMessage(InvalidTimestamp):
    """A message already in the replay cache (RFC 3830 §5.4, RFC 6043 §12.4): 403, ERR 1."""


class TicketRejected(MikeyError):
    """A ticket that does not authenticate, has expired or was revoked, or names
    someone else (RFC 6043 §4.2.3.4): 403, ERR "Invalid TICKET" (14)."""

    status_code = 403
    reason = "Forbidden"
    error_no = MikeyErrorNo.INVALID_TICKET


# -- RTP / RTCP (RFC 3550) -------------------------------------------------------
#
#     MalformedMessage
#     └── MalformedRtp                400: an RTP or RTCP packet that does not frame

__all__ += ["MalformedRtp"]


class MalformedRtp(MalformedMessage):
    """Bytes that are not a valid RTP packet or RTCP compound packet (RFC 3550 §5.1, §6.4).

    Media is never answered with a SIP status; the class sits under
    :class:`MalformedMessage` so that one ``except`` covers every parser.
    Messages name fields and sizes only, never payload bytes.
    """


# -- SIP (RFC 3261) -------------------------------------------------------------
#
#     ProtocolError
#     ├── MalformedMessage
#     │   └── MalformedSipMessage     400 Bad Request
#     │       └── SipMessageTooLarge  413 (also a MessageTooLarge)
#     ├── CallDoesNotExist            481 Call/Transaction Does Not Exist
#     ├── RequestOutOfOrder           500 (RFC 3261 §12.2.2: lower CSeq in a dialog)
#     └── VersionNotSupported         505 SIP Version Not Supported (RFC 3261 §21.5.7)

__all__ += [
    "CallDoesNotExist",
    "MalformedSipMessage",
    "RequestOutOfOrder",
    "SipMessageTooLarge",
    "VersionNotSupported",
]


class MalformedSipMessage(MalformedMessage):
    """Bytes that are not an RFC 3261 §25 SIP message, or break a limit of ours: 400.

    Messages quote at most a redacted, shortened line of the input.
    """


class SipMessageTooLarge(MalformedSipMessage, MessageTooLarge):
    """A SIP message over the size or header-count limit: 413, refused unread."""

    status_code = 413
    reason = "Request Entity Too Large"


class CallDoesNotExist(ProtocolError):
    """A request inside a dialog or transaction we do not know (RFC 3261 §12.2.2): 481."""

    status_code = 481
    reason = "Call/Transaction Does Not Exist"


class RequestOutOfOrder(ProtocolError):
    """An in-dialog request with a CSeq lower than the last one (RFC 3261 §12.2.2): 500."""

    status_code = 500
    reason = "Server Internal Error"


class VersionNotSupported(ProtocolError):
    """A SIP version other than SIP/2.0 (RFC 3261 §8.2.2.1, §21.5.7): 505."""

    status_code = 505
    reason = "Version Not Supported"


# -- CMS-protected bodies (RFC 5083, RFC 5652, RFC 8551; secconf.core.cms) --------------
#
#     ProtocolError
#     ├── MalformedMessage
#     │   └── MalformedCms            400: not DER, not a ContentInfo, a broken inner MIME entity
#     │       └── CmsTooLarge         413 (also a MessageTooLarge): refused unread
#     ├── UnsupportedMediaType        415: not application/pkcs7-mime; smime-type=authEnveloped-data
#     └── Undecipherable              493 Undecipherable (RFC 3261 §21.4.28)
#         ├── UnknownKeyId            no key for the KEK identifier named
#         ├── UnsupportedCms          a version, algorithm, content type or field outside the profile
#         └── CmsAuthenticationFailed the key unwrap or the GCM tag does not verify

__all__ += [
    "CmsAuthenticationFailed",
    "CmsTooLarge",
    "MalformedCms",
    "Undecipherable",
    "UnknownKeyId",
    "UnsupportedCms",
    "UnsupportedMediaType",
]


class MalformedCms(MalformedMessage):
    """Bytes that do not decode as the DER of a CMS ContentInfo of the expected shape.

    Messages name fields only: never the input bytes (the ASN.1 library's own message,
    which quotes them, is dropped).
    """


class CmsTooLarge(MalformedCms, MessageTooLarge):
    """A protected body over the size limit: 413, refused before any decoding."""

    status_code = 413
    reason = "Request Entity Too Large"


class UnsupportedMediaType(ProtocolError):
    """A body whose Content-Type or transfer encoding is not the one expected (RFC 3261 §21.4.13)."""

    status_code = 415
    reason = "Unsupported Media Type"


class Undecipherable(ProtocolError):
    """A protected body the recipient cannot or will not decrypt: 493 (RFC 3261 §21.4.28).

    No plaintext is ever returned with or before this error.
    """

    status_code = 493
    reason = "Undecipherable"


class UnknownKeyId(Undecipherable):
    """No key-encryption key is known for the KEK identifier the body names."""


class UnsupportedCms(Undecipherable):
    """Well-formed CMS naming a version, algorithm, content type or option outside the profile."""


class CmsAuthenticationFailed(Undecipherable):
    """The AES key unwrap integrity check or the AES-GCM tag failed: tampered or wrong key."""


# -- Conference information documents (RFC 4575) ---------------------------------
#
#     MalformedMessage
#     └── MalformedConferenceInfo     400: not an application/conference-info+xml document we take
#         ├── ConferenceInfoTooLarge  413 (also a MessageTooLarge): over the size, depth or
#         │                           element-count limit, refused as soon as it is crossed
#         └── UnsafeXml               400: a DTD, entity declaration or external reference

__all__ += ["ConferenceInfoTooLarge", "MalformedConferenceInfo", "UnsafeXml"]


class MalformedConferenceInfo(MalformedMessage):
    """A conference-info document (RFC 4575 §5) that breaks the schema or a rule of ours: 400.

    Also raised when a model the focus builds cannot be published (duplicate keys,
    characters XML cannot carry).  Messages name elements and keys, never whole bodies.
    """


class ConferenceInfoTooLarge(MalformedConferenceInfo, MessageTooLarge):
    """A conference-info document over a limit (bytes, nesting depth, elements): 413."""

    status_code = 413
    reason = "Request Entity Too Large"


class UnsafeXml(MalformedConferenceInfo):
    """XML with a DOCTYPE, an entity declaration or an external reference: 400, refused unread.

    No document of RFC 4575 needs any of them; refusing them outright rules out entity
    expansion ("billion laughs") and external entities (XXE).
    """


# -- Notifications at the subscriber (RFC 6665) -----------------------------------
#
#     ProtocolError
#     ├── BadEvent                    489: a NOTIFY for an event package not subscribed to
#     ├── BadSubscriptionState        400: a NOTIFY without a usable Subscription-State
#     └── Forbidden
#         └── UnprotectedNotification 403: a roster in the clear where only protected ones
#                                     are taken (plain XML outside TLS, or in KMS mode)

__all__ += ["BadEvent", "BadSubscriptionState", "NoAcceptableType", "UnprotectedNotification"]


class BadEvent(ProtocolError):
    """An Event that is not the package (RFC 6665 §4.1.3, §8.3.1): a NOTIFY at the subscriber,
    a SUBSCRIBE at the focus (answered with ``Allow-Events``)."""

    status_code = 489
    reason = "Bad Event"


class NoAcceptableType(ProtocolError):
    """A request whose ``Accept`` lists no body type we could send it (RFC 3261 §21.4.7)."""

    status_code = 406
    reason = "Not Acceptable"


class BadSubscriptionState(MalformedMessage):
    """A NOTIFY whose Subscription-State is missing or unreadable (RFC 6665 §4.1.3: a MUST)."""


class UnprotectedNotification(Forbidden):
    """A notification body in the clear where the subscriber takes only protected ones.

    In KMS mode every body is CMS (docs/event-protection.md); in SDES mode a plain body
    is taken only over TLS.  403: the sender is known, what it sends is not allowed.
    """
