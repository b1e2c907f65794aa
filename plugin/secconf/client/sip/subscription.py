"""Subscriptions (RFC 6665): one we made, and one someone made with us."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from secconf.core.sip.dialog import Dialog
from secconf.core.sip.message import SipRequest, SipResponse

from .errors import SipRequestFailed
from .handlers import Answer

if TYPE_CHECKING:
    from .dialogs import DialogLayer

__all__ = ["NotifyHandler", "ServerSubscription", "Subscription"]

#: Decides the answer to a NOTIFY of one of our subscriptions, synchronously, before
#: anything is sent back: the subscriber's state changes only with a 2xx it gives.
NotifyHandler = Callable[[SipRequest], Answer]

#: SUBSCRIBE refreshes a notifier keeps for its application to look at (tests, a focus).
_MAX_QUEUED_REFRESHES = 16


class Subscription:
    """A subscription we made (RFC 6665).

    Without *on_notify* every NOTIFY is answered 200 and queued for
    :meth:`next_notification`; with it, the handler answers and nothing is queued.
    *headers* (``Accept``, say) are repeated in every refresh.
    """

    def __init__(
        self,
        layer: DialogLayer,
        request: SipRequest,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        on_notify: NotifyHandler | None = None,
    ) -> None:
        self._layer = layer
        self.request = request
        self.event = request.get("event") or ""
        self.headers = headers
        self.on_notify = on_notify
        self.response: SipResponse | None = None
        self.dialog: Dialog | None = None
        self.notifications: asyncio.Queue[SipRequest] = asyncio.Queue()

    async def next_notification(self, timeout: float = 10.0) -> SipRequest:
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def refresh(self, expires: int, *, timeout: float = 32.0) -> SipResponse:
        """SUBSCRIBE again in the dialog (RFC 6665 §4.1.2.2); ``expires=0`` unsubscribes.

        Raises :class:`SipRequestFailed` on a non-2xx (a 481 says the notifier has
        forgotten the subscription, RFC 6665 §4.1.2.2).
        """
        if self.dialog is None:
            raise SipRequestFailed(481, "Subscription Does Not Exist")
        request = self.dialog.create_request(
            "SUBSCRIBE",
            via=self._layer.new_via(),
            extra_headers=[("Event", self.event), ("Expires", str(expires)), *self.headers],
        )
        dest = self._layer.transport.dialog_destination(self.dialog)
        response = await self._layer.transactions.transact(request, dest, timeout)
        self.dialog.receive_response(request, response)
        if response.status >= 300:
            raise SipRequestFailed(response.status, response.reason, response)
        return response

    def forget(self) -> None:
        """Stop routing this subscription's NOTIFYs to it (they get 481 from now on)."""
        self._layer.subscriptions.pop((self.request.call_id, self.request.from_.tag or ""), None)


class ServerSubscription:
    """A subscription someone made with us (SUBSCRIBE, or REFER's implicit one).

    Refreshing SUBSCRIBEs in its dialog are answered 2xx by the user agent and queued
    on :attr:`refreshes` (the newest :data:`_MAX_QUEUED_REFRESHES`), so that the
    application can send the NOTIFY that follows each one (RFC 6665 §4.2.1.2).
    """

    def __init__(self, layer: DialogLayer, dialog: Dialog, event: str) -> None:
        self._layer = layer
        self.dialog = dialog
        self.event = event
        self.refreshes: asyncio.Queue[SipRequest] = asyncio.Queue(_MAX_QUEUED_REFRESHES)

    def refreshed(self, request: SipRequest) -> None:
        """Note a refreshing SUBSCRIBE (the oldest note goes when the queue is full)."""
        if self.refreshes.full():
            self.refreshes.get_nowait()
        self.refreshes.put_nowait(request)

    async def notify(
        self,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        state: str = "active;expires=600",
        extra_headers: tuple[tuple[str, str], ...] = (),
        timeout: float = 32.0,
    ) -> SipResponse:
        """Send a NOTIFY in the subscription's dialog (RFC 6665 §4.2.2)."""
        request = self.dialog.create_request(
            "NOTIFY",
            via=self._layer.new_via(),
            body=body,
            content_type=content_type,
            extra_headers=[
                ("Event", self.event),
                ("Subscription-State", state),
                *extra_headers,
            ],
        )
        dest = self._layer.transport.dialog_destination(self.dialog)
        return await self._layer.transactions.transact(request, dest, timeout)
