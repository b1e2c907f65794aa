"""Running the async store against the real Redis without an asyncio pytest plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import redis.asyncio

from secconf.store.redis import connect

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run *scenario()* on a fresh event loop (one per test, like pytest-asyncio would)."""

    async def main() -> T:
        return await scenario()

    return asyncio.run(main())


@asynccontextmanager
async def client(url: str, timeout: float = 2.0) -> AsyncIterator[redis.asyncio.Redis]:
    """A client from :func:`secconf.store.redis.connect`, closed on exit."""
    handle = connect(url, timeout=timeout)
    try:
        yield handle
    finally:
        await handle.aclose()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise AssertionError(f"expected bytes from Redis, got {type(value).__name__}")


async def dump_everything(handle: redis.asyncio.Redis) -> list[bytes]:
    """Every key name and every value in the database, each as bytes, plus DUMP of each key."""
    raw: list[object] = []
    async for key in handle.scan_iter(count=100):
        raw.append(key)
        kind = _as_bytes(await handle.type(key)).decode()
        if kind == "string":
            raw.append(await handle.get(key))
        elif kind == "hash":
            for field, value in (await handle.hgetall(key)).items():
                raw += [field, value]
        elif kind == "set":
            raw += list(await handle.smembers(key))
        elif kind == "list":
            raw += list(await handle.lrange(key, 0, -1))
        elif kind == "zset":
            raw += list(await handle.zrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected key type {kind} for {key!r}")
        raw.append(await handle.dump(key))
    return [_as_bytes(value) for value in raw]
