"""TpkStore against a real Redis: one TPK made on first use, shared by every KMS, only wrapped."""

from __future__ import annotations

import asyncio

import pytest

from secconf.core.errors import ServiceUnavailable, TicketRejected
from secconf.store.errors import KeyUnwrapError
from secconf.store.keywrap import KeyWrapper
from secconf.store.tpks import TPK_BYTES, TpkStore
from tests.fixtures.redis_server import RedisServer
from tests.store.aio import client, dump_everything, run
from tests.store.conftest import OTHER_KEK


def test_the_first_tpk_is_made_once_and_kept(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tpks = TpkStore(handle, wrapper, "pfx")
            tpk_id, key = await tpks.current()
            assert len(tpk_id) == 8
            assert len(key) == TPK_BYTES
            assert await tpks.current() == (tpk_id, key)
            assert await handle.get("pfx:kms:tpk-current") == tpk_id
            assert await handle.keys("pfx:kms:tpk:*") == [f"pfx:kms:tpk:{tpk_id.hex()}".encode()]
            # another KMS process (no cache) reads the same key back
            assert await TpkStore(handle, wrapper, "pfx").load(tpk_id) == key
            assert tpks.cached(tpk_id) == key
            assert key.hex() not in repr(tpks)

    run(scenario)


def test_kms_instances_racing_for_the_first_tpk_agree_on_one(
    redis_url: str, wrapper: KeyWrapper
) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            stores = [TpkStore(handle, wrapper, "pfx") for _ in range(8)]
            results = await asyncio.gather(*(store.current() for store in stores))
            assert len(set(results)) == 1
            assert len(await handle.keys("pfx:kms:tpk:*")) == 1  # the losers took theirs back

    run(scenario)


def test_only_the_wrapped_tpk_is_stored(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> tuple[bytes, list[bytes]]:
        async with client(redis_url) as handle:
            _, key = await TpkStore(handle, wrapper, "pfx").current()
            return key, await dump_everything(handle)

    key, stored = run(scenario)
    assert all(key not in value and key.hex().encode() not in value for value in stored)


def test_unknown_ids_and_another_kek(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tpks = TpkStore(handle, wrapper, "pfx")
            assert await tpks.load(b"\x00" * 8) is None  # never issued under it
            assert await tpks.load(b"") is None
            assert await tpks.load(b"\x01" * 33) is None  # longer than any TPK id
            assert tpks.cached(b"\x00" * 8) is None
            tpk_id, _ = await tpks.current()
            with pytest.raises(KeyUnwrapError):
                await TpkStore(handle, KeyWrapper(OTHER_KEK, "other"), "pfx").load(tpk_id)
            await handle.delete(f"pfx:kms:tpk:{tpk_id.hex()}")
            with pytest.raises(TicketRejected, match="missing"):
                await TpkStore(handle, wrapper, "pfx").current()

    run(scenario)


def test_redis_down_is_service_unavailable(
    redis_server: RedisServer, redis_url: str, wrapper: KeyWrapper
) -> None:
    async def scenario() -> None:
        async with client(redis_url, timeout=0.5) as handle:
            tpks = TpkStore(handle, wrapper, "pfx")
            redis_server.stop()
            try:
                with pytest.raises(ServiceUnavailable, match="current TPK"):
                    await tpks.current()
                with pytest.raises(ServiceUnavailable, match="read a TPK"):
                    await tpks.load(b"\x00" * 8)
            finally:
                redis_server.start()

    run(scenario)
