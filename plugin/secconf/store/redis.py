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
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from secconf.core.errors import ServiceUnavailable

__all__ = ["REDIS_FAILURES", "connect", "redis_errors", "translate_redis_errors"]

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
)


def connect(url: str, *, timeout: float) -> redis.asyncio.Redis:
    """A client for *url* (``redis://host:port/db``) whose every call gives up after *timeout*.

    *timeout* (seconds, > 0) bounds connecting and each read.  Responses are
    bytes (``decode_responses=False``): wrapped keys are binary.  No command is
    sent here; the first call connects.  Close the client with ``await
    client.aclose()`` on the event loop that used it.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ValueError("timeout must be a positive number of seconds")
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        health_check_interval=0,
    )


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
