"""The UAS core (RFC 3261 §8.2, §12.2.2): answering the requests that come to us.

New calls and re-INVITEs, CANCEL, BYE, OPTIONS, SUBSCRIBE and REFER (each
with the NOTIFY that must follow, RFC 6665 §4.2.1.2, RFC 3515 §2.4.2), and
NOTIFYs for subscriptions of ours.  The application decides through the
user agent's handlers (``on_invite``, ``on_refer``, ``on_subscribe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from secconf.core.errors import ProtocolError, SecconfError
from secconf.core.sip.builders import build_response
from secconf.core.sip.dialog import Dialog, sipfrag
from secconf.core.sip.headers import new_tag
from secconf.core.sip.message import SipRequest, SipResponse

from .call import Call
from .common import ALLOW, BackgroundTasks
from .dialogs import DialogLayer
from .handlers import Answer, Handler, IncomingRequest
from .subscription import ServerSubscription
from .transactions import ServerState, TransactionLayer

if TYPE_CHECKING:
    from .user_agent import UserAgent

__all__ = ["UasCore"]

log = logging.getLogger("secconf.sip")


class UasCore:
    """Answers each request delivered by the transaction layer, in a task of its own."""

    def __init__(
        self,
        ua: UserAgent,
        transactions: TransactionLayer,
        dialogs: DialogLayer,
        tasks: BackgroundTasks,
    ) -> None:
        self._ua = ua  # its handlers, Contact and random source, read at each request
        self._transactions = transactions
        self._dialogs = dialogs
        self._tasks = tasks

    def serve_soon(self, state: ServerState, request: SipRequest) -> None:
        """Start answering *request*; a CANCEL may stop the task while a handler runs."""
        state.task = self._tasks.spawn(self._serve(state, request))

    async def _serve(self, state: ServerState, request: SipRequest) -> None:
        try:
            response = await self._answer(state, request)
        except ProtocolError as exc:
            response = build_response(request, exc.status_code, exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for %s failed", request.method)
            response = build_response(request, 500)
        if response is not None:
            self._transactions.respond(state, response)

    async def _answer(self, state: ServerState, request: SipRequest) -> SipResponse | None:
        """The response to send, or ``None`` when it was sent already (or must not be)."""
        method = request.method.upper()
        if method == "CANCEL":
            return self._cancel_received(request)
        if request.to.tag is not None:
            return await self._in_dialog(state, request)
        if method == "INVITE":
            return await self._new_call(state, request)
        if method == "OPTIONS":
            return build_response(request, 200, extra_headers=[("Allow", ALLOW)])
        if method == "REFER":
            return await self._refer_received(state, request, None, None)
        if method == "SUBSCRIBE":
            return await self._subscribe_received(state, request)
        if method == "NOTIFY":
            return self._notify_received(request)
        if method == "BYE":
            return build_response(request, 481)
        return build_response(request, 405, extra_headers=[("Allow", ALLOW)])

    # -- the application's say ------------------------------------------------------------

    async def _call_handler(
        self, handler: Handler | None, incoming: IncomingRequest, default: Answer
    ) -> Answer:
        if handler is None:
            return default
        try:
            return await asyncio.wait_for(handler(incoming), self._ua.handler_timeout)
        except TimeoutError:
            log.warning("handler for %s timed out", incoming.request.method)
            return Answer(500)

    def _build_answer(
        self, request: SipRequest, answer: Answer, *, to_tag: str | None, contact: bool
    ) -> SipResponse:
        content_type = answer.content_type
        if answer.body and content_type is None:
            content_type = "application/sdp"
        return build_response(
            request,
            answer.status,
            answer.reason,
            to_tag=to_tag,
            contact=self._ua.contact if contact and answer.status < 300 else None,
            body=answer.body,
            content_type=content_type,
            extra_headers=answer.headers,
        )

    def _new_tag(self) -> str:
        return new_tag(self._ua.random_bytes)

    # -- INVITE, CANCEL ---------------------------------------------------------------------

    async def _new_call(self, state: ServerState, request: SipRequest) -> SipResponse | None:
        answer = await self._call_handler(
            self._ua.on_invite, IncomingRequest(request, state.source), Answer(480)
        )
        if state.txn.terminated or (
            state.txn.last_response and state.txn.last_response.status >= 200
        ):
            return None  # cancelled meanwhile
        if not 200 <= answer.status < 300:
            return self._build_answer(request, answer, to_tag=self._new_tag(), contact=False)
        tag = self._new_tag()
        dialog = Dialog.as_uas(
            request, local_tag=tag, local_contact=self._ua.contact, secure=self._dialogs.secure
        )
        call = Call(self._dialogs, dialog, request, outgoing=False)
        call.local_sdp = answer.body
        self._dialogs.calls[(dialog.call_id, dialog.local_tag, dialog.remote_tag)] = call
        response = self._build_answer(request, answer, to_tag=tag, contact=True)
        self._transactions.respond(state, response)
        self._dialogs.start_retransmitter(call, state, response)
        return None

    async def _reinvite_received(
        self, state: ServerState, request: SipRequest, call: Call
    ) -> SipResponse | None:
        if call._invite_pending:
            return build_response(request, 491)  # §14.2 glare
        answer = await self._call_handler(
            self._ua.on_invite, IncomingRequest(request, state.source, call), Answer(488)
        )
        if not 200 <= answer.status < 300:
            return self._build_answer(request, answer, to_tag=None, contact=False)
        call.invite = request
        if request.body:
            call.remote_sdp = request.body
        call.local_sdp = answer.body
        response = self._build_answer(request, answer, to_tag=None, contact=True)
        self._transactions.respond(state, response)
        self._dialogs.start_retransmitter(call, state, response)
        return None

    def _cancel_received(self, cancel: SipRequest) -> SipResponse:
        """RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE if still pending."""
        target = self._transactions.cancelled_invite(cancel)
        if target is None:
            return build_response(cancel, 481)
        last = target.txn.last_response
        if last is None or last.status < 200:
            if target.task is not None:
                target.task.cancel()
            self._transactions.respond(
                target, build_response(target.txn.request, 487, to_tag=self._new_tag())
            )
        return build_response(cancel, 200)

    # -- within a dialog ----------------------------------------------------------------------

    async def _in_dialog(self, state: ServerState, request: SipRequest) -> SipResponse | None:
        method = request.method.upper()
        call = self._dialogs.call_for(request)
        if method == "NOTIFY":
            return self._notify_received(request)
        server = self._dialogs.server_subscription_for(request) if call is None else None
        dialog = call.dialog if call is not None else (server.dialog if server else None)
        if dialog is None:
            return build_response(request, 481)
        dialog.receive_request(request)  # 481/500 raised as ProtocolError
        if call is None:
            if method == "SUBSCRIBE" and server is not None:  # refresh of a subscription of ours
                server.refreshed(request)
                return build_response(
                    request, 200, extra_headers=[("Expires", request.get("expires") or "600")]
                )
            return build_response(request, 200 if method != "INVITE" else 488)
        if method == "BYE":
            self._dialogs.end_call(call, by_remote=True)
            return build_response(request, 200)
        if method == "INVITE":
            return await self._reinvite_received(state, request, call)
        if method == "REFER":
            return await self._refer_received(state, request, call.dialog, call)
        if method in ("OPTIONS", "INFO", "UPDATE"):
            return build_response(request, 200)
        return build_response(request, 405, extra_headers=[("Allow", ALLOW)])

    # -- subscriptions: NOTIFY to us, SUBSCRIBE and REFER from others -------------------------

    def _notify_received(self, request: SipRequest) -> SipResponse:
        """NOTIFY for a subscription of ours or REFER's implicit one (RFC 6665 §4.1.3)."""
        local_tag = request.to.tag or ""
        subscription = self._dialogs.subscriptions.get((request.call_id, local_tag))
        if subscription is not None:
            if subscription.dialog is None and request.from_.tag:
                # RFC 6665 §4.1.2.4: the NOTIFY may come before the 2xx; it creates the dialog.
                with contextlib.suppress(ProtocolError):
                    subscription.dialog = Dialog.as_uas(
                        request, local_tag=local_tag, local_contact=self._ua.contact
                    )
                    subscription.dialog.local_seq = subscription.request.cseq.number
            if subscription.on_notify is not None:
                answer = subscription.on_notify(request)
                return self._build_answer(request, answer, to_tag=None, contact=False)
            subscription.notifications.put_nowait(request)
            return build_response(request, 200)
        for (call_id, local, _remote), call in self._dialogs.calls.items():
            if call_id == request.call_id and local == local_tag:
                call.notifications.put_nowait(request)
                return build_response(request, 200)
        return build_response(request, 481)

    async def _subscribe_received(
        self, state: ServerState, request: SipRequest
    ) -> SipResponse | None:
        answer = await self._call_handler(
            self._ua.on_subscribe, IncomingRequest(request, state.source), Answer(489)
        )
        if not 200 <= answer.status < 300:
            return self._build_answer(request, answer, to_tag=self._new_tag(), contact=False)
        tag = self._new_tag()
        dialog = Dialog.as_uas(request, local_tag=tag, local_contact=self._ua.contact)
        event = request.get("event") or ""
        subscription = ServerSubscription(self._dialogs, dialog, event)
        self._dialogs.server_subscriptions.append(subscription)
        self._dialogs.incoming_subscriptions.put_nowait(subscription)
        expires = request.get("expires") or "600"
        answer = Answer(
            answer.status,
            answer.body,
            answer.content_type,
            (*answer.headers, ("Expires", expires)),
            answer.reason,
        )
        self._transactions.respond(
            state, self._build_answer(request, answer, to_tag=tag, contact=True)
        )
        # RFC 6665 §4.2.1.2: a NOTIFY follows the 2xx at once.
        self._tasks.spawn(self._first_notify(subscription, b"", None, f"active;expires={expires}"))
        return None

    async def _refer_received(
        self, state: ServerState, request: SipRequest, dialog: Dialog | None, call: Call | None
    ) -> SipResponse | None:
        """RFC 3515 §2.4.2: 202, then a NOTIFY with a message/sipfrag of the progress."""
        if not request.get("refer-to"):
            return build_response(request, 400, "Missing Refer-To")
        answer = await self._call_handler(
            self._ua.on_refer, IncomingRequest(request, state.source, call), Answer(202)
        )
        tag = None
        if dialog is None:
            tag = self._new_tag()
            if not 200 <= answer.status < 300:
                return self._build_answer(request, answer, to_tag=tag, contact=False)
            dialog = Dialog.as_uas(request, local_tag=tag, local_contact=self._ua.contact)
        elif not 200 <= answer.status < 300:
            return self._build_answer(request, answer, to_tag=None, contact=False)
        subscription = ServerSubscription(self._dialogs, dialog, "refer")
        self._dialogs.server_subscriptions.append(subscription)
        self._transactions.respond(
            state, self._build_answer(request, answer, to_tag=tag, contact=True)
        )
        self._tasks.spawn(
            self._first_notify(
                subscription,
                sipfrag(100, "Trying"),
                "message/sipfrag;version=2.0",
                "active;expires=60",
            )
        )
        return None

    async def _first_notify(
        self, subscription: ServerSubscription, body: bytes, content_type: str | None, state: str
    ) -> None:
        with contextlib.suppress(SecconfError, TimeoutError):
            await subscription.notify(body, content_type=content_type, state=state, timeout=10.0)
