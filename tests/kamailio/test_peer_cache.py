"""The ACK of a fresh 2xx is checked against the peers in Kamailio's shared memory (htable).

kamailio/peer_cache.py: the node that records a dialog's peers at the 2xx keeps them in the
``secconf_peers`` htable for the ACK's window, so that ACK costs no Redis round trip. These
tests hold the real Kamailio (config/kamailio/kamailio.cfg loads htable) to it: the ACK
reaches the mixer without the store's sender script running; with ``peer_table = ""`` the
same join does run it (so the first check can fail); and a forged ACK from another flow,
with the dialog's genuine Call-ID, tags and Route, is not let through by the cache: it goes
through the whole gate (Route MAC, the sender script) and is dropped there.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from secconf.client.sip import UserAgent
from secconf.store.conference_scripts import SENDER
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.security.attacker import Attacker

from .conftest import ALICE, Focus, Upstream, _start_focus, offer, pai

# Redis names a script by its SHA-1 (EVALSHA): how MONITOR shows the sender check running.
SENDER_SHA = hashlib.sha1(SENDER.encode()).hexdigest()  # noqa: S324


class Monitor:
    """Every command Redis executes while it runs (``MONITOR``, on its own connection)."""

    def __init__(self, url: str) -> None:
        self.commands: list[str] = []
        self._client = redis.Redis.from_url(url, socket_timeout=0.2)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self.commands.append(str(monitor.next_command()["command"]))
                except redis.TimeoutError:
                    continue

    def __enter__(self) -> Monitor:
        self._thread.start()
        if not self._ready.wait(5):
            raise AssertionError("MONITOR did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def ran(self, sha: str) -> bool:
        return any(sha in command for command in self.commands)


@dataclass(frozen=True)
class Joined:
    """Alice's call as an attacker could learn it: Call-ID, both tags, the Route set."""

    acked: bool  # the mixer got the ACK of its 2xx
    call_id: str
    participant_tag: str
    mixer_tag: str
    routes: tuple[str, ...]


def _join_and_ack(focus: Focus) -> Joined:
    """Alice creates a conference; the mixer's side waits for the ACK of its 2xx."""

    async def scenario(upstream: Upstream) -> Joined:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            call = await alice.invite(
                focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
            )
            assert upstream.ua is not None
            try:
                await upstream.ua.next_call(3)  # returns once the 2xx was ACKed
                acked = True
            except TimeoutError:
                acked = False
            dialog = call.dialog
            return Joined(
                acked, call.call_id, dialog.local_tag, dialog.remote_tag, tuple(dialog.route_set)
            )
        finally:
            await alice.close()

    return focus.run(scenario)


@pytest.fixture(scope="module")
def uncached_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Focus]:
    running = _start_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("uncached"),
        focus_lines='peer_table = ""\n',
    )  # fmt: skip
    yield running
    running.server.stop()


def test_the_ack_of_a_fresh_answer_needs_no_redis(focus: Focus) -> None:
    with Monitor(focus.redis_server.url) as monitor:
        joined = _join_and_ack(focus)
    assert joined.acked
    assert monitor.commands, "MONITOR saw nothing: the check below would prove nothing"
    assert not monitor.ran(SENDER_SHA)


def test_without_the_table_the_ack_is_checked_in_redis(uncached_focus: Focus) -> None:
    with Monitor(uncached_focus.redis_server.url) as monitor:
        joined = _join_and_ack(uncached_focus)
    assert joined.acked
    assert monitor.ran(SENDER_SHA)


@pytest.mark.parametrize("pose", ["participant", "mixer"])
def test_a_forged_ack_is_not_passed_by_the_cache(focus: Focus, pose: str) -> None:
    joined = _join_and_ack(focus)
    assert joined.acked
    before = focus.snapshot(ours_only=True)
    sender, receiver = (joined.participant_tag, joined.mixer_tag)
    if pose == "mixer":
        sender, receiver = receiver, sender
    attacker = Attacker(("127.0.0.1", focus.server.port))
    try:
        with Monitor(focus.redis_server.url) as monitor:
            attacker.send(
                attacker.request(
                    "ACK", f"sip:mallory@127.0.0.1:{attacker.port}", call_id=joined.call_id,
                    from_uri=ALICE, from_tag=sender, to_uri="sip:asterisk@127.0.0.1",
                    to_tag=receiver, cseq=1, routes=joined.routes,
                )
            )  # fmt: skip
            reason = focus.server.refusal(joined.call_id)
        assert "in-dialog ACK refused 403" in reason, reason
        assert "not from a peer" in reason, reason
        assert monitor.ran(SENDER_SHA)  # the cache did not decide: the whole gate did
        assert attacker.listen(0.3) == []
    finally:
        attacker.close()
    assert focus.snapshot(ours_only=True) == before
