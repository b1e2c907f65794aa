"""secconf.kms.client's one HTTP binding, as both transports see it (no KMS, no Redis).

The focus's blocking transport and the participant's asyncio one share
``KmsExchanges``: the paths, the content type, the status-to-error mapping
(5xx or no answer: ServiceUnavailable; another status: the caller's refusal
with the MIKEY error of the body) and the bound on an answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from secconf.core.errors import MikeyErrorNo, MikeyTooLarge, SecconfError, ServiceUnavailable
from secconf.core.mikey import ticket as mikey_ticket
from secconf.kms.async_client import KmsClient, KmsRefused
from secconf.kms.client import (
    MAX_ANSWER_BYTES,
    MIKEY_CONTENT_TYPE,
    REQUEST_PATH,
    answer_content,
)

PSK = hashlib.sha256(b"alice").digest()
seen: list[tuple[str, str]] = []


class _Refusal(SecconfError):
    def __init__(self, status: int, error_no: int) -> None:
        super().__init__(f"{status} {error_no}")
        self.status, self.error_no = status, error_no


def _error_body(error_no: int) -> bytes:
    return mikey_ticket.build_error(b"", [error_no], now=time.time())


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_unavailable(status: int) -> None:
    with pytest.raises(ServiceUnavailable, match=f"KMS answered {status}"):
        answer_content((status, _error_body(MikeyErrorNo.INVALID_ID)), _Refusal)


def test_another_status_is_the_callers_refusal_with_the_mikey_error() -> None:
    with pytest.raises(_Refusal) as caught:
        answer_content((403, _error_body(MikeyErrorNo.INVALID_ID)), _Refusal)
    assert (caught.value.status, caught.value.error_no) == (403, MikeyErrorNo.INVALID_ID)
    with pytest.raises(_Refusal) as unreadable:
        answer_content((400, b"not mikey"), _Refusal)
    assert unreadable.value.error_no == MikeyErrorNo.UNSPECIFIED


def test_an_answer_longer_than_a_mikey_message_is_refused() -> None:
    assert answer_content((200, b"x" * MAX_ANSWER_BYTES), _Refusal) == b"x" * MAX_ANSWER_BYTES
    with pytest.raises(MikeyTooLarge):
        answer_content((200, b"x" * (MAX_ANSWER_BYTES + 1)), _Refusal)


@contextmanager
def _server(status: int, content: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append((self.path, self.headers.get("content-type", "")))
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
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str) -> KmsClient:
    return KmsClient(url, "sip:kms.example.com", "sip:alice@example.com", PSK, timeout=2.0)


def _desired() -> mikey_ticket.DesiredPolicy:
    return mikey_ticket.DesiredPolicy(("sip:bob@example.com",), valid_until=time.time() + 60)


def test_the_participant_posts_mikey_to_the_request_path_and_reads_a_refusal() -> None:
    seen.clear()
    with (
        _server(403, _error_body(MikeyErrorNo.INVALID_ID)) as url,
        pytest.raises(KmsRefused) as caught,
    ):
        asyncio.run(_client(url).request_ticket(_desired()))
    assert caught.value.error_no == MikeyErrorNo.INVALID_ID
    assert seen == [(REQUEST_PATH, MIKEY_CONTENT_TYPE)]


def test_the_participant_sees_a_failing_kms_as_unavailable() -> None:
    with _server(502, b"") as url, pytest.raises(ServiceUnavailable):
        asyncio.run(_client(url).request_ticket(_desired()))


def test_the_participant_reads_no_more_than_a_mikey_message() -> None:
    with _server(200, b"\x01" * (4 * MAX_ANSWER_BYTES)) as url, pytest.raises(MikeyTooLarge):
        asyncio.run(_client(url).request_ticket(_desired()))
