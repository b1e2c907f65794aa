"""What the conference looks like, as facts, and the RFC 4575 state they describe.

The store gathers the facts (``ConferenceStore.event_facts``: the conference record, its
dialog records, the watcher's roster of the bridge, the recent departures);
:func:`describe` turns them into the :class:`~.model.ConferenceInfo` a NOTIFY carries.
Pure and deterministic: the same facts give the same state (the model is canonical,
keyed siblings sorted), so a notifier may compare states to decide whether to send.

The decisions (docs/event-package.md, "The conference's facts"):

- one ``<user>`` per member identity, one ``<endpoint>`` per leg (dialog), named by
  :func:`leg_endpoint` — the identity with a ``;leg=`` parameter holding a short hash of
  the Call-ID, never the Call-ID itself (RFC 4575 §5.7.9 warns that dialog identifiers
  let a subscriber act inside the dialog);
- the endpoint's status (RFC 4575 §5.7.3): ``connected`` when the watcher sees the leg in
  the bridge; ``pending`` when its 2xx passed the focus but the bridge does not show it
  (yet, or any more); before the 2xx ``dialing-in`` (the member called) or
  ``dialing-out`` (the mixer called it); ``disconnected`` for a departure;
- ``<user-count>`` counts the identities with a connected leg;
- one audio ``<media>`` per SSRC the leg sends under (``src-id``, §5.8.4), ids ``1``,
  ``2``... in SSRC order; a leg whose SSRCs the focus does not know (SDES without
  ``a=ssrc``) has one medium without ``src-id``.  Only legs in the bridge have media;
- a departed identity that is also a current member is one ``<user>``: its current legs
  and its old ones (disconnected); a departure of a leg that is current again is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ..errors import MalformedConferenceInfo
from ..focus import OfferMode
from .model import (
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
    UriEntry,
    User,
)

__all__ = [
    "LEG_HASH_HEX",
    "ConferenceFacts",
    "DepartureFacts",
    "MemberFacts",
    "describe",
    "leg_endpoint",
]

#: Hex digits of the Call-ID's SHA-256 in an endpoint's ``;leg=`` (64 bits: unique among
#: a conference's legs, and no way back to the Call-ID).
LEG_HASH_HEX: Final = 16
_HEX: Final = re.compile("[0-9a-f]+")
#: What a departure's ``<disconnection-method>`` may say (``busy`` is a dial-out refused,
#: which never became a member).
_DEPARTURE_METHODS: Final = frozenset(
    {DisconnectionMethod.DEPARTED, DisconnectionMethod.BOOTED, DisconnectionMethod.FAILED}
)


def leg_endpoint(identity: str, call_id_digest: str) -> str:
    """The endpoint URI of a leg of member *identity*: ``<identity>;leg=<hash>``.

    *call_id_digest* is the hex SHA-256 of the leg's Call-ID (the store's dialog id,
    ``secconf.store._names.dialog_id``); the first :data:`LEG_HASH_HEX` digits go in
    the URI.  Appended as a URI parameter (RFC 3261 §19.1.1), so the endpoint reads as
    the member's URI; an identity with URI headers (``?``) has them dropped first, since
    a parameter must precede them.
    """
    digest = call_id_digest[:LEG_HASH_HEX].lower()
    if len(digest) != LEG_HASH_HEX or not _HEX.fullmatch(digest):
        raise MalformedConferenceInfo("a leg is named by the hex SHA-256 of its Call-ID")
    return f"{identity.split('?', 1)[0]};leg={digest}"


def _ssrcs(values: tuple[int, ...]) -> tuple[int, ...]:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise MalformedConferenceInfo("an SSRC must be a 32-bit unsigned integer")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class MemberFacts:
    """One current leg (dialog) of a member, as the focus and the watcher know it."""

    #: the member's authenticated SIP URI
    identity: str
    #: this leg's URI (:func:`leg_endpoint`)
    endpoint: str
    #: the watcher saw the leg's channel in the ConfBridge
    in_bridge: bool
    #: its 2xx passed the focus
    answered: bool
    #: the mixer called it (a REFER or a replacement), rather than it calling in
    dialed_out: bool
    #: how this leg is keyed
    mode: OfferMode
    #: the SSRCs it sends under: KMS mode, the unique SSRCs its ticket reserved; SDES mode,
    #: those its SDP declared (``a=ssrc``), possibly none
    ssrcs: tuple[int, ...] = ()
    #: POSIX seconds when its 2xx passed (``None`` before)
    joined: int | None = None
    #: the key epoch its edge leg sends under
    epoch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", OfferMode(self.mode))
        object.__setattr__(self, "ssrcs", _ssrcs(tuple(self.ssrcs)))


@dataclass(frozen=True)
class DepartureFacts:
    """A leg that left (its dialog released), kept for the subscribers for a while."""

    identity: str
    endpoint: str
    #: departed (its BYE), booted (the focus or the creator removed it), failed
    method: DisconnectionMethod
    #: POSIX seconds when it left
    when: int
    joined: int | None = None
    dialed_out: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", DisconnectionMethod(self.method))
        if self.method not in _DEPARTURE_METHODS:
            raise MalformedConferenceInfo("a departure is departed, booted or failed")


@dataclass(frozen=True)
class ConferenceFacts:
    """Everything a conference's NOTIFYs describe (no key material: epochs and times)."""

    conference_id: str
    #: the conference URI, as subscribers SUBSCRIBE to it
    uri: str
    mode: OfferMode
    #: the current key epoch
    epoch: int
    #: POSIX seconds when the current epoch was installed (``None``: never rekeyed)
    last_rekey: int | None
    #: not ended
    active: bool
    members: tuple[MemberFacts, ...] = ()
    #: newest last, bounded by the store
    departures: tuple[DepartureFacts, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", OfferMode(self.mode))
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "departures", tuple(self.departures))


def _joining(dialed_out: bool, joined: int | None) -> tuple[JoiningMethod, Execution | None]:
    method = JoiningMethod.DIALED_OUT if dialed_out else JoiningMethod.DIALED_IN
    return method, None if joined is None else Execution(when=joined)


def _status(member: MemberFacts) -> EndpointStatus:
    if member.in_bridge:
        return EndpointStatus.CONNECTED
    if member.answered:
        return EndpointStatus.PENDING
    return EndpointStatus.DIALING_OUT if member.dialed_out else EndpointStatus.DIALING_IN


def _media(member: MemberFacts) -> tuple[Media, ...]:
    if not member.in_bridge:
        return ()
    ssrcs: tuple[int | None, ...] = member.ssrcs or (None,)
    return tuple(
        Media(str(index), type="audio", status=MediaStatus.SENDRECV, src_id=ssrc)
        for index, ssrc in enumerate(ssrcs, start=1)
    )


def _member_endpoint(member: MemberFacts) -> Endpoint:
    method, info = _joining(member.dialed_out, member.joined)
    return Endpoint(
        member.endpoint,
        status=_status(member),
        joining_method=method,
        joining_info=info,
        media=_media(member),
        keying_mode=member.mode,
    )


def _departure_endpoint(departure: DepartureFacts) -> Endpoint:
    method, info = _joining(departure.dialed_out, departure.joined)
    return Endpoint(
        departure.endpoint,
        status=EndpointStatus.DISCONNECTED,
        joining_method=method,
        joining_info=info,
        disconnection_method=departure.method,
        disconnection_info=Execution(when=departure.when),
    )


def _endpoints(facts: ConferenceFacts) -> dict[str, dict[str, Endpoint]]:
    """identity -> endpoint URI -> endpoint: current legs win over departures."""
    users: dict[str, dict[str, Endpoint]] = {}
    for departure in facts.departures:  # oldest first: a newer one of a leg replaces it
        users.setdefault(departure.identity, {})[departure.endpoint] = _departure_endpoint(
            departure
        )
    for member in facts.members:
        endpoints = users.setdefault(member.identity, {})
        if member.endpoint in endpoints and endpoints[member.endpoint].status is not (
            EndpointStatus.DISCONNECTED
        ):
            raise MalformedConferenceInfo("two current legs with the same endpoint")
        endpoints[member.endpoint] = _member_endpoint(member)
    return users


def describe(facts: ConferenceFacts) -> ConferenceInfo:
    """The RFC 4575 state of the conference *facts* describe (a full document's content)."""
    users = _endpoints(facts)
    connected = {member.identity for member in facts.members if member.in_bridge}
    state = ConferenceState(
        user_count=len(connected),
        active=facts.active,
        keying=Keying(facts.mode, facts.epoch, facts.last_rekey),
    )
    return ConferenceInfo(
        facts.uri,
        description=ConferenceDescription(
            conf_uris=(UriEntry(facts.uri, purpose="participation"),)
        ),
        state=state,
        users=tuple(
            User(identity, endpoints=tuple(endpoints.values()))
            for identity, endpoints in sorted(users.items())
        ),
    )
