"""The user agent: its lifecycle, its address, and the requests the application starts.

The layers below it, bottom up: :mod:`.transport` (sockets, connections),
:mod:`.runner` and :mod:`.transactions` (RFC 3261 §17), :mod:`.dialogs`
(§12, the 2xx/ACK rules), and :mod:`.uas` answering what comes in.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Callable
from typing import Literal

from secconf.core.sip.builders import build_request
from secconf.core.sip.dialog import Dialog
from secconf.core.sip.headers import Address, RandomBytes, new_call_id, new_tag
from secconf.core.sip.message import SipRequest, SipResponse
from secconf.core.sip.transaction import TimerConfig

from .auth import authorization, with_digest
from .call import Call, OutgoingCall
from .common import ALLOW, BackgroundTasks, ExtraHeaders
from .dialogs import DialogLayer
from .errors import SipRequestFailed
from .handlers import Handler
from .runner import MachineRunner
from .subscription import NotifyHandler, ServerSubscription, Subscription
from .transactions import TransactionLayer
from .transport import TransportLayer
from .uas import UasCore

__all__ = ["UserAgent"]


class UserAgent:
    """A SIP user agent (UAC and UAS) on one local address and transport.

    Create it with :meth:`start`.  Hooks (all async, returning an
    :class:`~.handlers.Answer`): ``on_invite`` (new calls and re-INVITEs;
    default 480), ``on_refer`` (default 202), ``on_subscribe`` (default 489
    Bad Event).  ``outgoing_filter`` (testing) sees every datagram/segment
    before it is sent and drops it when it returns ``True``.
    """

    def __init__(
        self,
        local_host: str,
        transport: Literal["udp", "tls"],
        identity: Address,
        *,
        random_bytes: RandomBytes,
        timers: TimerConfig,
        ssl_context: ssl.SSLContext | None,
        client_ssl_context: ssl.SSLContext | None,
        handler_timeout: float,
    ) -> None:
        self.local_host = local_host
        self.transport = transport
        self.identity = identity
        self.random_bytes = random_bytes
        self.timers = timers
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context or ssl_context
        self.handler_timeout = handler_timeout
        self.on_invite: Handler | None = None
        self.on_refer: Handler | None = None
        self.on_subscribe: Handler | None = None
        self._incoming_calls: asyncio.Queue[Call] = asyncio.Queue()
        self._tasks = BackgroundTasks()
        self._transport_layer = TransportLayer(
            transport,
            local_host,
            deliver=lambda data, link, source, reliable: self._transactions.receive(
                data, link, source, reliable
            ),
            random_bytes=random_bytes,
            ssl_context=ssl_context,
            client_ssl_context=self.client_ssl_context,
        )
        runner = MachineRunner(self._transport_layer)
        self._transactions = TransactionLayer(
            self._transport_layer,
            runner,
            timers,
            on_request=lambda state, request: self._uas.serve_soon(state, request),
            on_ack=lambda request: self._dialogs.ack_received(request),
            on_stray_2xx=lambda response: self._dialogs.stray_2xx(response),
        )
        self._dialogs = DialogLayer(
            self._transport_layer,
            self._transactions,
            runner,
            self._tasks,
            incoming_calls=self._incoming_calls,
        )
        self._uas = UasCore(self, self._transactions, self._dialogs, self._tasks)
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        local_host: str,
        port: int = 0,
        transport: Literal["udp", "tls"] = "udp",
        ssl_context: ssl.SSLContext | None = None,
        identity: str = "sip:alice@example.com",
        *,
        client_ssl_context: ssl.SSLContext | None = None,
        random_bytes: RandomBytes = secrets.token_bytes,
        timers: TimerConfig | None = None,
        display_name: str | None = None,
        handler_timeout: float = 10.0,
    ) -> UserAgent:
        """Bind *local_host*:*port* (0: any free port) and start serving.

        TLS needs *ssl_context* (a server context with a certificate) to
        accept connections; outgoing connections use *client_ssl_context*,
        defaulting to *ssl_context*.
        """
        if transport not in ("udp", "tls"):
            raise ValueError("transport must be 'udp' or 'tls'")
        if transport == "tls" and ssl_context is None:
            raise ValueError("TLS needs an ssl_context")
        address = Address.build(identity, display_name)
        address.sip_uri  # noqa: B018 - refuses a non-SIP identity early
        ua = cls(
            local_host,
            transport,
            address,
            random_bytes=random_bytes,
            timers=timers or TimerConfig(),
            ssl_context=ssl_context,
            client_ssl_context=client_ssl_context,
            handler_timeout=handler_timeout,
        )
        await ua._transport_layer.bind(port)
        return ua

    async def close(self) -> None:
        """Stop timers and tasks, close every socket.  Calls are not hung up."""
        if self._closed:
            return
        self._closed = True
        self._tasks.cancel_all()
        self._transactions.close()
        await self._transport_layer.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> UserAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- addresses ----------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        """The bound port (0 before :meth:`start` bound it)."""
        return self._transport_layer.local_port

    @property
    def contact(self) -> Address:
        """Our Contact (RFC 3261 §8.1.1.8): the identity's user at our address."""
        user = self.identity.sip_uri.user
        params = ";transport=tls" if self.transport == "tls" else ""
        userpart = f"{user}@" if user else ""
        host = self._transport_layer.host_for_uri
        return Address(f"sip:{userpart}{host}:{self.local_port}{params}")

    @property
    def outgoing_filter(self) -> Callable[[bytes], bool] | None:
        return self._transport_layer.outgoing_filter

    @outgoing_filter.setter
    def outgoing_filter(self, drop: Callable[[bytes], bool] | None) -> None:
        self._transport_layer.outgoing_filter = drop

    def _out_of_dialog(
        self,
        method: str,
        uri: str,
        *,
        from_tag: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        to: Address | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: ExtraHeaders = (),
    ) -> SipRequest:
        """A request outside any dialog (RFC 3261 §8.1.1), new Call-ID and From tag by default."""
        return build_request(
            method,
            uri,
            from_=self.identity.with_tag(from_tag or new_tag(self.random_bytes)),
            to=to or Address(uri),
            call_id=call_id or new_call_id(self.random_bytes, self.local_host),
            cseq=cseq,
            via=self._transport_layer.new_via(),
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )

    async def _transact(self, request: SipRequest, timeout: float) -> SipResponse:
        """Send *request* where RFC 3261 §8.1.2 says; return its final response."""
        dest = self._transport_layer.request_destination(request)
        return await self._transactions.transact(request, dest, timeout)

    # -- calls --------------------------------------------------------------------------

    def place_call(
        self,
        target: str,
        body: bytes,
        *,
        content_type: str = "application/sdp",
        extra_headers: ExtraHeaders = (),
        call_id: str | None = None,
        from_tag: str | None = None,
        cseq: int = 1,
    ) -> OutgoingCall:
        """Send an INVITE to *target* now; the returned handle awaits or cancels it.

        *call_id*, *from_tag* and *cseq* repeat an earlier attempt (a retry
        with credentials after 401/407, RFC 3261 §22.2); new ones by default.
        """
        request = self._out_of_dialog(
            "INVITE",
            target,
            from_tag=from_tag,
            to=Address.parse(target) if target.startswith("<") else Address(target),
            call_id=call_id,
            cseq=cseq,
            body=body,
            content_type=content_type,
            extra_headers=[("Allow", ALLOW), *extra_headers],
        )
        outgoing = OutgoingCall(self._dialogs, request)
        dest = self._transport_layer.request_destination(request)

        def on_response(response: SipResponse) -> None:
            self._dialogs.invite_response(outgoing, response)

        task = self._tasks.spawn(
            self._transactions.transact(request, dest, None, on_response=on_response)
        )
        task.add_done_callback(outgoing.transaction_ended)
        return outgoing

    async def invite(
        self,
        target: str,
        body: bytes,
        *,
        content_type: str = "application/sdp",
        extra_headers: ExtraHeaders = (),
        timeout: float = 64.0,
        credentials: tuple[str, str] | None = None,
    ) -> Call:
        """Call *target*: INVITE, wait for the 2xx, ACK it (RFC 3261 §13.2).

        *credentials* ``(username, password)``: a 401/407 with a Digest
        challenge (RFC 3261 §22.2, RFC 7616: SHA-256 preferred, MD5) is
        answered once, with the same Call-ID and From tag and the next CSeq;
        a second challenge is answered only if it says ``stale=true``.
        Raises :class:`SipRequestFailed` with the final status on a non-2xx,
        :class:`SipTimeout` when no final answer comes within *timeout*.
        """
        extra = list(extra_headers)
        outgoing = self.place_call(target, body, content_type=content_type, extra_headers=extra)
        attempts = 0
        while True:
            try:
                return await outgoing.answered(timeout)
            except SipRequestFailed as exc:
                if exc.response is None:
                    raise
                header = authorization(
                    exc.response,
                    credentials,
                    method="INVITE",
                    uri=target.strip("<>"),
                    random_bytes=self.random_bytes,
                    answered=attempts,
                )
                if header is None:
                    raise
                attempts += 1
                request = outgoing.request
                outgoing = self.place_call(
                    target,
                    body,
                    content_type=content_type,
                    extra_headers=[*extra, header],
                    call_id=request.call_id,
                    from_tag=request.from_.tag,
                    cseq=request.cseq.number + 1,
                )

    async def cancel(self, outgoing: OutgoingCall, *, timeout: float = 32.0) -> SipResponse | None:
        """Cancel a pending INVITE (RFC 3261 §9.1); see :meth:`OutgoingCall.cancel`."""
        return await outgoing.cancel(timeout=timeout)

    async def refer(
        self,
        call: Call,
        refer_to: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: ExtraHeaders = (),
        timeout: float = 32.0,
        credentials: tuple[str, str] | None = None,
    ) -> SipResponse:
        """REFER *refer_to* within *call* (RFC 3515 §2.4.1); see :meth:`Call.refer`."""
        return await call.refer(
            refer_to,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
            timeout=timeout,
            credentials=credentials,
        )

    async def next_call(self, timeout: float = 32.0) -> Call:
        """The next incoming call once its 2xx was ACKed."""
        return await asyncio.wait_for(self._incoming_calls.get(), timeout)

    async def next_subscription(self, timeout: float = 32.0) -> ServerSubscription:
        """The next SUBSCRIBE ``on_subscribe`` took; its first NOTIFY (no body) is sent already."""
        return await asyncio.wait_for(self._dialogs.incoming_subscriptions.get(), timeout)

    # -- other requests -----------------------------------------------------------------

    async def subscribe(
        self,
        uri: str,
        event: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        expires: int = 600,
        extra_headers: ExtraHeaders = (),
        timeout: float = 32.0,
        on_notify: NotifyHandler | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> Subscription:
        """SUBSCRIBE to *event* at *uri* (RFC 6665 §4.1.2.1); raise unless 2xx.

        *on_notify* answers each NOTIFY (else: 200, queued), from before the SUBSCRIBE
        leaves (a NOTIFY may overtake the 2xx, §4.1.2.4).  *extra_headers* are repeated
        in refreshes; a Digest challenge is answered with *credentials* (:meth:`register`).
        """
        headers = tuple(extra_headers)
        call_id = new_call_id(self.random_bytes, self.local_host)
        from_tag = new_tag(self.random_bytes)
        key = (call_id, from_tag)

        def attempt(cseq: int, auth_headers: list[tuple[str, str]]) -> SipRequest:
            request = self._out_of_dialog(
                "SUBSCRIBE", uri, from_tag=from_tag, call_id=call_id, cseq=cseq, body=body,
                content_type=content_type,
                extra_headers=[("Event", event), ("Expires", str(expires)), *headers, *auth_headers],
            )  # fmt: skip
            # Registered before it is sent: its NOTIFY may come before its response.
            self._dialogs.subscriptions[key] = Subscription(
                self._dialogs, request, headers=headers, on_notify=on_notify
            )
            return request

        try:
            request, response = await with_digest(
                self._transact, attempt, credentials, "SUBSCRIBE", uri, self.random_bytes, timeout
            )
            if response.status >= 300:
                raise SipRequestFailed(response.status, response.reason, response)
        except BaseException:
            self._dialogs.subscriptions.pop(key, None)
            raise
        subscription = self._dialogs.subscriptions[key]
        subscription.response = response
        if subscription.dialog is None and response.to.tag:
            subscription.dialog = Dialog.as_uac(request, response)
        return subscription

    async def request(
        self,
        method: str,
        uri: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: ExtraHeaders = (),
        timeout: float = 32.0,
    ) -> SipResponse:
        """Any out-of-dialog non-INVITE request (OPTIONS, MESSAGE, ...); returns the final response."""
        request = self._out_of_dialog(
            method, uri, body=body, content_type=content_type, extra_headers=extra_headers
        )
        return await self._transact(request, timeout)

    async def register(
        self,
        registrar: str,
        *,
        credentials: tuple[str, str] | None = None,
        expires: int = 600,
        timeout: float = 32.0,
    ) -> SipResponse:
        """REGISTER our identity (the To URI) with our Contact at *registrar* (RFC 3261 §10.2).

        A 401/407 Digest challenge is answered once with *credentials* (same Call-ID, next
        CSeq, RFC 3261 §10.2.4, §22.2), a second only if ``stale=true``.  Returns the final
        response, whatever its status.  ``expires=0`` removes our binding.
        """
        call_id = new_call_id(self.random_bytes, self.local_host)
        from_tag = new_tag(self.random_bytes)

        def attempt(cseq: int, auth_headers: list[tuple[str, str]]) -> SipRequest:
            return self._out_of_dialog(
                "REGISTER", registrar, from_tag=from_tag, call_id=call_id, cseq=cseq,
                to=Address(str(self.identity.uri)),
                extra_headers=[("Expires", str(int(expires))), *auth_headers],
            )  # fmt: skip

        _, response = await with_digest(
            self._transact, attempt, credentials, "REGISTER", registrar, self.random_bytes, timeout
        )
        return response
