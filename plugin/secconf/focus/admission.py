"""Create and join: an INVITE to the factory or to a conference, admitted and relayed.

The join path, one flow for both modes: the offer checked (:mod:`.offers`), the sender
authenticated (:class:`~.authenticator.Authenticator`), one store script (create or
join: a refusal writes nothing), the edge leg, then the clear offer to the mixer with
what the reply route needs (:class:`~.state.TransactionState`).  A failure after the
record releases it (:class:`~.releases.Releases`): nothing is left behind.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace

from secconf.core.errors import Forbidden, SecconfError
from secconf.core.focus import OfferMode, offered_crypto, offered_remote, offered_sections
from secconf.core.gate import Peer
from secconf.core.keys import GroupKey
from secconf.media.control_client import EdgeControl, LegAddresses, LegPlan
from secconf.store.conferences import ConferenceExists, ConferenceStore, DialogExists

from .authenticator import Authenticator
from .epochs import leg_group_key
from .keying import Keying, clear_to_mixer
from .kms_keying import KmsAuth, KmsKeying
from .messages import Relay, RequestView
from .mixer_token import HEADER as MIXER_TOKEN_HEADER
from .mixer_token import token_header
from .offers import (
    Offer,
    kms_allowed,
    kms_leg_suite,
    leg_ssrcs,
    parse_offer,
    uri_list_allowed,
)
from .releases import Releases
from .settings import Settings
from .state import ON_FAILURE, ON_REPLY, Retransmission, TransactionState, leg_id

__all__ = ["Admission", "authenticated"]


@contextmanager
def authenticated() -> Iterator[None]:
    """Refusals raised inside may tell the (now authenticated) sender why."""
    try:
        yield
    except SecconfError as exc:
        exc.detailed = True
        raise


@dataclass
class Admission:
    """Conference creation and joins (``FocusService.admission``)."""

    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    auth: Authenticator
    keying: Callable[[str], Keying] = field(repr=False)
    kms_keying: KmsKeying = field(repr=False)
    releases: Releases = field(repr=False)
    #: the [focus] timing phase of a block (a no-op without a timer)
    phase: Callable[[str], AbstractContextManager[None]] = field(repr=False)
    route_mac: Callable[[str, str, str], str] = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)
    clock: Callable[[], float] = field(repr=False)
    random_hex: Callable[[int], str] = field(repr=False)
    random_bytes: Callable[[int], bytes] = field(repr=False)
    digest_key: bytes = field(default=b"", repr=False)

    def create(self, request: RequestView) -> Relay:
        """An INVITE to the factory: a new conference with its creator's dialog."""
        offer, identity, auth = self._authenticate(request)
        with authenticated():
            return self._create_as(request, offer, identity, auth)

    def join(self, request: RequestView, conference_id: str) -> Relay:
        """An INVITE to a conference: one more dialog in it."""
        offer, identity, auth = self._authenticate(request)
        with authenticated():
            return self._join_as(request, conference_id, offer, identity, auth)

    def _authenticate(self, request: RequestView) -> tuple[Offer, str, KmsAuth | None]:
        """The checked offer and who sent it: MIKEY (KMS mode) or the asserted identity (SDES).

        An SDES offer must arrive over TLS (RFC 4568 §8.3: the keys are in the clear in the
        SDP; the answer carries the group key of every leg): 488 otherwise, before any
        challenge, unless the lab-only ``[lab] sdes_over_udp`` is on.
        """
        with self.phase("parse"):
            offer = parse_offer(self.settings, request)
        self.keying(offer.mode.value).require_transport(request.flow.secure, "an SDES offer")
        if offer.mode is OfferMode.KMS and offer.mikey is not None:
            auth = self.auth.ticket(offer.mikey, request.call_id, group_key=True)
            # the leg runs the suite its policy asks (checked allowed), else the conference's
            return replace(offer, suite=kms_leg_suite(auth, self.settings)), auth.identity, auth
        return offer, self.auth.identity(request), None

    @contextmanager
    def _holding(self, identity: str, request: RequestView) -> Iterator[None]:
        """One more conference created by *identity* (``[limits] dialogs_per_identity``).

        Creates are counted across conferences (``P:ident:{<hash>}``, one round trip at the
        create and one when the creator's dialog ends); joins are counted per conference
        inside the join script (the roster's count: no extra round trip).  A refusal is
        403 with Retry-After and writes nothing; a failed create gives its count back.
        """
        self.store.identity_dialogs.hold(
            identity, "factory", request.call_id, limit=self.settings.dialogs_per_identity
        )
        try:
            yield
        except Retransmission:
            raise
        except BaseException:
            self.store.identity_dialogs.drop(identity, "factory", request.call_id)
            raise

    def _create_as(
        self, request: RequestView, offer: Offer, identity: str, auth: KmsAuth | None
    ) -> Relay:
        if self.settings.creators and identity not in self.settings.creators:
            raise Forbidden("not allowed to create a conference")
        if auth is not None:
            allowed = kms_allowed(self.settings, auth)
        elif offer.uris is not None:
            allowed = uri_list_allowed(self.settings, offer, identity)
        else:
            allowed = sorted(self.settings.allowed)
        ssrcs = leg_ssrcs(offer, auth)
        group_key = GroupKey.generate(1, self.settings.suite, self.random_bytes)
        with self.auth.remember(auth, request.call_id), self._holding(identity, request):
            for conference_id in self._conference_ids(request):
                leg = leg_id(conference_id, request.call_id)
                try:
                    self.store.admission.create(
                        conference_id,
                        creator=identity,
                        uri=self.settings.conference_uri(conference_id),
                        group_key=group_key,
                        call_id=request.call_id,
                        leg=leg,
                        allowed=allowed,
                        ssrcs=ssrcs,
                        mode=offer.mode.value,
                    )
                except ConferenceExists:
                    continue
                except DialogExists:
                    raise Retransmission("dialog already recorded") from None
                break
            else:
                raise SecconfError("could not mint a free conference id")
            self.log(
                "info",
                f"secconf: conference {conference_id} ({offer.mode.value}) created by {identity}",
            )
            plan = self._edge_leg(request, conference_id, leg, offer, group_key, created=True)
            transfer_resp = None
            if auth is not None:
                try:
                    key = (
                        group_key
                        if offer.suite in (None, group_key.suite)
                        else self._leg_key(conference_id, group_key.epoch, offer)
                    )
                    transfer_resp = self.kms_keying.join_transfer_resp(auth, key, plan)
                except BaseException:
                    self.releases.withdraw(conference_id, request.call_id, leg)
                    self.releases.forget_conference(conference_id)
                    raise
        return self._relay(
            request, conference_id, leg, offer, plan, created=True,
            transfer_resp=transfer_resp, epoch=group_key.epoch if auth else None,
        )  # fmt: skip

    def _join_as(
        self,
        request: RequestView,
        conference_id: str,
        offer: Offer,
        identity: str,
        auth: KmsAuth | None,
    ) -> Relay:
        if offer.uris is not None:
            raise Forbidden("the allowed set is named at creation, not on a join")
        leg = leg_id(conference_id, request.call_id)
        with self.auth.remember(auth, request.call_id):
            try:
                epoch = self.store.admission.join(
                    conference_id,
                    identity=identity,
                    call_id=request.call_id,
                    leg=leg,
                    ssrcs=leg_ssrcs(offer, auth),
                    mode=offer.mode.value,
                    mixed=self.settings.mixed_modes,
                    limit=self.settings.dialogs_per_identity,
                )
            except DialogExists:
                raise Retransmission("dialog already recorded") from None
            self.log("info", f"secconf: {identity} joining conference {conference_id}")
            plan = self._edge_leg(request, conference_id, leg, offer, None, created=False)
            transfer_resp = None
            if auth is not None:
                try:
                    key = self._leg_key(conference_id, epoch, offer)
                    transfer_resp = self.kms_keying.join_transfer_resp(auth, key, plan)
                except BaseException:
                    self.releases.withdraw(conference_id, request.call_id, leg)
                    raise
        return self._relay(
            request, conference_id, leg, offer, plan, created=False,
            transfer_resp=transfer_resp, epoch=epoch if auth else None,
        )  # fmt: skip

    def _conference_ids(self, request: RequestView) -> Iterator[str]:
        """Conference ids to try for a create: first one derived from the request, then random.

        The first is HMAC-SHA256(focus secret, Call-ID, From tag), 16 hex
        digits: unpredictable without the KEK, and the same for a
        retransmission of the create on any node, whose dialog record then
        already exists in that conference (``DialogExists``: dropped, tm
        answers).  If that id is taken by another conference (the Call-ID
        was reused), two random ones follow.
        """
        if self.digest_key:
            message = b"\0".join(
                part.encode("utf-8", "surrogateescape")
                for part in ("secconf-conference-id", request.call_id, request.from_tag)
            )
            yield hmac.new(self.digest_key, message, hashlib.sha256).hexdigest()[:16]
        for _attempt in range(2):
            yield self.random_hex(8)

    def _edge_leg(
        self,
        request: RequestView,
        conference_id: str,
        leg: str,
        offer: Offer,
        group_key: GroupKey | None,
        *,
        created: bool,
    ) -> LegPlan | None:
        """Ask the edge for the leg; on failure undo the Redis record and refuse (503).

        A new conference's epoch goes to the edge first: a leg is created
        sending under the conference's newest epoch.
        """
        description, streams = offer.description, offer.streams
        remote = offered_remote(description, streams)
        try:
            if group_key is not None:
                self.edge.put_epoch(conference_id, group_key)
            if offer.suite not in (None, self.settings.suite):  # the leg's suite's key (#30)
                self._leg_key(conference_id, None, offer)
            plan = self.edge.create_leg(
                conference_id,
                leg,
                [description.media[s.index].media for s in streams],
                []
                if offer.mode is OfferMode.KMS
                else [str(offered_crypto(description, s)) for s in streams],
                mode=offer.mode.value,
                remote=None if remote is None else LegAddresses(*remote),
                ssrcs=offer.ssrcs,
                rtcp_mux=all(description.media[s.index].has_attribute("rtcp-mux") for s in streams),
                suite=None if offer.suite is None else offer.suite.name,
            )
        except SecconfError:
            self.releases.withdraw(conference_id, request.call_id, leg)
            if created:
                self.releases.forget_conference(conference_id)
            raise
        return plan

    def _leg_key(self, conference_id: str, epoch: int | None, offer: Offer) -> GroupKey:
        """The epoch's key in the leg's suite (put to the edge when not the conference's)."""
        suite = "" if offer.suite is None else offer.suite.name
        return leg_group_key(self.store, self.edge, conference_id, epoch, suite)

    def _relay(
        self,
        request: RequestView,
        conference_id: str,
        leg: str,
        offer: Offer,
        plan: LegPlan | None,
        *,
        created: bool,
        transfer_resp: str | None = None,
        epoch: int | None = None,
    ) -> Relay:
        with self.phase("rewrite"):
            upstream = clear_to_mixer(
                offer.description, offer.streams, None if plan is None else plan.internal
            )
        state = TransactionState(
            conference_id,
            leg,
            offer.streams,
            None if plan is None else plan.external,
            self.settings.conference_uri(conference_id),
            created,
            offered_sections(offer.description),
            offer.mode.value,
            transfer_resp,
            epoch,
            None if plan is None else plan.internal,
            edge_ssrc=None if plan is None else plan.ssrc,
            peer=Peer(request.from_tag, request.flow, request.contact),
            suite="" if offer.suite is None else offer.suite.name,
        )
        remove, add = self._header_edits(request)
        return Relay(
            uri=self.settings.upstream_uri(conference_id),
            body=upstream,
            state=state.to_json(),
            on_reply=ON_REPLY,
            on_failure=ON_FAILURE,
            # RFC 3261 §22.3: the focus consumes the credentials of its realm.  The mixer
            # bridges only with the focus's join token (docs/asterisk.md, "Join tokens").
            remove_headers=(*remove, MIXER_TOKEN_HEADER),
            add_headers=(
                *add,
                token_header(self.settings, conference_id, request.call_id, self.clock()),
            ),
            # In-dialog requests (either side, any node) name the conference in their Route.
            conference_id=conference_id,
            route_mac=self.route_mac(conference_id, request.call_id, request.from_tag),
        )

    def _header_edits(
        self, request: RequestView
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """The headers the mixer must not see (removed), and what replaces them (added)."""
        remove: tuple[str, ...] = ("Proxy-Authorization",) if self.settings.digest else ()
        add: tuple[tuple[str, str], ...] = ()
        require = request.headers.get("Require")
        if require is not None:
            # RFC 5366 §5: the focus handles recipient-list-invite; the mixer must not see it.
            tags = [t.strip() for t in require.split(",") if t.strip()]
            rest = [t for t in tags if t.lower() != "recipient-list-invite"]
            if len(rest) != len(tags):
                remove += ("Require",)
                add = (("Require", ", ".join(rest)),) if rest else ()
        return remove, add
