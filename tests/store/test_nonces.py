"""DigestNonces against a real Redis (and Redis Cluster): nc strictly increasing, bounded, atomic."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from secconf.core.errors import ServiceUnavailable
from secconf.store._names import nonce_key
from secconf.store.conferences import connect_blocking
from secconf.store.nonces import NONCE_CLOCK_MARGIN, DigestNonces

NONCE = "65f1a2b3.000102030405060708090a0b." + "ab" * 32


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect_blocking(redis_url, timeout=0.5)
    yield client
    client.close()


def test_each_count_once_and_strictly_increasing(client: redis.Redis) -> None:
    nonces = DigestNonces(client, "sctest")
    assert nonces.count(NONCE) is None
    assert nonces.use(NONCE, 1, 30) is True
    assert nonces.use(NONCE, 1, 30) is False  # the same nc again: a replay
    assert nonces.use(NONCE, 2, 30) is True  # a phone reusing its nonce, nc + 1
    assert nonces.use(NONCE, 5, 30) is True  # counts may skip (requests that never arrived)
    assert nonces.use(NONCE, 3, 30) is False  # below the last accepted: a replay
    assert nonces.use(NONCE, 5, 30) is False
    assert nonces.count(NONCE) == 5
    # Another nonce has its own count.
    assert nonces.use(NONCE + "0", 1, 30) is True


def test_record_is_hashed_bounded_and_keeps_its_first_ttl(client: redis.Redis) -> None:
    nonces = DigestNonces(client, "sctest")
    assert nonces.use(NONCE, 1, 30) is True
    digest = hashlib.sha256(NONCE.encode()).hexdigest()[:32]
    key = f"sctest:nonce:{{{digest}}}"
    assert nonces.key(NONCE) == nonce_key("sctest", NONCE) == key
    assert client.keys("*") == [key.encode()]
    assert client.get(key) == b"1"  # the count only: no nonce, user or response
    ttl = client.pttl(key)
    assert (30 + NONCE_CLOCK_MARGIN - 1) * 1000 < ttl <= (30 + NONCE_CLOCK_MARGIN) * 1000
    client.pexpire(key, 5000)  # later counts keep the first TTL (KEEPTTL), never extend it
    assert nonces.use(NONCE, 2, 30) is True
    assert 0 < client.pttl(key) <= 5000
    assert nonces.use(NONCE, 2, 30) is False  # a replay writes nothing
    assert 0 < client.pttl(key) <= 5000


def test_record_expires(client: redis.Redis) -> None:
    nonces = DigestNonces(client, "sctest")
    assert nonces.use(NONCE, 1, 30) is True
    client.pexpire(nonces.key(NONCE), 50)
    time.sleep(0.15)
    assert client.keys("*") == []


def test_concurrent_uses_exactly_one_wins(redis_url: str) -> None:
    """Workers and nodes racing with the same nonce and count: one accepted, every time."""
    clients = [connect_blocking(redis_url, timeout=1.0) for _ in range(6)]
    try:
        stores = [DigestNonces(c, "sctest") for c in clients]

        def race(
            store: DigestNonces, nonce: str, barrier: threading.Barrier, results: list[bool]
        ) -> None:
            barrier.wait()
            results.append(store.use(nonce, 1, 30))

        for round_ in range(20):
            nonce = f"{NONCE}{round_}"
            results: list[bool] = []
            barrier = threading.Barrier(len(stores))
            threads = [
                threading.Thread(target=race, args=(s, nonce, barrier, results)) for s in stores
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(results) == [False] * 5 + [True]
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize(
    ("count", "lifetime"), [(0, 30), (2**32, 30), (True, 30), (1, 0), (1, -1), (1, float("inf"))]
)
def test_arguments_are_checked(client: redis.Redis, count: object, lifetime: object) -> None:
    with pytest.raises(ValueError, match=r"nonce-count|lifetime"):
        DigestNonces(client, "sctest").use(NONCE, count, lifetime)  # type: ignore[arg-type]
    assert client.keys("*") == []


def test_dead_redis_is_503() -> None:
    client = connect_blocking("redis://127.0.0.1:1/0", timeout=0.2)
    with pytest.raises(ServiceUnavailable):
        DigestNonces(client, "sctest").use(NONCE, 1, 30)


def test_on_redis_cluster(redis_cluster_url: str) -> None:
    """One key per script call, any slot: the same answers on Redis Cluster."""
    client = connect_blocking(redis_cluster_url, timeout=1.0)
    try:
        nonces = DigestNonces(client, "sctest")
        for index in range(8):  # spread over the masters' slots
            nonce = f"{NONCE}{index}"
            assert nonces.use(nonce, 1, 30) is True
            assert nonces.use(nonce, 1, 30) is False
            assert nonces.use(nonce, 2, 30) is True
            assert nonces.count(nonce) == 2
    finally:
        client.close()
