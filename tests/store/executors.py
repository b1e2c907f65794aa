"""Both executors of the command layer, each as a blocking ``run(operation)`` for tests.

The store tests of an operation run it through :func:`executor` of both kinds (the
``run`` fixture of the tests that use it is parametrised ``sync``/``async``), so each
operation is checked once per I/O shell against the same real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeAlias

from secconf.store.commands import Operation
from secconf.store.executors import AsyncExecutor, ErrorPolicy, SyncExecutor
from secconf.store.redis import all_redis_errors, connect, connect_blocking

#: An executor's ``run``, blocking whichever its kind.
Run: TypeAlias = Callable[[Operation[Any]], Any]
Kind: TypeAlias = Literal["sync", "async"]
KINDS: tuple[Kind, ...] = ("sync", "async")


@contextmanager
def executor(
    kind: Kind, url: str, *, timeout: float = 1.0, errors: ErrorPolicy = all_redis_errors
) -> Iterator[Run]:
    """A :class:`SyncExecutor` or an :class:`AsyncExecutor` (on a loop of its own) for *url*."""
    if kind == "sync":
        blocking = connect_blocking(url, timeout=timeout)
        try:
            yield SyncExecutor(blocking, errors=errors).run
        finally:
            blocking.close()
        return
    loop = asyncio.new_event_loop()
    client = connect(url, timeout=timeout)
    running = AsyncExecutor(client, errors=errors)
    try:
        yield lambda operation: loop.run_until_complete(running.run(operation))
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
