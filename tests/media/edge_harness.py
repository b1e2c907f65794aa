"""Test harness for the media edge: an in-process edge with its real HTTP API, a fake Asterisk.

The fake "Asterisk" is the only stand-in allowed here: a loopback RTP peer per
leg (plain RTP, or SRTP with its own key), which either forwards each
participant's audio to every other channel (a mixer without the mixing) or
generates its own 50 packets/s stream per channel.  Participants are real
:class:`~secconf.client.media.SrtpEndpoint`\\ s or raw sockets with pylibsrtp.

Legs without rtcp-mux: the fake Asterisk's channel then has an RTCP socket on
its RTP port + 1 (RFC 3550 §11), and a participant is an SrtpEndpoint for RTP
(sending no RTCP itself) plus an :class:`RtcpPort`, a second socket that sends
the endpoint's own reports (:meth:`SrtpEndpoint.build_rtcp`) as SRTCP and
decrypts what the edge sends there.  :class:`RedisLink` is a TCP relay in front
of the real Redis that can be cut and restored (Redis down, its data kept).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pylibsrtp

from secconf.client.media import KeyMaterial, SrtpEndpoint
from secconf.core.edge import VerifyPolicy
from secconf.core.g711 import ToneGenerator
from secconf.media.config import EdgeConfig, RedisSettings
from secconf.media.keys import SrtpKey, session
from secconf.media.server import Edge

HOST = "127.0.0.1"
SUITE = "AES_CM_128_HMAC_SHA1_80"
TOKEN = "test-token-" + "x" * 16


def new_key(suite: str = SUITE) -> SrtpKey:
    return SrtpKey.generate(suite, os.urandom)


def material(key: SrtpKey) -> KeyMaterial:
    return (key.suite, key.key, key.salt)


def key_json(key: SrtpKey) -> dict[str, str]:
    return key.to_json()


async def settle(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def edge_config(**overrides: Any) -> EdgeConfig:
    values: dict[str, Any] = {
        "port": 0,
        "grace": 1.0,
        "tick": 0.05,
        "verify": VerifyPolicy(settle=0.3, deadline=5.0, min_packets=10),
    }
    values.update(overrides)
    return EdgeConfig(**values)


def redis_settings(url: str, kek_file: Any, prefix: str = "edgetest") -> RedisSettings:
    return RedisSettings(url=url, timeout=0.5, prefix=prefix, kek_file=kek_file, kek_id="kek-1")


class EdgeUnderTest:
    """An edge with its API on a free loopback port and an authenticated HTTP client."""

    def __init__(self, edge: Edge, url: str) -> None:
        self.edge = edge
        self.url = url
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=5.0,
            trust_env=False,
        )

    @classmethod
    async def start(cls, config: EdgeConfig | None = None) -> EdgeUnderTest:
        edge = await Edge.create(config or edge_config(), token=TOKEN)
        host, port = await edge.start_api()
        return cls(edge, f"http://{host}:{port}")

    async def close(self) -> None:
        await self.http.aclose()
        await self.edge.close()

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.http.request(method, path, json=body)
        assert response.status_code == status, (response.status_code, response.text)
        return response.json()

    async def put_epoch(self, conference: str, epoch: int, key: SrtpKey) -> None:
        await self.call("PUT", f"/v1/conferences/{conference}/epochs/{epoch}", key_json(key), 201)

    async def leg(self, conference: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "POST", "/v1/legs", {"conference": conference, **body}, 201
        )
        return result

    async def conference(self, conference: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"/v1/conferences/{conference}")
        return result


@dataclass
class Channel:
    """Asterisk's side of one leg."""

    leg: str
    sock: socket.socket
    edge_addr: tuple[str, int]
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(15))
    timestamp: int = field(default_factory=lambda: secrets.randbits(31))
    tx: pylibsrtp.Session | None = None  # SRTP internal leg: Asterisk's key
    rx: pylibsrtp.Session | None = None  # ... and the edge's
    received: list[tuple[int, int, bytes]] = field(default_factory=list)  # (ssrc, seq, payload)
    received_rtcp: int = 0  # RTCP on the RTP socket (rtcp-mux)
    sent: int = 0
    rtcp_sock: socket.socket | None = None  # internal side without rtcp-mux
    rtcp_edge_addr: tuple[str, int] | None = None
    rtcp: list[bytes] = field(default_factory=list)  # plain RTCP on the RTCP socket
    rtcp_errors: int = 0

    def send_rtcp(self, compound: bytes) -> None:
        """Asterisk's RTCP: from its RTCP socket to the edge's (or muxed on the RTP ones)."""
        packet = compound if self.tx is None else self.tx.protect_rtcp(compound)
        if self.rtcp_sock is not None and self.rtcp_edge_addr is not None:
            self.rtcp_sock.sendto(packet, self.rtcp_edge_addr)
        else:
            self.sock.sendto(packet, self.edge_addr)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def send(self, payload: bytes, *, ssrc: int | None = None) -> None:
        header = bytes([0x80, 0]) + self.seq.to_bytes(2, "big")
        header += self.timestamp.to_bytes(4, "big") + (ssrc or self.ssrc).to_bytes(4, "big")
        packet = header + payload
        if self.tx is not None:
            packet = self.tx.protect(packet)
        self.sock.sendto(packet, self.edge_addr)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF
        self.sent += 1


class FakeAsterisk:
    """Loopback RTP peer for the edge's internal legs (see module doc)."""

    def __init__(self, *, forward: bool = True) -> None:
        self.forward = forward
        self.channels: dict[str, Channel] = {}
        self.loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []

    async def attach(self, edge: EdgeUnderTest, answer: dict[str, Any]) -> Channel:
        """A channel for the leg in *answer* (POST /v1/legs); tells the edge where it is.

        An internal side without rtcp-mux gets an RTCP socket on the RTP port + 1,
        and the edge is told only the RTP port (the default RTCP address).
        """
        internal = answer["internal"]
        rtcp_sock = None
        if internal.get("rtcp_mux", True):
            sock = udp_socket()
        else:
            sock, rtcp_sock = port_pair()
        channel = Channel(answer["leg"], sock, (internal["host"], internal["port"]))
        if rtcp_sock is not None:
            channel.rtcp_sock = rtcp_sock
            channel.rtcp_edge_addr = (internal["host"], internal["rtcp_port"])
            self.loop.add_reader(rtcp_sock.fileno(), self._rtcp_readable, channel)
        body: dict[str, Any] = {"host": HOST, "port": channel.address[1]}
        if internal["mode"] == "srtp":
            own = new_key()
            channel.tx = session(own, inbound=False)
            channel.rx = session(SrtpKey.from_json(internal["edge_key"], "edge"), inbound=True)
            body["asterisk_key"] = key_json(own)
        await edge.call("PUT", f"/v1/legs/{answer['leg']}/internal-remote", body)
        self.channels[channel.leg] = channel
        self.loop.add_reader(sock.fileno(), self._readable, channel)
        return channel

    def _readable(self, channel: Channel) -> None:
        while True:
            try:
                data = channel.sock.recv(4096)
            except (BlockingIOError, OSError):
                return
            if 64 <= data[1] & 0x7F <= 95:
                channel.received_rtcp += 1
                continue
            if channel.rx is not None:
                try:
                    data = channel.rx.unprotect(data)
                except pylibsrtp.Error:
                    continue
            ssrc = int.from_bytes(data[8:12], "big")
            seq = int.from_bytes(data[2:4], "big")
            channel.received.append((ssrc, seq, data[12:]))
            if self.forward:
                for other in self.channels.values():
                    if other is not channel:
                        other.send(data[12:])

    def _rtcp_readable(self, channel: Channel) -> None:
        sock = channel.rtcp_sock
        while sock is not None:
            try:
                data = sock.recv(4096)
            except (BlockingIOError, OSError):
                return
            if channel.rx is not None:
                try:
                    data = channel.rx.unprotect_rtcp(data)
                except pylibsrtp.Error:
                    channel.rtcp_errors += 1
                    continue
            channel.rtcp.append(data)

    def generate(self, leg: str, seconds: float, *, payload: bytes | None = None) -> None:
        """Send a 50 packets/s stream to *leg* for *seconds* (absolute schedule)."""
        self._tasks.append(self.loop.create_task(self._generate(leg, seconds, payload)))

    async def _generate(self, leg: str, seconds: float, payload: bytes | None) -> None:
        channel = self.channels[leg]
        tone = ToneGenerator(440)
        start = self.loop.time()
        for index in range(int(seconds * 50)):
            delay = start + index * 0.02 - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            channel.send(payload if payload is not None else tone.frame(160))

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for channel in self.channels.values():
            for sock in (channel.sock, channel.rtcp_sock):
                if sock is not None:
                    self.loop.remove_reader(sock.fileno())
                    sock.close()


class RawParticipant:
    """A participant socket that keeps every raw datagram (to look at the ciphertext)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.datagrams: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _readable(self) -> None:
        while True:
            try:
                self.datagrams.append(self.sock.recv(4096))
            except (BlockingIOError, OSError):
                return

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def rtp_packet(ssrc: int, seq: int, payload: bytes, timestamp: int = 0) -> bytes:
    return (
        bytes([0x80, 0])
        + seq.to_bytes(2, "big")
        + timestamp.to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


async def participant(
    edge_answer: dict[str, Any], tx: SrtpKey, rx: SrtpKey, **kw: Any
) -> SrtpEndpoint:
    """An SrtpEndpoint wired to the leg in *edge_answer*."""
    endpoint = await SrtpEndpoint.open(HOST, **kw)
    part = edge_answer["participant"]
    endpoint.set_remote((part["host"], part["port"]))
    endpoint.set_keys(tx=material(tx), rx=material(rx))
    return endpoint


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def join(
    edge: EdgeUnderTest,
    asterisk: FakeAsterisk,
    conference: str,
    *,
    tx: SrtpKey,
    rx: SrtpKey,
    rtcp_interval: float | None = None,
    **body: Any,
) -> tuple[dict[str, Any], SrtpEndpoint]:
    """A participant the way signalling sets it up: its SDP address known to the edge at once."""
    endpoint = await SrtpEndpoint.open(HOST, rtcp_interval=rtcp_interval)
    remote = {"host": HOST, "port": endpoint.local_address[1]}
    answer = await edge.leg(conference, participant_remote=remote, **body)
    part = answer["participant"]
    endpoint.set_remote((part["host"], part["port"]))
    endpoint.set_keys(tx=material(tx), rx=material(rx))
    await asterisk.attach(edge, answer)
    return answer, endpoint


def udp_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def port_pair() -> tuple[socket.socket, socket.socket]:
    """Loopback sockets on an even port and the odd one above it (RTP, RTCP)."""
    for _ in range(64):
        first = udp_socket()
        port = first.getsockname()[1]
        if port % 2:
            first.close()
            continue
        try:
            return first, udp_socket(port + 1)
        except OSError:
            first.close()
    raise RuntimeError("no free even/odd port pair")


class RtcpPort:
    """A non-mux participant's RTCP socket: SRTCP out under *tx*, in under *rx* (see module doc).

    *edge*: the edge's participant RTCP address (``rtcp_port`` of the leg answer).
    """

    def __init__(self, sock: socket.socket, edge: tuple[str, int], tx: SrtpKey, rx: SrtpKey):
        self.sock = sock
        self.edge = edge
        self.tx_key = tx
        self.tx = session(tx, inbound=False)
        self.rx = session(rx, inbound=True)
        self.received: list[bytes] = []  # plain RTCP compounds from the edge
        self.errors = 0  # datagrams that did not decrypt
        self.sent = 0
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, OSError):
                return
            try:
                self.received.append(self.rx.unprotect_rtcp(data))
            except pylibsrtp.Error:
                self.errors += 1

    def send_reports(self, endpoint: SrtpEndpoint) -> int:
        """The endpoint's SR/RR + SDES (its reception stats), as SRTCP from this socket."""
        compounds = endpoint.build_rtcp()
        for compound in compounds:
            self.sock.sendto(self.tx.protect_rtcp(compound), self.edge)
        self.sent += len(compounds)
        return len(compounds)

    def report_every(self, endpoint: SrtpEndpoint, interval: float) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self.send_reports(endpoint)

        self._task = self.loop.create_task(loop())

    def switch_rx(self, key: SrtpKey) -> None:
        self.rx = session(key, inbound=True)

    def restart_index(self) -> None:
        """linphone on a key change: a fresh sending context, SRTCP index from 0, same key."""
        self.tx = session(self.tx_key, inbound=False)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def join_non_mux(
    edge: EdgeUnderTest,
    asterisk: FakeAsterisk,
    conference: str,
    *,
    tx: SrtpKey,
    rx: SrtpKey,
    rtcp_mux: Any = False,
    adjacent: bool = True,
    **body: Any,
) -> tuple[dict[str, Any], SrtpEndpoint, RtcpPort]:
    """A participant without rtcp-mux: SrtpEndpoint (RTP only) plus an :class:`RtcpPort`.

    *adjacent*: the phone's RTCP socket is on its RTP port + 1 and the edge is
    told only the RTP port; otherwise it is anywhere and given as ``rtcp_port``
    (RFC 3605 a=rtcp).
    """
    if adjacent:
        rtp_sock, rtcp_sock = port_pair()
        port = rtp_sock.getsockname()[1]
        rtp_sock.close()  # the endpoint binds it again (the pair stays ours but for a race)
        endpoint = await SrtpEndpoint.open(HOST, port, rtcp_interval=None)
        remote: dict[str, Any] = {"host": HOST, "port": port}
    else:
        endpoint = await SrtpEndpoint.open(HOST, rtcp_interval=None)
        rtcp_sock = udp_socket()
        remote = {
            "host": HOST,
            "port": endpoint.local_address[1],
            "rtcp_port": rtcp_sock.getsockname()[1],
        }
    answer = await edge.leg(conference, participant_remote=remote, rtcp_mux=rtcp_mux, **body)
    part = answer["participant"]
    endpoint.set_remote((part["host"], part["port"]))
    endpoint.set_keys(tx=material(tx), rx=material(rx))
    rtcp = RtcpPort(rtcp_sock, (part["host"], part["rtcp_port"]), tx, rx)
    await asterisk.attach(edge, answer)
    return answer, endpoint, rtcp


class RedisLink:
    """A TCP relay in front of the real Redis that can be cut (refused) and restored.

    Cutting closes the listener and every relayed connection: clients see Redis
    down at once, and the server keeps its data (unlike stopping it).
    """

    def __init__(self, target_url: str) -> None:
        rest = target_url.split("://", 1)[1]
        hostport, _, self.path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.target = (host, int(port))
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/{self.path}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
