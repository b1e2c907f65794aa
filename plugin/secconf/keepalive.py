"""A blocking keep-alive HTTP/1.1 client for Kamailio workers (stdlib ``http.client``).

The module calls the media edge (and the KMS) from inside a Kamailio worker,
synchronously, several times per INVITE.  httpx costs 0.3-0.5 ms of Python per
call on its own (bench/edge_api_bench.py: the edge answers in ~0.2 ms), which
made the client the largest item of the per-INVITE time.  ``http.client`` on
one persistent connection per worker does the same job for a fraction of that.

Every call is bounded: *timeout* applies to the connect and to each socket
read/write.  A connection the server closed while idle (keep-alive timeout,
edge restart) is reopened once, and only when the failure came before any
byte of the answer on a connection that had already served a request, so a
request is never sent twice to a server that answered it; and only when that
failure came at once (within half the timeout), so a call never takes more
than one and a half times its timeout.
"""

from __future__ import annotations

import http.client
import ssl
import time
from urllib.parse import urlsplit

__all__ = ["HttpAnswer", "KeepAliveHttp"]

HttpAnswer = tuple[int, bytes]

# Raised by http.client when the peer closed a kept-alive connection before answering.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class KeepAliveHttp:
    """One persistent connection to the origin of *base_url* (``http://`` or ``https://``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._ssl = ssl_context
        self._connection: http.client.HTTPConnection | None = None
        self._served = 0  # answers read on the current connection

    def __repr__(self) -> str:  # the headers may hold a bearer token: never shown
        scheme = "https" if self._https else "http"
        return f"KeepAliveHttp('{scheme}://{self._host}:{self._port}{self._prefix}')"

    def _open(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl or ssl.create_default_context()
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._connection = connection
        self._served = 0
        return connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
    ) -> HttpAnswer:
        """Send one request; (status, body).  Raises ``OSError``/``HTTPException`` on failure."""
        headers = dict(self._headers)
        if body is not None:
            headers["content-type"] = content_type
        started = time.monotonic()
        for attempt in (1, 2):
            connection = self._connection or self._open()
            reused = self._served > 0
            try:
                connection.request(method, self._prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except _STALE:
                self.close()
                quick = time.monotonic() - started < self._timeout / 2
                if reused and attempt == 1 and quick:
                    continue  # the server dropped the idle connection: one fresh try
                raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            self._served += 1
            if response.will_close:
                self.close()
            return response.status, data
        raise http.client.HTTPException("unreachable")  # pragma: no cover - loop returns
