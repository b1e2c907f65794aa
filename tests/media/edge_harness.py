"""Test harness for the media edge: an in-process edge with its real HTTP API, a fake Asterisk.

The fake "Asterisk" is the only stand-in allowed here: a loopback RTP peer per
leg (plain RTP, or SRTP with its own key), which either forwards each
participant's audio to every other channel (a mixer without the mixing) or
generates its own 50 packets/s stream per channel.  Participants are real
:class:`~secconf.client.media.SrtpEndpoint`\\ s or raw sockets with pylibsrtp.
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
    received_rtcp: int = 0
    sent: int = 0

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
        """A channel for the leg in *answer* (POST /v1/legs); tells the edge where it is."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        internal = answer["internal"]
        channel = Channel(answer["leg"], sock, (internal["host"], internal["port"]))
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
            self.loop.remove_reader(channel.sock.fileno())
            channel.sock.close()


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
