"""The two I/O shells of the command layer (:mod:`.commands`): one blocking, one asyncio.

Both run any :class:`~.commands.Operation` the same way: the operation's requests go to
Redis one after the other, each reply is sent back into it, an error reply of Redis is
thrown into it, and whatever escapes goes through the executor's error policy —
:func:`~.redis.all_redis_errors` by default (an outage ``ServiceUnavailable``, anything
Redis refused ``RedisRefused``: the watcher's loops log both and go on) or
:func:`~.redis.redis_errors` (refusals pass unchanged: the focus fails loudly on one).
Every call has the client's socket timeout (:func:`~.redis.connect`,
:func:`~.redis.connect_blocking`); nothing is retried.

:class:`SyncExecutor` is the Kamailio workers' (no event loop, no threads); on a plain
client its scripts are :class:`~.redis.DirectScript`, the measured fast path.
:class:`AsyncExecutor` is the watcher's, over ``redis.asyncio``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeAlias, TypeVar, cast

import redis
import redis.asyncio
import redis.exceptions

from .commands import Command, Eval, Operation, Pipeline, Request, Scan, Script
from .redis import ScriptRunner, all_redis_errors, register_script

__all__ = ["AsyncExecutor", "ErrorPolicy", "SyncExecutor"]

T = TypeVar("T")

#: How an executor turns redis-py's errors into the store's: given the operation's action.
ErrorPolicy: TypeAlias = Callable[[str], AbstractContextManager[None]]


class SyncExecutor:
    """Runs operations over a blocking ``redis.Redis`` (plain, Sentinel or Cluster)."""

    __slots__ = ("_client", "_errors", "_scripts")

    def __init__(self, client: redis.Redis, *, errors: ErrorPolicy = all_redis_errors) -> None:
        self._client = client
        self._errors = errors
        self._scripts: dict[Script, ScriptRunner] = {}

    def __repr__(self) -> str:
        return f"SyncExecutor({self._client!r})"

    def run(self, operation: Operation[T]) -> T:
        """*operation*'s result; a store error (per the policy) if Redis fails it."""
        steps = operation.steps
        with self._errors(operation.action):
            try:
                request = next(steps)
                while True:
                    try:
                        reply = self._send(request)
                    except redis.exceptions.ResponseError as exc:
                        request = steps.throw(exc)
                    else:
                        request = steps.send(reply)
            except StopIteration as done:
                return cast(T, done.value)

    def _send(self, request: Request) -> Any:
        client = self._client
        if isinstance(request, Eval):
            runner = self._scripts.get(request.script)
            if runner is None:
                runner = self._scripts[request.script] = register_script(
                    client, request.script.text
                )
            return runner(keys=request.keys, args=request.args)
        if isinstance(request, Command):
            return client.execute_command(*request.args)  # type: ignore[no-untyped-call]
        if isinstance(request, Pipeline):
            pipe = client.pipeline(transaction=request.transaction)
            for each in request.commands:
                pipe.execute_command(*each.args)  # type: ignore[no-untyped-call]
            return pipe.execute()
        if isinstance(request, Scan):
            return list(client.scan_iter(match=request.match, count=request.count))
        raise TypeError(f"not a store request: {type(request).__name__}")


class AsyncExecutor:
    """Runs operations over a ``redis.asyncio`` client (:func:`~.redis.connect`'s)."""

    __slots__ = ("_client", "_errors", "_scripts")

    def __init__(
        self, client: redis.asyncio.Redis, *, errors: ErrorPolicy = all_redis_errors
    ) -> None:
        self._client = client
        self._errors = errors
        self._scripts: dict[Script, Any] = {}

    def __repr__(self) -> str:
        return f"AsyncExecutor({self._client!r})"

    @property
    def client(self) -> redis.asyncio.Redis:
        """The client (to close it: ``await executor.client.aclose()``)."""
        return self._client

    async def run(self, operation: Operation[T]) -> T:
        """*operation*'s result; a store error (per the policy) if Redis fails it."""
        steps = operation.steps
        with self._errors(operation.action):
            try:
                request = next(steps)
                while True:
                    try:
                        reply = await self._send(request)
                    except redis.exceptions.ResponseError as exc:
                        request = steps.throw(exc)
                    else:
                        request = steps.send(reply)
            except StopIteration as done:
                return cast(T, done.value)

    async def _send(self, request: Request) -> Any:
        client = self._client
        if isinstance(request, Eval):
            runner = self._scripts.get(request.script)
            if runner is None:
                runner = self._scripts[request.script] = client.register_script(request.script.text)
            return await runner(keys=request.keys, args=request.args)  # type: ignore[arg-type]
        if isinstance(request, Command):
            return await client.execute_command(*request.args)  # type: ignore[no-untyped-call]
        if isinstance(request, Pipeline):
            pipe = client.pipeline(transaction=request.transaction)
            for each in request.commands:
                pipe.execute_command(*each.args)
            return await pipe.execute()
        if isinstance(request, Scan):
            return [key async for key in client.scan_iter(match=request.match, count=request.count)]
        raise TypeError(f"not a store request: {type(request).__name__}")
