"""The conference event package's routes of the KEMI handler (docs/event-package.md).

SUBSCRIBE outside a dialog and in one of our subscriptions' dialogs, the NOTIFY timer
(rtimer's ``secconf_notify``), and the replies to our NOTIFYs.  As thin as the rest of
the handler: plain values to the focus (``FocusService.on_subscribe``, ``.notifier``),
its answers back to Kamailio through the adapter; no policy here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secconf.core.errors import SecconfError
from secconf.focus.messages import RequestView
from secconf.focus.service import FocusService

from .adapter import KsrAdapter

__all__ = ["EventRoutes"]


class EventRoutes:
    """What :class:`~.handler.SecconfKemi` does for SUBSCRIBE and NOTIFY."""

    def __init__(self, ksr: Any, adapter: KsrAdapter) -> None:
        self.ksr = ksr
        self.adapter = adapter

    def subscribe(self, service: FocusService, request: RequestView) -> None:
        """A SUBSCRIBE outside a dialog (its transaction made): answered by the focus."""
        try:
            reply = service.on_subscribe(request, self.adapter.arrival())
        except SecconfError as exc:
            self.adapter.log("info", f"secconf: SUBSCRIBE refused {exc.status_code}: {exc.message}")
            reply = service.refusal(exc)
        self.adapter.reply(reply)

    def resubscribe(self, service: FocusService) -> None:
        """A SUBSCRIBE in one of our subscriptions' dialogs (no Route: we are its UAS)."""
        if self.ksr.tm.t_check_trans() == 0:
            return  # a retransmission: tm answers it
        self.ksr.tm.t_newtran()
        request = self.adapter.request(service.header_names())
        try:
            reply = service.on_subscribe_in_dialog(request)
        except SecconfError as exc:
            self.adapter.log(
                "info", f"secconf: in-dialog SUBSCRIBE refused {exc.status_code}: {exc.message}"
            )
            reply = service.refusal(exc)
        self.adapter.reply(reply)

    def notify_tick(
        self, service_of: Callable[[], FocusService], crash: Callable[[str, bool], None]
    ) -> None:
        """The node's NOTIFYs of this tick, each sent over its subscriber's flow.

        Text bodies by tm (``t_uac_send``: retransmissions on UDP); the messages the
        notifier built whole (binary CMS bodies, which a KEMI string cannot carry, and the
        Timer E retransmissions of those over UDP) by ``send_data`` (adapter.send_raw).
        """
        try:
            service = service_of()
            requests = service.notifier.tick()
        except SecconfError as exc:
            self.adapter.log("err", f"secconf: NOTIFY timer: {exc.message}")
            return
        except Exception:
            crash("NOTIFY timer", False)
            return
        for request in requests:  # one that fails does not keep the others from leaving
            try:
                if request.wire is not None:
                    sent = self.adapter.send_raw(request.next_hop, request.wire)
                else:
                    sent = self.adapter.send_request(request)
                if not sent:
                    self.adapter.log(
                        "warn", "secconf: a NOTIFY could not be sent (Timer F ends it)"
                    )
            except Exception:
                crash("NOTIFY send", False)

    def notify_reply(self, service: FocusService) -> None:
        """A reply to one of our NOTIFYs (core reply route): for the node's timer."""
        status = int(self.adapter.pv("$rs") or 0)
        cseq = int(self.adapter.pv("$cs") or 0)
        service.notifier.on_reply(
            self.adapter.pv("$ci") or "", self.adapter.pv("$fU"), cseq, status
        )
