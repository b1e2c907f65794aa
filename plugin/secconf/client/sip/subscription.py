"""Subscriptions (RFC 6665): one we made, and one someone made with us."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from secconf.core.sip.dialog import Dialog
from secconf.core.sip.message import SipRequest, SipResponse

if TYPE_CHECKING:
    from .dialogs import DialogLayer

__all__ = ["ServerSubscription", "Subscription"]


class Subscription:
    """A subscription we made (RFC 6665); NOTIFYs are answered 200 and queued."""

    def __init__(self, request: SipRequest) -> None:
        self.request = request
        self.event = request.get("event") or ""
        self.response: SipResponse | None = None
        self.dialog: Dialog | None = None
        self.notifications: asyncio.Queue[SipRequest] = asyncio.Queue()

    async def next_notification(self, timeout: float = 10.0) -> SipRequest:
        return await asyncio.wait_for(self.notifications.get(), timeout)


class ServerSubscription:
    """A subscription someone made with us (SUBSCRIBE, or REFER's implicit one)."""

    def __init__(self, layer: DialogLayer, dialog: Dialog, event: str) -> None:
        self._layer = layer
        self.dialog = dialog
        self.event = event

    async def notify(
        self,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        state: str = "active;expires=600",
        timeout: float = 32.0,
    ) -> SipResponse:
        """Send a NOTIFY in the subscription's dialog (RFC 6665 §4.2.2)."""
        request = self.dialog.create_request(
            "NOTIFY",
            via=self._layer.new_via(),
            body=body,
            content_type=content_type,
            extra_headers=[("Event", self.event), ("Subscription-State", state)],
        )
        dest = self._layer.transport.dialog_destination(self.dialog)
        return await self._layer.transactions.transact(request, dest, timeout)
