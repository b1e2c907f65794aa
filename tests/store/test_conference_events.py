"""The event package's reads against a real Redis: a conference's facts, its change counter.

Each writer (create, join, dial-out, answer, release, BYE, epoch, the watcher's roster)
must move the counter; the facts follow each change; departures are bounded.  Runs on a
single ``redis-server`` and on a three-master Redis Cluster (the facts' script reads the
dialog records in the conference's slot; the roster lies in another).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from secconf.core.confinfo import (
    DisconnectionMethod,
    EndpointStatus,
    OfferMode,
    describe,
    full_document,
    leg_endpoint,
)
from secconf.core.gate import DialogPeers, Direction, Flow, Peer
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.store.conference_scripts import DEPARTURES_MAX
from secconf.store.conferences import ConferenceStore, connect_blocking, dialog_id
from secconf.store.errors import CorruptRecord
from secconf.store.executors import SyncExecutor
from secconf.store.keywrap import KeyWrapper
from secconf.store.watcher import RosterEntry, RosterStore
from tests.fixtures.confinfo import assert_valid

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
KEY = GroupKey(1, SUITE, bytes(range(16)), bytes(range(100, 114)))
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
CONF = "c0ffee"
URI = "sip:conf-c0ffee@conf.example.com"
PEERS = DialogPeers(
    Peer("ptag", Flow.of("tls", "192.0.2.10", 50123), "sip:bob@192.0.2.10:5061"),
    Peer("mtag", Flow.of("udp", "127.0.0.1", 5080), "sip:asterisk@127.0.0.1:5080"),
)


@pytest.fixture(params=["single", "cluster"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    name = "redis_url" if request.param == "single" else "redis_cluster_url"
    client = connect_blocking(str(request.getfixturevalue(name)), timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis, wrapper: KeyWrapper) -> ConferenceStore:
    return ConferenceStore(client, wrapper, ended_ttl=30)


def _create(store: ConferenceStore) -> None:
    store.admission.create(
        CONF, creator=ALICE, uri=URI, group_key=KEY, call_id="call-alice", leg="leg-alice",
        allowed=[BOB, CAROL], ssrcs=[1111],
    )  # fmt: skip


def _counter(store: ConferenceStore) -> int:
    (value,) = store.event_counters([CONF])
    assert value is not None
    return value


def _roster_add(store: ConferenceStore, channel: str, call_id: str) -> None:
    entry = RosterEntry(f"u-{channel}", "caller", call_id)
    SyncExecutor(store.client).run(RosterStore(store.keys.prefix).add(CONF, channel, entry))


def test_unknown_conference_has_no_facts_and_no_counter(store: ConferenceStore) -> None:
    assert store.event_facts("deadbeef") is None
    assert store.event_counters(["deadbeef", "cafe"]) == [None, None]
    assert store.event_counters([]) == []


def test_facts_follow_create_answer_roster_join_and_bye(store: ConferenceStore) -> None:
    _create(store)
    created = _counter(store)
    facts = store.event_facts(CONF)
    assert facts is not None
    assert (facts.uri, facts.mode, facts.epoch, facts.last_rekey, facts.active) == (
        URI, OfferMode.SDES, 1, None, True,
    )  # fmt: skip
    (alice,) = facts.members
    assert alice.endpoint == leg_endpoint(ALICE, dialog_id("call-alice"))
    assert (alice.answered, alice.in_bridge, alice.joined, alice.ssrcs) == (False, False, None,
                                                                           (1111,))  # fmt: skip

    store.dialogs.answered(CONF, "call-alice")
    assert _counter(store) == created + 1
    _roster_add(store, "PJSIP/alice-1", "call-alice")
    assert _counter(store) == created + 2
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob", ssrcs=[2222],
                         mode="sdes")  # fmt: skip
    assert _counter(store) == created + 3
    store.dialogs.answered(CONF, "call-bob", peers=PEERS)
    facts = store.event_facts(CONF)
    assert facts is not None
    by_identity = {member.identity: member for member in facts.members}
    assert by_identity[ALICE].in_bridge
    assert by_identity[ALICE].answered
    assert by_identity[ALICE].joined is not None
    assert by_identity[ALICE].joined > 1_700_000_000
    assert not by_identity[BOB].in_bridge
    assert by_identity[BOB].epoch == 1
    info = describe(facts)
    assert_valid(full_document(info, 1))
    assert info.state is not None
    assert info.state.user_count == 1

    # Bob's own BYE: departed; the counter moves in the same script.
    before = _counter(store)
    _, _, released = store.dialogs.release_from(
        CONF, "call-bob", PEERS.fingerprint(Direction.FROM_PARTICIPANT)
    )
    assert released is not None
    assert _counter(store) == before + 1
    facts = store.event_facts(CONF)
    assert facts is not None
    assert [member.identity for member in facts.members] == [ALICE]
    (gone,) = facts.departures
    assert (gone.identity, gone.method, gone.dialed_out) == (BOB, DisconnectionMethod.DEPARTED,
                                                             False)  # fmt: skip
    assert gone.endpoint == leg_endpoint(BOB, dialog_id("call-bob"))
    assert gone.joined is not None
    assert gone.when >= gone.joined
    bob = describe(facts).user(BOB)
    assert bob is not None
    assert bob.endpoints[0].status is EndpointStatus.DISCONNECTED


def test_a_bye_from_the_mixer_boots_and_a_failure_fails(store: ConferenceStore) -> None:
    _create(store)
    store.dialogs.answered(CONF, "call-alice")
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob", mode="sdes")
    store.dialogs.answered(CONF, "call-bob", peers=PEERS)
    store.dialogs.release_from(CONF, "call-bob", PEERS.fingerprint(Direction.FROM_MIXER))
    store.dialouts.record(CONF, identity=CAROL, call_id="call-carol", leg="leg-carol")
    facts = store.event_facts(CONF)
    assert facts is not None
    carol = next(member for member in facts.members if member.identity == CAROL)
    assert carol.dialed_out
    assert not carol.answered
    store.dialogs.release(CONF, "call-carol")
    facts = store.event_facts(CONF)
    assert facts is not None
    assert [(d.identity, d.method, d.dialed_out) for d in facts.departures] == [
        (BOB, DisconnectionMethod.BOOTED, False),
        (CAROL, DisconnectionMethod.FAILED, True),
    ]
    with pytest.raises(ValueError, match="departed, booted or failed"):
        store.dialogs.release(CONF, "call-alice", DisconnectionMethod.BUSY)


def test_a_withdrawn_dialog_leaves_no_departure_only_a_counter_step(
    store: ConferenceStore,
) -> None:
    _create(store)
    store.dialogs.answered(CONF, "call-alice")
    before = _counter(store)
    store.dialouts.record(CONF, identity=CAROL, call_id="call-carol", leg="leg-carol")
    released = store.dialogs.release(CONF, "call-carol", None)
    assert released is not None
    assert released.dialog.identity == CAROL
    facts = store.event_facts(CONF)
    assert facts is not None
    assert facts.departures == ()
    assert [member.identity for member in facts.members] == [ALICE]
    # Two steps: the record appeared and went (a notifier that saw it sees it go).
    assert _counter(store) == before + 2


def test_epochs_and_the_end_move_the_counter(store: ConferenceStore, client: redis.Redis) -> None:
    _create(store)
    store.dialogs.answered(CONF, "call-alice")
    before = _counter(store)
    store.add_epoch(CONF, GroupKey(2, SUITE, bytes(16), bytes(14)))
    assert _counter(store) == before + 1
    facts = store.event_facts(CONF)
    assert facts is not None
    assert facts.epoch == 2
    assert facts.last_rekey is not None
    store.drop_epoch(CONF, 2)
    assert _counter(store) == before + 2
    store.dialogs.release(CONF, "call-alice", DisconnectionMethod.DEPARTED)
    assert _counter(store) == before + 3
    facts = store.event_facts(CONF)
    assert facts is not None
    assert not facts.active
    assert facts.members == ()
    # The counter and the departures expire with the conference's other keys.
    for key in (store.keys.events(CONF), store.keys.departures(CONF)):
        assert 0 < client.pttl(key) <= 30_000


def test_a_creating_call_that_failed_leaves_no_counter(store: ConferenceStore) -> None:
    _create(store)
    store.dialogs.release(CONF, "call-alice")
    assert store.event_counters([CONF]) == [None]
    assert store.event_facts(CONF) is None


def test_watcher_roster_writes_move_the_counter(store: ConferenceStore) -> None:
    _create(store)
    run = SyncExecutor(store.client).run
    rosters = RosterStore(store.keys.prefix)
    counts = [_counter(store)]
    _roster_add(store, "PJSIP/a", "call-alice")
    counts.append(_counter(store))
    run(rosters.remove(CONF, "PJSIP/a"))
    counts.append(_counter(store))
    run(rosters.replace_all({CONF: {"PJSIP/a": RosterEntry("u", "c", "call-alice")}}))
    counts.append(_counter(store))
    run(rosters.delete(CONF))
    counts.append(_counter(store))
    assert counts == list(range(counts[0], counts[0] + 5))
    # A bridge of no conference: the roster is written, no counter appears.
    run(rosters.add("feed", "PJSIP/x", RosterEntry("u", "c", "x")))
    run(rosters.add("Not-An-Id", "PJSIP/x", RosterEntry("u", "c", "x")))
    assert store.event_counters(["feed"]) == [None]


def test_departures_are_bounded_newest_kept(store: ConferenceStore, client: redis.Redis) -> None:
    _create(store)
    store.dialogs.answered(CONF, "call-alice")
    for n in range(DEPARTURES_MAX + 5):
        store.admission.join(CONF, identity=BOB, call_id=f"call-{n}", leg=f"leg-{n}", mode="sdes")
        store.dialogs.release(CONF, f"call-{n}", DisconnectionMethod.BOOTED)
    facts = store.event_facts(CONF)
    assert facts is not None
    assert len(facts.departures) == DEPARTURES_MAX
    assert facts.departures[-1].endpoint == leg_endpoint(
        BOB, dialog_id(f"call-{DEPARTURES_MAX + 4}")
    )
    assert facts.departures[0].endpoint == leg_endpoint(BOB, dialog_id("call-5"))
    stored = [json.loads(item) for item in client.lrange(store.keys.departures(CONF), 0, -1)]
    # No Call-ID, no key: who, which dialog (its hash), how, when.
    assert set(stored[0]) <= {"identity", "dialog", "method", "when", "joined", "dialout"}


def test_a_dial_out_answered_has_its_join_time_and_ssrcs(store: ConferenceStore) -> None:
    _create(store)
    store.dialouts.record(CONF, identity=CAROL, call_id="call-carol", leg="leg-carol")
    before = _counter(store)
    store.dialouts.answered(CONF, "call-carol", media="{}", epoch=1, ssrcs=[4444])
    assert _counter(store) == before + 1
    _roster_add(store, "PJSIP/stranger", "call-nobody-knows")
    facts = store.event_facts(CONF)
    assert facts is not None
    carol = next(member for member in facts.members if member.identity == CAROL)
    assert (carol.answered, carol.dialed_out, carol.ssrcs) == (True, True, (4444,))
    assert carol.joined is not None
    # A channel whose Call-ID matches no dialog marks nobody as in the bridge.
    assert not any(member.in_bridge for member in facts.members)


def test_a_corrupt_dialog_record_is_a_store_error(
    store: ConferenceStore, client: redis.Redis
) -> None:
    _create(store)
    client.hset(store.keys.dialog(CONF, "call-alice"), "mode", "rot13")
    with pytest.raises(CorruptRecord):
        store.event_facts(CONF)
