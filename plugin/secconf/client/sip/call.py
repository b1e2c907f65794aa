"""Calls: an INVITE on its way (:class:`OutgoingCall`) and an established one (:class:`Call`).

A call's own requests are here: re-INVITE (RFC 3261 §14.1), BYE (§15.1.1),
REFER (RFC 3515), CANCEL of a pending INVITE (§9.1).  The ACK rules and
the tables of dialogs are the :class:`~.dialogs.DialogLayer`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from secconf.core.errors import SecconfError
from secconf.core.sip.builders import build_cancel
from secconf.core.sip.dialog import AnswerRetransmitter, Dialog, DialogState
from secconf.core.sip.message import SipRequest, SipResponse

from .auth import authorization
from .common import ExtraHeaders
from .errors import SipRequestFailed, SipTimeout
from .transport import Link

if TYPE_CHECKING:
    from .dialogs import DialogLayer

__all__ = ["Call", "OutgoingCall"]


class Call:
    """An established INVITE dialog, outgoing or incoming."""

    def __init__(self, layer: DialogLayer, dialog: Dialog, invite: SipRequest, *, outgoing: bool):
        self._layer = layer
        self.dialog = dialog
        self.invite = invite
        self.outgoing = outgoing
        self.response: SipResponse | None = None
        self.local_sdp: bytes = invite.body if outgoing else b""
        self.remote_sdp: bytes = b"" if outgoing else invite.body
        self.ended = asyncio.Event()
        self.ended_by_remote = False
        self.notifications: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.confirmed = asyncio.Event()  # the ACK for our 2xx came (incoming calls)
        # Kept by the DialogLayer: our ACK for the peer's 2xx (re-sent on each
        # retransmitted 2xx, §13.2.2.4), and the retransmitter of our 2xx (§13.3.1.4).
        self._ack_bytes: bytes | None = None
        self._ack_link: Link | None = None
        self._retransmitter: AnswerRetransmitter | None = None
        self._invite_idle = asyncio.Event()
        self._invite_idle.set()

    @property
    def _invite_pending(self) -> bool:
        """An INVITE transaction of this dialog is in progress, either way (§14.1)."""
        return not self._invite_idle.is_set()

    @_invite_pending.setter
    def _invite_pending(self, pending: bool) -> None:
        if pending:
            self._invite_idle.clear()
        else:
            self._invite_idle.set()

    def __repr__(self) -> str:
        direction = "outgoing" if self.outgoing else "incoming"
        return f"<Call {direction} {self.dialog.call_id} {self.dialog.state.value}>"

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    async def reinvite(
        self,
        body: bytes,
        *,
        content_type: str = "application/sdp",
        extra_headers: ExtraHeaders = (),
        timeout: float = 32.0,
    ) -> SipResponse:
        """Send a re-INVITE with *body* (RFC 3261 §14.1) and ACK its 2xx; raise on non-2xx.

        §14.1: while an INVITE of this dialog is in progress (e.g. our 2xx to
        the peer's re-INVITE awaits its ACK) this waits for it first, within
        *timeout*.  A 491 from the peer (glare) is raised like any failure.
        """
        try:
            await asyncio.wait_for(self._invite_idle.wait(), timeout)
        except TimeoutError:
            raise SipRequestFailed(491, "Request Pending") from None
        self._invite_pending = True
        try:
            request = self.dialog.create_request(
                "INVITE",
                via=self._layer.new_via(),
                body=body,
                content_type=content_type,
                extra_headers=extra_headers,
            )
            response = await self._layer.send_in_dialog(self, request, timeout)
            if 200 <= response.status < 300:
                self.local_sdp = body
                if response.body:
                    self.remote_sdp = response.body
                self._layer.ack_2xx(self, request, response)
            return response
        finally:
            self._invite_pending = False

    async def bye(self, *, timeout: float = 32.0) -> SipResponse:
        """End the call with BYE (RFC 3261 §15.1.1); the call ends whatever the answer."""
        if self.dialog.state is DialogState.TERMINATED:
            raise ValueError("call already ended")
        request = self.dialog.create_request("BYE", via=self._layer.new_via())
        try:
            return await self._layer.send_in_dialog(self, request, timeout, raise_on_error=False)
        finally:
            self.dialog.state = DialogState.TERMINATED
            self._layer.end_call(self, by_remote=False)

    async def refer(
        self,
        refer_to: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: ExtraHeaders = (),
        timeout: float = 32.0,
        credentials: tuple[str, str] | None = None,
    ) -> SipResponse:
        """REFER *refer_to* within this call (RFC 3515 §2.4.1); raise unless 2xx (202).

        The implicit subscription's NOTIFYs are answered 200 and queued on
        :attr:`notifications`.  A body (e.g. ``application/mikey``) may go along.
        *credentials* ``(username, password)``: a 401/407 Digest challenge is answered
        once (RFC 3261 §22.2), in a new request of the dialog (next CSeq).
        """
        request = self.dialog.create_refer(
            refer_to,
            via=self._layer.new_via(),
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )
        try:
            return await self._layer.send_in_dialog(self, request, timeout)
        except SipRequestFailed as exc:
            if exc.response is None:
                raise
            header = authorization(
                exc.response,
                credentials,
                method="REFER",
                uri=request.uri,
                random_bytes=self._layer.random_bytes,
            )
            if header is None:
                raise
            retry = self.dialog.create_refer(
                refer_to,
                via=self._layer.new_via(),
                body=body,
                content_type=content_type,
                extra_headers=[*extra_headers, header],
            )
            return await self._layer.send_in_dialog(self, retry, timeout)

    async def next_notification(self, timeout: float = 10.0) -> SipRequest:
        """The next NOTIFY received in this dialog (e.g. REFER progress, RFC 3515 §2.4.4)."""
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def wait_ended(self, timeout: float = 32.0) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)


class OutgoingCall:
    """An INVITE on its way: await :meth:`answered`, or :meth:`cancel` it."""

    def __init__(self, layer: DialogLayer, request: SipRequest) -> None:
        self._layer = layer
        self.request = request
        self.provisional: list[SipResponse] = []
        self.got_provisional = asyncio.Event()
        self.result: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self.cancelled = False

    def transaction_ended(self, done: asyncio.Future[SipResponse]) -> None:
        """The INVITE transaction ended: its failure, or a non-2xx final, fails the call.

        A 2xx already made :attr:`result` (the dialog layer saw it first).
        """
        if self.result.done():
            return
        exc = done.exception()
        if exc is not None:
            self.result.set_exception(exc)
        else:
            response = done.result()
            if response.status >= 300:
                self.result.set_exception(
                    SipRequestFailed(response.status, response.reason, response)
                )

    async def answered(self, timeout: float = 64.0) -> Call:
        """The call once answered with a 2xx; :class:`SipRequestFailed` otherwise.

        On timeout the INVITE is cancelled (RFC 3261 §9.1) and :class:`SipTimeout` raised.
        """
        try:
            return await asyncio.wait_for(asyncio.shield(self.result), timeout)
        except TimeoutError:
            with contextlib.suppress(SecconfError, TimeoutError):
                await self.cancel(timeout=2.0)
            raise SipTimeout("INVITE") from None

    async def cancel(self, *, timeout: float = 32.0) -> SipResponse | None:
        """Send CANCEL (RFC 3261 §9.1) once a provisional response came; return its answer.

        §9.1: a CANCEL SHOULD NOT be sent before a provisional response, so
        this waits for one (up to *timeout*).  Returns ``None`` if the INVITE
        already had its final response.
        """
        if self.result.done():
            return None
        self.cancelled = True
        await asyncio.wait_for(self.got_provisional.wait(), timeout)
        if self.result.done():
            return None
        cancel = build_cancel(self.request)
        dest = self._layer.transport.request_destination(self.request)
        return await self._layer.transactions.transact(cancel, dest, timeout)
