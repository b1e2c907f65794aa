"""The watcher's Redis state against a real Redis: lease, rosters, REFER queue, journal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from secconf.core.errors import ServiceUnavailable
from secconf.store.commands import Operation
from secconf.store.errors import InvalidRecord, RedisRefused
from secconf.store.redis import connect_blocking
from secconf.store.watcher import (
    DIALOUTS_MAX,
    REFER_GROUP,
    REPORTS_MAX,
    WATCHER_KEY_TTL,
    ReferQueue,
    RosterEntry,
    RosterStore,
    WatcherJournal,
    WatcherLease,
)
from tests.fixtures.redis_server import RedisServer

from .executors import KINDS, Kind, Run, executor

PREFIX = "scw"
CONFERENCE = "0123456789abcdef"
ALICE = RosterEntry("1700000000.1", '"alice" <sip:alice@example.com>', "call-a@example.com")
BOB = RosterEntry("1700000000.2", '"bob" <sip:bob@example.com>', "")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    handle = connect_blocking(redis_url, timeout=1.0)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(params=KINDS)
def run(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Run]:
    """Each test once with either executor: one operation, two I/O shells."""
    with executor(request.param, redis_url) as running:
        yield running


# -- the lease ----------------------------------------------------------------------------


def test_one_lease_holder_per_conference_and_a_lapsed_lease_is_taken_over(
    client: redis.Redis, run: Run
) -> None:
    first = WatcherLease(PREFIX, "w1", ttl=0.3)
    second = WatcherLease(PREFIX, "w2", ttl=0.3)
    assert first.token.startswith("w1/")
    assert first.token != WatcherLease(PREFIX, "w1", ttl=0.3).token  # another life
    assert run(first.hold("c1"))
    assert not run(second.hold("c1"))  # held: the other watcher leaves it alone
    assert run(first.hold("c1"))  # renewal
    assert run(second.hold("c2"))  # another conference is free
    assert run(first.holder("c1")) == first.token
    run(second.release("c1"))  # not its lease: no effect
    assert run(first.holder("c1")) == first.token
    client.pexpire(first.key("c1"), 1)  # first stops renewing (dies)

    time.sleep(0.05)
    assert run(second.hold("c1"))
    assert not run(first.hold("c1"))  # the old holder cannot renew someone else's lease
    run(second.release("c1"))
    assert run(first.holder("c1")) is None


def test_the_lease_lives_its_ttl_and_a_renewal_starts_it_again(
    client: redis.Redis, run: Run
) -> None:
    lease = WatcherLease(PREFIX, "w1", ttl=2.0)
    assert lease.key("c1") == "scw:watcher-lease:c1"
    assert run(lease.hold("c1"))
    assert client.get(lease.key("c1")) == lease.token.encode()
    client.pexpire(lease.key("c1"), 500)
    assert run(lease.hold("c1"))  # renewed by its holder: the whole lifetime again
    assert 1500 < client.pttl(lease.key("c1")) <= 2000


# -- rosters ------------------------------------------------------------------------------


def test_a_roster_entry_is_json_and_the_roster_lives_a_day(client: redis.Redis, run: Run) -> None:
    rosters = RosterStore(PREFIX)
    key = rosters.key(CONFERENCE)
    assert key == f"scw:roster:{CONFERENCE}"
    run(rosters.add(CONFERENCE, "PJSIP/alice-0001", ALICE))
    run(rosters.add(CONFERENCE, "PJSIP/bob-0002", BOB))
    assert json.loads(client.hget(key, "PJSIP/alice-0001")) == {  # type: ignore[arg-type]
        "uniqueid": ALICE.uniqueid,
        "caller_id": ALICE.caller_id,
        "call_id": ALICE.call_id,
    }
    assert WATCHER_KEY_TTL - 5 < client.ttl(key) <= WATCHER_KEY_TTL  # type: ignore[operator]
    assert run(rosters.members(CONFERENCE)) == {"PJSIP/alice-0001": ALICE, "PJSIP/bob-0002": BOB}
    run(rosters.remove(CONFERENCE, "PJSIP/alice-0001"))
    assert run(rosters.members(CONFERENCE)) == {"PJSIP/bob-0002": BOB}
    run(rosters.delete(CONFERENCE))
    assert not client.exists(key)
    assert run(rosters.members(CONFERENCE)) == {}


def test_replace_all_leaves_exactly_the_rosters_asterisk_lists(
    client: redis.Redis, run: Run
) -> None:
    rosters = RosterStore(PREFIX)
    run(rosters.add("gone", "PJSIP/x-1", ALICE))  # a bridge Asterisk no longer lists
    run(rosters.add("kept", "PJSIP/left-1", ALICE))  # a member that left while AMI was away
    run(rosters.add("empty", "PJSIP/y-1", ALICE))
    client.set("scw:conf:{kept}", "not a roster")  # other keys are not the reconcile's
    client.hset("other:roster:gone", "PJSIP/z", "{}")  # nor another prefix's rosters

    run(rosters.replace_all({"kept": {"PJSIP/bob-2": BOB}, "empty": {}}))

    assert sorted(client.scan_iter(match="scw:roster:*")) == [b"scw:roster:kept"]
    assert run(rosters.members("kept")) == {"PJSIP/bob-2": BOB}
    assert WATCHER_KEY_TTL - 5 < client.ttl("scw:roster:kept") <= WATCHER_KEY_TTL  # type: ignore[operator]
    assert client.get("scw:conf:{kept}") == b"not a roster"
    assert client.exists("other:roster:gone")


def test_an_entry_with_missing_fields_reads_as_empty_strings() -> None:
    assert RosterEntry.from_json(b'{"uniqueid": "1.1"}') == RosterEntry("1.1", "", "")


# -- the REFER queue ----------------------------------------------------------------------


def _refer(client: redis.Redis, queue: ReferQueue, n: int) -> None:
    client.xadd(queue.key(CONFERENCE), {"target": f"sip:u{n}@example.com"})


def _targets(entries: list[tuple[str, dict[str, str]]]) -> list[str]:
    return [fields["target"] for _, fields in entries]


def test_no_stream_no_group_and_nothing_written(client: redis.Redis, run: Run) -> None:
    queue = ReferQueue(PREFIX, "w1")
    assert queue.key(CONFERENCE) == f"scw:conf:{{{CONFERENCE}}}:refer"
    assert run(queue.take(CONFERENCE)) == []
    assert run(queue.take(CONFERENCE)) == []
    assert client.keys("*") == []


def test_each_entry_goes_to_one_consumer_entries_before_the_group_included(
    client: redis.Redis, run: Run
) -> None:
    first, second = ReferQueue(PREFIX, "w1"), ReferQueue(PREFIX, "w2")
    for n in range(3):  # before any group exists (the focus's XADD)
        _refer(client, first, n)
    seen = [run(first.take(CONFERENCE))]
    for n in range(3, 6):
        _refer(client, first, n)
    seen += [run(q.take(CONFERENCE)) for q in (second, first, second)]
    assert sorted(t for batch in seen for t in _targets(batch)) == [
        f"sip:u{n}@example.com" for n in range(6)
    ]
    assert [len(batch) for batch in seen] == [3, 3, 0, 0]
    pending = client.xpending(first.key(CONFERENCE), REFER_GROUP)
    assert pending["pending"] == 6  # until each dial-out is done and acknowledged
    assert {c["name"] for c in pending["consumers"]} == {b"w1", b"w2"}

    for entry_id, _ in seen[0]:
        run(first.ack(CONFERENCE, entry_id))
    assert client.xpending(first.key(CONFERENCE), REFER_GROUP)["pending"] == 3


def test_the_group_is_made_once_and_found_again_after_forget(client: redis.Redis, run: Run) -> None:
    queue = ReferQueue(PREFIX, "w1")
    _refer(client, queue, 0)
    assert _targets(run(queue.take(CONFERENCE))) == ["sip:u0@example.com"]
    queue.forget(CONFERENCE)  # the conference ended, then its stream came back
    _refer(client, queue, 1)
    # BUSYGROUP (thrown into the operation): the same group
    assert _targets(run(queue.take(CONFERENCE))) == ["sip:u1@example.com"]
    assert _targets(run(ReferQueue(PREFIX, "w2").take(CONFERENCE))) == []
    assert len(client.xinfo_groups(queue.key(CONFERENCE))) == 1


def test_a_conference_id_the_focus_never_mints_is_refused(run: Run) -> None:
    with pytest.raises(InvalidRecord):
        run(ReferQueue(PREFIX, "w1").take("Not/An-Id"))


# -- the journal --------------------------------------------------------------------------


def test_reports_and_dialouts_are_trimmed_streams_that_live_a_day(
    client: redis.Redis, run: Run
) -> None:
    journal = WatcherJournal(PREFIX)
    assert journal.report_key(CONFERENCE) == f"scw:rekeys:{CONFERENCE}"
    assert journal.dialout_key(CONFERENCE) == f"scw:dialout:{CONFERENCE}"
    run(journal.add_report(CONFERENCE, {"epoch": "2", "verdicts": "{}"}))
    run(journal.add_dialout(CONFERENCE, {"target": "sip:bob@example.com", "result": "answered"}))
    ((_, report),) = client.xrange(journal.report_key(CONFERENCE))
    assert report == {b"epoch": b"2", b"verdicts": b"{}"}
    ((_, dialout),) = client.xrange(journal.dialout_key(CONFERENCE))
    assert dialout[b"result"] == b"answered"
    for key in (journal.report_key(CONFERENCE), journal.dialout_key(CONFERENCE)):
        assert WATCHER_KEY_TTL - 5 < client.ttl(key) <= WATCHER_KEY_TTL  # type: ignore[operator]

    for n in range(3 * REPORTS_MAX):
        run(journal.add_report(CONFERENCE, {"epoch": str(n)}))
    # MAXLEN ~: Redis trims whole stream nodes (100 entries each by default), never below.
    assert REPORTS_MAX <= client.xlen(journal.report_key(CONFERENCE)) < 2 * REPORTS_MAX
    assert DIALOUTS_MAX == 10 * REPORTS_MAX


# -- errors: store errors only ------------------------------------------------------------

OPERATIONS: dict[str, Callable[[], Operation[Any]]] = {
    "lease.hold": lambda: WatcherLease(PREFIX, "w1", 1.0).hold("c1"),
    "lease.holder": lambda: WatcherLease(PREFIX, "w1", 1.0).holder("c1"),
    "lease.release": lambda: WatcherLease(PREFIX, "w1", 1.0).release("c1"),
    "rosters.add": lambda: RosterStore(PREFIX).add("c1", "PJSIP/a", ALICE),
    "rosters.remove": lambda: RosterStore(PREFIX).remove("c1", "PJSIP/a"),
    "rosters.delete": lambda: RosterStore(PREFIX).delete("c1"),
    "rosters.replace_all": lambda: RosterStore(PREFIX).replace_all({"c1": {}}),
    "rosters.members": lambda: RosterStore(PREFIX).members("c1"),
    "refers.take": lambda: ReferQueue(PREFIX, "w1").take(CONFERENCE),
    "refers.ack": lambda: ReferQueue(PREFIX, "w1").ack(CONFERENCE, "1-0"),
    "journal.add_report": lambda: WatcherJournal(PREFIX).add_report("c1", {"a": "b"}),
    "journal.add_dialout": lambda: WatcherJournal(PREFIX).add_dialout("c1", {"a": "b"}),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_redis_down_is_service_unavailable(
    name: str, kind: Kind, redis_server: RedisServer, redis_url: str
) -> None:
    with executor(kind, redis_url, timeout=0.5) as run:
        redis_server.stop()
        try:
            with pytest.raises(ServiceUnavailable, match="Redis unavailable"):
                run(OPERATIONS[name]())
        finally:
            redis_server.start()


def test_what_redis_refuses_is_redis_refused_never_a_redis_py_error(
    client: redis.Redis, run: Run
) -> None:
    """The watcher's loops catch store errors only: WRONGTYPE must not get past them."""
    client.hset("scw:watcher-lease:c1", "shape", "hash-where-a-string-belongs")
    client.set("scw:roster:c1", "string-where-a-hash-belongs")
    client.set("scw:rekeys:c1", "string-where-a-stream-belongs")
    client.hset(f"scw:conf:{{{CONFERENCE}}}:refer", "shape", "hash-where-a-stream-belongs")
    lease = WatcherLease(PREFIX, "w1", 1.0)
    refusals: list[Operation[Any]] = [
        lease.hold("c1"),
        lease.holder("c1"),
        lease.release("c1"),
        RosterStore(PREFIX).add("c1", "PJSIP/a", ALICE),
        RosterStore(PREFIX).members("c1"),
        WatcherJournal(PREFIX).add_report("c1", {"a": "b"}),
        ReferQueue(PREFIX, "w1").ack(CONFERENCE, "1-0"),
    ]
    for operation in refusals:
        with pytest.raises(RedisRefused, match="Redis error: could not") as caught:
            run(operation)
        assert isinstance(caught.value.__cause__, redis.RedisError)
        assert "belongs" not in str(caught.value)  # no argument or value quoted
    # XGROUP CREATE on a key that is no stream: no stream yet for the queue, not an error
    assert run(ReferQueue(PREFIX, "w1").take(CONFERENCE)) == []
