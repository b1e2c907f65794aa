"""Conference state against a real Redis: atomic create/join/answer/release, refusals write nothing.

Every test that does not stop or pause the single server runs twice: on one
``redis-server`` and on a three-master Redis Cluster (``redis+cluster://``),
where a script touching keys of two slots fails with ``CROSSSLOT``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from secconf.core.errors import Forbidden, NotAcceptable, ServiceUnavailable
from secconf.core.focus import ConferenceNotFound, SsrcCollision
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.store.conferences import (
    ConferenceExists,
    ConferenceStore,
    DialogExists,
    connect_blocking,
    dialog_id,
)
from secconf.store.keywrap import KeyWrapper
from tests.fixtures.redis_server import RedisServer

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
KEY = GroupKey(1, SUITE, bytes(range(16)), bytes(range(100, 114)))
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"


@pytest.fixture(params=["single", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """A flushed single server, then a flushed three-master cluster."""
    name = "redis_url" if request.param == "single" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def client(any_redis_url: str) -> Iterator[redis.Redis]:
    client = connect_blocking(any_redis_url, timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def single_client(redis_url: str) -> Iterator[redis.Redis]:
    """Tests that stop or pause the (single) server."""
    client = connect_blocking(redis_url, timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis, wrapper: KeyWrapper) -> ConferenceStore:
    return ConferenceStore(client, wrapper, ended_ttl=30)


def _create(store: ConferenceStore, conf: str = "c0ffee", **kw: object) -> None:
    args: dict[str, object] = {
        "creator": ALICE,
        "uri": f"sip:conf-{conf}@conf.example.com",
        "group_key": KEY,
        "call_id": f"call-{conf}-alice",
        "leg": f"leg-{conf}-alice",
        "allowed": [BOB],
        "ssrcs": [1111],
    }
    args.update(kw)
    store.admission.create(conf, **args)  # type: ignore[arg-type]


def _snapshot(client: redis.Redis) -> dict[bytes, object]:
    out: dict[bytes, object] = {}
    for key in client.scan_iter():
        out[key] = client.dump(key)
    return out


def test_create_records_everything_and_the_key_is_wrapped(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store)
    info = store.get("c0ffee")
    assert info is not None
    assert (info.state, info.creator, info.epoch, info.suite) == ("active", ALICE, 1, SUITE.name)
    assert store.allowed("c0ffee") == {ALICE, BOB}
    assert store.members("c0ffee") == {ALICE: 1}
    assert store.ssrcs("c0ffee") == {1111}
    record = store.dialog("c0ffee", "call-c0ffee-alice")
    assert record is not None
    assert record.creator
    assert record.state == "pending"
    got = store.group_key("c0ffee")
    assert (got.key, got.salt, got.epoch) == (KEY.key, KEY.salt, 1)
    # No key material in clear anywhere.
    for key in client.scan_iter():
        dumped = client.dump(key) or b""
        assert KEY.key not in dumped
        assert KEY.key.hex().encode() not in dumped


def test_create_twice_is_refused_and_changes_nothing(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store)
    before = _snapshot(client)
    with pytest.raises(ConferenceExists):
        _create(store, call_id="another-call")
    with pytest.raises(DialogExists):  # the same create again (a retransmission)
        _create(store, call_id="call-c0ffee-alice")
    assert _snapshot(client) == before


def test_join_answer_release_life_cycle(store: ConferenceStore, client: redis.Redis) -> None:
    _create(store)
    store.dialogs.answered("c0ffee", "call-c0ffee-alice")
    assert (
        store.admission.join(
            "c0ffee", identity=BOB, call_id="call-bob", leg="leg-bob", ssrcs=[2222]
        )
        == 1
    )
    assert store.members("c0ffee") == {ALICE: 1, BOB: 1}
    answered = store.dialogs.answered("c0ffee", "call-bob")
    assert answered.dialog.identity == BOB
    assert answered.dialog.state == "up"
    assert answered.group_key.key == KEY.key
    assert "key" not in repr(answered)
    released = store.dialogs.release("c0ffee", "call-bob")
    assert released is not None
    assert not released.conference_ended
    assert store.members("c0ffee") == {ALICE: 1}
    assert store.ssrcs("c0ffee") == {1111}
    assert store.dialogs.release("c0ffee", "call-bob") is None  # idempotent
    last = store.dialogs.release("c0ffee", "call-c0ffee-alice")
    assert last is not None
    assert last.conference_ended
    info = store.get("c0ffee")
    assert info is not None
    assert info.state == "ended"
    assert not client.exists(store.conference_key("c0ffee", "epochs"))  # keys gone at once
    assert 0 < client.pttl(store.conference_key("c0ffee")) <= 30_000
    with pytest.raises(ConferenceNotFound):
        store.admission.join("c0ffee", identity=BOB, call_id="call-bob-2", leg="leg-bob2")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"identity": CAROL}, Forbidden),
        ({"ssrcs": [1111]}, SsrcCollision),
        ({"call_id": "call-c0ffee-alice"}, DialogExists),
    ],
)
def test_join_refusals_write_nothing(
    store: ConferenceStore, client: redis.Redis, kwargs: dict[str, object], error: type
) -> None:
    _create(store)
    before = _snapshot(client)
    args: dict[str, object] = {"identity": BOB, "call_id": "call-x", "leg": "leg-x", "ssrcs": []}
    args.update(kwargs)
    with pytest.raises(error):
        store.admission.join("c0ffee", **args)  # type: ignore[arg-type]
    assert _snapshot(client) == before


def test_join_unknown_conference_is_404(store: ConferenceStore) -> None:
    with pytest.raises(ConferenceNotFound) as info:
        store.admission.join("nothere", identity=BOB, call_id="c", leg="l")
    assert info.value.status_code == 404


def test_concurrent_ssrc_claims_only_one_wins(store: ConferenceStore) -> None:
    _create(store)
    store.admission.join("c0ffee", identity=BOB, call_id="b1", leg="l1", ssrcs=[5])
    with pytest.raises(SsrcCollision):
        store.admission.join("c0ffee", identity=BOB, call_id="b2", leg="l2", ssrcs=[7, 5])
    store.dialogs.release("c0ffee", "b1")
    store.admission.join("c0ffee", identity=BOB, call_id="b2", leg="l2", ssrcs=[7, 5])
    assert store.ssrcs("c0ffee") == {1111, 5, 7}


def test_add_epoch_and_answer_gets_the_current_one(store: ConferenceStore) -> None:
    _create(store)
    store.admission.join("c0ffee", identity=BOB, call_id="b", leg="l")
    two = GroupKey(2, SUITE, bytes(16), bytes(range(14)))
    store.add_epoch("c0ffee", two)
    assert store.dialogs.answered("c0ffee", "b").group_key.epoch == 2
    assert store.group_key("c0ffee", 1).key == KEY.key


def test_epoch_blob_moved_to_another_conference_does_not_open(
    store: ConferenceStore, client: redis.Redis
) -> None:
    from secconf.store.errors import KeyUnwrapError

    _create(store)
    _create(store, conf="beef", call_id="other")
    blob = client.hget(store.conference_key("c0ffee", "epochs"), "1")
    client.hset(store.conference_key("beef", "epochs"), "1", blob)  # type: ignore[arg-type]
    with pytest.raises(KeyUnwrapError):
        store.group_key("beef")


def test_dialog_id_is_stable() -> None:
    assert dialog_id("abc") == dialog_id("abc") != dialog_id("abd")


def test_redis_down_is_503_fast_and_recovers(
    single_client: redis.Redis, wrapper: KeyWrapper, redis_server: RedisServer
) -> None:
    store = ConferenceStore(single_client, wrapper)
    _create(store)
    redis_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            store.admission.join("c0ffee", identity=BOB, call_id="b", leg="l")
        assert time.monotonic() - started < 1.0
    finally:
        redis_server.start()
    # Data is gone (no persistence) but the same client works again.
    with pytest.raises(ConferenceNotFound):
        store.admission.join("c0ffee", identity=BOB, call_id="b", leg="l")


def test_redis_hung_is_503_within_the_timeout(
    single_client: redis.Redis, wrapper: KeyWrapper, redis_server: RedisServer
) -> None:
    store = ConferenceStore(single_client, wrapper)
    _create(store)
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            store.dialogs.answered("c0ffee", "call-c0ffee-alice")
        assert time.monotonic() - started < 1.0
    finally:
        redis_server.resume()


def test_failed_creating_call_leaves_nothing(store: ConferenceStore, client: redis.Redis) -> None:
    _create(store)
    released = store.dialogs.release("c0ffee", "call-c0ffee-alice")
    assert released is not None
    assert released.conference_ended
    assert list(client.scan_iter()) == []


def test_rekey_bookkeeping_media_epoch_switch_and_failures(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store)
    answered = store.dialogs.answered(
        "c0ffee", "call-c0ffee-alice", media='{"s":[[0,"RTP/SAVP",1]]}'
    )
    assert (answered.dialog.epoch, answered.dialog.media) == (1, '{"s":[[0,"RTP/SAVP",1]]}')
    record = store.dialog("c0ffee", "call-c0ffee-alice")
    assert record is not None
    assert (record.epoch, record.media) == (1, '{"s":[[0,"RTP/SAVP",1]]}')
    two = GroupKey(2, SUITE, bytes(16), bytes(14))
    store.add_epoch("c0ffee", two)
    store.dialogs.switched("c0ffee", "call-c0ffee-alice", 2)
    store.dialogs.switched("c0ffee", "call-c0ffee-alice", 1)  # never backwards
    assert store.dialog("c0ffee", "call-c0ffee-alice").epoch == 2  # type: ignore[union-attr]
    # Undo an epoch the edge refused: only while it is the newest.
    three = GroupKey(3, SUITE, bytes(16), bytes(14))
    store.add_epoch("c0ffee", three)
    store.drop_epoch("c0ffee", 3)
    assert store.get("c0ffee").epoch == 2  # type: ignore[union-attr]
    assert client.hget(store.conference_key("c0ffee", "epochs"), "3") is None
    with pytest.raises(Exception, match="newest"):
        store.drop_epoch("c0ffee", 1)
    entry = store.rekey_failed("c0ffee", [("leg", "leg-c0ffee-alice"), ("status", "488")])
    assert entry is not None
    assert store.rekey_failures("c0ffee")[0][1] == {"leg": "leg-c0ffee-alice", "status": "488"}
    assert store.rekey_failed("0ther", [("status", "488")]) is None
    assert not client.exists(store.keys.rekey_failed("0ther"))
    # The stream goes with the conference.
    store.dialogs.release("c0ffee", "call-c0ffee-alice")
    assert 0 < client.pttl(store.keys.rekey_failed("c0ffee")) <= 30_000


def test_every_key_of_a_conference_is_in_its_slot(
    store: ConferenceStore, client: redis.Redis
) -> None:
    """Create, answer, join, a dial-out, a KMS epoch, a REFER, a failed rekey: one slot."""
    from redis.cluster import key_slot

    _create(store)
    store.dialogs.answered("c0ffee", "call-c0ffee-alice")
    store.admission.join("c0ffee", identity=BOB, call_id="call-bob", leg="leg-bob", ssrcs=[2])
    store.dialouts.record("c0ffee", identity=BOB, call_id="call-out", leg="leg-out")
    store.dialouts.answered("c0ffee", "call-out", media="{}", epoch=1, ssrcs=[3])
    store.add_epoch("c0ffee", GroupKey(2, SUITE, bytes(16), bytes(14)), b"ticket")
    store.refer_stream.add("c0ffee", referrer=ALICE, target=BOB)
    store.rekey_failed("c0ffee", [("status", "488")])
    _create(store, conf="beef", call_id="call-beef")
    keys = sorted(k for k in client.scan_iter() if b"c0ffee" in k)
    # conf, allowed, members, epochs, ssrcs, three dialogs, refer and rekey-failed streams,
    # the referrer's REFER-rate counter, the dialogs index and the events counter
    assert len(keys) == 13
    assert store.epoch_ticket("c0ffee", 2) == b"ticket"
    store.dialogs.release("c0ffee", "call-out")
    store.dialogs.release("c0ffee", "call-bob")
    store.dialogs.release("c0ffee", "call-c0ffee-alice")
    assert not client.exists(store.conference_key("c0ffee", "epochs"))
    assert {key_slot(k) for k in keys} == {key_slot(b"c0ffee")}
    assert key_slot(b"c0ffee") != key_slot(b"beef")
    assert store.keys.dialog("c0ffee", "call-bob").startswith("secconf:conf:{c0ffee}:dialog:")


def test_refer_replay_key_is_set_outside_the_script_and_undone_on_refusal(
    store: ConferenceStore, client: redis.Redis
) -> None:
    """The replay key lives in another slot: a refused REFER leaves it unset (nothing changed)."""
    from secconf.core.errors import ReplayedMessage

    _create(store)
    replay = "secconf:replay:" + "ab" * 32
    before = _snapshot(client)
    with pytest.raises(Forbidden):
        store.refer_stream.add(
            "c0ffee", referrer=ALICE, target=CAROL, replay_key=replay, replay_ttl=10
        )
    assert _snapshot(client) == before
    store.refer_stream.add("c0ffee", referrer=ALICE, target=BOB, replay_key=replay, replay_ttl=10)
    assert 0 < client.pttl(replay) <= 10_000
    with pytest.raises(ReplayedMessage):
        store.refer_stream.add(
            "c0ffee", referrer=ALICE, target=BOB, replay_key=replay, replay_ttl=10
        )
    assert len(store.refers("c0ffee")) == 1


def test_leg_modes_kms_leg_count_and_mixed_joins(store: ConferenceStore) -> None:
    _create(store, mode="kms", allowed=[BOB, CAROL])
    info = store.get("c0ffee")
    assert info is not None
    assert info.kms_legs == 1
    # Not mixed: an SDES leg in a KMS conference is refused (nothing written).
    with pytest.raises(NotAcceptable):
        store.admission.join("c0ffee", identity=BOB, call_id="call-bob", leg="leg-bob", mode="sdes")
    store.admission.join(
        "c0ffee", identity=BOB, call_id="call-bob", leg="leg-bob", mode="sdes", mixed=True
    )
    store.admission.join(
        "c0ffee", identity=CAROL, call_id="call-carol", leg="leg-carol", mode="kms"
    )
    assert store.get("c0ffee").kms_legs == 2  # type: ignore[union-attr]
    assert store.dialog("c0ffee", "call-c0ffee-alice").mode == "kms"  # type: ignore[union-attr]
    assert store.dialog("c0ffee", "call-bob").mode == "sdes"  # type: ignore[union-attr]
    store.dialogs.release("c0ffee", "call-carol")
    store.dialogs.release("c0ffee", "call-bob")
    assert store.get("c0ffee").kms_legs == 1  # type: ignore[union-attr]


def test_epoch_ticket_is_wrapped_bound_dropped_and_deleted_with_the_conference(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store, mode="kms")
    ticket = b"stored group epoch " + bytes(range(64))
    two = GroupKey(2, SUITE, bytes(range(50, 66)), bytes(range(1, 15)))
    store.add_epoch("c0ffee", two, ticket)
    assert store.epoch_ticket("c0ffee", 2) == ticket
    assert store.epoch_ticket("c0ffee", 1) is None
    blob = client.hget(store.conference_key("c0ffee", "epochs"), "ticket:2")
    assert blob is not None
    assert ticket not in blob  # type: ignore[operator]
    # Bound to its conference and epoch: moved, it does not open.
    client.hset(store.conference_key("c0ffee", "epochs"), "ticket:1", blob)  # type: ignore[arg-type]
    from secconf.store.errors import KeyUnwrapError

    with pytest.raises(KeyUnwrapError):
        store.epoch_ticket("c0ffee", 1)
    client.hdel(store.conference_key("c0ffee", "epochs"), "ticket:1")
    store.drop_epoch("c0ffee", 2)  # the edge refused it: key and ticket go
    assert store.epoch_ticket("c0ffee", 2) is None
    store.add_epoch("c0ffee", two, ticket)
    store.dialogs.release("c0ffee", "call-c0ffee-alice")
    assert not client.exists(store.conference_key("c0ffee", "epochs"))


def test_dialout_records_like_a_join_and_refusals_write_nothing(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store)
    _create(store, "kk", mode="kms", call_id="call-kk", leg="leg-kk", ssrcs=[])
    before = _snapshot(client)
    with pytest.raises(Forbidden):
        store.dialouts.record("c0ffee", identity=CAROL, call_id="d1", leg="leg-d1")
    with pytest.raises(ConferenceNotFound):
        store.dialouts.record("nope", identity=BOB, call_id="d1", leg="leg-d1")
    with pytest.raises(NotAcceptable):  # an SDES leg in a KMS conference (no mixed modes)
        store.dialouts.record("kk", identity=BOB, call_id="d1", leg="leg-d1")
    with pytest.raises(NotAcceptable):  # a KMS leg in an SDES conference
        store.dialouts.record("c0ffee", identity=BOB, call_id="d1", leg="leg-d1", mode="kms")
    with pytest.raises(DialogExists):
        store.dialouts.record("c0ffee", identity=BOB, call_id="call-c0ffee-alice", leg="leg-d1")
    assert _snapshot(client) == before

    assert store.dialouts.record("c0ffee", identity=BOB, call_id="d1", leg="leg-d1") == 1
    record = store.dialog("c0ffee", "d1")
    assert record is not None
    assert (record.identity, record.state, record.dialout, record.ssrcs) == (
        BOB, "pending", True, ()
    )  # fmt: skip
    assert store.members("c0ffee") == {ALICE: 1, BOB: 1}
    # The answer's SSRC collides with Alice's: nothing written.
    before = _snapshot(client)
    with pytest.raises(SsrcCollision):
        store.dialouts.answered("c0ffee", "d1", media="{}", epoch=1, ssrcs=[1111])
    assert _snapshot(client) == before
    store.dialouts.answered("c0ffee", "d1", media='{"s":[]}', epoch=1, ssrcs=[2222])
    record = store.dialog("c0ffee", "d1")
    assert record is not None
    assert (record.state, record.epoch, record.ssrcs, record.media) == (
        "up",
        1,
        (2222,),
        '{"s":[]}',
    )
    assert store.ssrcs("c0ffee") == {1111, 2222}
    with pytest.raises(ConferenceNotFound):  # not a dial-out dialog
        store.dialouts.answered("c0ffee", "call-c0ffee-alice", media="{}", epoch=1)
    released = store.dialogs.release("c0ffee", "d1")
    assert released is not None
    assert store.ssrcs("c0ffee") == {1111}
    assert store.members("c0ffee") == {ALICE: 1}

    # A KMS leg into the KMS conference: its mode recorded, counted in kms_legs, and
    # released again (the count back where it was).
    legs = store.get("kk").kms_legs  # type: ignore[union-attr]
    assert store.dialouts.record("kk", identity=BOB, call_id="k1", leg="leg-k1", mode="kms") == 1
    record = store.dialog("kk", "k1")
    assert record is not None
    assert (record.mode, record.dialout) == ("kms", True)
    assert store.get("kk").kms_legs == legs + 1  # type: ignore[union-attr]
    store.dialogs.release("kk", "k1")
    assert store.get("kk").kms_legs == legs  # type: ignore[union-attr]


def test_parts_are_named_for_the_timing_proxy(store: ConferenceStore) -> None:
    """Every public part of the store is in PARTS (focus/timing.py times their calls)."""
    public = {name for name in vars(store) if not name.startswith("_")}
    assert set(ConferenceStore.PARTS) == public - {"keys"}
