"""The transaction layer of one user agent (RFC 3261 §17) on the sans-IO machines.

Client transactions run a request to its final response (retransmitting
over UDP, Timers A..K in the machine); server transactions absorb
retransmitted requests and repeat our last response.  Received messages
are parsed and matched here (§17.1.3, §17.2.3); what no transaction claims
goes up to the transaction user: new requests, an ACK for a 2xx, a 2xx
retransmitted after its INVITE transaction ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from secconf.core.errors import ProtocolError
from secconf.core.sip.message import SipRequest, SipResponse, parse_message
from secconf.core.sip.transaction import (
    Action,
    ClientTransaction,
    DeliverToTU,
    ServerTransaction,
    TimedOut,
    TimerConfig,
    TransactionKey,
    TransportFailed,
    client_key,
    server_key,
)

from .common import Addr
from .errors import SipTimeout, SipTransportError
from .runner import MachineRunner
from .transport import Link, TransportLayer

__all__ = ["ServerState", "TransactionLayer"]

log = logging.getLogger("secconf.sip")


@dataclass(eq=False)
class _ClientState:
    txn: ClientTransaction
    link: Link
    deliver: Callable[[DeliverToTU], None]
    failure: Callable[[TimedOut | TransportFailed], None]
    terminated: Callable[[], None]


@dataclass(eq=False)
class ServerState:
    """A server transaction, the link its responses go on, and the task answering it."""

    txn: ServerTransaction
    link: Link
    source: Addr
    task: asyncio.Task[None] | None = None


class TransactionLayer:
    """Client and server transactions of one user agent, and the matching of what arrives.

    *on_request* gets each new request (not ACK) once, *on_ack* an ACK no
    transaction matches (the ACK for a 2xx, §17.1.1.3), *on_stray_2xx* an
    INVITE 2xx whose client transaction is gone (§13.2.2.4).
    """

    def __init__(
        self,
        transport: TransportLayer,
        runner: MachineRunner,
        timers: TimerConfig,
        *,
        on_request: Callable[[ServerState, SipRequest], None],
        on_ack: Callable[[SipRequest], None],
        on_stray_2xx: Callable[[SipResponse], None],
    ) -> None:
        self._transport = transport
        self._runner = runner
        self.timers = timers
        self._on_request = on_request
        self._on_ack = on_ack
        self._on_stray_2xx = on_stray_2xx
        self._clients: dict[TransactionKey, _ClientState] = {}
        self._futures: dict[TransactionKey, asyncio.Future[SipResponse]] = {}
        self._servers: dict[TransactionKey, ServerState] = {}
        self.closed = False

    def close(self) -> None:
        """Ignore what arrives from now on; fail every request still waiting."""
        self.closed = True
        self._runner.cancel_all()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(SipTransportError("user agent closed"))
                with contextlib.suppress(BaseException):
                    future.exception()

    # -- client transactions ----------------------------------------------------------

    async def transact(
        self,
        request: SipRequest,
        dest: Addr,
        timeout: float | None,
        *,
        on_response: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        """Run a client transaction for *request* to its final response.

        *on_response* sees every response, provisional ones too.  Raises
        :class:`SipTimeout` (Timer B/F or *timeout*) or :class:`SipTransportError`.
        """
        link = await self._transport.link_to(dest)
        txn = ClientTransaction(request, reliable=link.reliable, timers=self.timers)
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        what = f"{request.method} to {dest[0]}:{dest[1]}"

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
            raise SipTimeout(what) from None
        finally:
            self._futures.pop(txn.key, None)

    def _run_client(self, state: _ClientState, actions: list[Action]) -> None:
        self._runner.run(
            state.txn,
            state.link,
            actions,
            state.txn.timer_fired,
            state.deliver,
            state.failure,
            state.terminated,
        )

    # -- server transactions ----------------------------------------------------------

    def respond(self, state: ServerState, response: SipResponse) -> None:
        """Send *response* through the server transaction of *state*."""
        try:
            actions = state.txn.respond(response)
        except ValueError:
            return  # a final response already went out (e.g. 487 after CANCEL)
        self._run_server(state, actions)

    def cancelled_invite(self, cancel: SipRequest) -> ServerState | None:
        """The INVITE server transaction *cancel* matches (RFC 3261 §9.2), if any."""
        key = server_key(cancel)
        return self._servers.get(TransactionKey(key.branch, "INVITE", key.sent_by))

    def _run_server(self, state: ServerState, actions: list[Action]) -> None:
        def deliver(action: DeliverToTU) -> None:
            message = action.message
            if isinstance(message, SipRequest) and message.method.upper() != "ACK":
                self._on_request(state, message)

        def failure(action: TimedOut | TransportFailed) -> None:
            log.info("server transaction %s: %s", state.txn.key.method, type(action).__name__)

        def terminated() -> None:
            if self._servers.get(state.txn.key) is state:
                del self._servers[state.txn.key]

        self._runner.run(
            state.txn, state.link, actions, state.txn.timer_fired, deliver, failure, terminated
        )

    # -- receiving ----------------------------------------------------------------------

    def receive(self, data: bytes, link: Link, source: Addr, reliable: bool) -> None:
        """One datagram or stream frame from *source* (RFC 3261 §18.1.2, §18.2.1)."""
        if self.closed:
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
            self._on_stray_2xx(response)

    def _receive_request(self, request: SipRequest, link: Link, source: Addr) -> None:
        if not link.reliable:
            # RFC 3581 §4 / RFC 3261 §18.2.1: record where the request really came from.
            via = request.top_via
            if via.param("rport") is not None or via.host.strip("[]") != source[0]:
                updated = via.with_param("received", source[0])
                if via.param("rport") is not None:
                    updated = updated.with_param("rport", str(source[1]))
                _replace_top_via(request, str(updated))
        method = request.method.upper()
        key = server_key(request)
        existing = self._servers.get(key)
        if method == "ACK":
            if existing is not None:
                self._run_server(existing, existing.txn.receive(request))
            else:
                self._on_ack(request)
            return
        if existing is not None:
            self._run_server(existing, existing.txn.receive(request))
            return
        txn = ServerTransaction(request, reliable=link.reliable, timers=self.timers)
        state = ServerState(txn, link, source)
        self._servers[key] = state
        self._run_server(state, txn.start())


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
