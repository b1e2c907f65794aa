"""The focus's KMS client (secconf.kms.client) against small local HTTP servers: refusals, outages.

``request_ticket`` (group-key tickets for rekeys): a KMS refusal is
``KmsRefusedRequest`` (503 to the rekey: no epoch can be minted), a KMS that does
not answer is ``ServiceUnavailable``; ``resolve`` keeps its 403 for refused tickets.
The real KMS is in tests/kamailio/test_kms_rekey.py; these servers answer what a
real one would not.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from secconf.core.errors import MikeyError, ServiceUnavailable
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey import ticket as mikey_ticket
from secconf.focus.settings import KmsSettings
from secconf.kms.client import HttpKmsResolver, KmsRefusedRequest

# (path, content type, body) -> (status, body)
Answerer = Callable[[str, str, bytes], tuple[int, bytes]]


@contextmanager
def _kms(answer: Answerer) -> Iterator[KmsSettings]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status, content = answer(self.path, self.headers.get("content-type", ""), body)
            self.send_response(status)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _settings(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def _settings(url: str) -> KmsSettings:
    return KmsSettings(
        url=url,
        kms_identity="sip:kms.example.com",
        focus_identity="sip:focus@conf.example.com",
        psk=hashlib.sha256(b"focus").digest(),
        timeout=0.2,
    )


def _desired() -> mikey_ticket.DesiredPolicy:
    return mikey_group.group_ticket_policy(("sip:bob@example.com",), valid_until=time.time() + 60)


def test_a_kms_refusal_of_a_group_ticket_is_503_with_its_mikey_error() -> None:
    seen: list[tuple[str, str]] = []

    def refuse(path: str, content_type: str, body: bytes) -> tuple[int, bytes]:
        seen.append((path, content_type))
        return 400, mikey_ticket.build_error(body, (15,), now=time.time())

    with _kms(refuse) as settings, pytest.raises(KmsRefusedRequest) as caught:
        HttpKmsResolver(settings).request_ticket(_desired())
    assert seen == [("/mikey/v1/request", "application/mikey")]
    assert caught.value.status_code == 503
    assert "MIKEY error 15" in caught.value.message


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_kms_is_503(status: int) -> None:
    with _kms(lambda *_: (status, b"")) as settings, pytest.raises(ServiceUnavailable):
        HttpKmsResolver(settings).request_ticket(_desired())


def test_a_kms_that_does_not_answer_is_503_within_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # connects, never answers
        resolver = HttpKmsResolver(_settings(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="KMS unavailable"):
            resolver.request_ticket(_desired())
        assert time.monotonic() - started < 1.0


def test_a_forged_request_resp_does_not_verify() -> None:
    # never a ticket the focus would use
    with _kms(lambda *_: (200, b"\x01" * 64)) as settings, pytest.raises(MikeyError) as caught:
        HttpKmsResolver(settings).request_ticket(_desired())
    assert caught.value.status_code in (400, 403)
