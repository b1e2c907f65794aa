"""Slow and greedy HTTP clients: the one guard the KMS and the edge's control API run behind.

uvicorn (0.55) has a keep-alive timeout but nothing that bounds the time to the first complete
request head (encode/uvicorn#157), and ``limit_concurrency`` counts idle connections: a few
hundred connections that never finish a request head make it answer every request with 503.
:class:`GuardedHttpToolsProtocol` is uvicorn's own httptools protocol (httptools does all of the
parsing) with:

- a **head timeout**: a connection must deliver a complete request head within
  ``head_timeout`` seconds of being accepted (first request) or of the first byte of the next
  head (keep-alive); otherwise it is closed, with a 408 if part of a head had arrived;
- a **head size cap** (``max_head_bytes``): a larger head gets 431 and the connection closed,
  so neither httptools' header buffers nor uvicorn's header list grow beyond it;
- a **body timeout**: a request body must be complete ``body_timeout`` seconds after its head
  (408 and close); the apps cap body sizes themselves (KMS 64 KiB, edge 16 KiB);
- a **write-stall timeout**: a client that stops reading an answer for ``body_timeout`` seconds
  is cut off;
- **connection caps** (:class:`ConnectionGuard`): at most ``max_connections_per_source`` from
  one source address (an IPv6 /64 counts as one source) and ``max_connections`` in all, the
  latter lowered to what the file-descriptor limit leaves; a connection over a cap is closed
  as soon as it is accepted, before any byte is read.

uvicorn's ``limit_concurrency`` is then left off: each admitted connection runs at most one
request at a time (pipelined requests wait in uvicorn's queue with reading paused), so the
connection cap bounds the request tasks too.  Refusals are counted per reason and logged at
most once per reason per ``LOG_INTERVAL`` seconds (reason, source address, count; no request
content).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import math
import resource
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "ConnectionGuard",
    "GuardedHttpToolsProtocol",
    "HttpLimits",
    "Refusal",
    "guarded_config",
    "raise_fd_limit",
    "source_key",
]

#: Seconds between two log lines about refusals of the same kind.
LOG_INTERVAL = 10.0
#: File descriptors kept out of the HTTP connection cap (listening socket, Redis, logs, ...).
BASE_RESERVE_FDS = 256
#: Backlog of the listening socket (uvicorn's default; the kernel clamps it to somaxconn).
BACKLOG = 2048


class Refusal(enum.StrEnum):
    """Why the guard closed a connection (the label in logs and in :attr:`ConnectionGuard.refused`)."""

    SOURCE_CAP = "per-source connection cap"
    TOTAL_CAP = "total connection cap"
    HEAD_TIMEOUT = "request head timeout"
    HEAD_TOO_LARGE = "request head too large"
    BODY_TIMEOUT = "request body timeout"
    WRITE_STALL = "answer not read"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The ``[http]`` table of the KMS's and the edge's configuration (docs/kms.md, docs/edge.md)."""

    head_timeout: float = 5.0
    body_timeout: float = 10.0
    keep_alive_timeout: int = 5
    max_connections: int = 4096
    max_connections_per_source: int = 64
    max_head_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("head_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 3600):
                raise ValueError(f"{name} must be 0..3600 seconds (not 0)")
        if not 1 <= self.keep_alive_timeout <= 3600:
            raise ValueError("keep_alive_timeout must be 1..3600 whole seconds")
        if not 1 <= self.max_connections <= 1_000_000:
            raise ValueError("max_connections must be 1..1000000")
        if not 1 <= self.max_connections_per_source <= self.max_connections:
            raise ValueError("max_connections_per_source must be 1..max_connections")
        if not 1024 <= self.max_head_bytes <= 1024 * 1024:
            raise ValueError("max_head_bytes must be 1024..1048576")

    def updated(self, table: Mapping[str, Any]) -> HttpLimits:
        """These limits with the settings of a TOML table; ValueError names a bad setting."""
        known = {item.name: item.type for item in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in table.items():
            kind = known.get(key)
            if kind is None:
                raise ValueError(f"unknown setting {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"setting {key!r} must be a number")
            if kind == "int" and not isinstance(value, int):
                raise ValueError(f"setting {key!r} must be a whole number")
            changes[key] = float(value) if kind == "float" else value
        return replace(self, **changes)


def source_key(host: str) -> str:
    """What the per-source cap counts: the IPv4 address, or the /64 of an IPv6 address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


class ConnectionGuard:
    """Counts connections per source and in all; counts and logs refusals (rate-limited).

    *max_connections* is the effective total cap (:func:`guarded_config` derives it from the
    limits and the file-descriptor limit).  The per-source table holds only sources with open
    connections, so it never has more than *max_connections* entries.
    """

    def __init__(self, limits: HttpLimits, max_connections: int, log: logging.Logger) -> None:
        self.limits = limits
        self.max_connections = max_connections
        self.log = log
        self.total = 0
        self.per_source: dict[str, int] = {}
        self.refused: Counter[Refusal] = Counter()
        self._unlogged: Counter[Refusal] = Counter()
        self._next_log: dict[Refusal, float] = {}

    def admit(self, source: str) -> Refusal | None:
        """Count a new connection from *source*, or say which cap refuses it."""
        held = self.per_source.get(source, 0)
        if held >= self.limits.max_connections_per_source:
            return Refusal.SOURCE_CAP
        if self.total >= self.max_connections:
            return Refusal.TOTAL_CAP
        self.per_source[source] = held + 1
        self.total += 1
        return None

    def release(self, source: str) -> None:
        held = self.per_source.get(source, 0)
        if held <= 1:
            self.per_source.pop(source, None)
        else:
            self.per_source[source] = held - 1
        self.total = max(0, self.total - 1)

    def refuse(self, reason: Refusal, source: str) -> None:
        """Count a refusal; log it unless this reason was logged less than LOG_INTERVAL ago."""
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        now = time.monotonic()
        if now < self._next_log.get(reason, 0.0):
            return
        self._next_log[reason] = now + LOG_INTERVAL
        count, self._unlogged[reason] = self._unlogged[reason], 0
        self.log.warning(
            "http: closed a connection from %s: %s (%d such since the last line; %d open)",
            source, reason.value, count, self.total,
        )  # fmt: skip


_REASON = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the timeouts and caps above; one subclass per server.

    Subclasses set :attr:`guard` (:func:`guarded_config` makes them).
    """

    guard: ClassVar[ConnectionGuard]

    _source: str | None = None  # set once admitted
    _head_pending = False  # waiting for (the rest of) a request head
    _head_bytes = 0  # bytes of the pending head received so far
    _body_pending = False  # head complete, body not yet
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None

    # -- connections ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        source = source_key(str(peer[0])) if isinstance(peer, tuple) and peer else "local"
        refusal = self.guard.admit(source)
        if refusal is not None:
            self.guard.refuse(refusal, source)
            transport.abort()  # at once: nothing read, nothing written
            return
        self._source = source
        super().connection_made(transport)
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        source, self._source = self._source, None
        if source is None:  # refused in connection_made: uvicorn never saw it
            return
        self._cancel_timers()
        self.guard.release(source)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._source is None or self.transport.is_closing():
            return
        if self._head_pending:
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.limits.max_head_bytes:
                self._refuse(Refusal.HEAD_TOO_LARGE, 431)
        elif self._body_pending and self._body_timer is None:
            self._body_timer = self.loop.call_later(
                self.guard.limits.body_timeout, self._body_expired
            )

    # -- the parser's callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect_head()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_pending = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- writing --------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None and self._source is not None:
            self._write_timer = self.loop.call_later(
                self.guard.limits.body_timeout, self._write_stalled
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # -- timers ---------------------------------------------------------------------------

    def _expect_head(self) -> None:
        """A request head is due: from accept (first request) or its first byte (later ones)."""
        self._head_pending = True
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.guard.limits.head_timeout, self._head_expired
            )

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._source is None or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits (reading paused) while the previous answer is made.
            self._head_timer = self.loop.call_later(
                self.guard.limits.head_timeout, self._head_expired
            )
            return
        self._refuse(Refusal.HEAD_TIMEOUT, 408 if self._head_bytes else None)

    def _body_expired(self) -> None:
        self._body_timer = None
        if self._source is None or self.transport.is_closing() or not self._body_pending:
            return
        started = self.cycle is not None and self.cycle.response_started
        self._refuse(Refusal.BODY_TIMEOUT, None if started else 408)

    def _write_stalled(self) -> None:
        self._write_timer = None
        if self._source is not None and not self.transport.is_closing():
            self.guard.refuse(Refusal.WRITE_STALL, self._source)
            self.transport.abort()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._write_timer = None

    def _refuse(self, reason: Refusal, status: int | None) -> None:
        """Close the connection for *reason*, after a short plain-text answer *status*."""
        self.guard.refuse(reason, self._source or "?")
        self._head_pending = self._body_pending = False
        self._cancel_timers()
        if self.cycle is not None:
            self.cycle.keep_alive = False
        if status is not None:
            text = _REASON[status] + b"\n"
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASON[status], len(text), text)
            )
        self.transport.close()


class _QuietDisconnect:
    """The app, but a client that went away while its body was read is no server error.

    A connection the guard closes mid-body makes Starlette raise ClientDisconnect out of the
    endpoint; uvicorn would log it with a traceback per slow client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, receive, send)


def guarded_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    limits: HttpLimits,
    log: logging.Logger,
    reserve_fds: int = 0,
) -> uvicorn.Config:
    """A uvicorn configuration serving *app* behind a fresh :class:`ConnectionGuard`.

    Raises the soft file-descriptor limit to the hard one; the total connection cap is then
    ``limits.max_connections`` or what the limit leaves after ``BASE_RESERVE_FDS`` and
    *reserve_fds* (the caller's other sockets, e.g. the edge's media ports), whichever is less.
    """
    nofile = raise_fd_limit()
    room = nofile - BASE_RESERVE_FDS - reserve_fds
    total = max(1, min(limits.max_connections, room))
    if total < limits.max_connections:
        log.warning(
            "http: the file-descriptor limit (%d) leaves room for %d connections, not %d",
            nofile, total, limits.max_connections,
        )  # fmt: skip
    guard = ConnectionGuard(limits, total, log)
    protocol = type("GuardedProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})
    log.info(
        "http: at most %d connections (%d per source), head timeout %g s, body timeout %g s, "
        "keep-alive %d s, heads up to %d bytes",
        total, limits.max_connections_per_source, limits.head_timeout, limits.body_timeout,
        limits.keep_alive_timeout, limits.max_head_bytes,
    )  # fmt: skip
    return uvicorn.Config(
        _QuietDisconnect(app),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=protocol,
        timeout_keep_alive=limits.keep_alive_timeout,
        limit_concurrency=None,  # the guard's caps bound connections, hence request tasks
        backlog=BACKLOG,
    )
