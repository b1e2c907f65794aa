"""Free loopback ports as the phone programs bind them (dual-stack UDP, SIP+TLS pairs, RTP pairs)."""

from __future__ import annotations

import contextlib
import socket

__all__ = ["HOST", "free_rtp_port", "free_sip_port", "free_tcp_port", "free_udp_port"]

#: The loopback address every phone listens on.
HOST = "127.0.0.1"


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 and on the IPv6 wildcard (linphone binds ``[::]``).

    A dual-stack ``[::]`` socket holds the port for both families.
    """
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


def free_sip_port() -> int:
    """A port free for UDP (dual stack) and, with the next one, for TCP on 127.0.0.1.

    baresip 1.0.0 listens on UDP and TCP at ``sip_listen`` and on TCP port + 1 (SIP/TLS).
    """
    for _ in range(100):
        port = free_udp_port()
        if port >= 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 1):
                    tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    tcp.bind((HOST, candidate))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def free_rtp_port() -> int:
    """An even UDP port whose odd neighbour (RTCP without rtcp-mux) is free too."""
    for _ in range(200):
        port = free_udp_port()
        if port % 2 or port > 65000:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 1):
                    sock = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    sock.bind(("::", candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free even/odd UDP port pair")


def free_tcp_port(exclude: tuple[int, ...] = ()) -> int:
    """A TCP port free on 127.0.0.1 (a TLS listener, a control socket), not one of *exclude*."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port not in exclude:
            return port
    raise RuntimeError("no free TCP port")
