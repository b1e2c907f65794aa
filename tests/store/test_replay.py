"""ReplayCache against a real Redis: SET NX PX on the token's SHA-256, nothing else stored."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from secconf.store.replay import ReplayCache
from tests.store.aio import client, dump_everything, run

TOKEN = b"\x1a\x02MIKEY-I_MESSAGE with T and RAND: 0123456789abcdef"


def test_second_sighting_is_a_replay(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            cache = ReplayCache(handle, "secconf")
            assert await cache.remember(TOKEN, 60) is True
            assert await cache.remember(TOKEN, 60) is False
            assert await cache.remember(TOKEN, 60) is False
            assert await cache.remember(TOKEN + b"!", 60) is True
            assert await cache.remember(bytearray(TOKEN), 60) is False

    run(scenario)


def test_token_is_new_again_after_its_ttl(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            cache = ReplayCache(handle)
            assert await cache.remember(TOKEN, 0.15) is True
            assert await cache.remember(TOKEN, 60) is False  # a replay does not extend the TTL
            ttl = await handle.pttl(cache.key(TOKEN))
            assert 0 < ttl <= 150
            await asyncio.sleep(0.25)
            assert await cache.remember(TOKEN, 0.15) is True
            assert await cache.remember(TOKEN, 0.15) is False

    run(scenario)


def test_only_the_hash_is_stored(redis_url: str) -> None:
    async def scenario() -> list[bytes]:
        async with client(redis_url) as handle:
            cache = ReplayCache(handle, "pfx")
            await cache.remember(TOKEN, 60)
            assert await handle.keys() == [
                b"pfx:replay:" + hashlib.sha256(TOKEN).hexdigest().encode()
            ]
            assert await handle.get(cache.key(TOKEN)) == b"1"
            return await dump_everything(handle)

    for value in run(scenario):
        assert TOKEN not in value
        assert TOKEN.hex().encode() not in value
        assert b"MIKEY" not in value


def test_concurrent_sightings_exactly_one_is_new(redis_url: str) -> None:
    async def scenario() -> None:
        handles = [client(redis_url) for _ in range(6)]
        opened = [await handle.__aenter__() for handle in handles]
        try:
            caches = [ReplayCache(handle) for handle in opened]
            for round_ in range(20):
                token = TOKEN + bytes([round_])
                results = await asyncio.gather(*(cache.remember(token, 30) for cache in caches))
                assert sorted(results) == [False] * 5 + [True]
        finally:
            for handle in handles:
                await handle.__aexit__(None, None, None)

    run(scenario)


def test_prefixes_do_not_share_sightings(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            assert await ReplayCache(handle, "kms").remember(TOKEN, 60) is True
            assert await ReplayCache(handle, "kamailio").remember(TOKEN, 60) is True

    run(scenario)


def test_tiny_ttl_rounds_up_to_a_millisecond(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            cache = ReplayCache(handle)
            start = time.monotonic()
            assert await cache.remember(TOKEN, 1e-9) is True
            await asyncio.sleep(0.01)
            assert await cache.remember(TOKEN, 1e-9) is True
            assert time.monotonic() - start < 1

    run(scenario)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "60", True])
def test_ttl_must_be_positive(redis_url: str, ttl: object) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            with pytest.raises(ValueError, match="ttl_seconds"):
                await ReplayCache(handle).remember(TOKEN, ttl)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await ReplayCache(handle).remember("text", 1)  # type: ignore[arg-type]
            assert await handle.dbsize() == 0

    run(scenario)


def test_the_blocking_face_runs_the_same_operations_on_the_same_keys(redis_url: str) -> None:
    """BlockingReplayCache (Kamailio workers) and ReplayCache (the KMS) share one cache."""
    from secconf.store.redis import connect_blocking
    from secconf.store.replay import BlockingReplayCache

    blocking = connect_blocking(redis_url, timeout=1.0)
    try:
        cache = BlockingReplayCache(blocking, "pfx")
        assert cache.key(TOKEN) == f"pfx:replay:{hashlib.sha256(TOKEN).hexdigest()}"
        assert cache.holder(TOKEN) is None
        assert not cache.seen(TOKEN)
        assert cache.remember(TOKEN, 60, holder="dialog-1") is True
        assert cache.remember(TOKEN, 60, holder="dialog-2") is False
        assert cache.holder(TOKEN) == "dialog-1"

        async def scenario() -> None:
            async with client(redis_url) as handle:
                assert await ReplayCache(handle, "pfx").seen(TOKEN)
                assert await ReplayCache(handle, "pfx").remember(TOKEN, 60) is False

        run(scenario)
        cache.forget(TOKEN)
        assert not cache.seen(TOKEN)
        assert cache.remember(TOKEN, 60) is True
        assert cache.holder(TOKEN) == "1"
        with pytest.raises(TypeError):
            cache.remember("text", 60)  # type: ignore[arg-type]
    finally:
        blocking.close()
