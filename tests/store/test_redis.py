"""connect() and the 503 translation: a stopped or hung Redis gives ServiceUnavailable, fast."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
import redis.exceptions

from secconf.core.errors import SecconfError, ServiceUnavailable
from secconf.store.errors import RedisRefused
from secconf.store.keywrap import KeyWrapper
from secconf.store.redis import (
    all_redis_errors,
    connect,
    ping,
    redis_errors,
    translate_redis_errors,
)
from secconf.store.replay import ReplayCache
from secconf.store.tickets import TicketRecord, TicketStore
from secconf.store.users import UserStore
from tests.fixtures.redis_server import RedisServer
from tests.store.aio import client, run

TIMEOUT = 0.5
BUDGET = 2.0  # what "within the timeout" means here: well under 2 s with timeout=0.5
ALICE = "sip:alice@example.com"
PSK = bytes(range(32))
TICKET_ID = b"\x01\x02\x03\x04"
RECORD = TicketRecord("sip:alice@example.com", ["sip:bob@example.com"], 1e9, 2e9)

Operation = Callable[[UserStore, ReplayCache, TicketStore], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "users.add": lambda u, r, t: u.add("sip:new@example.com", PSK),
    "users.psk": lambda u, r, t: u.psk(ALICE),
    "users.list": lambda u, r, t: u.list(),
    "users.revoke": lambda u, r, t: u.revoke(ALICE),
    "users.remove": lambda u, r, t: u.remove(ALICE),
    "replay.remember": lambda u, r, t: r.remember(b"token", 10),
    "tickets.record": lambda u, r, t: t.record(b"\xff", RECORD),
    "tickets.get": lambda u, r, t: t.get(TICKET_ID),
    "tickets.revoke": lambda u, r, t: t.revoke(TICKET_ID),
    "tickets.is_revoked": lambda u, r, t: t.is_revoked(TICKET_ID),
    "tickets.live_count": lambda u, r, t: t.live_count(ALICE),
    "tickets.discard": lambda u, r, t: t.discard(TICKET_ID, ALICE),
    "replay.seen": lambda u, r, t: r.seen(b"token"),
}


def _stores(
    handle: redis.asyncio.Redis, wrapper: KeyWrapper
) -> tuple[UserStore, ReplayCache, TicketStore]:
    return UserStore(handle, wrapper), ReplayCache(handle), TicketStore(handle)


async def _seed(handle: redis.asyncio.Redis, wrapper: KeyWrapper) -> None:
    users, _, tickets = _stores(handle, wrapper)
    await users.add(ALICE, PSK)
    await tickets.record(TICKET_ID, RECORD)


async def _expect_unavailable(
    operation: Operation, stores: tuple[UserStore, ReplayCache, TicketStore]
) -> float:
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        await operation(*stores)
    elapsed = time.monotonic() - start
    error = caught.value
    assert error.status_code == 503
    assert "Redis" in str(error)
    assert PSK.hex() not in str(error)
    return elapsed


def test_stopped_redis_gives_503_within_the_timeout_then_recovers(
    redis_server: RedisServer, redis_url: str, wrapper: KeyWrapper
) -> None:
    async def scenario() -> dict[str, float]:
        async with client(redis_url, timeout=TIMEOUT) as handle:
            stores = _stores(handle, wrapper)
            await _seed(handle, wrapper)
            assert await stores[0].psk(ALICE) == PSK  # the pool now holds a live connection
            redis_server.stop()
            try:
                timings = {
                    name: await _expect_unavailable(operation, stores)
                    for name, operation in OPERATIONS.items()
                }
            finally:
                redis_server.start()
            # Same client, same pool: it reconnects by itself once Redis is back.
            await handle.flushall()
            await _seed(handle, wrapper)
            assert await stores[0].psk(ALICE) == PSK
            assert await stores[1].remember(b"after", 10) is True
            assert await stores[2].get(TICKET_ID) == RECORD
            return timings

    port = redis_server.port
    timings = run(scenario)
    assert redis_server.port == port
    slow = {name: seconds for name, seconds in timings.items() if seconds >= BUDGET}
    assert slow == {}


def test_hung_redis_gives_503_after_the_socket_timeout(
    redis_server: RedisServer, redis_url: str, wrapper: KeyWrapper
) -> None:
    # SIGSTOP: the kernel still accepts connections but nothing answers, the case
    # that only a timeout can catch.
    checked = ("users.psk", "replay.remember", "tickets.is_revoked")

    async def scenario() -> dict[str, float]:
        async with client(redis_url, timeout=TIMEOUT) as handle:
            stores = _stores(handle, wrapper)
            await _seed(handle, wrapper)
            redis_server.pause()
            try:
                timings = {
                    name: await _expect_unavailable(OPERATIONS[name], stores) for name in checked
                }
            finally:
                redis_server.resume()
            assert await stores[0].psk(ALICE) == PSK
            return timings

    timings = run(scenario)
    for name, seconds in timings.items():
        assert TIMEOUT * 0.9 <= seconds < BUDGET, (name, seconds)


def test_fresh_client_to_a_dead_port_gives_503(
    redis_server: RedisServer, wrapper: KeyWrapper
) -> None:
    redis_server.stop()
    try:

        async def scenario() -> float:
            async with client(redis_server.url, timeout=TIMEOUT) as handle:
                return await _expect_unavailable(OPERATIONS["users.psk"], _stores(handle, wrapper))

        assert run(scenario) < BUDGET
    finally:
        redis_server.start()


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_connect_requires_a_positive_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        connect("redis://127.0.0.1:1/0", timeout=timeout)


def test_connect_sets_every_timeout_and_no_retries() -> None:
    handle = connect("redis://user:s3cr3t-pw@127.0.0.1:1/0", timeout=0.25)
    kwargs = handle.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 0
    assert "s3cr3t-pw" not in repr(handle)


def test_redis_errors_translates_connection_and_timeout_errors() -> None:
    failures: list[BaseException] = [
        redis.exceptions.ConnectionError("Error 111 connecting to redis://:s3cr3t@h:1"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("loading"),
        TimeoutError(),
        ConnectionRefusedError(),
    ]
    for failure in failures:
        with pytest.raises(ServiceUnavailable) as caught, redis_errors("do a thing"):
            raise failure
        assert (
            str(caught.value)
            == f"Redis unavailable: could not do a thing ({type(failure).__name__})"
        )
        assert "s3cr3t" not in str(caught.value)
        assert caught.value.__cause__ is failure
    # Anything else is not an outage and passes unchanged.
    with pytest.raises(redis.exceptions.ResponseError), redis_errors():
        raise redis.exceptions.ResponseError("WRONGTYPE")


def test_translate_redis_errors_decorator() -> None:
    @translate_redis_errors("fetch")
    async def fetch(value: int) -> int:
        if value < 0:
            raise redis.exceptions.ConnectionError("down")
        return value * 2

    assert run(lambda: fetch(21)) == 42
    with pytest.raises(ServiceUnavailable, match="could not fetch"):
        run(lambda: fetch(-1))
    assert fetch.__name__ == "fetch"


def test_all_redis_errors_leaves_no_redis_py_error_to_catch() -> None:
    """Outages as with redis_errors; every other redis-py error a RedisRefused (a SecconfError)."""
    with pytest.raises(ServiceUnavailable, match="could not renew"), all_redis_errors("renew"):
        raise redis.exceptions.ConnectionError("Error 111 connecting to redis://:s3cr3t@h:1")
    refusals: list[BaseException] = [
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding s3cr3t"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        redis.exceptions.DataError("Invalid input of type: 'NoneType'"),
    ]
    for refusal in refusals:
        with pytest.raises(RedisRefused) as caught, all_redis_errors("write a roster"):
            raise refusal
        assert isinstance(caught.value, SecconfError)
        assert caught.value.status_code == 500
        assert (
            str(caught.value) == f"Redis error: could not write a roster ({type(refusal).__name__})"
        )
        assert caught.value.__cause__ is refusal
    # Errors of our own pass unchanged, whatever they are.
    with pytest.raises(ServiceUnavailable, match="mine"), all_redis_errors():
        raise ServiceUnavailable("mine")
    with pytest.raises(KeyError), all_redis_errors():
        raise KeyError("x")


def test_ping_is_the_health_check(redis_server: RedisServer, redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url, timeout=TIMEOUT) as handle:
            await ping(handle)
            redis_server.stop()
            try:
                with pytest.raises(ServiceUnavailable, match="health check"):
                    await ping(handle)
            finally:
                redis_server.start()
            await ping(handle)  # the same client again once Redis is back

    run(scenario)
