"""Reading one conference NOTIFY at the participant: every check, then RFC 4575 §4.6.

No I/O and no state of its own: :func:`read_notify` takes the NOTIFY, the view held so
far and how the conference is keyed, and returns what the NOTIFY says (its
Subscription-State and, if it has a body, the :class:`~secconf.core.confinfo.Received`
verdict and view) or raises a :class:`~secconf.core.errors.ProtocolError` whose
``status_code`` is the answer to send.  The caller changes its held view only with a
returned result, so a refused NOTIFY changes nothing.

The order of the checks (docs/event-participant.md):

1. ``Event: conference`` without an ``id`` (we never send one): else 489;
2. ``Subscription-State`` ``active`` / ``pending`` / ``terminated``: else 400;
3. no body: nothing more to read (a ``pending`` NOTIFY, a final one without state);
4. the body's size, before anything looks into it: 413;
5. KMS mode: ``application/pkcs7-mime; smime-type=authEnveloped-data`` (415), no
   transfer encoding but ``binary`` (415), AuthEnvelopedData under a key the member
   holds (400 / 413 / 493), and inside, a ``application/conference-info+xml`` entity
   (400 / 415);  SDES mode: ``application/conference-info+xml`` (415), over TLS
   (403: the roster in the clear on the wire is refused, not read);
6. the document, applied to the held view (:func:`secconf.core.confinfo.receive`;
   400 / 413).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from secconf.core import cms, confinfo
from secconf.core.cms import KekLookup
from secconf.core.cms.mime import MEDIA_TYPE as PKCS7_MIME
from secconf.core.confinfo import ConferenceView, ParseLimits, Received
from secconf.core.errors import (
    BadEvent,
    BadSubscriptionState,
    CallDoesNotExist,
    MessageTooLarge,
    UnprotectedNotification,
    UnsupportedMediaType,
)
from secconf.core.sip.headers import parse_params
from secconf.core.sip.message import SipRequest

__all__ = [
    "ACCEPT_KMS",
    "ACCEPT_SDES",
    "EVENT",
    "NotifyContent",
    "NotifyLimits",
    "Protection",
    "SubState",
    "SubscriptionState",
    "parse_subscription_state",
    "read_notify",
]

#: The event package (RFC 4575 §3.1).
EVENT = "conference"
#: ``Accept`` of a SUBSCRIBE in SDES mode: the document itself (RFC 4575 §3.3).
ACCEPT_SDES = confinfo.CONFERENCE_INFO_TYPE
#: ``Accept`` in KMS mode: the CMS body and the type inside it (RFC 3261 §23.2 lists
#: ``application/pkcs7-mime`` in Accept for S/MIME bodies; the inner type says what
#: the protected entity may be).
ACCEPT_KMS = f"{PKCS7_MIME}, {confinfo.CONFERENCE_INFO_TYPE}"


class Protection(StrEnum):
    """How the conference's NOTIFY bodies are protected (the conference's keying mode)."""

    #: CMS AuthEnvelopedData under the epoch's event key (docs/event-protection.md).
    KMS = "kms"
    #: Plain XML, protected only by the TLS hop from the focus's proxy.
    SDES = "sdes"


class SubState(StrEnum):
    """``Subscription-State`` values (RFC 6665 §4.1.3)."""

    ACTIVE = "active"
    PENDING = "pending"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A parsed ``Subscription-State`` header field (RFC 6665 §8.2.3)."""

    state: SubState
    #: Seconds left, for ``active`` and ``pending`` ("authoritative", §4.1.3).
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class NotifyLimits:
    """The bounds on what one NOTIFY may make the participant do."""

    #: A body longer than this is refused unread (413); 64 KiB, the SIP message cap.
    max_body_bytes: int = cms.MAX_PROTECTED_BYTES
    parse: ParseLimits = field(default_factory=lambda: confinfo.DEFAULT_LIMITS)


@dataclass(frozen=True, slots=True)
class NotifyContent:
    """What one accepted NOTIFY says: its subscription state and, with a body, the verdict."""

    state: SubscriptionState
    received: Received | None


_MAX_SECONDS = 2**32 - 1


def _seconds(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10 or int(value) > _MAX_SECONDS:
        raise BadSubscriptionState(f"Subscription-State {what} is not a number of seconds")
    return int(value)


def parse_subscription_state(value: str | None) -> SubscriptionState:
    """Read ``Subscription-State`` (RFC 6665 §8.4: substate-value *( ";" subexp-params ))."""
    if value is None:
        raise BadSubscriptionState("NOTIFY without Subscription-State")
    name, _, rest = value.partition(";")
    try:
        state = SubState(name.strip(" \t").lower())
    except ValueError:
        raise BadSubscriptionState(
            "Subscription-State is not active, pending or terminated"
        ) from None
    params = {key.lower(): param for key, param in parse_params(";" + rest if rest else "")}
    expires = _seconds(params.get("expires"), "expires")
    if state is SubState.TERMINATED:
        expires = None  # §4.1.3: "subscribers MUST ignore any such parameter"
    reason = params.get("reason")
    return SubscriptionState(
        state,
        expires,
        reason.lower() if reason else None,
        _seconds(params.get("retry-after"), "retry-after"),
    )


def _check_event(value: str | None) -> None:
    """RFC 6665 §8.2.1: the event type by exact comparison, and the ``id`` parameter."""
    if value is None:
        raise BadEvent("NOTIFY without Event")
    event_type, _, rest = value.partition(";")
    if event_type.strip(" \t") != EVENT:
        raise BadEvent("NOTIFY for another event package")
    params = {key.lower() for key, _ in parse_params(";" + rest if rest else "")}
    if "id" in params:
        raise CallDoesNotExist("NOTIFY for a subscription with an id (we never send one)")


def _document_bytes(
    request: SipRequest, protection: Protection, *, over_tls: bool, kek_for: KekLookup
) -> bytes:
    """The conference-info document a body carries, after the checks of its protection."""
    content_type = request.get("content-type")
    if content_type is None:
        raise UnsupportedMediaType("a NOTIFY body without Content-Type")
    if protection is Protection.KMS:
        if request.content_type == confinfo.CONFERENCE_INFO_TYPE:
            raise UnprotectedNotification("a roster in the clear in a KMS-mode conference")
        cms.check_content_type(content_type)
        cms.check_transfer_encoding(request.get("content-transfer-encoding"))
        entity = cms.open_protected(request.body, kek_for)
        return cms.split_inner_entity(entity, confinfo.CONFERENCE_INFO_TYPE)
    if request.content_type != confinfo.CONFERENCE_INFO_TYPE:
        raise UnsupportedMediaType("the NOTIFY body is not application/conference-info+xml")
    if request.get("content-transfer-encoding") not in (None, "binary"):
        raise UnsupportedMediaType("a conference-info body is never transfer-encoded")
    if not over_tls:
        raise UnprotectedNotification("a roster in the clear outside TLS")
    return request.body


def read_notify(
    request: SipRequest,
    held: ConferenceView | None,
    *,
    protection: Protection,
    over_tls: bool,
    kek_for: KekLookup,
    limits: NotifyLimits = NotifyLimits(),
) -> NotifyContent:
    """Check one NOTIFY of a conference subscription and apply its document to *held*.

    Raises a :class:`~secconf.core.errors.ProtocolError` (its ``status_code`` is the
    answer) and returns nothing for a NOTIFY it refuses; *held* is never modified.
    """
    _check_event(request.get("event"))
    state = parse_subscription_state(request.get("subscription-state"))
    if not request.body:
        return NotifyContent(state, None)
    if len(request.body) > limits.max_body_bytes:
        raise MessageTooLarge(f"NOTIFY body over {limits.max_body_bytes} bytes")
    document = _document_bytes(request, protection, over_tls=over_tls, kek_for=kek_for)
    return NotifyContent(state, confinfo.receive(held, document, limits=limits.parse))
