"""The command layer's two executors run the same operation alike, against a real Redis.

Each test runs once per executor (``sync``: ``SyncExecutor`` over ``redis.Redis``;
``async``: ``AsyncExecutor`` over ``redis.asyncio``) and, where the operation's keys
allow it, on one server and on a three-master Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

import pytest
import redis

from secconf.core.errors import ServiceUnavailable
from secconf.store.commands import Command, Eval, Pipeline, Scan, Script, Steps, command, operation
from secconf.store.errors import Conflict, RedisRefused
from secconf.store.redis import redis_errors
from tests.fixtures.redis_server import RedisServer

from .executors import KINDS, Kind, Run, executor

_INCR_BY: Final = Script("return redis.call('incrby', KEYS[1], ARGV[1])")
_FAILS: Final = Script("return redis.error_reply('WRONGTYPE not what this script wanted')")
_CONFLICT: Final = "conflict"


@operation("exercise every request")
def every_request(tag: str) -> Steps[dict[str, object]]:
    """One operation that yields each kind of request, its keys in one Cluster slot."""
    counter, stream, roster = f"t:{{{tag}}}:n", f"t:{{{tag}}}:s", f"t:{{{tag}}}:r"
    found: dict[str, object] = {}
    found["set"] = yield command("SET", counter, 5, "NX", "PX", 60_000)
    found["set again"] = yield command("SET", counter, 5, "NX", "PX", 60_000)
    found["script"] = yield Eval(_INCR_BY, [counter], [2])
    found["multi"] = yield Pipeline(
        (command("HSET", roster, "a", "1", "b", "2"), command("EXPIRE", roster, 60)),
        transaction=True,
    )
    found["pipeline"] = yield Pipeline(
        (command("HGETALL", roster), command("GET", counter)), transaction=False
    )
    try:
        yield command("XGROUP CREATE", stream, "g", "0")
    except redis.exceptions.ResponseError as exc:  # no stream: Redis's error thrown in
        found["thrown"] = "requires the key to exist" in str(exc)
    yield command("XADD", stream, "*", "f", "v")
    yield command("XGROUP CREATE", stream, "g", "0")
    try:
        yield command("XGROUP CREATE", stream, "g", "0")
    except redis.exceptions.ResponseError as exc:
        found["busy"] = str(exc).split()[0]
    found["scan"] = sorted((yield Scan(f"t:{{{tag}}}:*")))
    return found


@operation("fail in a script")
def failing_script() -> Steps[object]:
    return (yield Eval(_FAILS, ["t:{x}:n"]))


@operation("refuse")
def refusing(tag: str) -> Steps[None]:
    yield command("SET", f"t:{{{tag}}}:n", 1)
    raise Conflict(_CONFLICT)


@operation("read a counter")
def read_counter(tag: str) -> Steps[object]:
    return (yield command("GET", f"t:{{{tag}}}:n"))


EXPECTED: Final[dict[str, object]] = {
    "set": True,
    "set again": None,
    "script": 7,
    "multi": [2, True],
    "pipeline": [{b"a": b"1", b"b": b"2"}, b"7"],
    "thrown": True,  # XGROUP CREATE of a stream that does not exist (no MKSTREAM)
    "busy": "BUSYGROUP",
    "scan": [b"t:{c1}:n", b"t:{c1}:r", b"t:{c1}:s"],
}


@pytest.fixture(params=["single", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    name = "redis_url" if request.param == "single" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def run(kind: Kind, any_redis_url: str) -> Iterator[Run]:
    with executor(kind, any_redis_url) as running:
        yield running


def test_both_executors_run_one_operation_alike(run: Run) -> None:
    assert run(every_request("c1")) == EXPECTED


@pytest.mark.parametrize("kind", KINDS)
def test_a_script_is_loaded_again_after_the_server_forgot_it(kind: Kind, redis_url: str) -> None:
    """NOSCRIPT (a restarted or flushed server): loaded again, the call goes through."""
    with executor(kind, redis_url) as run:
        assert run(every_request("c1"))["script"] == 7
        flush = redis.Redis.from_url(redis_url)
        flush.script_flush()
        flush.close()
        assert run(every_request("c2"))["script"] == 7


def test_what_redis_refuses_is_redis_refused_and_the_connection_stays_usable(run: Run) -> None:
    with pytest.raises(RedisRefused, match=r"could not fail in a script \(ResponseError\)") as e:
        run(failing_script())
    assert "wanted" not in str(e.value)  # Redis's own text stays on the chained error
    assert isinstance(e.value.__cause__, redis.exceptions.ResponseError)
    assert run(read_counter("x")) is None


def test_an_error_of_the_operation_itself_passes_unchanged(run: Run) -> None:
    with pytest.raises(Conflict, match=_CONFLICT):
        run(refusing("c1"))
    assert run(read_counter("c1")) == b"1"  # what it sent before raising was sent


@pytest.mark.parametrize("kind", KINDS)
def test_the_focus_policy_lets_refusals_pass_as_redis_py_raises_them(
    kind: Kind, redis_url: str
) -> None:
    with (
        executor(kind, redis_url, errors=redis_errors) as run,
        pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"),
    ):
        run(failing_script())


@pytest.mark.parametrize("kind", KINDS)
def test_redis_stopped_is_service_unavailable(
    kind: Kind, redis_server: RedisServer, redis_url: str
) -> None:
    with executor(kind, redis_url, timeout=0.5) as run:
        assert run(read_counter("c1")) is None  # connected once
        redis_server.stop()
        try:
            for made in (read_counter("c1"), every_request("c1"), failing_script()):
                with pytest.raises(ServiceUnavailable, match="Redis unavailable: could not"):
                    run(made)
        finally:
            redis_server.start()
        assert run(read_counter("c1")) is None  # and back once Redis is


@pytest.mark.parametrize("kind", KINDS)
def test_redis_paused_is_service_unavailable_within_the_timeout(
    kind: Kind, redis_server: RedisServer, redis_url: str
) -> None:
    timeout = 0.4
    with executor(kind, redis_url, timeout=timeout) as run:
        assert run(read_counter("c1")) is None
        redis_server.pause()
        try:
            for made in (read_counter("c1"), every_request("c1")):
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable, match="Redis unavailable: could not"):
                    run(made)
                assert time.monotonic() - started < timeout + 0.5
        finally:
            redis_server.resume()
        # the late replies of the timed-out calls are never read as the next call's
        assert run(every_request("c3")) == {
            **EXPECTED,
            "scan": [b"t:{c3}:n", b"t:{c3}:r", b"t:{c3}:s"],
        }


def test_a_request_no_executor_knows_is_a_type_error(run: Run) -> None:
    @operation("send nonsense")
    def nonsense() -> Steps[None]:
        yield "PING"  # type: ignore[misc]

    with pytest.raises(TypeError, match="not a store request"):
        run(nonsense())


def test_requests_are_plain_data() -> None:
    assert command("GET", "k") == Command(("GET", "k"))
    assert Eval(_INCR_BY, ["k"], [1]).script is _INCR_BY
    assert Pipeline((command("GET", "k"),), transaction=True).transaction
    assert Scan("p:*").count == 500
