"""DirectScript: the stores' Lua scripts over one connection per thread and process, against a real Redis.

Each property a Kamailio worker relies on: the same replies as redis-py's ``Script``, a
flushed script cache survived, a script error leaving the connection usable, a timed-out
reply never read as the next call's, a stopped server a 503, threads and forked children
never sharing a connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis
import redis.exceptions

from secconf.core.errors import ServiceUnavailable
from secconf.store.redis import (
    DirectScript,
    LazyCluster,
    connect_blocking,
    redis_errors,
    register_script,
)
from secconf.store.redis_url import parse_redis_url
from tests.fixtures.redis_server import RedisServer

ECHO = "return {KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], #ARGV}"


def _connections_made(client: redis.Redis) -> int:
    """How many connections the server has accepted so far (its own count, not ours)."""
    return int(client.info("stats")["total_connections_received"])


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    handle = connect_blocking(redis_url, timeout=0.5)
    yield handle
    handle.close()


def test_register_script_is_direct_for_one_server_and_redis_py_for_a_cluster(
    client: redis.Redis,
) -> None:
    assert isinstance(register_script(client, ECHO), DirectScript)
    cluster = LazyCluster(parse_redis_url("redis+cluster://127.0.0.1:1"), {})
    assert not isinstance(register_script(cluster, ECHO), DirectScript)  # type: ignore[arg-type]


def test_same_replies_and_argument_encoding_as_redis_py(client: redis.Redis) -> None:
    direct = register_script(client, ECHO)
    reference = client.register_script(ECHO)
    for args in (["é", b"\x00\xff", 7, 2.5], ["", b"", -1, 10**20], ["a b", b"\r\n", 0, 0.1]):
        assert direct(keys=["k:{x}"], args=args) == reference(keys=["k:{x}"], args=args)
    nil = register_script(client, "return nil")
    assert nil() is None
    assert direct.script == reference.script == ECHO
    assert register_script(client, "return 42")() == 42


@pytest.mark.parametrize("bad", [None, True, object()])
def test_arguments_redis_py_refuses_are_refused_before_sending(
    client: redis.Redis, bad: object
) -> None:
    script = register_script(client, "redis.call('SET', 'touched', 1) return 1")
    with pytest.raises(redis.exceptions.DataError):
        script(keys=[], args=[bad])
    assert client.exists("touched") == 0


def test_a_flushed_script_cache_is_loaded_again(client: redis.Redis) -> None:
    script = register_script(client, "return 'still here'")
    assert script() == b"still here"
    client.script_flush()
    assert script() == b"still here"


def test_a_script_error_raises_and_keeps_the_connection(client: redis.Redis) -> None:
    fine = register_script(client, "return 1")
    failing = register_script(client, "return redis.error_reply('refused by the script')")
    fine()
    before = _connections_made(client)
    with pytest.raises(redis.exceptions.ResponseError, match="refused by the script"):
        failing()
    assert fine() == 1
    # one more connection: the INFO call's own (from the pool), none by the scripts
    assert _connections_made(client) - before <= 1


def test_a_late_reply_is_never_read_as_the_next_calls(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    slow = register_script(client, "return 'first'")
    quick = register_script(client, "return 'second'")
    assert slow() == b"first"
    redis_server.pause()
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            slow()
    finally:
        redis_server.resume()
    assert quick() == b"second"


def test_a_stopped_server_is_503_and_the_next_call_after_restart_works(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    script = register_script(client, "return 'up'")
    assert script() == b"up"
    redis_server.stop()
    try:
        with pytest.raises(ServiceUnavailable), redis_errors("run a script"):
            script()
    finally:
        redis_server.start()
    assert script() == b"up"


def test_each_thread_has_its_own_connection_and_its_own_replies(client: redis.Redis) -> None:
    echo = register_script(client, "return ARGV[1]")
    echo(keys=[], args=[b"warm"])
    before = _connections_made(client)
    wrong: list[tuple[bytes, bytes]] = []
    barrier = threading.Barrier(4)

    def work(number: int) -> None:
        barrier.wait()
        for round_ in range(300):
            wanted = f"{number}:{round_}".encode()
            got = echo(keys=[], args=[wanted])
            if got != wanted:
                wrong.append((wanted, got))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not wrong
    # four threads, four new connections (and at most the INFO call's own)
    assert 4 <= _connections_made(client) - before <= 5


def test_a_forked_child_opens_its_own_connection(client: redis.Redis) -> None:
    echo = register_script(client, "return ARGV[1]")
    assert echo(keys=[], args=["parent"]) == b"parent"
    _connections_made(client)  # the pool's connection for INFO exists before counting
    before = _connections_made(client)
    pid = os.fork()
    if pid == 0:  # the child: one call, its exit status says whether it got its reply
        code = 1
        try:
            code = 0 if echo(keys=[], args=["child"]) == b"child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert echo(keys=[], args=["parent again"]) == b"parent again"
    # the child connected once (a Kamailio worker forked after the module loaded); the
    # parent kept its own connection
    assert _connections_made(client) - before == 1


def test_a_restarted_server_costs_no_call(redis_server: RedisServer, client: redis.Redis) -> None:
    """The connection the old server closed is noticed before sending, not failed on."""
    script = register_script(client, "return 'up'")
    assert script() == b"up"
    redis_server.stop()
    redis_server.start()
    assert script() == b"up"


def test_the_scripts_of_a_client_share_one_connection_per_thread(client: redis.Redis) -> None:
    """A Kamailio worker keeps one connection for all its scripts, not one per script."""
    first = register_script(client, "return 1")
    first()
    _connections_made(client)  # the pool's connection for INFO exists before counting
    before = _connections_made(client)
    for number in range(2, 6):
        assert register_script(client, f"return {number}")() == number
    assert _connections_made(client) == before
