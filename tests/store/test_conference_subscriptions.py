"""Conference event subscriptions in Redis (secconf.store.conference_subscriptions).

Real Redis, single server and three-master cluster: created only for a member of an
active conference in its mode, bounded per conference and per identity, every refusal
writing nothing; the notifier's state and the last document round-trip; the event key
only wrapped; removal and the node index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import redis

from secconf.core import cms, events
from secconf.core.confinfo import ConferenceDescription, ConferenceInfo, ConferenceState
from secconf.core.errors import Forbidden, RateLimited, ReplayedMessage
from secconf.core.focus import ConferenceNotFound
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.store.conference_subscriptions import SubscriptionRecord
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.errors import KeyUnwrapError
from secconf.store.keywrap import KeyWrapper

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
KEY = GroupKey(1, SUITE, bytes(range(16)), bytes(range(100, 114)))
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
CONF = "c0ffee"
URI = "sip:conf-c0ffee@conf.example.com"
EVENT_KEY = cms.EventKey(cms.event_key_id(7), bytes(range(200, 232)))


@pytest.fixture(params=["single", "cluster"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    name = "redis_url" if request.param == "single" else "redis_cluster_url"
    client = connect_blocking(str(request.getfixturevalue(name)), timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis, wrapper: KeyWrapper) -> ConferenceStore:
    store = ConferenceStore(client, wrapper, ended_ttl=30)
    store.admission.create(
        CONF, creator=ALICE, uri=URI, group_key=KEY, call_id="call-alice", leg="leg-alice",
        allowed=[BOB, CAROL], ssrcs=[1111],
    )  # fmt: skip
    return store


def _record(identity: str = ALICE, call_id: str = "sub-1", **changes: object) -> SubscriptionRecord:
    record = SubscriptionRecord(
        conference_id=CONF, call_id=call_id, sub_tag="their-tag", our_tag="our-tag",
        subscriber=identity, identity=identity, contact="sip:alice@192.0.2.1:5061;transport=tls",
        transport="tls", source="192.0.2.1:40000", socket="tls:127.0.0.1:5061", node="node-a",
        mode="sdes", epoch=1, notifier=events.started(URI, 1000.0, 600),
    )  # fmt: skip
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def _dump(client: redis.Redis) -> dict[bytes, object]:
    return {key: client.dump(key) for key in client.scan_iter()}


def _create(
    store: ConferenceStore, record: SubscriptionRecord, now: float = 1000.0, **bounds: int
) -> None:
    limits = {"max_per_conference": 8, "max_per_identity": 2, **bounds}
    store.subscriptions.create(record, now=now, **limits)


def test_a_member_subscribes_and_the_record_reads_back(
    store: ConferenceStore, client: redis.Redis
) -> None:
    record = _record(mode="sdes")
    _create(store, record)
    assert store.subscriptions.get(CONF, record.sub_id) == record
    assert store.subscriptions.of_conference(CONF) == {record.sub_id: ALICE}
    assert store.subscriptions.of_node("node-a", limit=10) == [(CONF, record.sub_id)]
    assert store.subscriptions.of_node("node-b", limit=10) == []
    ttl = client.pttl(store.keys.subscription(CONF, record.sub_id))
    assert 600_000 < ttl <= 720_000


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (_record(identity=BOB), Forbidden),  # allowed, but holds no dialog: not a member
        (_record(identity=CAROL), Forbidden),
        (_record(mode="kms"), Forbidden),  # the conference is SDES-keyed
        (_record(conference_id="nothere"), ConferenceNotFound),
    ],
)
def test_refusals_write_nothing(
    store: ConferenceStore, client: redis.Redis, record: SubscriptionRecord, error: type
) -> None:
    before = _dump(client)
    with pytest.raises(error) as raised:
        _create(store, record)
    assert raised.value.status_code in (403, 404)
    assert _dump(client) == before


def test_bounds_per_identity_and_per_conference(
    store: ConferenceStore, client: redis.Redis
) -> None:
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob")
    _create(store, _record(call_id="a1"))
    _create(store, _record(call_id="a2"))
    before = _dump(client)
    with pytest.raises(RateLimited) as raised:
        _create(store, _record(call_id="a3"))
    assert (raised.value.status_code, raised.value.retry_after) == (403, 60)
    with pytest.raises(RateLimited):
        _create(store, _record(identity=BOB, call_id="b1"), max_per_conference=2)
    with pytest.raises(Forbidden):  # the same dialog again
        _create(store, _record(call_id="a1"))
    assert _dump(client) == before
    _create(store, _record(identity=BOB, call_id="b1"), max_per_conference=3)
    assert sorted(store.subscriptions.of_conference(CONF).values()) == [ALICE, ALICE, BOB]


def test_notifier_state_and_last_document_round_trip(store: ConferenceStore) -> None:
    record = _record()
    _create(store, record)
    info = ConferenceInfo(
        URI, ConferenceDescription(display_text="weekly"), ConferenceState(user_count=1), ()
    )
    state, notify = events.plan(record.notifier, 1001.0, info)
    assert notify is not None
    assert store.subscriptions.save(record, state, now=1001.0)
    got = store.subscriptions.get(CONF, record.sub_id)
    assert got is not None
    assert got.notifier == state
    assert got.notifier.sent == info
    assert got.notifier.in_flight == events.InFlight(1, 1001.0 + events.TIMER_F)


def test_the_event_key_is_stored_wrapped(store: ConferenceStore, client: redis.Redis) -> None:
    client.hset(store.keys.conference(CONF), "mode", "kms")
    record = _record(mode="kms", event_key=EVENT_KEY)
    _create(store, record)
    got = store.subscriptions.get(CONF, record.sub_id)
    assert got is not None
    assert got.event_key == EVENT_KEY
    assert EVENT_KEY.kek.hex() not in repr(got)
    assert repr(EVENT_KEY.kek) not in repr(got)
    for key in client.scan_iter():
        dumped = client.dump(key) or b""
        assert EVENT_KEY.kek not in dumped
        assert EVENT_KEY.kek.hex().encode() not in dumped
    # moved to another subscription's record, the wrapped key does not open
    raw = client.hget(store.keys.subscription(CONF, record.sub_id), "event_kek")
    other = _record(call_id="sub-2", mode="kms", event_key=cms.EventKey(b"\x02" * 5, bytes(32)))
    _create(store, other)
    client.hset(store.keys.subscription(CONF, other.sub_id), "event_kek", raw)  # type: ignore[arg-type]
    with pytest.raises(KeyUnwrapError):
        store.subscriptions.get(CONF, other.sub_id)


def test_remove_forgets_the_record_and_its_indexes(
    store: ConferenceStore, client: redis.Redis
) -> None:
    record = _record()
    _create(store, record)
    store.subscriptions.remove(CONF, record.sub_id, "node-a")
    store.subscriptions.remove(CONF, record.sub_id, "node-a")  # idempotent
    assert store.subscriptions.get(CONF, record.sub_id) is None
    assert store.subscriptions.of_conference(CONF) == {}
    assert store.subscriptions.of_node("node-a", limit=10) == []
    assert not store.subscriptions.save(record, record.notifier, now=1001.0)
    assert not store.subscriptions.refresh(CONF, record.sub_id, now=1001.0, expires=600)
    assert not store.subscriptions.reply(CONF, record.sub_id, cseq=1, status=200)
    assert not client.exists(store.keys.subscription(CONF, record.sub_id))


def test_node_listing_is_bounded_and_stale_entries_can_be_dropped(
    store: ConferenceStore,
) -> None:
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob")
    first, second = _record(call_id="a1"), _record(identity=BOB, call_id="b1")
    _create(store, first, now=1001.0)
    _create(store, second, now=1000.5 + 1)
    assert store.subscriptions.of_node("node-a", limit=1) == [(CONF, first.sub_id)]
    store.subscriptions.drop_index_entries("node-a", [(CONF, first.sub_id)])
    assert store.subscriptions.of_node("node-a", limit=10) == [(CONF, second.sub_id)]


def test_a_replayed_transfer_init_is_refused_and_a_refusal_forgets_the_replay_key(
    store: ConferenceStore, client: redis.Redis
) -> None:
    client.hset(store.keys.conference(CONF), "mode", "kms")
    replay = "secconf:replay:" + "ab" * 32
    with pytest.raises(Forbidden):  # BOB holds no dialog: refused, the replay key undone
        store.subscriptions.create(
            _record(identity=BOB, mode="kms"), now=1000.0, max_per_conference=8,
            max_per_identity=2, replay_key=replay, replay_ttl=60.0,
        )  # fmt: skip
    assert not client.exists(replay)
    store.subscriptions.create(
        _record(mode="kms"), now=1000.0, max_per_conference=8, max_per_identity=2,
        replay_key=replay, replay_ttl=60.0,
    )  # fmt: skip
    assert 0 < client.pttl(replay) <= 60_000
    before = _dump(client)
    with pytest.raises(ReplayedMessage):
        store.subscriptions.create(
            _record(call_id="sub-9", mode="kms"), now=1000.0, max_per_conference=8,
            max_per_identity=2, replay_key=replay, replay_ttl=60.0,
        )  # fmt: skip
    assert _dump(client) == before


def test_worker_inputs_wait_for_the_timer_and_are_consumed_once(
    store: ConferenceStore, client: redis.Redis
) -> None:
    record = _record()
    _create(store, record)
    assert store.subscriptions.refresh(CONF, record.sub_id, now=1100.0, expires=3600)
    assert store.subscriptions.reply(CONF, record.sub_id, cseq=1, status=200)
    read = store.subscriptions.get(CONF, record.sub_id)
    assert read is not None
    assert (read.refresh_seq, read.applied_refresh, read.refresh) == (1, 0, (1100.0, 3600))
    assert read.reply == (1, 200)
    assert client.pttl(store.keys.subscription(CONF, record.sub_id)) > 3600_000
    # a newer reply and refresh arrive between the timer's read and its save: they stay
    assert store.subscriptions.refresh(CONF, record.sub_id, now=1101.0, expires=600)
    assert store.subscriptions.reply(CONF, record.sub_id, cseq=2, status=481)
    assert store.subscriptions.save(read, read.notifier, now=1101.0)
    after = store.subscriptions.get(CONF, record.sub_id)
    assert after is not None
    assert (after.refresh_seq, after.applied_refresh, after.reply) == (2, 1, (2, 481))
    assert store.subscriptions.save(after, after.notifier, now=1102.0)
    done = store.subscriptions.get(CONF, record.sub_id)
    assert done is not None
    assert (done.refresh_seq, done.applied_refresh, done.reply) == (2, 2, None)


def test_index_entries_of_expired_records_do_not_count(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store, _record(call_id="a1"))
    _create(store, _record(call_id="a2"))
    with pytest.raises(RateLimited):
        _create(store, _record(call_id="a3"))
    client.delete(store.keys.subscription(CONF, _record(call_id="a1").sub_id))  # it expired
    _create(store, _record(call_id="a3"))
    assert sorted(store.subscriptions.of_conference(CONF)) == sorted(
        [_record(call_id="a2").sub_id, _record(call_id="a3").sub_id]
    )


def test_the_node_index_is_read_a_slice_at_a_time(store: ConferenceStore) -> None:
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob")
    records = [_record(call_id="a1"), _record(call_id="a2"), _record(identity=BOB, call_id="b1")]
    for now, record in enumerate(records):
        _create(store, record, now=1000.0 + now)
    first = store.subscriptions.of_node("node-a", limit=2)
    rest = store.subscriptions.of_node("node-a", limit=2, offset=2)
    assert first + rest == [(CONF, record.sub_id) for record in records]
