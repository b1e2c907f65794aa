"""The relay's UDP sockets: binding them from the port range, and reading them in batches.

A leg's side without rtcp-mux needs an even RTP port and the odd one above it
(RFC 3550 §11); :class:`PortAllocator` finds such pairs, in the configured
range or from the kernel.  :func:`drain` is the read half of the packet path
(it is called once per readiness event, not per packet).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterable

from secconf.core.errors import ServiceUnavailable
from secconf.srtp import RECV_SIZE

__all__ = ["BATCH", "MAX_PACKET", "PortAllocator", "drain"]

#: Datagrams read per readiness event before yielding to the loop.
BATCH = 64
#: Largest datagram relayed: pylibsrtp's buffer (and an Ethernet MTU).
MAX_PACKET = 1500
_SOCKET_BUFFER = 1 << 20
#: Kernel-chosen ports tried before giving up on an even/odd pair.
_PAIR_ATTEMPTS = 64


class PortAllocator:
    """Binds UDP sockets from a port range (0, 0: the kernel picks)."""

    def __init__(self, port_min: int, port_max: int) -> None:
        self.port_min, self.port_max = port_min, port_max
        self._next = port_min

    def bind(self, host: str, port: int | None = None) -> socket.socket:
        """A non-blocking UDP socket on *host*; on *port* if given (restart), else from the range."""
        candidates: Iterable[int]
        if port is not None:
            candidates = (port,)
        elif self.port_min == 0:
            candidates = (0,)
        else:
            size = self.port_max - self.port_min + 1
            start = self._next
            candidates = (self.port_min + (start - self.port_min + i) % size for i in range(size))
        for candidate in candidates:
            sock = _bind_one(host, candidate, in_use_ok=port is None)
            if sock is None:
                continue
            if self.port_min and port is None:
                self._next = candidate + 1 if candidate < self.port_max else self.port_min
            return sock
        raise ServiceUnavailable("no free media port in the configured range")

    def bind_pair(
        self, host: str, port: int | None = None, rtcp_port: int | None = None
    ) -> tuple[socket.socket, socket.socket]:
        """RTP and RTCP sockets on *host*: an even port and the odd one above it (RFC 3550 §11).

        With *port* (restart) exactly *port* and *rtcp_port* (default port + 1).
        """
        if port is not None:
            rtp_sock = self.bind(host, port)
            try:
                return rtp_sock, self.bind(host, port + 1 if rtcp_port is None else rtcp_port)
            except BaseException:
                rtp_sock.close()
                raise
        if self.port_min == 0:
            for _ in range(_PAIR_ATTEMPTS):
                first = self.bind(host)
                got = int(first.getsockname()[1])
                partner = got + 1 if got % 2 == 0 else got - 1
                try:
                    second = _bind_one(host, partner, in_use_ok=True)
                except BaseException:
                    first.close()
                    raise
                if second is None:
                    first.close()
                    continue
                return (first, second) if got % 2 == 0 else (second, first)
            raise ServiceUnavailable("no free even/odd media port pair")
        low = self.port_min + (self.port_min & 1)
        pairs = (self.port_max - low + 1) // 2
        start = max(low, self._next + (self._next & 1))
        for i in range(pairs):
            even = low + ((start - low) // 2 + i) % pairs * 2
            even_sock = _bind_one(host, even, in_use_ok=True)
            if even_sock is None:
                continue
            try:
                odd_sock = _bind_one(host, even + 1, in_use_ok=True)
            except BaseException:
                even_sock.close()
                raise
            if odd_sock is None:
                even_sock.close()
                continue
            self._next = even + 2 if even + 2 < self.port_max else self.port_min
            return even_sock, odd_sock
        raise ServiceUnavailable("no free even/odd media port pair in the configured range")


def _bind_one(host: str, port: int, *, in_use_ok: bool) -> socket.socket | None:
    """A non-blocking UDP socket bound to (*host*, *port*); None if in use and *in_use_ok*."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE and in_use_ok:
            return None
        raise ServiceUnavailable(f"cannot bind a media port ({exc.strerror})") from None
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    return sock


def drain(sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
    """Read up to BATCH datagrams from a ready non-blocking *sock* into *handle*.

    Reading in batches keeps the loop's per-readiness overhead off each packet;
    RECV_SIZE (not asyncio's 256 KiB) keeps each read from allocating big buffers.
    """
    recv = sock.recvfrom
    for _ in range(BATCH):
        try:
            data, addr = recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # ICMP errors surface here; the next read is fine
        handle(data, addr)
