"""An asyncio SIP user agent for the secconf participant (RFC 3261 over UDP or TLS).

The protocol work is all in the sans-IO :mod:`secconf.core.sip`; this module
only moves bytes, runs timers and waits.  Every wait has a timeout.

    ua = await UserAgent.start("127.0.0.1", identity="sip:alice@example.com")
    call = await ua.invite("sip:conf@127.0.0.1:5060", sdp_offer)   # INVITE/200/ACK
    await call.reinvite(new_offer)                                 # re-INVITE/200/ACK
    await ua.refer(call, "sip:carol@example.com", body=mikey, content_type="application/mikey")
    await call.bye()
    await ua.close()

Incoming requests go to async handlers that return an :class:`Answer`
(``ua.on_invite``, ``ua.on_refer``, ``ua.on_subscribe``); established
incoming calls are also queued for :meth:`UserAgent.next_call`.

Transports: UDP (one socket, RFC 3581 rport on both sides), and TLS over TCP
with the Content-Length framer (RFC 3261 §18.3), responses on the connection
the request came in (§18.2.2), requests on a pooled connection per peer.
No DNS SRV/NAPTR (RFC 3263): hosts are IP literals or names for getaddrinfo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, cast

from secconf.core import digest
from secconf.core.errors import ProtocolError, SecconfError
from secconf.core.sip.builders import REASON_PHRASES, build_cancel, build_request, build_response
from secconf.core.sip.dialog import AnswerRetransmitter, Dialog, DialogState, sipfrag
from secconf.core.sip.headers import Address, RandomBytes, Via, new_branch, new_call_id, new_tag
from secconf.core.sip.message import SipRequest, SipResponse, StreamFramer, parse_message
from secconf.core.sip.transaction import (
    Action,
    CancelTimer,
    ClientTransaction,
    DeliverToTU,
    Send,
    ServerTransaction,
    StartTimer,
    Terminated,
    TimedOut,
    Timer,
    TimerConfig,
    TransactionKey,
    TransportFailed,
    client_key,
    server_key,
)
from secconf.core.sip.uri import SipUri

__all__ = [
    "Answer",
    "Call",
    "IncomingRequest",
    "OutgoingCall",
    "ServerSubscription",
    "SipRequestFailed",
    "SipTimeout",
    "SipTransportError",
    "Subscription",
    "UserAgent",
]

log = logging.getLogger("secconf.sip")

Addr = tuple[str, int]
ExtraHeaders = Iterable[tuple[str, str]]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, SUBSCRIBE, NOTIFY"


class SipRequestFailed(SecconfError):
    """A request we sent ended without a 2xx; ``status_code`` is the final status."""

    def __init__(self, status: int, reason: str, response: SipResponse | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status_code = status
        self.reason = reason
        self.response = response


class SipTimeout(SipRequestFailed):
    """No final response in time (Timer B/F, or the caller's timeout): 408."""

    def __init__(self, what: str) -> None:
        super().__init__(408, "Request Timeout")
        self.message = f"{what}: no final response in time"
        self.args = (self.message,)


class SipTransportError(SipRequestFailed):
    """The transport failed to carry the request (RFC 3261 §8.1.3.1: treated as 503)."""

    def __init__(self, what: str) -> None:
        super().__init__(503, "Service Unavailable")
        self.message = f"{what}: transport error"
        self.args = (self.message,)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a handler answers an incoming request with."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None

    def __repr__(self) -> str:
        return f"Answer({self.status}, {len(self.body)}-byte body)"


@dataclass(slots=True)
class IncomingRequest:
    """A request handed to a handler; ``call`` is set for requests inside a call."""

    request: SipRequest
    source: Addr
    call: Call | None = None

    @property
    def body(self) -> bytes:
        return self.request.body


Handler = Callable[[IncomingRequest], Awaitable[Answer]]


# -- links: where the bytes of one transaction go ------------------------------------


class _Link:
    """Sends bytes towards one peer (a UDP address, or a stream connection)."""

    reliable: bool = False

    def send(self, data: bytes) -> None:
        raise NotImplementedError


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        self.ua._receive(data, _UdpLink(self, source), source, reliable=False)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _UdpLink(_Link):
    def __init__(self, protocol: _UdpProtocol, addr: Addr) -> None:
        self.protocol = protocol
        self.addr = addr

    def send(self, data: bytes) -> None:
        if self.protocol.transport is None or self.protocol.transport.is_closing():
            raise OSError("UDP transport closed")
        self.protocol.transport.sendto(data, self.addr)


class _StreamLink(_Link):
    reliable = True

    def __init__(self, ua: UserAgent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.ua = ua
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.addr: Addr = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.framer = StreamFramer()
        self.task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise OSError("connection closed")
        self.writer.write(data)

    async def run(self) -> None:
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                try:
                    frames = self.framer.feed(chunk)
                except ProtocolError as exc:
                    log.info("closing stream from %s: %s", self.addr, exc)
                    return
                for frame in frames:
                    self.ua._receive(frame, self, self.addr, reliable=True)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("stream from %s ended: %s", self.addr, exc)
        finally:
            self.writer.close()
            self.ua._forget_stream(self)


# -- calls and subscriptions --------------------------------------------------------------


class Call:
    """An established INVITE dialog, outgoing or incoming."""

    def __init__(self, ua: UserAgent, dialog: Dialog, invite: SipRequest, *, outgoing: bool):
        self.ua = ua
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
        self._ack_bytes: bytes | None = None
        self._ack_link: _Link | None = None
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
                via=self.ua._new_via(),
                body=body,
                content_type=content_type,
                extra_headers=extra_headers,
            )
            response = await self.ua._send_in_dialog(self, request, timeout)
            if 200 <= response.status < 300:
                self.local_sdp = body
                if response.body:
                    self.remote_sdp = response.body
                self.ua._ack_2xx(self, request, response)
            return response
        finally:
            self._invite_pending = False

    async def bye(self, *, timeout: float = 32.0) -> SipResponse:
        """End the call with BYE (RFC 3261 §15.1.1); the call ends whatever the answer."""
        if self.dialog.state is DialogState.TERMINATED:
            raise ValueError("call already ended")
        request = self.dialog.create_request("BYE", via=self.ua._new_via())
        try:
            return await self.ua._send_in_dialog(self, request, timeout, raise_on_error=False)
        finally:
            self.dialog.state = DialogState.TERMINATED
            self.ua._end_call(self, by_remote=False)

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
        """REFER within this call (RFC 3515); same as :meth:`UserAgent.refer`."""
        return await self.ua.refer(
            self,
            refer_to,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
            timeout=timeout,
            credentials=credentials,
        )

    async def next_notification(self, timeout: float = 10.0) -> SipRequest:
        """The next NOTIFY received in this dialog (e.g. REFER progress, RFC 3515 §2.4.4)."""
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def wait_ended(self, timeout: float = 32.0) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)


class OutgoingCall:
    """An INVITE on its way: await :meth:`answered`, or :meth:`cancel` it."""

    def __init__(self, ua: UserAgent, request: SipRequest) -> None:
        self.ua = ua
        self.request = request
        self.provisional: list[SipResponse] = []
        self.got_provisional = asyncio.Event()
        self.result: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self.cancelled = False

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
        dest = self.ua._request_destination(self.request)
        return await self.ua._transact(cancel, dest, timeout)


class Subscription:
    """A subscription we made (RFC 6665); NOTIFYs are answered 200 and queued."""

    def __init__(self, ua: UserAgent, request: SipRequest) -> None:
        self.ua = ua
        self.request = request
        self.event = request.get("event") or ""
        self.response: SipResponse | None = None
        self.dialog: Dialog | None = None
        self.notifications: asyncio.Queue[SipRequest] = asyncio.Queue()

    async def next_notification(self, timeout: float = 10.0) -> SipRequest:
        return await asyncio.wait_for(self.notifications.get(), timeout)


class ServerSubscription:
    """A subscription someone made with us (SUBSCRIBE, or REFER's implicit one)."""

    def __init__(self, ua: UserAgent, dialog: Dialog, event: str) -> None:
        self.ua = ua
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
            via=self.ua._new_via(),
            body=body,
            content_type=content_type,
            extra_headers=[("Event", self.event), ("Subscription-State", state)],
        )
        dest = self.ua._dialog_destination(self.dialog)
        return await self.ua._transact(request, dest, timeout)


# -- the user agent ---------------------------------------------------------------------


@dataclass(eq=False)
class _ClientState:
    txn: ClientTransaction
    link: _Link
    deliver: Callable[[DeliverToTU], None]
    failure: Callable[[TimedOut | TransportFailed], None]
    terminated: Callable[[], None]


@dataclass(eq=False)
class _ServerState:
    txn: ServerTransaction
    link: _Link
    source: Addr
    task: asyncio.Task[None] | None = None
    timers: dict[Timer, asyncio.TimerHandle] = field(default_factory=dict)


class UserAgent:
    """A SIP user agent (UAC and UAS) on one local address and transport.

    Create it with :meth:`start`.  Hooks (all async, returning an
    :class:`Answer`): ``on_invite`` (new calls and re-INVITEs; default 480),
    ``on_refer`` (default 202), ``on_subscribe`` (default 489 Bad Event).
    ``outgoing_filter`` (testing) sees every datagram/segment before it is
    sent and drops it when it returns ``True``.
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
        self.local_port = 0
        self.on_invite: Handler | None = None
        self.on_refer: Handler | None = None
        self.on_subscribe: Handler | None = None
        self.outgoing_filter: Callable[[bytes], bool] | None = None
        self._udp: _UdpProtocol | None = None
        self._server: asyncio.Server | None = None
        self._streams: dict[Addr, _StreamLink] = {}
        self._all_streams: set[_StreamLink] = set()
        self._clients: dict[TransactionKey, _ClientState] = {}
        self._futures: dict[TransactionKey, asyncio.Future[SipResponse]] = {}
        self._servers: dict[TransactionKey, _ServerState] = {}
        self._timers: dict[tuple[int, Timer], asyncio.TimerHandle] = {}
        self._calls: dict[tuple[str, str, str], Call] = {}
        self._pending_incoming: dict[tuple[str, str], Call] = {}
        self._subscriptions: dict[tuple[str, str], Subscription] = {}
        self._server_subscriptions: list[ServerSubscription] = []
        self._incoming_calls: asyncio.Queue[Call] = asyncio.Queue()
        self._tasks: set[asyncio.Task[object]] = set()
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
        loop = asyncio.get_running_loop()
        if transport == "udp":
            udp_transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(ua), local_addr=(local_host, port)
            )
            ua._udp = protocol
            ua.local_port = int(udp_transport.get_extra_info("sockname")[1])
        else:
            ua._server = await asyncio.start_server(
                ua._accept_stream, local_host, port, ssl=ssl_context
            )
            ua.local_port = int(ua._server.sockets[0].getsockname()[1])
        return ua

    async def close(self) -> None:
        """Stop timers and tasks, close every socket.  Calls are not hung up."""
        if self._closed:
            return
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(SipTransportError("user agent closed"))
                with contextlib.suppress(BaseException):
                    future.exception()
        for link in list(self._all_streams):
            link.writer.close()
            if link.task is not None:
                link.task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> UserAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- addresses ----------------------------------------------------------------------

    @property
    def _host_for_uri(self) -> str:
        return f"[{self.local_host}]" if ":" in self.local_host else self.local_host

    @property
    def contact(self) -> Address:
        """Our Contact (RFC 3261 §8.1.1.8): the identity's user at our address."""
        user = self.identity.sip_uri.user
        params = ";transport=tls" if self.transport == "tls" else ""
        userpart = f"{user}@" if user else ""
        return Address(f"sip:{userpart}{self._host_for_uri}:{self.local_port}{params}")

    def _new_via(self) -> Via:
        return Via.build(
            self.transport.upper(),
            self._host_for_uri,
            self.local_port,
            new_branch(self.random_bytes),
        )

    # -- public requests ------------------------------------------------------------------

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
        request = build_request(
            "INVITE",
            target,
            from_=self.identity.with_tag(from_tag or new_tag(self.random_bytes)),
            to=Address.parse(target) if target.startswith("<") else Address(target),
            call_id=call_id or new_call_id(self.random_bytes, self.local_host),
            cseq=cseq,
            via=self._new_via(),
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra_headers=[("Allow", ALLOW), *extra_headers],
        )
        outgoing = OutgoingCall(self, request)
        dest = self._request_destination(request)

        def on_response(response: SipResponse) -> None:
            self._invite_response(outgoing, response)

        task = asyncio.ensure_future(self._transact(request, dest, None, on_response=on_response))

        def finished(done: asyncio.Future[SipResponse]) -> None:
            if outgoing.result.done():
                return
            exc = done.exception()
            if exc is not None:
                outgoing.result.set_exception(exc)
            else:
                response = done.result()
                if response.status >= 300:
                    outgoing.result.set_exception(
                        SipRequestFailed(response.status, response.reason, response)
                    )

        task.add_done_callback(finished)
        self._keep(task)
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
                response = exc.response
                if (
                    credentials is None
                    or response is None
                    or exc.status_code not in (401, 407)
                    or attempts >= 2
                ):
                    raise
                header_name = "Proxy-Authorization" if exc.status_code == 407 else "Authorization"
                chosen = _digest_challenge(response, exc.status_code)
                if chosen is None or (attempts == 1 and not chosen.stale):
                    raise
                attempts += 1
                authorization = digest.respond(
                    chosen,
                    username=credentials[0],
                    password=credentials[1],
                    method="INVITE",
                    uri=target.strip("<>"),
                    cnonce=self.random_bytes(12).hex(),
                )
                request = outgoing.request
                outgoing = self.place_call(
                    target,
                    body,
                    content_type=content_type,
                    extra_headers=[*extra, (header_name, authorization)],
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
        """REFER *refer_to* within *call* (RFC 3515 §2.4.1); raise unless 2xx (202).

        The implicit subscription's NOTIFYs are answered 200 and queued on
        ``call.notifications``.  A body (e.g. ``application/mikey``) may go along.
        *credentials* ``(username, password)``: a 401/407 Digest challenge is answered
        once (RFC 3261 §22.2), in a new request of the dialog (next CSeq).
        """
        request = call.dialog.create_refer(
            refer_to,
            via=self._new_via(),
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )
        try:
            return await self._send_in_dialog(call, request, timeout)
        except SipRequestFailed as exc:
            response = exc.response
            if credentials is None or response is None or exc.status_code not in (401, 407):
                raise
            chosen = _digest_challenge(response, exc.status_code)
            if chosen is None:
                raise
            header_name = "Proxy-Authorization" if exc.status_code == 407 else "Authorization"
            authorization = digest.respond(
                chosen,
                username=credentials[0],
                password=credentials[1],
                method="REFER",
                uri=request.uri,
                cnonce=self.random_bytes(12).hex(),
            )
            retry = call.dialog.create_refer(
                refer_to,
                via=self._new_via(),
                body=body,
                content_type=content_type,
                extra_headers=[*extra_headers, (header_name, authorization)],
            )
            return await self._send_in_dialog(call, retry, timeout)

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
    ) -> Subscription:
        """SUBSCRIBE to *event* at *uri* (RFC 6665 §4.1.2.1); raise unless 2xx."""
        request = build_request(
            "SUBSCRIBE",
            uri,
            from_=self.identity.with_tag(new_tag(self.random_bytes)),
            to=Address(uri),
            call_id=new_call_id(self.random_bytes, self.local_host),
            cseq=1,
            via=self._new_via(),
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra_headers=[("Event", event), ("Expires", str(expires)), *extra_headers],
        )
        subscription = Subscription(self, request)
        key = (request.call_id, request.from_.tag or "")
        self._subscriptions[key] = subscription
        response = await self._transact(request, self._request_destination(request), timeout)
        subscription.response = response
        if response.status >= 300:
            del self._subscriptions[key]
            raise SipRequestFailed(response.status, response.reason, response)
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
        request = build_request(
            method,
            uri,
            from_=self.identity.with_tag(new_tag(self.random_bytes)),
            to=Address(uri),
            call_id=new_call_id(self.random_bytes, self.local_host),
            cseq=1,
            via=self._new_via(),
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )
        return await self._transact(request, self._request_destination(request), timeout)

    async def register(
        self,
        registrar: str,
        *,
        credentials: tuple[str, str] | None = None,
        expires: int = 600,
        timeout: float = 32.0,
    ) -> SipResponse:
        """REGISTER our identity (the To URI) with our Contact at *registrar* (RFC 3261 §10.2).

        A 401/407 Digest challenge is answered once with *credentials* (same
        Call-ID, next CSeq, RFC 3261 §10.2.4, §22.2); a second one only if it
        says ``stale=true``.  Returns the final response, whatever its status.
        ``expires=0`` removes our binding.
        """
        call_id = new_call_id(self.random_bytes, self.local_host)
        from_ = self.identity.with_tag(new_tag(self.random_bytes))
        headers: list[tuple[str, str]] = [("Expires", str(int(expires)))]
        cseq = 1
        attempts = 0
        while True:
            request = build_request(
                "REGISTER",
                registrar,
                from_=from_,
                to=Address(str(self.identity.uri)),
                call_id=call_id,
                cseq=cseq,
                via=self._new_via(),
                contact=self.contact,
                extra_headers=headers,
            )
            response = await self._transact(request, self._request_destination(request), timeout)
            if credentials is None or response.status not in (401, 407) or attempts >= 2:
                return response
            chosen = _digest_challenge(response, response.status)
            if chosen is None or (attempts == 1 and not chosen.stale):
                return response
            attempts += 1
            name = "Proxy-Authorization" if response.status == 407 else "Authorization"
            answer = digest.respond(
                chosen,
                username=credentials[0],
                password=credentials[1],
                method="REGISTER",
                uri=registrar,
                cnonce=self.random_bytes(12).hex(),
            )
            headers = [("Expires", str(int(expires))), (name, answer)]
            cseq += 1

    async def next_call(self, timeout: float = 32.0) -> Call:
        """The next incoming call once its 2xx was ACKed."""
        return await asyncio.wait_for(self._incoming_calls.get(), timeout)

    # -- destinations -----------------------------------------------------------------------

    def _uri_destination(self, uri_text: str) -> Addr:
        uri = SipUri.parse(uri_text)
        maddr = uri.param("maddr")
        host = maddr or uri.bare_host
        port = uri.port or (5061 if self.transport == "tls" or uri.secure else 5060)
        return host, port

    def _request_destination(self, request: SipRequest) -> Addr:
        """RFC 3261 §8.1.2: the first Route if any (loose routing), else the Request-URI."""
        routes = request.get_all("route")
        if routes:
            return self._uri_destination(Address.parse(routes[0]).uri)
        return self._uri_destination(request.uri)

    def _dialog_destination(self, dialog: Dialog) -> Addr:
        if dialog.route_set:
            return self._uri_destination(Address.parse(dialog.route_set[0]).uri)
        return self._uri_destination(dialog.remote_target)

    async def _link_to(self, dest: Addr) -> _Link:
        if self.transport == "udp":
            if self._udp is None:
                raise SipTransportError("no UDP socket")
            return _UdpLink(self._udp, dest)
        link = self._streams.get(dest)
        if link is not None and not link.writer.is_closing():
            return link
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    dest[0], dest[1], ssl=self.client_ssl_context, server_hostname=dest[0]
                ),
                10.0,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("cannot connect to %s: %s", dest, exc)
            raise SipTransportError(f"connect to {dest[0]}:{dest[1]}") from exc
        link = _StreamLink(self, reader, writer)
        self._register_stream(link, dest)
        return link

    def _register_stream(self, link: _StreamLink, key: Addr) -> None:
        self._streams[key] = link
        self._all_streams.add(link)
        link.task = asyncio.ensure_future(link.run())

    async def _accept_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link = _StreamLink(self, reader, writer)
        self._register_stream(link, link.addr)

    def _forget_stream(self, link: _StreamLink) -> None:
        self._all_streams.discard(link)
        for key, value in list(self._streams.items()):
            if value is link:
                del self._streams[key]

    def _send(self, link: _Link, data: bytes) -> bool:
        if self.outgoing_filter is not None and self.outgoing_filter(data):
            log.debug("outgoing filter dropped %r", data[:40])
            return True
        try:
            link.send(data)
        except OSError as exc:
            log.info("send failed: %s", exc)
            return False
        return True

    # -- running the sans-IO machines ----------------------------------------------------------

    def _keep(self, task: asyncio.Future[object] | asyncio.Task[object]) -> None:
        if isinstance(task, asyncio.Task):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _execute(
        self,
        owner: object,
        link: _Link,
        actions: list[Action],
        fire: Callable[[Timer], list[Action]],
        on_deliver: Callable[[DeliverToTU], None],
        on_failure: Callable[[TimedOut | TransportFailed], None],
        on_terminated: Callable[[], None],
    ) -> None:
        """Carry out *actions* of one machine, in order."""
        ident = id(owner)
        for action in actions:
            if isinstance(action, Send):
                if not self._send(link, action.data):
                    self._execute(
                        owner,
                        link,
                        self._transport_error(owner),
                        fire,
                        on_deliver,
                        on_failure,
                        on_terminated,
                    )
                    return
            elif isinstance(action, StartTimer):
                old = self._timers.pop((ident, action.timer), None)
                if old is not None:
                    old.cancel()

                def fired(timer: Timer = action.timer) -> None:
                    self._timers.pop((ident, timer), None)
                    self._execute(
                        owner, link, fire(timer), fire, on_deliver, on_failure, on_terminated
                    )

                self._timers[(ident, action.timer)] = asyncio.get_running_loop().call_later(
                    action.seconds, fired
                )
            elif isinstance(action, CancelTimer):
                handle = self._timers.pop((ident, action.timer), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, DeliverToTU):
                on_deliver(action)
            elif isinstance(action, TimedOut | TransportFailed):
                on_failure(action)
            elif isinstance(action, Terminated):
                for key in [k for k in self._timers if k[0] == ident]:
                    self._timers.pop(key).cancel()
                on_terminated()

    @staticmethod
    def _transport_error(owner: object) -> list[Action]:
        if isinstance(owner, ClientTransaction | ServerTransaction):
            return owner.transport_error()
        return []

    async def _transact(
        self,
        request: SipRequest,
        dest: Addr,
        timeout: float | None,
        *,
        on_response: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        """Run a client transaction for *request* to its final response."""
        link = await self._link_to(dest)
        txn = ClientTransaction(request, reliable=link.reliable, timers=self.timers)
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

        def deliver(action: DeliverToTU) -> None:
            message = action.message
            if not isinstance(message, SipResponse):
                return
            if on_response is not None:
                on_response(message)
            if message.status >= 200 and not future.done():
                future.set_result(message)

        def failure(action: TimedOut | TransportFailed) -> None:
            if future.done():
                return
            what = f"{request.method} to {dest[0]}:{dest[1]}"
            if isinstance(action, TimedOut):
                future.set_exception(SipTimeout(what))
            else:
                future.set_exception(SipTransportError(what))

        def terminated() -> None:
            if self._clients.get(txn.key) is state:
                del self._clients[txn.key]

        state = _ClientState(txn, link, deliver, failure, terminated)
        self._clients[txn.key] = state
        self._futures[txn.key] = future
        self._run_client(state, txn.start())
        try:
            if timeout is None:
                return await future
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise SipTimeout(f"{request.method} to {dest[0]}:{dest[1]}") from None
        finally:
            self._futures.pop(txn.key, None)

    def _run_client(self, state: _ClientState, actions: list[Action]) -> None:
        self._execute(
            state.txn,
            state.link,
            actions,
            state.txn.timer_fired,
            state.deliver,
            state.failure,
            state.terminated,
        )

    async def _send_in_dialog(
        self, call: Call, request: SipRequest, timeout: float, *, raise_on_error: bool = True
    ) -> SipResponse:
        dest = self._dialog_destination(call.dialog)
        response = await self._transact(request, dest, timeout)
        call.dialog.receive_response(request, response)
        if raise_on_error and response.status >= 300:
            raise SipRequestFailed(response.status, response.reason, response)
        return response

    # -- UAC core: INVITE responses ------------------------------------------------------------

    def _invite_response(self, outgoing: OutgoingCall, response: SipResponse) -> None:
        if response.status < 200:
            outgoing.provisional.append(response)
            outgoing.got_provisional.set()
            return
        if response.status >= 300:
            return
        # §13.2.2.4: every 2xx is ACKed by the UAC core, retransmissions too.
        tag = response.to.tag or ""
        key = (response.call_id, response.from_.tag or "", tag)
        call = self._calls.get(key)
        if call is not None:
            if call._ack_bytes is not None and call._ack_link is not None:
                self._send(call._ack_link, call._ack_bytes)
            return
        try:
            dialog = Dialog.as_uac(outgoing.request, response, secure=self.transport == "tls")
        except ProtocolError as exc:
            log.info("unusable 2xx: %s", exc)
            return
        call = Call(self, dialog, outgoing.request, outgoing=True)
        call.response = response
        call.remote_sdp = response.body
        self._calls[key] = call
        self._ack_2xx(call, outgoing.request, response)
        if outgoing.result.done() or outgoing.cancelled:
            # A 2xx that crossed our CANCEL, or a second 2xx of a fork: ACK and BYE (§15).
            self._keep(asyncio.ensure_future(self._quiet_bye(call)))
            if not outgoing.result.done():
                outgoing.result.set_exception(SipRequestFailed(487, "Request Terminated"))
            return
        call.confirmed.set()
        outgoing.result.set_result(call)

    async def _quiet_bye(self, call: Call) -> None:
        with contextlib.suppress(SecconfError, TimeoutError):
            await call.bye(timeout=5.0)

    def _ack_2xx(self, call: Call, invite: SipRequest, response: SipResponse) -> None:
        ack = call.dialog.create_ack(invite, via=self._new_via())
        call._ack_bytes = bytes(ack)
        dest = self._dialog_destination(call.dialog)
        if self._udp is not None:
            call._ack_link = _UdpLink(self._udp, dest)
            self._send(call._ack_link, call._ack_bytes)
            return

        async def send_ack() -> None:
            link = await self._link_to(dest)
            call._ack_link = link
            if call._ack_bytes is not None:
                self._send(link, call._ack_bytes)

        self._keep(asyncio.ensure_future(send_ack()))

    # -- receiving ----------------------------------------------------------------------------------

    def _receive(self, data: bytes, link: _Link, source: Addr, *, reliable: bool) -> None:
        if self._closed:
            return
        try:
            message = parse_message(data, require_content_length=reliable)
        except ProtocolError as exc:
            log.info("dropping malformed message from %s: %s", source, exc)
            return
        if isinstance(message, SipResponse):
            self._receive_response(message)
        else:
            try:
                self._receive_request(message, link, source)
            except ProtocolError as exc:
                log.info("dropping request from %s: %s", source, exc)

    def _receive_response(self, response: SipResponse) -> None:
        """RFC 3261 §18.1.2 / §17.1.3: to its client transaction, or to the UAC core."""
        try:
            key = client_key(response)
        except ProtocolError:
            return
        state = self._clients.get(key)
        if state is not None:
            self._run_client(state, state.txn.receive(response))
            return
        if 200 <= response.status < 300 and key.method == "INVITE":
            # A 2xx retransmission after the transaction ended: re-ACK (§13.2.2.4).
            call = self._calls.get(
                (response.call_id, response.from_.tag or "", response.to.tag or "")
            )
            if call is not None and call._ack_bytes is not None and call._ack_link is not None:
                self._send(call._ack_link, call._ack_bytes)

    def _receive_request(self, request: SipRequest, link: _Link, source: Addr) -> None:
        if not link.reliable:
            # RFC 3581 §4 / RFC 3261 §18.2.1: record where the request really came from.
            via = request.top_via
            if via.param("rport") is not None or via.host.strip("[]") != source[0]:
                updated = via.with_param("received", source[0])
                if via.param("rport") is not None:
                    updated = updated.with_param("rport", str(source[1]))
                self._replace_top_via(request, str(updated))
        method = request.method.upper()
        key = server_key(request)
        existing = self._servers.get(key)
        if method == "ACK":
            if existing is not None:
                self._run_server(existing, existing.txn.receive(request))
            else:
                self._receive_2xx_ack(request)
            return
        if existing is not None:
            self._run_server(existing, existing.txn.receive(request))
            return
        txn = ServerTransaction(request, reliable=link.reliable, timers=self.timers)
        state = _ServerState(txn, link, source)
        self._servers[key] = state
        self._run_server(state, txn.start())

    @staticmethod
    def _replace_top_via(request: SipRequest, value: str) -> None:
        for index, header in enumerate(request.headers):
            if header.key == "via":
                values = request.get_all("via")
                if len(values) == 1 or "," not in header.value:
                    request.headers[index] = type(header)(header.name, value)
                else:
                    # the top Via is the first element of a combined header
                    rest = header.value.split(",", 1)[1].lstrip()
                    request.headers[index] = type(header)(header.name, f"{value}, {rest}")
                return

    def _run_server(self, state: _ServerState, actions: list[Action]) -> None:
        def deliver(action: DeliverToTU) -> None:
            message = action.message
            if isinstance(message, SipRequest) and message.method.upper() != "ACK":
                state.task = asyncio.ensure_future(self._serve(state, message))
                self._keep(state.task)

        def failure(action: TimedOut | TransportFailed) -> None:
            log.info("server transaction %s: %s", state.txn.key.method, type(action).__name__)

        def terminated() -> None:
            if self._servers.get(state.txn.key) is state:
                del self._servers[state.txn.key]

        self._execute(
            state.txn, state.link, actions, state.txn.timer_fired, deliver, failure, terminated
        )

    def _respond(self, state: _ServerState, response: SipResponse) -> None:
        try:
            actions = state.txn.respond(response)
        except ValueError:
            return  # a final response already went out (e.g. 487 after CANCEL)
        self._run_server(state, actions)

    # -- UAS core ----------------------------------------------------------------------------------

    async def _serve(self, state: _ServerState, request: SipRequest) -> None:
        """The UAS core for one request (RFC 3261 §8.2, §12.2.2)."""
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
            self._respond(state, response)

    async def _call_handler(
        self, handler: Handler | None, incoming: IncomingRequest, default: Answer
    ) -> Answer:
        if handler is None:
            return default
        try:
            return await asyncio.wait_for(handler(incoming), self.handler_timeout)
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
            contact=self.contact if contact and answer.status < 300 else None,
            body=answer.body,
            content_type=content_type,
            extra_headers=answer.headers,
        )

    async def _answer(self, state: _ServerState, request: SipRequest) -> SipResponse | None:
        method = request.method.upper()
        if method == "CANCEL":
            return self._cancel_received(request)
        if request.to.tag is not None:
            return await self._in_dialog(state, request)
        if method == "INVITE":
            return await self._new_call(state, request)
        if method == "OPTIONS":
            return build_response(request, 200, extra_headers=[("Allow", ALLOW)])
        if method in ("SUBSCRIBE", "REFER"):
            return await self._new_subscription(state, request)
        if method == "NOTIFY":
            return self._notify_received(request)
        if method == "BYE":
            return build_response(request, 481)
        return build_response(request, 405, extra_headers=[("Allow", ALLOW)])

    async def _new_call(self, state: _ServerState, request: SipRequest) -> SipResponse | None:
        answer = await self._call_handler(
            self.on_invite, IncomingRequest(request, state.source), Answer(480)
        )
        if state.txn.terminated or (
            state.txn.last_response and state.txn.last_response.status >= 200
        ):
            return None  # cancelled meanwhile
        if not 200 <= answer.status < 300:
            return self._build_answer(
                request, answer, to_tag=new_tag(self.random_bytes), contact=False
            )
        tag = new_tag(self.random_bytes)
        dialog = Dialog.as_uas(
            request, local_tag=tag, local_contact=self.contact, secure=self.transport == "tls"
        )
        call = Call(self, dialog, request, outgoing=False)
        call.local_sdp = answer.body
        self._calls[(dialog.call_id, dialog.local_tag, dialog.remote_tag)] = call
        response = self._build_answer(request, answer, to_tag=tag, contact=True)
        self._respond(state, response)
        self._start_retransmitter(call, state, response)
        return None

    def _start_retransmitter(self, call: Call, state: _ServerState, response: SipResponse) -> None:
        retransmitter = AnswerRetransmitter(
            response, reliable=state.link.reliable, timers=self.timers
        )
        call._retransmitter = retransmitter
        call._invite_pending = True

        def failure(action: TimedOut | TransportFailed) -> None:
            # §13.3.1.4: no ACK within 64*T1: the dialog is confirmed, then ended with BYE.
            log.info("no ACK for our 2xx on %s: hanging up", call.call_id)
            call._invite_pending = False
            if call.dialog.state is not DialogState.TERMINATED:
                self._keep(asyncio.ensure_future(self._quiet_bye(call)))

        self._execute(
            retransmitter,
            state.link,
            retransmitter.start(),
            retransmitter.timer_fired,
            lambda action: None,
            failure,
            lambda: None,
        )

    def _receive_2xx_ack(self, request: SipRequest) -> None:
        key = (request.call_id, request.to.tag or "", request.from_.tag or "")
        call = self._calls.get(key)
        if call is None or call._retransmitter is None:
            return
        if request.cseq.number != call.invite.cseq.number:
            return
        if request.body:
            call.remote_sdp = request.body  # offer in INVITE-less 200/ACK exchange
        retransmitter = call._retransmitter
        call._retransmitter = None
        call._invite_pending = False
        self._execute(
            retransmitter,
            _NullLink(),
            retransmitter.ack_received(),
            retransmitter.timer_fired,
            lambda a: None,
            lambda a: None,
            lambda: None,
        )
        if not call.confirmed.is_set():
            call.confirmed.set()
            self._incoming_calls.put_nowait(call)

    def _cancel_received(self, cancel: SipRequest) -> SipResponse:
        """RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE if still pending."""
        invite_key = TransactionKey(server_key(cancel).branch, "INVITE", server_key(cancel).sent_by)
        target = self._servers.get(invite_key)
        if target is None:
            return build_response(cancel, 481)
        last = target.txn.last_response
        if last is None or last.status < 200:
            if target.task is not None:
                target.task.cancel()
            self._respond(
                target, build_response(target.txn.request, 487, to_tag=new_tag(self.random_bytes))
            )
        return build_response(cancel, 200)

    async def _in_dialog(self, state: _ServerState, request: SipRequest) -> SipResponse | None:
        method = request.method.upper()
        key = (request.call_id, request.to.tag or "", request.from_.tag or "")
        call = self._calls.get(key)
        if method == "NOTIFY":
            return self._notify_received(request)
        dialog = call.dialog if call is not None else self._find_server_dialog(request)
        if dialog is None:
            return build_response(request, 481)
        dialog.receive_request(request)  # 481/500 raised as ProtocolError
        if call is None:
            if method == "SUBSCRIBE":  # refresh of a subscription of ours
                return build_response(
                    request, 200, extra_headers=[("Expires", request.get("expires") or "600")]
                )
            return build_response(request, 200 if method != "INVITE" else 488)
        if method == "BYE":
            self._end_call(call, by_remote=True)
            return build_response(request, 200)
        if method == "INVITE":
            if call._invite_pending:
                return build_response(request, 491)  # §14.2 glare
            answer = await self._call_handler(
                self.on_invite, IncomingRequest(request, state.source, call), Answer(488)
            )
            if not 200 <= answer.status < 300:
                return self._build_answer(request, answer, to_tag=None, contact=False)
            call.invite = request
            if request.body:
                call.remote_sdp = request.body
            call.local_sdp = answer.body
            response = self._build_answer(request, answer, to_tag=None, contact=True)
            self._respond(state, response)
            self._start_retransmitter(call, state, response)
            return None
        if method == "REFER":
            return await self._refer_received(state, request, call.dialog, call)
        if method in ("OPTIONS", "INFO", "UPDATE"):
            return build_response(request, 200)
        return build_response(request, 405, extra_headers=[("Allow", ALLOW)])

    def _find_server_dialog(self, request: SipRequest) -> Dialog | None:
        for subscription in self._server_subscriptions:
            if subscription.dialog.matches(request):
                return subscription.dialog
        return None

    def _notify_received(self, request: SipRequest) -> SipResponse:
        """NOTIFY for a subscription of ours or REFER's implicit one (RFC 6665 §4.1.3)."""
        local_tag = request.to.tag or ""
        subscription = self._subscriptions.get((request.call_id, local_tag))
        if subscription is not None:
            if subscription.dialog is None and request.from_.tag:
                # RFC 6665 §4.1.2.4: the NOTIFY may come before the 2xx; it creates the dialog.
                with contextlib.suppress(ProtocolError):
                    subscription.dialog = Dialog.as_uas(
                        request, local_tag=local_tag, local_contact=self.contact
                    )
                    subscription.dialog.local_seq = subscription.request.cseq.number
            subscription.notifications.put_nowait(request)
            return build_response(request, 200)
        for (call_id, local, _remote), call in self._calls.items():
            if call_id == request.call_id and local == local_tag:
                call.notifications.put_nowait(request)
                return build_response(request, 200)
        return build_response(request, 481)

    async def _new_subscription(
        self, state: _ServerState, request: SipRequest
    ) -> SipResponse | None:
        method = request.method.upper()
        return (
            await self._refer_received(state, request, None, None)
            if method == "REFER"
            else await self._subscribe_received(state, request)
        )

    async def _subscribe_received(
        self, state: _ServerState, request: SipRequest
    ) -> SipResponse | None:
        answer = await self._call_handler(
            self.on_subscribe, IncomingRequest(request, state.source), Answer(489)
        )
        if not 200 <= answer.status < 300:
            return self._build_answer(
                request, answer, to_tag=new_tag(self.random_bytes), contact=False
            )
        tag = new_tag(self.random_bytes)
        dialog = Dialog.as_uas(request, local_tag=tag, local_contact=self.contact)
        event = request.get("event") or ""
        subscription = ServerSubscription(self, dialog, event)
        self._server_subscriptions.append(subscription)
        expires = request.get("expires") or "600"
        answer = Answer(
            answer.status,
            answer.body,
            answer.content_type,
            (*answer.headers, ("Expires", expires)),
            answer.reason,
        )
        self._respond(state, self._build_answer(request, answer, to_tag=tag, contact=True))
        # RFC 6665 §4.2.1.2: a NOTIFY follows the 2xx at once.
        self._keep(
            asyncio.ensure_future(
                self._first_notify(subscription, b"", None, f"active;expires={expires}")
            )
        )
        return None

    async def _refer_received(
        self, state: _ServerState, request: SipRequest, dialog: Dialog | None, call: Call | None
    ) -> SipResponse | None:
        """RFC 3515 §2.4.2: 202, then a NOTIFY with a message/sipfrag of the progress."""
        if not request.get("refer-to"):
            return build_response(request, 400, "Missing Refer-To")
        answer = await self._call_handler(
            self.on_refer, IncomingRequest(request, state.source, call), Answer(202)
        )
        tag = None
        if dialog is None:
            tag = new_tag(self.random_bytes)
            if not 200 <= answer.status < 300:
                return self._build_answer(request, answer, to_tag=tag, contact=False)
            dialog = Dialog.as_uas(request, local_tag=tag, local_contact=self.contact)
        elif not 200 <= answer.status < 300:
            return self._build_answer(request, answer, to_tag=None, contact=False)
        subscription = ServerSubscription(self, dialog, "refer")
        self._server_subscriptions.append(subscription)
        self._respond(state, self._build_answer(request, answer, to_tag=tag, contact=True))
        self._keep(
            asyncio.ensure_future(
                self._first_notify(
                    subscription,
                    sipfrag(100, "Trying"),
                    "message/sipfrag;version=2.0",
                    "active;expires=60",
                )
            )
        )
        return None

    async def _first_notify(
        self, subscription: ServerSubscription, body: bytes, content_type: str | None, state: str
    ) -> None:
        with contextlib.suppress(SecconfError, TimeoutError):
            await subscription.notify(body, content_type=content_type, state=state, timeout=10.0)

    def _end_call(self, call: Call, *, by_remote: bool) -> None:
        call.dialog.state = DialogState.TERMINATED
        call.ended_by_remote = by_remote
        call.ended.set()
        if call._retransmitter is not None:
            retransmitter = call._retransmitter
            call._retransmitter = None
            self._execute(
                retransmitter,
                _NullLink(),
                retransmitter.ack_received(),
                retransmitter.timer_fired,
                lambda a: None,
                lambda a: None,
                lambda: None,
            )


def _digest_challenge(response: SipResponse, status: int) -> digest.DigestChallenge | None:
    """The best Digest challenge of a 401/407 (SHA-256 before MD5), or ``None``."""
    name = "proxy-authenticate" if status == 407 else "www-authenticate"
    found: list[digest.DigestChallenge] = []
    for value in response.get_all(name):
        try:
            found.append(digest.parse_challenge(value))
        except SecconfError:
            continue
    usable = [c for c in found if c.algorithm in digest.ALGORITHMS and "auth" in c.qop]
    order = list(digest.ALGORITHMS)
    usable.sort(key=lambda c: order.index(c.algorithm))
    return usable[0] if usable else None


class _NullLink(_Link):
    def send(self, data: bytes) -> None:
        return None


def reason_phrase(status: int) -> str:
    """The default reason phrase for *status* (RFC 3261 §21)."""
    return REASON_PHRASES.get(status, "")
