"""The Redis connection every store object uses, and the one place Redis failures become 503.

Every network call has a deadline: :func:`connect` sets both the connect and
the per-read socket timeout and turns redis-py's automatic retries off (its
default retries ten times with back-off, which would stretch a dead Redis into
many seconds of waiting).  A call therefore fails after about one *timeout*
per round trip instead of hanging, and :func:`redis_errors` turns that failure
into :class:`~secconf.core.errors.ServiceUnavailable` (503): the peer did
nothing wrong and may retry, and nothing was written on our side.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, Protocol, TypeAlias, TypeVar, cast

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.exceptions
import redis.sentinel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import Encoder  # type: ignore[attr-defined]
from redis.retry import Retry as SyncRetry

from secconf.core.errors import ServiceUnavailable

from .errors import RedisRefused
from .redis_url import RedisTarget, parse_redis_url

__all__ = [
    "REDIS_FAILURES",
    "AsyncClient",
    "BlockingClient",
    "DirectScript",
    "ScriptRunner",
    "all_redis_errors",
    "connect",
    "connect_blocking",
    "ping",
    "redis_errors",
    "register_script",
    "translate_redis_errors",
]

#: What :func:`connect` returns.  Code outside the store holds it only to hand it to store
#: objects and to close it (``await client.aclose()``); it never sends a command itself.
AsyncClient: TypeAlias = redis.asyncio.Redis
#: What :func:`connect_blocking` returns (closed with ``client.close()``); as :data:`AsyncClient`.
BlockingClient: TypeAlias = redis.Redis

P = ParamSpec("P")
T = TypeVar("T")

#: What "Redis is down or too slow" looks like from redis-py and asyncio.
#: ``BusyLoadingError`` (a restarting server loading its data) is a
#: ``ConnectionError`` in redis-py, so it is covered too.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,  # asyncio.TimeoutError is this class since Python 3.11
    ConnectionError,
    # Cluster: no slot owner reachable, or slots moving (resharding): try again later.
    # Sentinel's MasterNotFoundError is a ConnectionError already.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ValueError("timeout must be a positive number of seconds")
    return float(timeout)


def connect(url: str, *, timeout: float) -> redis.asyncio.Redis:
    """An asyncio client for *url* whose every call gives up after *timeout* seconds.

    *url* is any form :func:`~secconf.store.redis_url.parse_redis_url` accepts:
    one server, ``redis+cluster://`` (an ``asyncio.RedisCluster``, typed here as
    ``Redis``: the same commands) or ``redis+sentinel://`` (the master
    ``Sentinel.master_for`` names).  *timeout* (seconds, > 0) bounds
    connecting and each read; redis-py's retries are off.  Responses are bytes
    (``decode_responses=False``): wrapped keys are binary.  No command is sent
    here; the first call connects.  Close the client with ``await
    client.aclose()`` on the event loop that used it.
    """
    timeout = _check_timeout(timeout)
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": False,
    }
    if target.kind == "cluster":
        return cast(
            redis.asyncio.Redis,
            redis.asyncio.cluster.RedisCluster(
                startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.nodes],
                retry=Retry(NoBackoff(), 0),
                username=target.username,
                password=target.password,
                **common,
            ),
        )
    if target.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(target.nodes),
            sentinel_kwargs={**common, "retry": Retry(NoBackoff(), 0)},
            **common,
        )
        master: redis.asyncio.Redis = sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            **common,
        )
        return master
    return redis.asyncio.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), health_check_interval=0, **common
    )


def connect_blocking(url: str, *, timeout: float) -> redis.Redis:
    """A synchronous client for *url* whose every call gives up after *timeout* seconds.

    Same forms and settings as :func:`connect` (no retries, bytes responses),
    for code without an event loop (Kamailio workers).  No command is sent
    here: the first call connects.  A ``redis+cluster://`` client is built on
    first use (redis-py's ``RedisCluster`` reads the slot map in its
    constructor), so a Kamailio worker starts while the cluster is down and
    answers 503 until it is back; it is typed as ``Redis`` (the same commands).
    """
    timeout = _check_timeout(timeout)
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": False,
    }
    if target.kind == "cluster":
        return cast(redis.Redis, LazyCluster(target, common))
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(
            list(target.nodes),
            sentinel_kwargs={**common, "retry": SyncRetry(NoBackoff(), 0)},
            **common,
        )
        return cast(
            redis.Redis,
            sentinel.master_for(
                target.service,
                db=target.db,
                username=target.username,
                password=target.password,
                retry=SyncRetry(NoBackoff(), 0),
                health_check_interval=0,
                **common,
            ),
        )
    return redis.Redis.from_url(
        url, retry=SyncRetry(NoBackoff(), 0), health_check_interval=0, **common
    )


_BOOTSTRAP_FAILURES: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisClusterException,
    *REDIS_FAILURES,
)


class LazyCluster:
    """A sync ``RedisCluster`` made on first use; until then, :meth:`register_script` works.

    A failed bootstrap (no startup node answers within the timeout; each
    node is tried once) is a ``redis.ConnectionError`` (so :func:`redis_errors`
    makes it a 503).  For :data:`BOOTSTRAP_HOLD` seconds after a failure,
    calls fail at once instead of waiting for every dead node again (a
    Kamailio worker must answer 503 fast); the next call after that tries
    again.  Every attribute but ``register_script``, ``get_encoder`` and
    ``close`` is the real client's.
    """

    #: Seconds during which a failed bootstrap is not tried again.
    BOOTSTRAP_HOLD: float = 1.0

    def __init__(self, target: RedisTarget, options: dict[str, Any]) -> None:
        self._target = target
        self._options = options
        self._client: redis.cluster.RedisCluster | None = None
        self._lock = threading.Lock()
        self._failed_at: float | None = None

    def __repr__(self) -> str:
        return f"LazyCluster(nodes={list(self._target.nodes)!r})"

    def _real(self) -> redis.cluster.RedisCluster:
        with self._lock:
            if self._client is None:
                if (
                    self._failed_at is not None
                    and time.monotonic() - self._failed_at < self.BOOTSTRAP_HOLD
                ):
                    raise redis.exceptions.ConnectionError("no Redis Cluster node answered")
                try:
                    self._client = redis.cluster.RedisCluster(
                        startup_nodes=[
                            redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                            for h, p in self._target.nodes
                        ],
                        retry=SyncRetry(NoBackoff(), 0),
                        username=self._target.username,
                        password=self._target.password,
                        **self._options,
                    )
                except _BOOTSTRAP_FAILURES as exc:
                    self._failed_at = time.monotonic()
                    raise redis.exceptions.ConnectionError(
                        "no Redis Cluster node answered"
                    ) from exc
            return self._client

    def get_encoder(self) -> Encoder:
        return Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._real(), name)


@contextmanager
def redis_errors(action: str = "call") -> Iterator[None]:
    """Turn Redis being down or too slow, inside the block, into ``ServiceUnavailable``.

    *action* names what was attempted ("read the user table", ...) for the
    message.  The message names Redis and the failure's class only; redis-py's
    own text (addresses) stays on the chained exception for the logs, and no
    argument of the failed command is ever quoted.  Works around ``await``::

        with redis_errors("look up a user"):
            value = await client.hget(key, b"psk")
    """
    try:
        yield
    except REDIS_FAILURES as exc:
        raise ServiceUnavailable(
            f"Redis unavailable: could not {action} ({type(exc).__name__})"
        ) from exc


@contextmanager
def all_redis_errors(action: str = "call") -> Iterator[None]:
    """:func:`redis_errors`, and every other redis-py error as :class:`RedisRefused`.

    The stores let a refused command (``WRONGTYPE``, ``OOM``, ``READONLY``, a bad
    argument, ...) pass unchanged: it is no outage, and a request that meets one should
    fail loudly.  A caller that must outlive any answer of Redis (the watcher's loops,
    which log and try again at their next turn) asks for this instead, and catches store
    errors only, never redis-py's.  Outages are ``ServiceUnavailable`` as with
    :func:`redis_errors`; the message names the action and the error's class only.
    """
    with redis_errors(action):
        try:
            yield
        except REDIS_FAILURES:
            raise
        except redis.exceptions.RedisError as exc:
            raise RedisRefused(f"Redis error: could not {action} ({type(exc).__name__})") from exc


async def ping(client: AsyncClient) -> None:
    """One ``PING`` within the client's timeout; ``ServiceUnavailable`` if Redis does not answer.

    The services' health checks: they ask whether Redis answers, not what it holds.
    """
    with redis_errors("health check"):
        await client.ping()


def translate_redis_errors(
    action: str,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorator form of :func:`redis_errors` for ``async def`` methods."""

    def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            with redis_errors(action):
                return await function(*args, **kwargs)

        return wrapper

    return decorate


class ScriptRunner(Protocol):
    """What the stores call a Lua script through: redis-py's ``Script`` or :class:`DirectScript`."""

    def __call__(self, keys: Sequence[Any] = ..., args: Sequence[Any] = ...) -> Any: ...


def register_script(client: redis.Redis, text: str) -> ScriptRunner:
    """*text* as a callable script: over this thread's own connection where the client allows.

    A plain or Sentinel client (``redis.Redis`` itself) gets a :class:`DirectScript`; a
    cluster client, or anything else shaped like redis-py (tests' doubles), gets redis-py's
    ``Script``, which routes by key.
    """
    if type(client) is redis.Redis:
        return DirectScript(client, text)
    return client.register_script(text)


def _drop_if_stale(connection: redis.connection.AbstractConnection) -> None:
    """Close an idle connection the server has closed (restarted, killed idle clients, ...).

    Between calls nothing may be waiting on the socket: end-of-file or stray bytes mean the
    connection is dead or out of step, so it is dropped and the send reconnects — the check
    redis-py's pool makes at every check-out.  Without it, the first call after a Redis
    restart would fail in every worker.
    """
    if not connection.is_connected:
        return
    try:
        stale = connection.can_read()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        stale = True
    if stale:
        connection.disconnect()  # type: ignore[no-untyped-call]


def _pack(parts: tuple[Any, ...]) -> bytes:
    return cast(bytes, hiredis.pack_command(parts))


#: Per connection pool, the connection each thread holds for its DirectScripts: every script
#: of a client shares it (a worker keeps one connection, not one per script).
_HELD: weakref.WeakKeyDictionary[Any, threading.local] = weakref.WeakKeyDictionary()
_HELD_LOCK = threading.Lock()


def _held_connections(pool: Any) -> threading.local:
    with _HELD_LOCK:
        held = _HELD.get(pool)
        if held is None:
            held = _HELD[pool] = threading.local()
        return held


class DirectScript:
    """A Lua script sent as ``EVALSHA`` on a connection that belongs to one thread of one process.

    Why not redis-py's ``Script``: on this project's 2-vCPU machine a script call through
    the client costs about 160 µs of the caller's CPU around a round trip whose system
    calls cost about 50 µs (the pool's check-out with a readiness poll and lock, the retry
    closure, the observability hooks — measured in docs/performance.md).  A Kamailio
    worker makes one such call per SIP message, so the worker spends its time there.
    This runs the same redis-py ``Connection`` (its connect, AUTH, SELECT, timeouts,
    hiredis reply parser and error classes) without the per-command wrappers.

    * One connection per (process, thread), shared by every script of the client: Kamailio forks its workers after the module
      is loaded, and the watcher calls stores from a thread pool; a connection is never
      shared, so no reply can reach the wrong caller.  Taken from the client's pool (its
      ``disconnect()`` closes it) and never returned; the next call reconnects.
    * ``NOSCRIPT`` (a restarted or flushed server): ``SCRIPT LOAD`` once, then again.
    * A connection the server closed while idle is noticed before sending (as redis-py's pool
      does at check-out) and replaced: a Redis restart costs no call.
    * Any other failure but a script's own error drops the connection: a timed-out reply
      that arrives late must not be read as the next call's.  Nothing is retried (as the
      clients' ``Retry(0)``): a script may have run before the connection broke.
    """

    __slots__ = ("_client", "_local", "_sha", "_text", "script")

    def __init__(self, client: redis.Redis, text: str) -> None:
        self._client = client
        self.script = text  # the Lua source, as redis-py's ``Script.script``
        self._text = text.encode("utf-8")
        self._sha = hashlib.sha1(self._text, usedforsecurity=False).hexdigest().encode("ascii")
        self._local = _held_connections(client.connection_pool)

    def __repr__(self) -> str:
        return f"DirectScript(sha={self._sha.decode()})"

    def _connection(self) -> redis.connection.AbstractConnection:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            return cast(redis.connection.AbstractConnection, held[1])
        connection = self._client.connection_pool.get_connection()
        self._local.held = (os.getpid(), connection)
        return connection

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            # hiredis encodes str (UTF-8), bytes, int and float as redis-py's Encoder does and
            # refuses the rest (None, bool) as it does; one C call instead of one per argument.
            command = [_pack((b"EVALSHA", self._sha, len(keys), *keys, *args))]
        except TypeError as exc:
            raise redis.exceptions.DataError(str(exc)) from None
        connection = self._connection()
        _drop_if_stale(connection)
        try:
            try:
                connection.send_packed_command(command)  # type: ignore[no-untyped-call]
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                load = [_pack((b"SCRIPT", b"LOAD", self._text))]
                connection.send_packed_command(load)  # type: ignore[no-untyped-call]
                connection.read_response()
                connection.send_packed_command(command)  # type: ignore[no-untyped-call]
                return connection.read_response()
        except redis.exceptions.ResponseError:
            raise  # the script's own error: the reply was read whole, the connection is clean
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
