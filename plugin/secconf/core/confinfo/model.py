"""What the focus publishes about a conference (RFC 4575 §5), as frozen dataclasses.

One class per element of the RFC 4575 schema that we model (§5.3 conference
description, §5.5 conference state, §5.6 user, §5.7 endpoint, §5.8 media), plus
:class:`Keying`, our extension (``urn:secconf:params:xml:ns:conference-info-ext``,
docs/event-package.md "The document"): epoch number, keying mode, last rekey.
Key material has no field anywhere: the document tells *that* and *when* the
conference was rekeyed, never with what.

The model is the *coherent state* of RFC 4575 §4.6: what a fresh full document
says, and what a subscriber holds after applying partial ones.  It carries no
``version`` (that is per subscription, RFC 4575 §5.2) and no ``state`` attribute
(a property of a document, not of the conference).

It is canonical, so that two equal states compare equal: the keyed siblings of
RFC 4575 §4.5 (users and endpoints by ``entity``, media by ``id``) are sorted
by key and must be unique; their order carries no meaning in the RFC, which
merges partial documents by key.  Every value is checked when a model is built
(by the focus or by the parser), so whatever the builder is given can be
written as a valid document: :class:`~secconf.core.errors.MalformedConferenceInfo`
otherwise.  Instants are whole POSIX seconds (UTC), passed in by the caller
(:mod:`.timestamps`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from ..errors import MalformedConferenceInfo
from ..focus import OfferMode
from .timestamps import MAX_SECONDS, MIN_SECONDS

__all__ = [
    "CONFERENCE_INFO_NS",
    "CONFERENCE_INFO_TYPE",
    "SECCONF_INFO_NS",
    "UNSIGNED_INT_MAX",
    "ConferenceDescription",
    "ConferenceInfo",
    "ConferenceState",
    "DisconnectionMethod",
    "Endpoint",
    "EndpointStatus",
    "Execution",
    "JoiningMethod",
    "Keying",
    "Media",
    "MediaStatus",
    "OfferMode",
    "UriEntry",
    "User",
]

#: RFC 4575 §4.2.
CONFERENCE_INFO_NS: Final = "urn:ietf:params:xml:ns:conference-info"
#: RFC 4575 §9.2: the body's Content-Type.
CONFERENCE_INFO_TYPE: Final = "application/conference-info+xml"
#: Our extension namespace (RFC 4575 §5: ``xs:any namespace="##other"``), compared as a
#: string like every XML namespace and never dereferenced; docs/event-package.md says why
#: this name.  Its schema: tests/data/conference-info/secconf-conference-info-ext.xsd.
SECCONF_INFO_NS: Final = "urn:secconf:params:xml:ns:conference-info-ext"
#: ``xs:unsignedInt``: versions, counts, epochs, SSRCs.
UNSIGNED_INT_MAX: Final = 2**32 - 1

#: Characters outside XML 1.0 §2.2 ``Char``: no document can carry them.
_NOT_XML_CHAR: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: A URI (``xs:anyURI`` key or value) never holds white space or controls (RFC 4575 §4.5
#: advises against white space in keys; the schema type would collapse it away).
_NOT_URI_CHAR: Final = re.compile(r"[\x00-\x20\x7f]")


class EndpointStatus(StrEnum):
    """``<endpoint><status>`` (RFC 4575 §5.7.3)."""

    PENDING = "pending"
    DIALING_OUT = "dialing-out"
    DIALING_IN = "dialing-in"
    ALERTING = "alerting"
    ON_HOLD = "on-hold"
    CONNECTED = "connected"
    MUTED_VIA_FOCUS = "muted-via-focus"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


class JoiningMethod(StrEnum):
    """``<joining-method>`` (RFC 4575 §5.7.4)."""

    DIALED_IN = "dialed-in"
    DIALED_OUT = "dialed-out"
    FOCUS_OWNER = "focus-owner"


class DisconnectionMethod(StrEnum):
    """``<disconnection-method>`` (RFC 4575 §5.7.6)."""

    DEPARTED = "departed"
    BOOTED = "booted"
    FAILED = "failed"
    BUSY = "busy"


class MediaStatus(StrEnum):
    """``<media><status>`` (RFC 4575 §5.8.5): direction seen from the participant."""

    RECVONLY = "recvonly"
    SENDONLY = "sendonly"
    SENDRECV = "sendrecv"
    INACTIVE = "inactive"


def _text(value: str | None, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise MalformedConferenceInfo(f"{what} must be a string")
    if _NOT_XML_CHAR.search(value):
        raise MalformedConferenceInfo(f"{what} holds characters XML cannot carry")


def _uri(value: str | None, what: str) -> None:
    if value is None:
        return
    _text(value, what)
    if not value or _NOT_URI_CHAR.search(value):
        raise MalformedConferenceInfo(f"{what} must be a URI without white space")


def _key(value: str, what: str) -> None:
    _text(value, what)
    if not value:
        raise MalformedConferenceInfo(f"{what} must not be empty")


def _unsigned(value: int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedConferenceInfo(f"{what} must be an integer")
    if not 0 <= value <= UNSIGNED_INT_MAX:
        raise MalformedConferenceInfo(f"{what} must fit an xs:unsignedInt")


def _instant(value: int | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedConferenceInfo(f"{what} must be whole POSIX seconds")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise MalformedConferenceInfo(f"{what} outside the years 0001..9999")


def _member(value: object, kind: type, what: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise MalformedConferenceInfo(f"{what} must be a {kind.__name__}")


@dataclass(frozen=True, slots=True)
class UriEntry:
    """An ``<entry>`` of ``<conf-uris>`` or ``<service-uris>`` (RFC 4575 §5.3.1, §5.3.2)."""

    uri: str
    display_text: str | None = None
    #: ``participation``/``streaming`` (conf-uris), ``web-page``/``recording``/``event``...
    purpose: str | None = None

    def __post_init__(self) -> None:
        _uri(self.uri, "<entry><uri>")
        _text(self.display_text, "<entry><display-text>")
        _text(self.purpose, "<entry><purpose>")


@dataclass(frozen=True, slots=True)
class ConferenceDescription:
    """``<conference-description>`` (RFC 4575 §5.3); atomic in partial documents."""

    display_text: str | None = None
    subject: str | None = None
    conf_uris: tuple[UriEntry, ...] = ()
    service_uris: tuple[UriEntry, ...] = ()
    maximum_user_count: int | None = None

    def __post_init__(self) -> None:
        _text(self.display_text, "<conference-description><display-text>")
        _text(self.subject, "<subject>")
        object.__setattr__(self, "conf_uris", tuple(self.conf_uris))
        object.__setattr__(self, "service_uris", tuple(self.service_uris))
        for entries, what in ((self.conf_uris, "conf-uris"), (self.service_uris, "service-uris")):
            for entry in entries:
                _member(entry, UriEntry, f"<{what}> entry")
            uris = [entry.uri for entry in entries]
            if len(set(uris)) != len(uris):
                # RFC 4575 §5.3.1/§5.3.2: "The value of the URI MUST be unique".
                raise MalformedConferenceInfo(f"<{what}> lists a URI twice")
        _unsigned(self.maximum_user_count, "<maximum-user-count>")


@dataclass(frozen=True, slots=True)
class Keying:
    """``<sc:keying>`` in ``<conference-state>``: how the conference's media is keyed now.

    Our extension (docs/event-package.md).  ``epoch`` is the number of the group key
    in use (the edge's epoch, R6); ``last_rekey`` the instant it was installed.
    Never a key, a salt or anything derived from one.
    """

    mode: OfferMode
    epoch: int
    last_rekey: int | None = None

    def __post_init__(self) -> None:
        _member(self.mode, OfferMode, "<sc:keying><sc:mode>")
        _unsigned(self.epoch, "<sc:keying><sc:epoch>")
        _instant(self.last_rekey, "<sc:keying><sc:last-rekey>")


@dataclass(frozen=True, slots=True)
class ConferenceState:
    """``<conference-state>`` (RFC 4575 §5.5); atomic in partial documents."""

    user_count: int | None = None
    active: bool | None = None
    locked: bool | None = None
    keying: Keying | None = None

    def __post_init__(self) -> None:
        _unsigned(self.user_count, "<user-count>")
        _member(self.active, bool, "<active>")
        _member(self.locked, bool, "<locked>")
        _member(self.keying, Keying, "<sc:keying>")


@dataclass(frozen=True, slots=True)
class Execution:
    """``execution-type`` (RFC 4575 §6): ``<joining-info>``, ``<disconnection-info>``, ``<referred>``."""

    #: POSIX seconds, UTC; the caller's clock.
    when: int | None = None
    reason: str | None = None
    by: str | None = None

    def __post_init__(self) -> None:
        _instant(self.when, "<when>")
        _text(self.reason, "<reason>")
        _uri(self.by, "<by>")


@dataclass(frozen=True, slots=True)
class Media:
    """``<media>`` of an endpoint (RFC 4575 §5.8), keyed by ``id`` (§4.5)."""

    id: str
    type: str | None = None
    status: MediaStatus | None = None
    #: RFC 4575 §5.8.4: for RTP, the SSRC the endpoint sends under (written in decimal).
    src_id: int | None = None
    label: str | None = None
    display_text: str | None = None

    def __post_init__(self) -> None:
        _key(self.id, "<media> id")
        _text(self.type, "<media><type>")
        _member(self.status, MediaStatus, "<media><status>")
        _unsigned(self.src_id, "<src-id>")
        _text(self.label, "<media><label>")
        _text(self.display_text, "<media><display-text>")


def _sorted_unique(
    items: tuple[object, ...], kind: type, key: str, what: str
) -> tuple[object, ...]:
    for item in items:
        _member(item, kind, what)
    keys = [getattr(item, key) for item in items]
    if len(set(keys)) != len(keys):
        raise MalformedConferenceInfo(f"two {what} elements with the same {key}")
    return tuple(sorted(items, key=lambda item: str(getattr(item, key))))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``<endpoint>`` of a user (RFC 4575 §5.7), keyed by ``entity`` (§4.5)."""

    entity: str
    status: EndpointStatus | None = None
    joining_method: JoiningMethod | None = None
    joining_info: Execution | None = None
    disconnection_method: DisconnectionMethod | None = None
    disconnection_info: Execution | None = None
    #: Sorted by ``id``, ids unique.
    media: tuple[Media, ...] = ()
    display_text: str | None = None
    referred: Execution | None = None
    #: ``<sc:keying-mode>``, our extension: how this endpoint's leg is keyed (a mixed-mode
    #: conference has both).
    keying_mode: OfferMode | None = None

    def __post_init__(self) -> None:
        _key(self.entity, "<endpoint> entity")
        _member(self.status, EndpointStatus, "<endpoint><status>")
        _member(self.joining_method, JoiningMethod, "<joining-method>")
        _member(self.joining_info, Execution, "<joining-info>")
        _member(self.disconnection_method, DisconnectionMethod, "<disconnection-method>")
        _member(self.disconnection_info, Execution, "<disconnection-info>")
        _member(self.referred, Execution, "<referred>")
        _member(self.keying_mode, OfferMode, "<sc:keying-mode>")
        _text(self.display_text, "<endpoint><display-text>")
        media = _sorted_unique(tuple(self.media), Media, "id", "<media>")
        object.__setattr__(self, "media", media)


@dataclass(frozen=True, slots=True)
class User:
    """``<user>`` (RFC 4575 §5.6), keyed by ``entity`` (§4.5): one member."""

    entity: str
    display_text: str | None = None
    #: Sorted by ``entity``, entities unique.
    endpoints: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        _uri(self.entity, "<user> entity")
        _text(self.display_text, "<user><display-text>")
        endpoints = _sorted_unique(tuple(self.endpoints), Endpoint, "entity", "<endpoint>")
        object.__setattr__(self, "endpoints", endpoints)


@dataclass(frozen=True, slots=True)
class ConferenceInfo:
    """The whole ``<conference-info>`` state (RFC 4575 §5.2) of one conference."""

    #: The conference URI (what a subscriber SUBSCRIBEs to).
    entity: str
    description: ConferenceDescription = field(default_factory=ConferenceDescription)
    state: ConferenceState | None = None
    #: Sorted by ``entity``, entities unique.
    users: tuple[User, ...] = ()

    def __post_init__(self) -> None:
        _uri(self.entity, "<conference-info> entity")
        _member(self.description, ConferenceDescription, "<conference-description>")
        _member(self.state, ConferenceState, "<conference-state>")
        users = _sorted_unique(tuple(self.users), User, "entity", "<user>")
        object.__setattr__(self, "users", users)

    def user(self, entity: str) -> User | None:
        """The user with this ``entity``, if any."""
        return next((user for user in self.users if user.entity == entity), None)
