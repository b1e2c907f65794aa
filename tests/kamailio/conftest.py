"""Fixtures of the Kamailio tests: the real Kamailio focus on the real Redis, SDP and SIP helpers."""

from __future__ import annotations

import asyncio
import base64
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
from secconf.store import generate_key_file
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from tests.fixtures.kamailio_server import KamailioFactory, KamailioServer
from tests.fixtures.redis_server import RedisServer

T = TypeVar("T")

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

[identity]
trusted_sources = ["127.0.0.1"]
asserted_header = "P-Asserted-Identity"

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


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

    async def serve(self) -> UserAgent:
        ua = await UserAgent.start("127.0.0.1", self.port, identity="sip:asterisk@127.0.0.1")

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
    redis_server: RedisServer
    upstream_port: int
    wrapper: KeyWrapper
    prefix: str = "sckam"

    def target(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.server.port}"

    def store(self) -> tuple[ConferenceStore, redis.Redis]:
        client = connect_blocking(self.redis_server.url, timeout=1.0)
        return ConferenceStore(client, self.wrapper, self.prefix), client

    def snapshot(self) -> dict[bytes, Any]:
        client = connect_blocking(self.redis_server.url, timeout=1.0)
        try:
            return {key: client.dump(key) for key in client.scan_iter()}
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

        return asyncio.run(main())


def settings_text(kek: Path) -> str:
    return SETTINGS.format(alice=ALICE, bob=BOB, carol=CAROL, kek=kek)


def _start_focus(
    factory: KamailioFactory,
    redis_server: RedisServer,
    tmp: Path,
    env: dict[str, str] | None = None,
) -> Focus:
    kek = tmp / "kek"
    if not kek.exists():
        generate_key_file(kek)
    upstream_port = free_udp_port()
    server = factory.start(
        settings_text(kek),
        env={
            "SECCONF_REDIS_URL": redis_server.url,
            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{upstream_port}",
            **(env or {}),
        },
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
    "EdgeDouble",
    "Focus",
    "Upstream",
    "crypto_line",
    "offer",
    "os",
    "pai",
]  # fmt: skip
