"""Sans-IO RFC 4575 conference information documents (``application/conference-info+xml``).

What the focus tells the subscribers of a conference's event package (R7):

- :mod:`.model`: the coherent state as frozen dataclasses (conference description
  and state, users, endpoints, media) plus our extension namespace (keying mode,
  epoch, last rekey: never key material);
- :mod:`.build`: the focus's side: full, partial and deleted documents;
  :func:`partial_document` writes only what changed between two states;
- :mod:`.parse`: the subscriber's side: hardened reading (defusedxml, no DTD,
  size and depth bounds), a full document to the model;
- :mod:`.view`: RFC 4575 §4.6, applying full and partial documents to the held
  state, with the version rules (stale, resync needed, ended);
- :mod:`.facts`: what the conference looks like (members, legs, departures, keying)
  and :func:`describe`, the RFC 4575 state those facts give;
- :mod:`.timestamps`: ``xs:dateTime`` <-> POSIX seconds, without a clock.

Times are passed in; nothing here reads a clock, draws randomness or does I/O.
The decisions the RFC leaves open are in docs/event-package.md, "The document".
"""

from __future__ import annotations

from .build import conference_element, deleted_document, full_document, partial_document
from .facts import ConferenceFacts, DepartureFacts, MemberFacts, describe, leg_endpoint
from .model import (
    CONFERENCE_INFO_NS,
    CONFERENCE_INFO_TYPE,
    SECCONF_INFO_NS,
    ConferenceDescription,
    ConferenceInfo,
    ConferenceState,
    DisconnectionMethod,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Keying,
    Media,
    MediaStatus,
    OfferMode,
    UriEntry,
    User,
)
from .parse import (
    DEFAULT_LIMITS,
    Document,
    DocumentState,
    ParseLimits,
    info_from_element,
    read_document,
)
from .timestamps import format_datetime, parse_datetime
from .view import ConferenceView, Received, Verdict, apply_document, receive

__all__ = [
    "CONFERENCE_INFO_NS",
    "CONFERENCE_INFO_TYPE",
    "DEFAULT_LIMITS",
    "SECCONF_INFO_NS",
    "ConferenceDescription",
    "ConferenceFacts",
    "ConferenceInfo",
    "ConferenceState",
    "ConferenceView",
    "DepartureFacts",
    "DisconnectionMethod",
    "Document",
    "DocumentState",
    "Endpoint",
    "EndpointStatus",
    "Execution",
    "JoiningMethod",
    "Keying",
    "Media",
    "MediaStatus",
    "MemberFacts",
    "OfferMode",
    "ParseLimits",
    "Received",
    "UriEntry",
    "User",
    "Verdict",
    "apply_document",
    "conference_element",
    "deleted_document",
    "describe",
    "format_datetime",
    "full_document",
    "info_from_element",
    "leg_endpoint",
    "parse_datetime",
    "partial_document",
    "read_document",
    "receive",
]
