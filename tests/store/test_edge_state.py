"""EdgeRecords against a real Redis: one edge id's keys, each write one MULTI, records as stored."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest

from secconf.core.errors import ServiceUnavailable
from secconf.store.edge_state import EdgeRecords, EdgeRecordsSnapshot
from tests.fixtures.redis_server import RedisServer
from tests.store.aio import client, run

BASE = "pfx:edge:{edge-1}"
EPOCH = {"added": 12.5, "suite": "AES_CM_128_HMAC_SHA1_80", "wrapped": "d3JhcHBlZA=="}
LEG = {"conference": "c1", "mode": "sdes", "ports": [40000, 40002], "participant_key": None}


def _ssrc(leg: str, retired: int | None = None) -> dict[str, object]:
    return {"leg": leg, "direction": "participant", "retired_epoch": retired}


def test_records_go_where_the_layout_says_and_come_back_as_stored(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            records = EdgeRecords(handle, "pfx", "edge-1")
            assert records.base == BASE
            await records.save_epoch("c2", 1, EPOCH)
            await records.save_epoch("c1", 1, EPOCH)
            await records.save_epoch("c1", 2, {**EPOCH, "added": 13.0})
            await records.save_ssrcs(
                "c1", {7: _ssrc("leg-a"), 8: _ssrc("leg-a", 1)}, leg=("leg-a", LEG)
            )

            assert await handle.smembers(f"{BASE}:conferences") == {b"c1", b"c2"}
            assert json.loads(await handle.hget(f"{BASE}:conf:c1:epochs", "2")) == {
                **EPOCH,
                "added": 13.0,
            }
            assert json.loads(await handle.hget(f"{BASE}:conf:c1:ssrcs", "8")) == _ssrc("leg-a", 1)
            assert json.loads(await handle.hget(f"{BASE}:legs", "leg-a")) == LEG

            snapshot = await records.load()
            assert snapshot == EdgeRecordsSnapshot(
                epochs={"c1": {1: EPOCH, 2: {**EPOCH, "added": 13.0}}, "c2": {1: EPOCH}},
                ssrcs={"c1": {7: _ssrc("leg-a"), 8: _ssrc("leg-a", 1)}, "c2": {}},
                legs={"leg-a": LEG},
            )
            assert list(snapshot.epochs) == ["c1", "c2"]  # conferences in sorted order

    run(scenario)


def test_the_ssrc_registry_is_replaced_never_merged(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            records = EdgeRecords(handle, "pfx", "edge-1")
            await records.save_ssrcs(
                "c1", {7: _ssrc("leg-a"), 9: _ssrc("leg-b")}, leg=("leg-a", LEG)
            )
            await records.save_ssrcs("c1", {9: _ssrc("leg-b")}, leg=("leg-b", LEG))
            assert (await records.load()).legs == {"leg-a": LEG, "leg-b": LEG}
            assert await handle.hkeys(f"{BASE}:conf:c1:ssrcs") == [b"9"]

            await records.delete_leg("c1", "leg-b", {})  # the last leg: no SSRC left
            assert not await handle.exists(f"{BASE}:conf:c1:ssrcs")
            assert await handle.hkeys(f"{BASE}:legs") == [b"leg-a"]
            await records.delete_leg_id("leg-a")
            assert not await handle.exists(f"{BASE}:legs")

    run(scenario)


def test_deleting_an_epoch_and_a_conference(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            records = EdgeRecords(handle, "pfx", "edge-1")
            other = EdgeRecords(handle, "pfx", "edge-2")
            for store in (records, other):
                await store.save_epoch("c1", 1, EPOCH)
                await store.save_epoch("c1", 2, EPOCH)
                await store.save_ssrcs("c1", {7: _ssrc("leg-a")}, leg=("leg-a", LEG))
            await records.save_ssrcs("c2", {}, leg=("leg-z", LEG))
            await records.delete_epoch("c1", 1)
            assert list((await records.load()).epochs["c1"]) == [2]

            await records.delete_conference("c1", ["leg-a"])
            snapshot = await records.load()
            assert snapshot.epochs == {}
            assert snapshot.ssrcs == {}
            assert snapshot.legs == {"leg-z": LEG}  # another conference's leg stays
            assert list((await other.load()).legs) == ["leg-a"]  # another edge id: untouched
            assert await handle.keys(f"{BASE}:conf:*") == []

    run(scenario)


def test_redis_down_is_service_unavailable(redis_server: RedisServer, redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url, timeout=0.5) as handle:
            records = EdgeRecords(handle, "pfx", "edge-1")
            redis_server.stop()
            try:
                calls: list[Callable[[], Awaitable[object]]] = [
                    lambda: records.save_epoch("c1", 1, EPOCH),
                    lambda: records.delete_epoch("c1", 1),
                    lambda: records.save_ssrcs("c1", {}, leg=("leg-a", LEG)),
                    lambda: records.delete_leg("c1", "leg-a", {}),
                    lambda: records.delete_leg_id("leg-a"),
                    lambda: records.delete_conference("c1", ["leg-a"]),
                    records.load,
                ]
                for call in calls:
                    with pytest.raises(ServiceUnavailable, match="Redis unavailable"):
                        await call()
            finally:
                redis_server.start()

    run(scenario)
