"""The redis_server fixture itself: free port, restartable, flushed per test, retries a taken port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

import tests.fixtures.redis_server as plugin
from tests.fixtures.redis_server import RedisServer, RedisServerError


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_server_runs_on_loopback_and_restarts_on_the_same_port(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert _ping(redis_server.url)
    config = redis.Redis.from_url(redis_server.url).config_get("*")
    assert config["save"] == ""
    assert config["appendonly"] == "no"
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"
    port = redis_server.port
    redis_server.stop()
    assert not _ping(redis_server.url)
    redis_server.stop()  # idempotent
    redis_server.start()
    assert redis_server.port == port
    assert _ping(redis_server.url)


def test_redis_url_is_flushed(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("left-behind", "1")  # the next test must not see this
    client.close()


def test_redis_url_is_flushed_again(redis_url: str) -> None:
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_redis_url_restarts_a_server_a_test_left_stopped(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    redis_server.stop()  # as a failing outage test might leave it
    assert not _ping(redis_server.url)
    # The next test's redis_url, set up now in this test: the server is running again.
    redis_url: str = request.getfixturevalue("redis_url")
    assert _ping(redis_url)
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_a_taken_port_is_retried_with_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate the race: the port we picked is taken before redis-server binds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken, plugin.free_tcp_port()])
        monkeypatch.setattr(plugin, "free_tcp_port", lambda: next(picks))
        server = RedisServer(tmp_path)
        try:
            server.start()
            assert server.port != taken
            assert _ping(server.url)
        finally:
            server.stop()
        assert not server.running


def test_a_server_that_exits_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-redis"
    fake.write_text("#!/bin/sh\necho 'fatal: cannot start' >&2\nexit 3\n")
    fake.chmod(0o700)
    monkeypatch.setattr(plugin, "REDIS_SERVER", str(fake))
    server = RedisServer(tmp_path)
    with pytest.raises(RedisServerError, match="exited with 3"):
        server.start()
    assert not server.running


def test_a_server_that_never_answers_is_killed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-redis"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o700)
    monkeypatch.setattr(plugin, "REDIS_SERVER", str(fake))
    monkeypatch.setattr(plugin, "START_DEADLINE", 0.3)
    server = RedisServer(tmp_path)
    with pytest.raises(RedisServerError, match="did not answer PING within") as caught:
        server.start()
    assert "port" in str(caught.value)
    assert not server.running  # killed, not left behind
