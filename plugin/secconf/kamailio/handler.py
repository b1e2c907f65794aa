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
  :data:`~.service.ON_REPLY` and :data:`~.service.ON_FAILURE`.

Every route runs under a guard: an unexpected exception is logged (one
line, no key material) and the request answered 500.  Without it app_python3
logs the traceback and drops the request silently, so the caller
retransmits until it times out.
"""

from __future__ import annotations

import traceback
from typing import Any

from secconf.core.errors import Forbidden, SecconfError
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from secconf.store.nonces import DigestNonces
from secconf.store.replay import BlockingReplayCache
from secconf.store.sip_users import SipUserStore

from .adapter import KsrAdapter, Reply, RequestView
from .dialout import (
    DIALOUT_HEADER,
    TargetUnavailable,
    check_dialout,
    dialout_relay,
    wants_dialout,
)
from .edge_control import EdgeControl, HttpEdgeControl, NoEdge
from .kms import HttpKmsResolver
from .registrar import REGISTER_HEADERS, register_identity, register_refusal
from .service import FocusService, Retransmission, digest_secret
from .settings import Settings, load_settings
from .timing import PhaseTimer, Timed

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
        self.settings = settings
        self._wrapper = KeyWrapper(kek, settings.kek_id)
        self._kek = kek
        self.service: FocusService | None = None

    def child_init(self, rank: int) -> int:
        client = connect_blocking(self.settings.redis_url, timeout=self.settings.redis_timeout)
        store = ConferenceStore(client, self._wrapper, self.settings.redis_prefix)
        edge: EdgeControl
        if self.settings.edge_url:
            edge = HttpEdgeControl(
                self.settings.edge_url,
                timeout=self.settings.edge_timeout,
                token=self.settings.edge_token,
            )
        else:
            edge = NoEdge()
        kms: Any = None if self.settings.kms is None else HttpKmsResolver(self.settings.kms)
        replay: Any = BlockingReplayCache(client, self.settings.redis_prefix)
        timer = None
        if self.settings.timing:
            timing_key = f"{self.settings.redis_prefix}:timing"

            def flush(counters: dict[str, int]) -> None:
                try:
                    pipe = client.pipeline(transaction=False)
                    for name, value in counters.items():
                        pipe.hincrby(timing_key, name, value)
                    pipe.execute()
                except Exception:
                    self.adapter.log("warn", "secconf: timing counters not written")

            timer = PhaseTimer(flush)
            store, edge = Timed(store, timer, "redis"), Timed(edge, timer, "edge")  # type: ignore[assignment]
            replay = Timed(replay, timer, "redis")
            kms = None if kms is None else Timed(kms, timer, "kms")
        self.service = FocusService(
            self.settings,
            store,
            edge,
            log=self.adapter.log,
            kms=kms,
            replay=replay,
            sip_users=SipUserStore(client, self._wrapper, self.settings.redis_prefix),
            digest_key=digest_secret(self._kek),
            nonces=DigestNonces(client, self.settings.redis_prefix),
            timer=timer,
        )
        return 0

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
            if self.adapter.on_stream() and self.adapter.pv("$hdr(Contact)") is not None:
                self.adapter.alias_contact()
        except Exception:
            self._crash("reply route", reply=False)
        return 1

    def ksr_onsend_route(self, msg: Any) -> int:
        return 1

    # -- tm routes ---------------------------------------------------------------------

    def ksr_onreply_secconf(self, msg: Any) -> int:
        try:
            service = self._service()
            view = self.adapter.reply_view()
            state = self.adapter.state()
            try:
                result = service.on_reply(view, state, self.adapter.request_body)
            except SecconfError as exc:
                # Fail closed: the mixer's clear answer must not reach the participant.
                self.adapter.log("err", f"secconf: answer not keyed, media refused: {exc.message}")
                self.adapter.set_body(service.unkeyed_answer(view.call_id, state))
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
                self.adapter.set_body(self._service().unkeyed_answer(call_id, self.adapter.state()))
        except Exception:
            self.adapter.log("err", "secconf: could not refuse the media of an unkeyed answer")

    def ksr_failure_secconf(self, msg: Any) -> int:
        try:
            self._service().on_failure(
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
            service.on_failure(request.call_id, outcome.state)

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
            relay = dialout_relay(service, request, plan)
        except Retransmission:
            return
        except SecconfError as exc:
            self.adapter.log("info", f"secconf: dial-out refused {exc.status_code}: {exc.message}")
            self.adapter.reply(service.refusal(exc))
            return
        if not self.adapter.relay(relay) and relay.state is not None:
            service.on_failure(request.call_id, relay.state)

    def _in_dialog(self, method: str | None) -> None:
        ksr = self.ksr
        if ksr.rr.loose_route() < 0:
            if method == "ACK":
                if ksr.tm.t_check_trans() > 0:
                    ksr.tm.t_relay()
                return
            self.adapter.reply(Reply(404, "Not Here"))
            return
        # Towards a TLS/TCP phone: over the connection it opened (its Contact's alias).
        self.adapter.follow_alias()
        service = self._service()
        call_id = self.adapter.pv("$ci") or ""
        # The conference comes from our Record-Route parameter (any node of the focus
        # record-routed the INVITE), never from a lookup by Call-ID.
        conference_id = self.adapter.route_conference()
        if conference_id is None:
            if method in ("INVITE", "REFER"):
                # The module record-routes only focus dialogs: a re-INVITE or REFER routed
                # through us without the parameter is not one it can key or check.
                self.adapter.reply(
                    service.refusal(Forbidden("not a conference dialog of this focus"))
                )
                return
            ksr.tm.t_relay()
            return
        try:
            record = (
                service.store.dialog(conference_id, call_id)
                if method in ("INVITE", "REFER")
                else None
            )
        except SecconfError as exc:
            self.adapter.reply(service.refusal(exc))
            return
        if record is None and method in ("INVITE", "REFER"):
            # A conference dialog the store no longer knows (released, expired, or a
            # Route naming another conference): never relay its offer unchecked.
            if method == "INVITE" and ksr.tm.t_check_trans() == 0:
                return
            self.adapter.reply(Reply(481, "Call/Transaction Does Not Exist"))
            return
        if record is not None and method == "REFER":
            # A REFER to the focus in a conference dialog: handled here, never relayed
            # (the mixer must not transfer anyone itself).
            request = self.adapter.request(service.header_names())
            try:
                self.adapter.reply(service.on_refer(request, record.conference_id, record.identity))
            except SecconfError as exc:
                self.adapter.log("info", f"secconf: REFER refused {exc.status_code}: {exc.message}")
                self.adapter.reply(service.refusal(exc))
            return
        if record is not None:
            # A re-INVITE in a conference dialog: the rekey trigger from the mixer, or the
            # participant's own (hold, new key).  Its offer is always rewritten (never a
            # clear offer to a phone, never a key to the mixer).
            if ksr.tm.t_check_trans() == 0:
                return  # a retransmission: tm resent the last answer
            request = self.adapter.request(service.header_names())
            try:
                relay = service.on_reinvite(request, record, downstream=self.adapter.downstream())
            except SecconfError as exc:
                self.adapter.log(
                    "info", f"secconf: re-INVITE refused {exc.status_code}: {exc.message}"
                )
                self.adapter.reply(service.refusal(exc))
                return
            self.adapter.relay(relay)
            return
        if method == "BYE":
            service.on_bye(conference_id, call_id)
        ksr.tm.t_relay()


def mod_init() -> SecconfKemi:
    """Called once by app_python3 in Kamailio's main process, before the fork."""
    import KSR  # type: ignore[import-not-found]  # only inside Kamailio

    settings = load_settings()
    kek = load_key_file(settings.kek_file)
    return SecconfKemi(KSR, settings, kek)
