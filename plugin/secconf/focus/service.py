"""The focus's request handling with its I/O (Redis, the media edge) but without KSR.

:class:`FocusService` takes plain values (:class:`~.adapter.RequestView`,
:class:`~.adapter.ReplyView`) and returns what to do (:class:`~.adapter.Reply`,
:class:`~.adapter.Relay`, a new reply body).  The decisions that need no I/O
are in :mod:`secconf.core.focus`.  Refusals are raised as
:class:`~secconf.core.errors.SecconfError` and turned into a SIP answer by
:meth:`FocusService.refusal`; nothing is left in Redis or at the edge by a
refused request.

Two modes, chosen by the offer (docs/kamailio.md): SDES (``a=crypto``, the
identity asserted by a trusted source) and KMS (``a=key-mgmt:mikey`` with a
TRANSFER_INIT, resolved at the KMS; the answer carries a TRANSFER_RESP that
delivers the group key).  REFERs to the focus are checked and queued on a
Redis stream for the dial-out watcher.  With ``policy.mixed_modes`` one
conference has legs of both modes; each dialog record keeps its leg's mode,
which decides how each of its flows is keyed: the leg's
:class:`~.keying.Keying` (:meth:`FocusService.keying`, ``a=crypto`` with the group
key or MIKEY-TICKET, :mod:`.kms_keying`).  Authentication is
:class:`~.authenticator.Authenticator`'s.

:class:`FocusService` puts the flows together, each written once for both modes and
reached as an attribute: ``admission`` (create and join, :mod:`.admission`), ``answers``
(the 2xx of every focus INVITE, :mod:`.answers`), ``releases`` (BYE, failures, the edge
leg's end, :mod:`.releases`), ``gate`` (the in-dialog gate, :mod:`.in_dialog`),
``refers`` (REFERs to the focus, :mod:`.refers`), ``reinvites`` (:mod:`.reinvite`),
``subscriptions`` and ``notifier`` (the conference event package, :mod:`.events`); dial-outs
are :mod:`.dialout`'s functions of the service.  It keeps the dispatch of a request
outside a dialog and the SIP answer of a refusal; a conference's next key epoch is
``epochs`` (:class:`~.epochs.EpochMinter`, shared with the watcher and ``secconf focus rekey``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from secconf.core.digest import challenge
from secconf.core.errors import (
    Forbidden,
    MalformedMessage,
    RateLimited,
    SecconfError,
)
from secconf.core.focus import (
    ConferenceNotFound,
    OfferMode,
    TargetKind,
    classify_target,
    warning_header,
)
from secconf.core.gate import route_mac
from secconf.kms.client import TicketResolver
from secconf.media.control_client import EdgeControl
from secconf.store.conferences import ConferenceStore
from secconf.store.nonces import DigestNonces
from secconf.store.replay import BlockingReplayCache
from secconf.store.sip_users import SipUserStore

from .admission import Admission
from .answers import Answers
from .authenticator import AuthenticationRequired, Authenticator
from .dialout import dialout_answered
from .epochs import EpochMinter, GroupEpochs
from .events.notifier import Notifier
from .events.subscriptions import Arrival, Subscriptions
from .in_dialog import InDialogGate
from .keying import Keying, SdesKeying
from .kms_keying import KmsKeying
from .messages import Relay, Reply, RequestView
from .peer_cache import NoPeerCache, PeerCache
from .refers import Refers
from .reinvite import ReInvites
from .releases import Releases
from .settings import Settings
from .timing import PhaseTimer

__all__ = ["FocusService", "route_secret"]

ROUTE_SECRET_LABEL = b"secconf record-route v1"


def route_secret(kek: bytes) -> bytes:
    """The Record-Route MAC secret of every worker and node: derived from the KEK, never stored."""
    return hmac.new(kek, ROUTE_SECRET_LABEL, hashlib.sha256).digest()


@dataclass
class FocusService:
    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    random_hex: Callable[[int], str] = field(default=secrets.token_hex)
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes)
    log: Callable[[str, str], None] = field(default=lambda level, message: None)
    kms: TicketResolver | None = None
    replay: BlockingReplayCache | None = None
    clock: Callable[[], float] = field(default=time.time)
    sip_users: SipUserStore | None = None
    digest_key: bytes = field(default=b"", repr=False)
    nonces: DigestNonces | None = None  # digest nonce-counts (replays), shared in Redis
    timer: PhaseTimer | None = None  # [focus] timing: per-INVITE phase durations
    route_key: bytes = field(default=b"", repr=False)  # the Record-Route MAC (route_secret)
    #: the peers of dialogs this node just answered, for their ACKs (peer_cache.py)
    peer_cache: PeerCache = field(default_factory=NoPeerCache)
    #: how legs are keyed, one object per mode (keying.py, kms_keying.py)
    sdes_keying: SdesKeying = field(init=False, repr=False)
    kms_keying: KmsKeying = field(init=False, repr=False)
    #: the next key epoch of a conference (epochs.py)
    epochs: EpochMinter = field(init=False, repr=False)
    #: who sent a request (authenticator.py)
    auth: Authenticator = field(init=False, repr=False)
    #: the flows, built once per service (nothing is built per request)
    reinvites: ReInvites = field(init=False, repr=False)
    releases: Releases = field(init=False, repr=False)
    admission: Admission = field(init=False, repr=False)
    answers: Answers = field(init=False, repr=False)
    gate: InDialogGate = field(init=False, repr=False)
    refers: Refers = field(init=False, repr=False)
    subscriptions: Subscriptions = field(init=False, repr=False)
    notifier: Notifier = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(
            self.settings,
            self.clock,
            self.random_bytes,
            self.log,
            self.sip_users,
            self.digest_key,
            self.nonces,
            self.kms,
            self.replay,
        )
        self.sdes_keying = SdesKeying(
            self.settings, self.store, self.edge, self.random_bytes, self._phase
        )
        group_epochs = GroupEpochs(
            self.settings.kms, self.kms, self.store, self.clock, self.random_bytes
        )
        self.epochs = EpochMinter(self.store, self.edge, group_epochs, self.random_bytes, self.log)
        self.kms_keying = KmsKeying(
            self.settings,
            self.store,
            self.edge,
            self.kms,
            self.clock,
            self.random_bytes,
            self.epochs.mint,
        )
        self.reinvites = ReInvites(
            self.settings, self.store, self.edge, self.keying, self.log, self.clock
        )
        self.releases = Releases(self.store, self.edge, self.reinvites, self.log)
        self.admission = Admission(
            self.settings,
            self.store,
            self.edge,
            self.auth,
            keying=self.keying,
            kms_keying=self.kms_keying,
            releases=self.releases,
            phase=self._phase,
            route_mac=self.route_mac,
            log=self.log,
            clock=self.clock,
            random_hex=self.random_hex,
            random_bytes=self.random_bytes,
            digest_key=self.digest_key,
        )
        self.answers = Answers(
            self.store,
            self.edge,
            keying=self.keying,
            reinvites=self.reinvites,
            releases=self.releases,
            dialout_answered=functools.partial(dialout_answered, self),
            peer_cache=self.peer_cache,
            log=self.log,
            timer=self.timer,
        )
        self.gate = InDialogGate(self.store, self.releases, self.route_key)
        self.refers = Refers(
            self.settings, self.store, self.auth, self.kms_keying, self.clock, self.log
        )
        self.subscriptions = Subscriptions(
            self.settings, self.store, self.auth, self.kms_keying, self.clock, self.log
        )
        self.notifier = Notifier(
            self.settings,
            self.store.subscriptions,
            self.store,
            self.clock,
            self.random_bytes,
            self.log,
        )

    def keying(self, mode: str) -> Keying:
        """The keying of a leg whose record, offer or transaction says *mode*."""
        return self.kms_keying if mode == OfferMode.KMS.value else self.sdes_keying

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        if self.timer is None:
            yield
        else:
            with self.timer.phase(name):
                yield

    def route_mac(self, conference_id: str, call_id: str, caller_tag: str) -> str:
        """The MAC our Record-Route carries beside ``sc-conf`` (secconf.core.gate.route_mac)."""
        return route_mac(self.route_key, conference_id, call_id, caller_tag)

    # -- requests outside a dialog ------------------------------------------------------

    def header_names(self) -> tuple[str, ...]:
        return (
            self.settings.asserted_header, "Refer-To", "Proxy-Authorization", "Require",
            "Event", "Expires", "Accept",
        )  # fmt: skip

    def on_request(self, request: RequestView) -> Reply | Relay:
        """A request outside a dialog (or a CANCEL): what the focus does with it."""
        target = classify_target(request.ruri_user, self.settings.factory, self.settings.conference)
        if target.kind is TargetKind.OTHER:
            # Default deny: the focus relays nothing it did not authorize (docs/security.md).
            return Reply(404, "Not Found")
        method = request.method
        if method == "OPTIONS":
            return Reply(200, "OK")
        if method == "SUBSCRIBE":
            raise Forbidden("SUBSCRIBE goes through on_subscribe")
        if method == "REFER":
            if target.kind is not TargetKind.CONFERENCE or target.conference_id is None:
                raise Forbidden("REFER goes to a conference, not to the factory")
            return self.refers.on_refer(request, target.conference_id, None)
        if method != "INVITE":
            return Reply(
                405, "Method Not Allowed", (("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),)
            )
        with self._phase("request"):
            if target.kind is TargetKind.FACTORY:
                return self.admission.create(request)
            if target.conference_id is None:
                raise MalformedMessage("conference id missing")
            return self.admission.join(request, target.conference_id)

    def on_subscribe(self, request: RequestView, arrival: Arrival) -> Reply:
        """A SUBSCRIBE outside a dialog: to a conference (events/subscriptions.py), else 404."""
        target = classify_target(request.ruri_user, self.settings.factory, self.settings.conference)
        if target.kind is not TargetKind.CONFERENCE or target.conference_id is None:
            # the factory has no state to watch; other URIs are not ours (default deny)
            raise ConferenceNotFound("only a conference URI takes a SUBSCRIBE")
        return self.subscriptions.on_subscribe(request, target.conference_id, arrival)

    def on_subscribe_in_dialog(self, request: RequestView) -> Reply:
        """A SUBSCRIBE with a To tag: a refresh or un-SUBSCRIBE of one of our subscriptions."""
        target = classify_target(request.ruri_user, self.settings.factory, self.settings.conference)
        return self.subscriptions.on_in_dialog(request, target.conference_id)

    # -- refusals -----------------------------------------------------------------

    def refusal(self, error: SecconfError, *, detailed: bool | None = None) -> Reply:
        """The SIP answer for *error*.

        A Warning (RFC 3261 §20.43) naming the reason only for an authenticated sender
        (*detailed*, default: ``error.detailed``, set by :func:`.admission.authenticated`); anyone else
        gets the status code alone (the reason is in the log).
        """
        status = error.status_code if 300 <= error.status_code < 700 else 500
        headers: list[tuple[str, str]] = []
        if detailed is None:
            detailed = error.detailed
        if status != 500 and detailed:
            headers.append(("Warning", warning_header(self.settings.server_name, error)))
        if status == 503:
            headers.append(("Retry-After", "1"))
        if isinstance(error, RateLimited):
            headers.append(("Retry-After", str(error.retry_after)))
        if isinstance(error, AuthenticationRequired) and self.settings.digest is not None:
            digest = self.settings.digest
            nonce = error.nonce
            for algorithm in digest.algorithms:
                headers.append(
                    (
                        "Proxy-Authenticate",
                        challenge(digest.realm, nonce, algorithm, stale=error.stale),
                    )
                )
        return Reply(status, error.reason, tuple(headers))
