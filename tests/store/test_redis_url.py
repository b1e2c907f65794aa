"""``redis.url``: every accepted form, clear errors for bad ones, and clients on real servers.

The parser is pure; the connection tests use the real single server, the
three-master cluster and the sentinel fixtures (tests/fixtures).
"""

from __future__ import annotations

import time

import pytest
import redis

from secconf.core.errors import ServiceUnavailable
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.store.conferences import ConferenceStore
from secconf.store.keywrap import KeyWrapper
from secconf.store.redis import LazyCluster, connect, connect_blocking, redis_errors
from secconf.store.redis_url import RedisTarget, RedisUrlError, parse_redis_url
from tests.fixtures.ports import free_tcp_port
from tests.fixtures.redis_cluster import RedisClusterServers, RedisSentinelServers
from tests.store.aio import run


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget("single", url="redis://127.0.0.1:6379/0")),
        ("redis://:pw@h/3", RedisTarget("single", url="redis://:pw@h/3")),
        ("rediss://h:6380", RedisTarget("single", url="rediss://h:6380")),
        ("unix:///run/redis.sock?db=2", RedisTarget("single", url="unix:///run/redis.sock?db=2")),
        ("redis+cluster://10.0.0.1:7000", RedisTarget("cluster", nodes=(("10.0.0.1", 7000),))),
        (
            "redis+cluster://a:7000,b:7001,[::1]:7002/",
            RedisTarget("cluster", nodes=(("a", 7000), ("b", 7001), ("::1", 7002))),
        ),
        ("redis+cluster://h", RedisTarget("cluster", nodes=(("h", 6379),))),
        ("REDIS+CLUSTER://h:1/0", RedisTarget("cluster", nodes=(("h", 1),))),
        (
            "redis+cluster://u:p%40ss@h:7000,h:7000",
            RedisTarget("cluster", nodes=(("h", 7000),), username="u", password="p@ss"),
        ),
        (
            "redis+sentinel://s1:26379,s2/mymaster",
            RedisTarget("sentinel", nodes=(("s1", 26379), ("s2", 26379)), service="mymaster"),
        ),
        (
            "redis+sentinel://:secret@s1:5000/my.master-1/4/",
            RedisTarget(
                "sentinel", nodes=(("s1", 5000),), service="my.master-1", db=4, password="secret"
            ),
        ),
    ],
)
def test_accepted_forms(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "non-empty"),
        (None, "non-empty"),
        ("127.0.0.1:6379", "needs a scheme"),
        ("http://h:1", "not one of"),
        ("redis+clustre://h:1", "not one of"),
        ("redis://h:1/x", "redis://"),
        ("redis://", "no host"),
        ("redis://h 1", "spaces"),
        ("redis+cluster://", "no host:port"),
        ("redis+cluster://h:1,", "is not host[:port]"),
        ("redis+cluster://h:99999", "out of range"),
        ("redis+cluster://h:0", "out of range"),
        ("redis+cluster://h:1/2", "database 0 only"),
        ("redis+cluster://h:1?ssl=true", "no query"),
        ("redis+cluster://h:x", "is not host[:port]"),
        ("redis+cluster://[zz]:1", "is not host[:port]"),
        ("redis+sentinel://s:1", "/<service-name>"),
        ("redis+sentinel://s:1/", "/<service-name>"),
        ("redis+sentinel://s:1/a/b/c", "/<service-name>"),
        ("redis+sentinel://s:1/bad*name", "service name"),
        ("redis+sentinel://s:1/m/x", "database is a number"),
        ("redis+sentinel:///m", "no host:port"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: object, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2@h:x/0",
        "redis+cluster://u:hunter2@h:99999",
        "redis+sentinel://u:hunter2@s:1/bad*",
    ],
)
def test_errors_and_repr_never_show_the_password(url: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        parse_redis_url(url)
    assert "hunter2" not in str(caught.value)
    target = parse_redis_url("redis+cluster://u:hunter2@h:1")
    assert "hunter2" not in repr(target)


def test_connect_functions_parse_the_url_first() -> None:
    with pytest.raises(RedisUrlError):
        connect_blocking("redis+cluster://h:1/5", timeout=0.3)
    with pytest.raises(RedisUrlError):
        connect("redis+sentinel://s:1", timeout=0.3)
    with pytest.raises(ValueError, match="timeout"):
        connect_blocking("redis+cluster://h:1", timeout=0)


# -- real servers -------------------------------------------------------------------------


def test_cluster_client_sync_and_async(redis_cluster_url: str) -> None:
    client = connect_blocking(redis_cluster_url, timeout=0.5)
    assert isinstance(client, LazyCluster)
    try:
        for i in range(30):  # keys spread over the three masters
            client.set(f"k{i}", str(i).encode())
        assert client.get("k7") == b"7"
        owners = {client.keyslot(f"k{i}") // 5462 for i in range(30)}  # type: ignore[attr-defined]
        assert len(owners) == 3
    finally:
        client.close()

    async def main() -> bytes | None:
        handle = connect(redis_cluster_url, timeout=0.5)
        try:
            value: bytes | None = await handle.get("k3")
            return value
        finally:
            await handle.aclose()

    assert run(main) == b"3"


def test_cluster_node_down_is_503_within_a_second(
    redis_cluster: RedisClusterServers, redis_cluster_url: str, wrapper: KeyWrapper
) -> None:
    """A master stopped: a conference in its slots gets 503 fast, the others keep working."""
    from redis.cluster import key_slot

    client = connect_blocking(redis_cluster_url, timeout=0.3)
    store = ConferenceStore(client, wrapper)
    client.ping()  # the slot map is known before the node goes
    victim = redis_cluster.nodes[0]
    ids = [f"c{i}" for i in range(40)]
    on_victim = next(c for c in ids if redis_cluster.node_for_slot(key_slot(c.encode())) is victim)
    elsewhere = next(
        c for c in ids if redis_cluster.node_for_slot(key_slot(c.encode())) is not victim
    )
    victim.stop()
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            store.get(on_victim)
        assert time.monotonic() - started < 1.0
        assert store.get(elsewhere) is None
    finally:
        client.close()
        redis_cluster.ensure_ready()


def test_cluster_all_down_at_start_is_503_then_recovers(
    redis_cluster: RedisClusterServers, redis_cluster_url: str, wrapper: KeyWrapper
) -> None:
    """A worker started while no node answers: 503 in under a second, works once one is back."""
    dead = f"redis+cluster://127.0.0.1:{free_tcp_port()}"
    client = connect_blocking(dead, timeout=0.3)
    store = ConferenceStore(client, wrapper)  # registers scripts without connecting
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        store.get("c0ffee")
    assert time.monotonic() - started < 1.0
    # Within the hold time the next call does not wait for the dead node again.
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        store.get("c0ffee")
    assert time.monotonic() - started < 0.1
    live = ConferenceStore(connect_blocking(redis_cluster_url, timeout=0.3), wrapper)
    assert live.get("c0ffee") is None


def test_sentinel_client_sync_and_async(
    redis_sentinel: RedisSentinelServers, redis_sentinel_url: str
) -> None:
    client = connect_blocking(redis_sentinel_url, timeout=0.5)
    client.set("via-sentinel", b"1")
    direct = redis.Redis("127.0.0.1", redis_sentinel.master.port)
    assert direct.get("via-sentinel") == b"1"  # it is the master the sentinel names
    direct.close()
    client.close()

    async def main() -> bytes | None:
        handle = connect(redis_sentinel_url, timeout=0.5)
        try:
            value: bytes | None = await handle.get("via-sentinel")
            return value
        finally:
            await handle.aclose()

    assert run(main) == b"1"


def test_sentinel_down_is_503_within_a_second() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_tcp_port()}/secconf"
    client = connect_blocking(url, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable), redis_errors("read"):
        client.get("x")
    assert time.monotonic() - started < 1.0


def test_kms_stores_work_on_the_cluster(redis_cluster_url: str, wrapper: KeyWrapper) -> None:
    """Users (a hash and the index, tag ``{users}``), tickets (record and marker, tag
    ``{<id>}``; the initiator's index alone) and the replay cache: their scripts stay in
    one slot (no CROSSSLOT)."""
    from secconf.store.errors import TicketLimitReached
    from secconf.store.replay import ReplayCache
    from secconf.store.tickets import TicketRecord, TicketStore
    from secconf.store.users import UserStore

    psk = bytes(range(32))

    async def main() -> None:
        handle = connect(redis_cluster_url, timeout=0.5)
        try:
            users = UserStore(handle, wrapper)
            await users.add("sip:alice@example.com", psk)
            await users.add("sip:bob@example.com", psk)
            assert await users.psk("sip:alice@example.com") == psk
            await users.revoke("sip:bob@example.com")
            assert [u.identity for u in await users.list()] == [
                "sip:alice@example.com",
                "sip:bob@example.com",
            ]
            assert await users.remove("sip:bob@example.com") is not False
            tickets = TicketStore(handle)
            record = TicketRecord("sip:alice@example.com", ["sip:bob@example.com"], 1e9, 4e9)
            await tickets.record(b"\x01\x02", record)
            await tickets.revoke(b"\x01\x02")
            assert await tickets.is_revoked(b"\x01\x02")
            # The initiator's index (its own slot) bounds its records (theirs): no CROSSSLOT.
            for ticket_id in (b"\x03", b"\x04"):
                await tickets.record(ticket_id, record, limit=3)
            with pytest.raises(TicketLimitReached):
                await tickets.record(b"\x05", record, limit=3)
            assert await tickets.live_count("sip:alice@example.com") == 3
            await tickets.discard(b"\x04", "sip:alice@example.com")
            await tickets.record(b"\x05", record, limit=3)
            assert await tickets.get(b"\x05") == record
            replay = ReplayCache(handle)
            assert await replay.remember(b"token", 10)
            assert not await replay.remember(b"token", 10)
        finally:
            await handle.aclose()

    run(main)


def test_sentinel_failover_is_followed(
    redis_sentinel_failover: RedisSentinelServers, wrapper: KeyWrapper
) -> None:
    """After ``SENTINEL FAILOVER`` the same client reaches the new master.

    The pooled connection to the old master (now a replica) fails once with
    503 (redis-py turns its READONLY into a ConnectionError), never a 500 and
    never a write to a replica; the next call goes to the promoted server.
    """
    servers = redis_sentinel_failover
    client = connect_blocking(servers.url, timeout=0.5)
    store = ConferenceStore(client, wrapper)
    key = GroupKey(1, SUITES["AES_CM_128_HMAC_SHA1_80"], bytes(16), bytes(14))
    store.admission.create(
        "c0ffee", creator="sip:a@x", uri="sip:conf@x", group_key=key, call_id="c1", leg="l1"
    )
    new_master = servers.failover()
    outcomes = []
    for _ in range(3):
        try:
            store.admission.join(
                "c0ffee", identity="sip:a@x", call_id=f"c{len(outcomes) + 2}", leg="l2"
            )
            outcomes.append("ok")
        except ServiceUnavailable:
            outcomes.append("503")
    assert outcomes[-1] == "ok", outcomes
    assert outcomes.count("503") <= 1, outcomes
    direct = redis.Redis("127.0.0.1", new_master)
    assert direct.exists("secconf:conf:{c0ffee}")
    direct.close()
    client.close()
