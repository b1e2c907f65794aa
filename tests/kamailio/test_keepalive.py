"""secconf.keepalive: the workers' blocking HTTP client, against real local servers."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from secconf.keepalive import KeepAliveHttp
from tests.fixtures.ports import free_tcp_port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: list[int] = []  # noqa: RUF012 - shared by the test server's handlers
    drop_after_answer = False

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(id(self.connection))

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        answer = b'{"echo": %d}' % len(body)
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        if type(self).drop_after_answer:
            # Like a server whose keep-alive timeout passed: close without saying so.
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    _Handler.connections = []
    _Handler.drop_after_answer = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/api"


def test_one_connection_serves_many_requests(server: ThreadingHTTPServer) -> None:
    client = KeepAliveHttp(_url(server), timeout=2.0, headers={"authorization": "Bearer t0ken"})
    answers = [client.request("POST", "/x", b"abc") for _ in range(5)]
    client.close()
    assert answers == [(201, b'{"echo": 3}')] * 5
    assert len(_Handler.connections) == 1


def test_a_connection_the_server_dropped_is_reopened_once(server: ThreadingHTTPServer) -> None:
    _Handler.drop_after_answer = True
    client = KeepAliveHttp(_url(server), timeout=2.0)
    for _ in range(3):
        assert client.request("POST", "/x", b"") == (201, b'{"echo": 0}')
        time.sleep(0.05)  # let the server's close arrive
    client.close()
    assert len(_Handler.connections) == 3


def test_connection_refused_is_raised_not_retried() -> None:
    client = KeepAliveHttp(f"http://127.0.0.1:{free_tcp_port()}", timeout=0.5)
    with pytest.raises(ConnectionRefusedError):
        client.request("POST", "/x", b"")


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts (kernel backlog) but never answers
        client = KeepAliveHttp(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.request("POST", "/x", b"")
        assert time.monotonic() - started < 1.0


def test_garbage_answer_is_an_http_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        client = KeepAliveHttp(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
        with pytest.raises(http.client.HTTPException):
            client.request("POST", "/x", b"")
        thread.join(2)


def test_repr_hides_headers_and_bad_urls_are_refused() -> None:
    client = KeepAliveHttp("http://127.0.0.1:9/v1", timeout=1.0, headers={"authorization": "s3"})
    assert "s3" not in repr(client)
    with pytest.raises(ValueError, match="not an http"):
        KeepAliveHttp("ftp://example.com", timeout=1.0)
    with pytest.raises(ValueError, match="timeout"):
        KeepAliveHttp("http://example.com", timeout=0)
