"""SUBSCRIBE to a conference (RFC 6665 §4.2.1, RFC 4575 §3): initial, fetch, refresh, end.

Who may subscribe (docs/event-package.md, "The focus's side"): a SUBSCRIBE is
authenticated as a join is (:class:`~secconf.focus.authenticator.Authenticator`: in SDES
mode the asserted identity of a trusted source or Digest, and only over TLS, since the
NOTIFYs carry the roster in the clear on that hop; in KMS mode the member's
TRANSFER_INIT in an ``application/mikey`` body, answered by
:meth:`~secconf.focus.kms_keying.KmsKeying.subscription_grant`), and the identity must
hold a dialog in the conference: the store's script checks it while it records the
subscription, so a refusal stores nothing.

The dialog's binding: the 2xx's To tag is the tag Kamailio gives its local replies
(``$ltt(x)``), recorded with the subscriber's From tag, its flow and the Call-ID.  An
in-dialog SUBSCRIBE (refresh, ``Expires: 0``) is taken only if a record exists for its
conference (Request-URI: our Contact is the conference URI) and Call-ID, both tags are
the recorded ones and it arrives on the recorded flow (the TLS connection the
subscription came on); anything else is 481 and changes nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core import events
from secconf.core.errors import (
    BadEvent,
    CallDoesNotExist,
    Forbidden,
    MalformedMessage,
    MessageTooLarge,
    NotAcceptable,
    SecconfError,
)
from secconf.core.focus import ConferenceNotFound, OfferMode
from secconf.store.conference_subscriptions import SubscriptionRecord
from secconf.store.conferences import ConferenceStore, dialog_id

from ..authenticator import Authenticator
from ..kms_keying import KmsKeying, SubscriptionGrant
from ..messages import Reply, RequestView
from ..offers import MIKEY_CONTENT_TYPE
from ..settings import Settings

__all__ = ["Arrival", "Subscriptions", "bad_event_reply", "local_contact"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the SIP server adds to a SUBSCRIBE: our socket, and the To tag of our reply."""

    #: the socket the request came in on (``proto:ip:port``): NOTIFYs leave from it
    socket: str
    #: the To tag our local reply carries (Kamailio's ``$ltt(x)``)
    local_tag: str


def local_contact(user: str, socket: str) -> str:
    """Our Contact in a subscription's dialog: the conference's user at the socket the
    SUBSCRIBE reached (``proto:ip:port``), so that refreshes come back to this node and
    this flow's listener (RFC 6665 §4.1.2.1: the remote target of later requests)."""
    transport, _, rest = socket.partition(":")
    address, _, port = rest.rpartition(":")
    if not transport or not address or not port.isdigit():
        raise ValueError("a socket is proto:address:port")
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"sip:{user}@{host}:{port};transport={transport.lower()}"


def bad_event_reply() -> Reply:
    """489 with ``Allow-Events: conference`` (RFC 6665 §8.2.2, §4.2.1)."""
    return Reply(489, "Bad Event", (("Allow-Events", events.ALLOW_EVENTS),))


@dataclass
class Subscriptions:
    """SUBSCRIBE requests to conferences (``FocusService.subscriptions``)."""

    settings: Settings
    store: ConferenceStore
    auth: Authenticator
    kms_keying: KmsKeying
    clock: Callable[[], float] = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)

    def on_subscribe(self, request: RequestView, conference_id: str, arrival: Arrival) -> Reply:
        """An initial SUBSCRIBE to *conference_id*'s URI: recorded and answered 200, or refused.

        The first NOTIFY (full state) is the node's timer's, at its next tick.  A fetch
        (``Expires: 0``) is the same path: 200 with ``Expires: 0``, one NOTIFY, then the
        record goes (after that NOTIFY's reply or Timer F).
        """
        try:
            events.check_event(request.headers.get("Event"))
        except BadEvent:
            return bad_event_reply()
        expires = events.granted_expires(request.headers.get("Expires"))
        conference = self.store.get(conference_id)
        if conference is None or conference.state != "active":
            raise ConferenceNotFound("no such conference")
        identity, grant, mode = self._subscriber(request)
        events.check_accept(request.headers.get("Accept"), mode)
        contact = request.contact
        if not contact:
            raise MalformedMessage("SUBSCRIBE without Contact (RFC 6665 §4.1.2.1)")
        now = self.clock()
        record = SubscriptionRecord(
            conference_id=conference_id,
            call_id=request.call_id,
            sub_tag=request.from_tag,
            our_tag=arrival.local_tag,
            subscriber=request.from_uri,
            identity=identity,
            contact=contact,
            transport=request.flow.transport,
            source=f"{request.flow.address}:{request.flow.port}",
            socket=arrival.socket,
            node=self.settings.events.node_id,
            mode=mode.value,
            epoch=conference.epoch,
            # Expires: 0 is a fetch (RFC 6665 §4.4.3): checked and recorded as any
            # SUBSCRIBE, its one NOTIFY carries full state and ends it
            notifier=events.started(conference.uri, now, expires)
            if expires
            else events.fetched(conference.uri, now),
            event_key=None if grant is None else grant.event_key,
        )
        kms = self.settings.kms
        self.store.subscriptions.create(
            record,
            now=now,
            max_per_conference=self.settings.events.max_per_conference,
            max_per_identity=self.settings.events.max_per_identity,
            replay_key=None if grant is None else grant.replay_key,
            replay_ttl=2 * kms.skew if kms is not None else 0.0,
        )
        kind = "fetched" if expires == 0 else "subscribed to"
        self.log("info", f"secconf: {identity} {kind} {conference_id} ({mode.value})")
        return self._accepted(conference_id, expires, grant, arrival)

    def _subscriber(self, request: RequestView) -> tuple[str, SubscriptionGrant | None, OfferMode]:
        """Who sent the SUBSCRIBE, its KMS grant (KMS mode) and the mode it subscribes in."""
        limit = self.settings.max_body
        if request.content_length > limit or len(request.body) > limit:
            raise MessageTooLarge(f"body over {limit} bytes")
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if content_type == MIKEY_CONTENT_TYPE and self.settings.kms_mode:
            auth, replay_key = self.auth.mikey_request(request)
            return (
                auth.identity,
                self.kms_keying.subscription_grant(auth, replay_key),
                OfferMode.KMS,
            )
        if request.body:
            raise NotAcceptable("a SUBSCRIBE carries no body, or application/mikey")
        if not request.flow.secure:
            # SDES mode: the roster travels in the clear on the hop (docs/event-package.md).
            raise Forbidden("SDES-mode subscriptions only over TLS")
        return self.auth.identity(request), None, OfferMode.SDES

    def _accepted(
        self, conference_id: str, expires: int, grant: SubscriptionGrant | None, arrival: Arrival
    ) -> Reply:
        user = self.settings.conference_user.format(id=conference_id)
        headers = (
            ("Expires", str(expires)),
            ("Contact", f"<{local_contact(user, arrival.socket)}>"),
        )
        if grant is None:
            return Reply(200, "OK", headers)
        return Reply(200, "OK", headers, grant.answer, MIKEY_CONTENT_TYPE)

    def on_in_dialog(self, request: RequestView, conference_id: str | None) -> Reply:
        """A SUBSCRIBE in a subscription's dialog: refresh, or ``Expires: 0`` to end it.

        481 unless the record, both tags and the flow are the subscription's; a refresh
        sets the new expiry and asks the timer for full state; ``Expires: 0`` makes the
        timer send the final NOTIFY (``terminated;reason=timeout``) and then drop the
        record.
        """
        record = self._bound(request, conference_id)
        try:
            events.check_event(request.headers.get("Event"))
        except BadEvent:
            return bad_event_reply()
        if request.body:
            raise NotAcceptable("a refreshing SUBSCRIBE carries no body")
        expires = events.granted_expires(request.headers.get("Expires"))
        if record.notifier.phase is not events.Phase.ACTIVE and expires != 0:
            raise CallDoesNotExist("the subscription is ending")
        # The node's timer owns the notifier's state: the refresh is an input it applies
        # at its next tick (a full-state NOTIFY, or the final one for Expires: 0).
        taken = self.store.subscriptions.refresh(
            record.conference_id, record.sub_id, now=self.clock(), expires=expires
        )
        if not taken:
            raise CallDoesNotExist("no such subscription")
        return Reply(200, "OK", (("Expires", str(expires)),))

    def _bound(self, request: RequestView, conference_id: str | None) -> SubscriptionRecord:
        """The subscription this request belongs to, by record, tags and flow; else 481."""
        if conference_id is None:
            raise CallDoesNotExist("no such subscription")
        try:
            record = self.store.subscriptions.get(conference_id, dialog_id(request.call_id))
        except SecconfError as exc:
            if exc.status_code == 503:
                raise
            raise CallDoesNotExist("no such subscription") from None
        flow = request.flow
        if (
            record is None
            or not hmac.compare_digest(record.sub_tag.encode(), request.from_tag.encode())
            or not hmac.compare_digest(record.our_tag.encode(), (request.to_tag or "").encode())
            or record.transport != flow.transport
            or record.source != f"{flow.address}:{flow.port}"
        ):
            raise CallDoesNotExist("no such subscription")
        return record
