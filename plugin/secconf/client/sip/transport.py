"""Moving SIP messages: the UDP socket, TLS connections, and where a request goes.

UDP is one socket (RFC 3581 rport on both sides).  TLS runs over TCP with
the Content-Length framer (RFC 3261 §18.3): responses go back on the
connection the request came in (§18.2.2), requests on a pooled connection
per peer.  No DNS SRV/NAPTR (RFC 3263): hosts are IP literals or names for
getaddrinfo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Literal, cast

from secconf.core.errors import ProtocolError
from secconf.core.sip.dialog import Dialog
from secconf.core.sip.headers import Address, RandomBytes, Via, new_branch
from secconf.core.sip.message import SipRequest, StreamFramer
from secconf.core.sip.uri import SipUri

from .common import Addr
from .errors import SipTransportError

__all__ = ["Link", "NullLink", "TransportLayer"]

log = logging.getLogger("secconf.sip")

#: What the transport hands every message it receives to: (bytes, link, source, reliable).
Deliver = Callable[[bytes, "Link", Addr, bool], None]


class Link:
    """Sends bytes towards one peer (a UDP address, or a stream connection)."""

    reliable: bool = False

    def send(self, data: bytes) -> None:
        raise NotImplementedError


class NullLink(Link):
    """Where a machine's output goes once nothing more may be sent (an ACKed 2xx)."""

    def send(self, data: bytes) -> None:
        return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        self.deliver(data, _UdpLink(self, source), source, False)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _UdpLink(Link):
    def __init__(self, protocol: _UdpProtocol, addr: Addr) -> None:
        self.protocol = protocol
        self.addr = addr

    def send(self, data: bytes) -> None:
        if self.protocol.transport is None or self.protocol.transport.is_closing():
            raise OSError("UDP transport closed")
        self.protocol.transport.sendto(data, self.addr)


class _StreamLink(Link):
    reliable = True

    def __init__(
        self,
        layer: TransportLayer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.layer = layer
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
                    self.layer.deliver(frame, self, self.addr, True)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("stream from %s ended: %s", self.addr, exc)
        finally:
            self.writer.close()
            self.layer.forget_stream(self)


class TransportLayer:
    """RFC 3261 §18 for one user agent: sockets, connections, sending, destinations.

    ``outgoing_filter`` (testing) sees every datagram/segment before it is
    sent and drops it when it returns ``True``.
    """

    def __init__(
        self,
        kind: Literal["udp", "tls"],
        local_host: str,
        *,
        deliver: Deliver,
        random_bytes: RandomBytes,
        ssl_context: ssl.SSLContext | None,
        client_ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.kind = kind
        self.local_host = local_host
        self.local_port = 0
        self.deliver = deliver
        self.random_bytes = random_bytes
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context
        self.outgoing_filter: Callable[[bytes], bool] | None = None
        self._udp: _UdpProtocol | None = None
        self._server: asyncio.Server | None = None
        self._streams: dict[Addr, _StreamLink] = {}
        self._all_streams: set[_StreamLink] = set()

    async def bind(self, port: int) -> None:
        """Open the UDP socket or the TLS listener on *port* (0: any free port)."""
        if self.kind == "udp":
            udp_transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _UdpProtocol(self.deliver), local_addr=(self.local_host, port)
            )
            self._udp = protocol
            self.local_port = int(udp_transport.get_extra_info("sockname")[1])
        else:
            self._server = await asyncio.start_server(
                self._accept_stream, self.local_host, port, ssl=self.ssl_context
            )
            self.local_port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
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

    # -- our address ------------------------------------------------------------------

    @property
    def host_for_uri(self) -> str:
        return f"[{self.local_host}]" if ":" in self.local_host else self.local_host

    def new_via(self) -> Via:
        """A Via with our sent-by and a fresh branch (RFC 3261 §8.1.1.7, §18.1.1)."""
        return Via.build(
            self.kind.upper(),
            self.host_for_uri,
            self.local_port,
            new_branch(self.random_bytes),
        )

    # -- destinations -----------------------------------------------------------------

    def uri_destination(self, uri_text: str) -> Addr:
        uri = SipUri.parse(uri_text)
        maddr = uri.param("maddr")
        host = maddr or uri.bare_host
        port = uri.port or (5061 if self.kind == "tls" or uri.secure else 5060)
        return host, port

    def request_destination(self, request: SipRequest) -> Addr:
        """RFC 3261 §8.1.2: the first Route if any (loose routing), else the Request-URI."""
        routes = request.get_all("route")
        if routes:
            return self.uri_destination(Address.parse(routes[0]).uri)
        return self.uri_destination(request.uri)

    def dialog_destination(self, dialog: Dialog) -> Addr:
        if dialog.route_set:
            return self.uri_destination(Address.parse(dialog.route_set[0]).uri)
        return self.uri_destination(dialog.remote_target)

    # -- links and sending --------------------------------------------------------------

    def udp_link(self, dest: Addr) -> Link | None:
        """A link to *dest* over our UDP socket, at once; ``None`` on TLS."""
        return _UdpLink(self._udp, dest) if self._udp is not None else None

    async def link_to(self, dest: Addr) -> Link:
        """A link to *dest*: the UDP socket, or a pooled (or new) TLS connection."""
        if self.kind == "udp":
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

    def send(self, link: Link, data: bytes) -> bool:
        """Send *data* on *link*; ``False`` if the transport failed (§8.1.3.1)."""
        if self.outgoing_filter is not None and self.outgoing_filter(data):
            log.debug("outgoing filter dropped %r", data[:40])
            return True
        try:
            link.send(data)
        except OSError as exc:
            log.info("send failed: %s", exc)
            return False
        return True

    def _register_stream(self, link: _StreamLink, key: Addr) -> None:
        self._streams[key] = link
        self._all_streams.add(link)
        link.task = asyncio.ensure_future(link.run())

    async def _accept_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link = _StreamLink(self, reader, writer)
        self._register_stream(link, link.addr)

    def forget_stream(self, link: _StreamLink) -> None:
        self._all_streams.discard(link)
        for key, value in list(self._streams.items()):
            if value is link:
                del self._streams[key]
