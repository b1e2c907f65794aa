"""The object Kamailio's app_python3 calls: ``mod_init()`` returns a :class:`SecconfKemi`.

Kamailio 5.6 with ``cfgengine "python"`` calls, on the returned object:

* ``child_init(rank)`` in every process after the fork (workers, timers, the
  main process): the per-worker Redis client and edge client are made here
  (they connect lazily, on first use, in that worker only; no threads);
* ``ksr_request_route(msg)`` for every request;
* ``ksr_reply_route(msg)`` for every reply (core reply route), and
  ``ksr_onsend_route(msg)`` before sending: both must exist or ``t_relay``
  fails on 5.6; they do nothing here;
* the tm routes named by ``t_on_reply`` / ``t_on_failure``:
  :data:`~secconf.focus.state.ON_REPLY` and :data:`~secconf.focus.state.ON_FAILURE`.

Every route runs under a guard: an unexpected exception is logged (one
line, no key material) and the request answered 500.  Without it app_python3
logs the traceback and drops the request silently, so the caller
retransmits until it times out.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from typing import Any

from secconf.core.errors import Forbidden, NotAcceptable, SecconfError
from secconf.core.gate import (
    PASSING_METHODS,
    Direction,
    body_allowed,
    sender_fingerprint,
)
from secconf.focus.dialout import (
    DIALOUT_HEADER,
    TargetUnavailable,
    check_dialout,
    dialout_relay,
    wants_dialout,
)
from secconf.focus.in_dialog import Admitted
from secconf.focus.messages import Reply, RequestView
from secconf.focus.peer_cache import NoPeerCache, PeerCache
from secconf.focus.registrar import REGISTER_HEADERS, register_identity, register_refusal
from secconf.focus.service import FocusService
from secconf.focus.settings import Settings, load_settings
from secconf.focus.state import Retransmission
from secconf.focus.wiring import build_service, load_kek

from .adapter import KsrAdapter
from .event_routes import EventRoutes
from .peer_cache import HtablePeerCache

__all__ = ["SecconfKemi", "mod_init"]

#: RFC 3261 §16.3: a proxy refuses requests whose Max-Forwards reached zero.
MAX_FORWARDS = 16


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines())


class SecconfKemi:
    """The KEMI routes of one Kamailio process."""

    def __init__(self, ksr: Any, settings: Settings, kek: bytes) -> None:
        self.ksr = ksr
        self.adapter = KsrAdapter(ksr)
        self.events = EventRoutes(ksr, self.adapter)
        self.settings = settings
        self._kek = kek
        self.service: FocusService | None = None

    def _warn_lab_settings(self) -> None:
        """Settings that weaken the boundary are said loudly, at every start of every worker."""
        if self.settings.sdes_over_udp:
            self.adapter.log(
                "warn",
                "secconf: LAB SETTING [lab] sdes_over_udp is on: SDES group keys may travel "
                "over plain UDP/TCP. Never in production (docs/security.md).",
            )
        for source in sorted(self.settings.trusted_sources):
            if source.endswith(":*"):
                self.adapter.log(
                    "warn",
                    f"secconf: [identity] trusted_sources {source} names no port: every "
                    "process on that host may assert any identity",
                )

    def child_init(self, rank: int) -> int:
        self._warn_lab_settings()
        self.service = build_service(
            self.settings, self._kek, log=self.adapter.log, peer_cache=self._peer_cache()
        )
        return 0

    def _peer_cache(self) -> PeerCache:
        table = self.settings.peer_table
        if not table:
            return NoPeerCache()
        htable = getattr(self.ksr, "htable", None)
        if htable is None:
            self.adapter.log(
                "warn",
                f"secconf: [focus] peer_table = {table!r} but module htable is not loaded: "
                "ACKs are checked in Redis (docs/kamailio.md, the peer cache)",
            )
            return NoPeerCache()
        return HtablePeerCache(htable, table, self.adapter.log)

    def _service(self) -> FocusService:
        if self.service is None:  # a process whose child_init did not run
            self.child_init(-1)
        if self.service is None:
            raise RuntimeError("no service")
        return self.service

    def _crash(self, where: str, reply: bool) -> None:
        self.adapter.log(
            "err", f"secconf: unexpected error in {where}: {_one_line(traceback.format_exc())}"
        )
        if reply:
            try:
                self.adapter.reply(Reply(500, "Server Internal Error"))
            except Exception:
                self.adapter.log("err", "secconf: could not send the 500 answer")

    # -- core routes ------------------------------------------------------------------

    def ksr_request_route(self, msg: Any) -> int:
        try:
            self._request()
        except Exception:
            method = self.adapter.pv("$rm")
            self._crash("request route", reply=method not in ("ACK", None))
        return 1

    def ksr_reply_route(self, msg: Any) -> int:
        # A phone's answer over TLS/TCP (its 2xx to a re-INVITE or to the focus's dial-out
        # carries the Contact the mixer will target next): alias it to this connection.
        try:
            if self.adapter.pv("$rm") == "NOTIFY":
                self.events.notify_reply(self._service())
                return 1
            if self.adapter.on_stream() and self.adapter.pv("$hdr(Contact)") is not None:
                self.adapter.alias_contact()
        except Exception:
            self._crash("reply route", reply=False)
        return 1

    def ksr_onsend_route(self, msg: Any) -> int:
        return 1

    # -- the conference event package (event_routes.py) ---------------------------------

    def ksr_notify_tick(self, msg: Any, route: Any = None) -> int:
        """rtimer's ``secconf_notify`` timer; rtimer passes the (dummy) message and the
        route's name."""
        self.events.notify_tick(self._service, self._crash)
        return 1

    # -- tm routes ---------------------------------------------------------------------

    def ksr_onreply_secconf(self, msg: Any) -> int:
        try:
            service = self._service()
            view = self.adapter.reply_view()
            state = self.adapter.state()
            try:
                result = service.answers.on_reply(view, state, self.adapter.request_body)
            except SecconfError as exc:
                # Fail closed: the mixer's clear answer must not reach the participant.
                self.adapter.log("err", f"secconf: answer not keyed, media refused: {exc.message}")
                self.adapter.set_body(service.answers.unkeyed_answer(view.call_id, state, view))
                return 1
            if result is not None:
                body, headers = result
                self.adapter.set_body(body)
                for name, value in headers:
                    self.ksr.hdr.append(f"{name}: {value}\r\n")
        except Exception:
            self._crash("reply route", reply=False)
            self._refuse_media()
            return 1
        return 1

    def _refuse_media(self) -> None:
        """Last resort after an unexpected error on a reply: no media rather than clear media.

        Kamailio 5.6 forwards a 2xx whatever the reply route does (``set_drop``
        is ignored and ``change_reply_status`` refuses to change a 2xx's
        class), so the body is replaced by one rejecting every stream.
        """
        try:
            if 200 <= int(self.adapter.pv("$rs") or 0) < 300 and self.adapter.state():
                call_id = self.adapter.pv("$ci") or ""
                self.adapter.set_body(
                    self._service().answers.unkeyed_answer(call_id, self.adapter.state())
                )
        except Exception:
            self.adapter.log("err", "secconf: could not refuse the media of an unkeyed answer")

    def ksr_failure_secconf(self, msg: Any) -> int:
        try:
            self._service().releases.on_failure(
                self.adapter.pv("$ci") or "", self.adapter.state(), self.adapter.reply_code()
            )
        except Exception:
            self._crash("failure route", reply=False)
        return 1

    # -- the request route proper -------------------------------------------------------

    def _request(self) -> None:
        ksr = self.ksr
        adapter = self.adapter
        if ksr.maxfwd.process_maxfwd(MAX_FORWARDS) < 0:
            adapter.reply(Reply(483, "Too Many Hops"))
            return
        if ksr.sanity.sanity_check_defaults() < 0:
            return  # sanity answered (or dropped) it already
        method = adapter.pv("$rm")
        if method == "CANCEL":
            if ksr.tm.t_check_trans() > 0:
                ksr.tm.t_relay()
            return
        if ksr.siputils.has_totag() > 0:
            if method == "SUBSCRIBE" and adapter.header("Route") is None:
                self.events.resubscribe(self._service())
                return
            self._in_dialog(method)
            return
        if method == "ACK":
            if ksr.tm.t_check_trans() > 0:
                ksr.tm.t_relay()
            return
        if method == "OPTIONS" and adapter.pv("$rU") is None and ksr.is_myself_ruri():
            adapter.reply(Reply(200, "OK"))
            return
        if ksr.tm.t_check_trans() == 0:
            return  # a retransmission: tm resent the last answer
        service = self._service()
        if method == "REGISTER":
            self._register(service)
            return
        if method == "SUBSCRIBE":
            ksr.tm.t_newtran()  # a retransmission is answered by tm, not processed again
            self.events.subscribe(service, adapter.request(service.header_names()))
            return
        request = adapter.request((*service.header_names(), DIALOUT_HEADER))
        if wants_dialout(self.settings, request):
            self._dialout(service, request)
            return
        try:
            outcome = service.on_request(request)
        except Retransmission:
            return
        except SecconfError as exc:
            adapter.log(
                "info", f"secconf: {request.method} refused {exc.status_code}: {exc.message}"
            )
            adapter.reply(service.refusal(exc))
            return
        if isinstance(outcome, Reply):
            adapter.reply(outcome)
            return
        if adapter.on_stream():
            adapter.alias_contact()  # the mixer's requests in this dialog: this connection
        if not adapter.relay(outcome) and outcome.state is not None:
            service.releases.on_failure(request.call_id, outcome.state)

    def _register(self, service: FocusService) -> None:
        """REGISTER: digest as a registrar (401), then usrloc keeps the contacts (registrar.py)."""
        request = self.adapter.request((*service.header_names(), *REGISTER_HEADERS))
        try:
            identity = register_identity(service, request)
        except SecconfError as exc:
            self.adapter.log("info", f"secconf: REGISTER refused {exc.status_code}: {exc.message}")
            self.adapter.reply(register_refusal(service, exc))
            return
        if self.adapter.on_stream():
            self.adapter.fix_registration()  # calls to it: over this connection
        if not self.adapter.save_registration():
            self.adapter.log("err", f"secconf: registrar could not save the contacts of {identity}")
            self.adapter.reply(Reply(500, "Server Internal Error"))

    def _dialout(self, service: FocusService, request: RequestView) -> None:
        """An INVITE from the mixer to a participant (dialout.py): checked, located, keyed."""
        try:
            plan = check_dialout(service, request)
            found = self.adapter.lookup(plan.target)
            static = self.settings.dialout_contacts.get(plan.target)
            if found == -1 and static is not None:
                # A phone that does not REGISTER: its contact from [dialout] contacts.
                self.adapter.set_ruri(static)
                found = 1
            if found < 0:
                raise TargetUnavailable(
                    "dial-out target not registered" if found == -1 else "target not reachable"
                )
            service.keying(plan.mode).require_transport(
                self.adapter.destination_secure(), "an SDES dial-out"
            )
            relay = dialout_relay(service, request, plan)
        except Retransmission:
            return
        except SecconfError as exc:
            self.adapter.log("info", f"secconf: dial-out refused {exc.status_code}: {exc.message}")
            self.adapter.reply(service.refusal(exc, detailed=True))  # to the mixer
            return
        if not self.adapter.relay(relay) and relay.state is not None:
            service.releases.on_failure(request.call_id, relay.state)

    def _in_dialog(self, method: str | None) -> None:
        """Every request with a To tag: through the gate, then to the recorded peer only.

        Default deny (docs/security.md): the Route must be ours with a conference and a valid
        MAC, the dialog recorded and answered, the sender the recorded peer of one side (flow
        and tags), the method one that side may send, an SDP body only in an INVITE.  The
        next hop is the other side's recorded Contact and flow, never the Request-URI.
        Nothing is read from the store before the MAC holds; nothing is written before the
        sender is known.  INVITE and REFER read the whole dialog record (they are keyed or
        queued); every other method is one small script (a BYE's release included).
        """
        ksr = self.ksr
        if ksr.rr.loose_route() < 0:
            if method == "ACK" and ksr.tm.t_check_trans() > 0:
                ksr.tm.t_relay()  # a hop-by-hop ACK of a negative answer we relayed
                return
            self._refuse_in_dialog(method, Forbidden("not routed through this focus"))
            return
        service = self._service()
        if method == "ACK" and self._cached_ack(service):
            return
        try:
            if method in ("INVITE", "REFER"):
                self._invite_or_refer(service, method)
            else:
                self._pass(service, method or "")
        except SecconfError as exc:
            self._refuse_in_dialog(method, exc)

    def _cached_ack(self, service: FocusService) -> bool:
        """The ACK of a 2xx this node answered moments ago, from its recorded sender: passed.

        Its dialog's peers are in the node's shared memory (peer_cache.py); the flow and both
        tags must be exactly one side's, and it goes to the other side's recorded Contact and
        flow. Anything else (not cached, another sender, a body) returns False: the whole
        gate decides, with the Route's MAC and Redis.
        """
        view = self.adapter.bodiless_ack()
        if view is None:
            return False
        call_id, fingerprint = view
        hops = service.peer_cache.recall(call_id)
        if hops is None:
            return False
        try:
            uri, destination = hops.next_hop(fingerprint)
        except Forbidden:
            return False
        self.adapter.relay_to(uri, destination)
        return True

    def _routed_conference(
        self, service: FocusService, call_id: str, tags: tuple[str, str | None]
    ) -> str:
        """Our Route's conference, its MAC checked by the focus (403 before any Redis read)."""
        conference_id, mac = self.adapter.route_conference()
        return service.gate.routed(conference_id, mac, call_id, tags)

    def _pass(self, service: FocusService, method: str) -> None:
        """ACK, BYE, INFO, UPDATE, OPTIONS ...: checked by one script, relayed to the peer."""
        view = self.adapter.dialog_request()
        conference_id = self._routed_conference(service, view.call_id, (view.from_tag, view.to_tag))
        if method not in PASSING_METHODS:
            raise Forbidden(f"{method} is not sent in a conference dialog")
        if not body_allowed(method, view.content_type, view.content_length):
            raise NotAcceptable(f"an SDP body in {method}: media changes go by re-INVITE only")
        if method != "ACK" and self.ksr.tm.t_check_trans() == 0:
            return  # a retransmission: tm answers it
        fingerprint = sender_fingerprint(view.flow, view.from_tag, view.to_tag)
        uri, destination = service.gate.pass_in_dialog(
            conference_id, view.call_id, fingerprint, method
        )
        self.adapter.relay_to(uri, destination)

    def _invite_or_refer(self, service: FocusService, method: str) -> None:
        """A re-INVITE (keyed by the service) or a REFER to the focus (queued, never relayed)."""
        admitted = self._admit(service, method)
        if admitted is None:
            return  # a retransmission: tm answered
        gate, request = admitted
        record, peers, direction = gate.record, gate.peers, gate.direction
        if method == "REFER":
            try:
                self.adapter.reply(
                    service.refers.on_refer(request, record.conference_id, record.identity)
                )
            except SecconfError as exc:
                self.adapter.log("info", f"secconf: REFER refused {exc.status_code}: {exc.message}")
                self.adapter.reply(service.refusal(exc, detailed=True))
            return
        # The rekey trigger from the mixer, or the participant's own (hold, new key): the
        # offer is always rewritten (never a clear offer to a phone, never a key to the mixer).
        try:
            service.keying(record.mode).require_transport(
                peers.participant.flow.secure, "an SDES re-INVITE"
            )
            relay = service.reinvites.offer(
                request, record, from_participant=direction is Direction.FROM_PARTICIPANT
            )
        except SecconfError as exc:
            self.adapter.log("info", f"secconf: re-INVITE refused {exc.status_code}: {exc.message}")
            self.adapter.reply(service.refusal(exc, detailed=True))
            return
        self.adapter.relay(replace(relay, next_hop=peers.hops.receiver(direction)))

    def _admit(self, service: FocusService, method: str) -> tuple[Admitted, RequestView] | None:
        """A re-INVITE or REFER: read, its Route checked, then the focus's gate (or None)."""
        request = self.adapter.request(service.header_names())
        conference_id = self._routed_conference(
            service, request.call_id, (request.from_tag, request.to_tag)
        )
        if self.ksr.tm.t_check_trans() == 0:
            return None  # a retransmission: tm answers it
        return service.gate.admit(conference_id, request, method), request

    def _refuse_in_dialog(self, method: str | None, error: SecconfError) -> None:
        """Answer a refused in-dialog request (an ACK cannot be answered: it is dropped)."""
        self.adapter.log(
            "info", f"secconf: in-dialog {method} refused {error.status_code}: {error.message}"
        )
        if method != "ACK":
            self.adapter.reply(self._service().refusal(error))


def mod_init() -> SecconfKemi:
    """Called once by app_python3 in Kamailio's main process, before the fork."""
    import KSR  # type: ignore[import-not-found]  # only inside Kamailio

    settings = load_settings()
    kek = load_kek(settings)
    return SecconfKemi(KSR, settings, kek)
