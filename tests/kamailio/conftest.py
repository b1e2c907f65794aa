"""Fixtures of the Kamailio tests: the real Kamailio focus on the real Redis, SDP and SIP helpers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from secconf.client.sip import Answer, IncomingRequest, UserAgent
from secconf.core.sdp import SessionDescription
from secconf.store import generate_key_file
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory, KamailioServer
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.ports import free_udp_port
from tests.fixtures.redis_cluster import RedisClusterServers, RedisSentinelServers
from tests.fixtures.redis_server import RedisServer
from tests.media.edge_harness import Channel, FakeAsterisk

T = TypeVar("T")

#: Whatever the focus's ``redis.url`` points at: one server, a cluster, a sentinel.
AnyRedis = RedisServer | RedisClusterServers | RedisSentinelServers

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
DAVE = "sip:dave@example.com"  # not allowed anywhere

SETTINGS = """
[focus]
factory_pattern = "conf-factory"
conference_pattern = "conf-(?P<id>[0-9a-z]{{16}})"
conference_user = "conf-{{id}}"
domain = "conf.test.invalid"
max_body = 4096
server_name = "focus.test"

[lab]
# The test UAs send SDES over UDP (tests/security checks the TLS-only default).
sdes_over_udp = true

[identity]
trusted_sources = ["udp:127.0.0.1", "tls:127.0.0.1"]
asserted_header = "P-Asserted-Identity"

[limits]
# Functional tests and benchmarks hold many dialogs per identity (tests/security checks the limit).
dialogs_per_identity = 1000
refers_per_minute = 600

[policy]
creators = ["{alice}"]
allowed = ["{bob}", "{carol}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.3
prefix = "sckam"
kek_file = "{kek}"
kek_id = "test-kek"

[edge]
timeout = 0.5
"""


def crypto_line(tag: int = 1, suite: str = "AES_CM_128_HMAC_SHA1_80") -> str:
    inline = base64.b64encode(secrets.token_bytes(30)).decode()
    return f"a=crypto:{tag} {suite} inline:{inline}"


def offer(
    *, proto: str = "RTP/SAVP", crypto: list[str] | None = None, port: int = 30000,
    extra: str = "",
) -> bytes:  # fmt: skip
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} {proto} 0",
        "a=rtpmap:0 PCMU/8000",
        *(crypto if crypto is not None else [crypto_line()]),
    ]
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n").encode()


UPSTREAM_ANSWER = (
    b"v=0\r\no=asterisk 1 1 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


def pai(identity: str) -> list[tuple[str, str]]:
    return [("P-Asserted-Identity", f"<{identity}>")]


@dataclass
class Upstream:
    """The UAS standing in for Asterisk's ConfBridge: records INVITEs, answers clear RTP."""

    port: int
    invites: list[IncomingRequest] = field(default_factory=list)
    answer: bytes = UPSTREAM_ANSWER
    status: int = 200
    ua: UserAgent | None = None  # set by serve(): its calls can send re-INVITEs

    async def serve(self) -> UserAgent:
        ua = await UserAgent.start("127.0.0.1", self.port, identity="sip:asterisk@127.0.0.1")
        self.ua = ua

        async def on_invite(incoming: IncomingRequest) -> Answer:
            self.invites.append(incoming)
            if self.status != 200:
                return Answer(self.status)
            return Answer(200, self.answer, "application/sdp")

        ua.on_invite = on_invite
        return ua


@dataclass
class Focus:
    server: KamailioServer
    redis_server: AnyRedis
    upstream_port: int
    wrapper: KeyWrapper
    prefix: str = "sckam"

    def target(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.server.port}"

    def store(self) -> tuple[ConferenceStore, redis.Redis]:
        client = connect_blocking(self.redis_server.url, timeout=1.0)
        return ConferenceStore(client, self.wrapper, self.prefix), client

    def snapshot(self, *, ours_only: bool = False) -> dict[bytes, Any]:
        """Every key and its dump (*ours_only*: the focus's prefix only, not the KMS's)."""
        client = connect_blocking(self.redis_server.url, timeout=1.0)
        try:
            keys = client.scan_iter(match=f"{self.prefix}:*") if ours_only else client.scan_iter()
            return {key: client.dump(key) for key in keys}
        finally:
            client.close()

    def run(
        self, scenario: Callable[[Upstream], Awaitable[T]], upstream: Upstream | None = None
    ) -> T:
        upstream = upstream or Upstream(self.upstream_port)

        async def main() -> T:
            ua = await upstream.serve()
            try:
                return await scenario(upstream)
            finally:
                await ua.close()
                if isinstance(upstream, MixingUpstream):
                    upstream.close()

        return asyncio.run(main())


def settings_text(kek: Path, extra: str = "") -> str:
    return SETTINGS.format(alice=ALICE, bob=BOB, carol=CAROL, kek=kek) + extra


@dataclass
class MixingUpstream(Upstream):
    """Asterisk's stand-in with media: each INVITE gets an RTP channel of a forwarding mixer.

    The mixer is the fake Asterisk of tests/media/edge_harness.py (every packet from one
    channel goes to every other channel); its channel for a call is bound on loopback and
    answered in the SDP, so the module tells the edge where it is (internal-remote).
    """

    mixer: FakeAsterisk | None = None

    async def serve(self) -> UserAgent:
        self.mixer = FakeAsterisk(forward=True)
        ua = await UserAgent.start("127.0.0.1", self.port, identity="sip:asterisk@127.0.0.1")
        self.ua = ua

        async def on_invite(incoming: IncomingRequest) -> Answer:
            self.invites.append(incoming)
            if self.status != 200:
                return Answer(self.status)
            if incoming.call is not None:  # a re-INVITE from the participant: same channel
                return Answer(200, self.mixer_sdp(incoming.request.call_id), "application/sdp")
            offer = SessionDescription.parse(incoming.request.body)
            section = offer.media[0]
            connection = section.connection or offer.session.connection
            assert connection is not None
            channel = self.channel(incoming.request.call_id, (connection.address, section.port))
            port = channel.address[1]
            answer = (
                "v=0\r\no=asterisk 1 1 IN IP4 127.0.0.1\r\ns=Asterisk\r\n"
                "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
                "a=sendrecv\r\n"
            )
            return Answer(200, answer.encode(), "application/sdp")

        ua.on_invite = on_invite
        return ua

    def mixer_sdp(self, call_id: str, version: int = 2) -> bytes:
        """The mixer's SDP for a call's channel (its re-INVITE offer, or a re-answer)."""
        assert self.mixer is not None
        port = self.mixer.channels[call_id].address[1]
        return (
            f"v=0\r\no=asterisk 1 {version} IN IP4 127.0.0.1\r\ns=Asterisk\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
            "a=sendrecv\r\n"
        ).encode()

    def channel(self, name: str, edge_addr: tuple[str, int]) -> Channel:
        import socket as _socket

        mixer = self.mixer
        assert mixer is not None
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        channel = Channel(name, sock, edge_addr)
        mixer.channels[name] = channel
        mixer.loop.add_reader(sock.fileno(), mixer._readable, channel)
        return channel

    def close(self) -> None:
        if self.mixer is not None:
            self.mixer.close()


def _start_focus(
    factory: KamailioFactory,
    redis_server: AnyRedis,
    tmp: Path,
    env: dict[str, str] | None = None,
    extra: str = "",
    *,
    tls: bool = False,
    mixed_modes: bool = False,
    allow: tuple[str, ...] = (),
    focus_lines: str = "",
) -> Focus:
    kek = tmp / "kek"
    if not kek.exists():
        generate_key_file(kek)
    text = settings_text(kek, extra)
    if focus_lines:  # more [focus] settings
        text = text.replace("[focus]\n", "[focus]\n" + focus_lines, 1)
    if mixed_modes:
        text = text.replace("[policy]\n", "[policy]\nmixed_modes = true\n", 1)
    if allow:  # more names in policy.allowed (tickets may name only those)
        text = text.replace(
            'allowed = ["', "allowed = [" + "".join(f'"{a}", ' for a in allow) + '"', 1
        )
    upstream_port = free_udp_port()
    server = factory.start(
        text,
        env={
            "SECCONF_REDIS_URL": redis_server.url,
            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{upstream_port}",
            **(env or {}),
        },
        tls=tls,
    )
    return Focus(server, redis_server, upstream_port, KeyWrapper(load_key_file(kek), "test-kek"))


@pytest.fixture(scope="module")
def focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Focus]:
    """Kamailio with the secconf module, no media edge (SDP addresses pass unchanged)."""
    running = _start_focus(kamailio_factory, redis_server, tmp_path_factory.mktemp("focus"))
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def focus_real_edge(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    """Kamailio with the secconf module driving the real media edge (bearer token)."""
    running = _start_focus(
        kamailio_factory,
        redis_server,
        tmp_path_factory.mktemp("focus-real-edge"),
        env=media_edge.focus_env,
    )
    yield running
    running.server.stop()


# -- KMS mode: the real KMS behind a switchable TCP proxy --------------------------------

FOCUS_IDENTITY = "sip:focus@conf.test.invalid"

KMS_SETTINGS = """
[kms]
url = "{url}"
kms_identity = "{kms_identity}"
focus_identity = "{focus}"
psk_file = "{psk}"
timeout = 0.5
"""


class KmsProxy:
    """A TCP relay to the KMS; ``down = True`` closes its connections and hangs new ones.

    A hanging KMS is the harder failure (a refused connection fails at once): the
    focus must give up within its own timeout.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._down = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        with self._lock:
            self._down = value
            if value:
                for sock in self._sockets:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                self._sockets.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
                if self._down:
                    continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.down = True
        self._listener.close()


@dataclass
class KmsFocus(Focus):
    kms: RunningKms | None = None
    proxy: KmsProxy | None = None
    psks: dict[str, Path] = field(default_factory=dict)
    edge: RunningEdge | None = None

    def stop(self) -> None:
        self.server.stop()
        if self.proxy is not None:
            self.proxy.close()

    def psk(self, identity: str) -> Path:
        if identity not in self.psks:
            assert self.kms is not None
            # Another KmsFocus of the session (same KMS) may have provisioned it already.
            known = self.kms.workdir / (identity.replace(":", "_").replace("@", "_") + ".psk")
            self.psks[identity] = known if known.exists() else self.kms.add_user(identity)
        return self.psks[identity]


@pytest.fixture(scope="module")
def kms_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
    kms: RunningKms,
) -> Iterator[KmsFocus]:
    """Kamailio in KMS mode (the focus a KMS user) with the real KMS and the real edge."""
    focus = start_kms_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-kms"), media_edge, kms
    )
    yield focus
    focus.stop()


def start_kms_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp: Path,
    media_edge: RunningEdge,
    kms: RunningKms,
    *,
    extra: str = "",
    mixed_modes: bool = False,
    allow: tuple[str, ...] = (),
    focus_lines: str = "",
) -> KmsFocus:
    """Kamailio in KMS mode driving the real edge; the KMS behind a switchable proxy
    (``focus.proxy.down``); *extra* TOML appended, *focus_lines* added to ``[focus]``;
    :meth:`KmsFocus.stop` when done."""
    host, port = kms.url.removeprefix("http://").rsplit(":", 1)
    proxy = KmsProxy((host, int(port)))
    # The focus's KMS user may exist already (another focus of the session, same KMS).
    focus_psk = kms.workdir / (FOCUS_IDENTITY.replace(":", "_").replace("@", "_") + ".psk")
    if not focus_psk.exists():
        focus_psk = kms.add_user(FOCUS_IDENTITY)
    kms_text = KMS_SETTINGS.format(
        url=proxy.url, kms_identity=kms.identity, focus=FOCUS_IDENTITY, psk=focus_psk
    )
    running = _start_focus(
        kamailio_factory, redis_server, tmp, env=media_edge.focus_env,
        extra=kms_text + extra, mixed_modes=mixed_modes, allow=allow, focus_lines=focus_lines,
    )  # fmt: skip
    return KmsFocus(
        running.server,
        running.redis_server,
        running.upstream_port,
        running.wrapper,
        kms=kms,
        proxy=proxy,
        edge=media_edge,
    )


@pytest.fixture
def clean_focus(focus: Focus, redis_url: str) -> Focus:
    """The module's focus with an empty, running Redis."""
    return focus


# -- a recording stand-in for the media edge's control API (tests only) ------------------


@dataclass
class EdgeDouble:
    """Records every control call and answers as the edge's API is planned (docs/kamailio.md)."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    url: str = ""
    fail: bool = False
    _server: ThreadingHTTPServer | None = None
    _next_port: int = 50000

    def start(self) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                double.calls.append((self.command, self.path, body))
                if double.fail:
                    self.send_response(500)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                payload = b""
                if self.command == "POST" and self.path == "/v1/legs":
                    n = len(body["streams"])
                    base = double._next_port
                    double._next_port += 10
                    payload = json.dumps(
                        {
                            "external": {
                                "address": "127.0.0.2",
                                "ports": [base + 2 * i for i in range(n)],
                            },
                            "internal": {
                                "address": "127.0.0.3",
                                "ports": [base + 1000 + 2 * i for i in range(n)],
                            },
                        }
                    ).encode()
                self.send_response(200 if payload else 204)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def edge_double() -> Iterator[EdgeDouble]:
    double = EdgeDouble()
    double.start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def focus_with_edge(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    edge_double: EdgeDouble,
) -> Iterator[Focus]:
    """Kamailio with the secconf module talking to the recording edge double over HTTP."""
    running = _start_focus(
        kamailio_factory,
        redis_server,
        tmp_path_factory.mktemp("focus-edge"),
        env={"SECCONF_EDGE_URL": edge_double.url},
    )
    yield running
    running.server.stop()


__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "DAVE",
    "FOCUS_IDENTITY",
    "EdgeDouble",
    "Focus",
    "KmsFocus",
    "MixingUpstream",
    "Upstream",
    "crypto_line",
    "offer",
    "os",
    "pai",
]  # fmt: skip
