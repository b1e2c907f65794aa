"""The focus's NOTIFY timer (secconf.focus.events.notifier) on a real Redis, no SIP server.

The conference changes through the store's own scripts (create, answer, join, release),
the clock is the test's: the first NOTIFY is full state, a join a partial one, nothing is
sent while a NOTIFY is in flight, a member who left is ended ``rejected``, the end of the
conference is a deleted document ``noresource``, expiry ``timeout``, Timer F and a 481
drop the subscription, and a KMS-mode body is CMS under the subscription's key.  Over
UDP a KMS-mode NOTIFY (sent whole, without tm) is retransmitted by the timer, the same
bytes at 0.5, 1, 2, 4, 4 ... s (a 1xx: 4 s) until its reply or Timer F; over TLS never.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from secconf.core import cms, events
from secconf.core.confinfo import CONFERENCE_INFO_TYPE, Verdict, receive
from secconf.core.errors import SecconfError
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.focus.events.notifier import Notifier, NotifyRequest
from secconf.focus.settings import Settings, load_settings
from secconf.store.conference_subscriptions import SubscriptionRecord
from secconf.store.conferences import ConferenceStore, connect_blocking, dialog_id
from secconf.store.keywrap import KeyWrapper, generate_key_file
from tests.fixtures.confinfo import assert_valid
from tests.kamailio.conftest import settings_text

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
KEY = GroupKey(1, SUITE, bytes(range(16)), bytes(range(100, 114)))
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CONF = "c0ffee0123456789"
URI = f"sip:conf-{CONF}@conf.test.invalid"
NODE = "node-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    kek = tmp_path / "kek"
    generate_key_file(kek)
    path = tmp_path / "focus.toml"
    path.write_text(settings_text(kek, f'\n[events]\nnode_id = "{NODE}"\n'))
    return load_settings(path, env={}, mixer_token=False)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect_blocking(redis_url, timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis, wrapper: KeyWrapper) -> ConferenceStore:
    store = ConferenceStore(client, wrapper, ended_ttl=30)
    store.admission.create(
        CONF, creator=ALICE, uri=URI, group_key=KEY, call_id="call-alice", leg="leg-alice",
        allowed=[BOB], ssrcs=[1111],
    )  # fmt: skip
    store.dialogs.answered(CONF, "call-alice")
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier(settings: Settings, store: ConferenceStore, clock: Clock) -> Notifier:
    logged: list[str] = []
    return Notifier(
        settings, store.subscriptions, store, clock, lambda n: bytes(range(n)),
        lambda level, line: logged.append(line),
    )  # fmt: skip


def _subscribe(
    store: ConferenceStore,
    clock: Clock,
    identity: str = ALICE,
    call_id: str = "sub-a",
    **kw: object,
) -> SubscriptionRecord:
    record = SubscriptionRecord(
        conference_id=CONF, call_id=call_id, sub_tag=f"tag-{call_id}", our_tag="ours",
        subscriber=identity, identity=identity, contact="sip:alice@127.0.0.1:5099;transport=tls",
        transport="tls", source="127.0.0.1:40001", socket="tls:127.0.0.1:5061", node=NODE,
        mode="sdes", epoch=1, notifier=events.started(URI, clock.now, 600),
    )  # fmt: skip
    record = dataclasses.replace(record, **kw)  # type: ignore[arg-type]
    store.subscriptions.create(record, now=clock.now, max_per_conference=8, max_per_identity=2)
    return record


def _header(request: NotifyRequest, name: str) -> str:
    match = re.search(rf"^{name}: (.*)\r$", request.headers, re.MULTILINE)
    assert match is not None, name
    return match.group(1)


def _tick(notifier: Notifier, clock: Clock, seconds: float = 0.05) -> list[NotifyRequest]:
    clock.now += seconds
    return notifier.tick()


def _ack(notifier: Notifier, request: NotifyRequest, status: int = 200) -> None:
    cseq = int(_header(request, "CSeq").split()[0])
    call_id = _header(request, "Call-ID")
    assert notifier.on_reply(call_id, f"conf-{CONF}", cseq, status)


def test_full_then_partial_then_nothing_in_flight(
    notifier: Notifier, store: ConferenceStore, clock: Clock
) -> None:
    _subscribe(store, clock)
    [first] = _tick(notifier, clock)
    assert first.ruri == "sip:alice@127.0.0.1:5099;transport=tls"
    assert first.next_hop == "sip:127.0.0.1:40001;transport=tls"
    assert first.socket == "tls:127.0.0.1:5061"
    assert _header(first, "From") == f"<{URI}>;tag=ours"
    assert _header(first, "To") == f"<{ALICE}>;tag=tag-sub-a"
    assert _header(first, "CSeq") == "1 NOTIFY"
    assert _header(first, "Event") == "conference"
    assert _header(first, "Subscription-State") == "active;expires=600"
    assert _header(first, "Content-Type") == CONFERENCE_INFO_TYPE
    assert _header(first, "Contact") == f"<sip:conf-{CONF}@127.0.0.1:5061;transport=tls>"
    assert not first.binary
    assert_valid(first.body)
    view = receive(None, first.body).view
    assert view is not None
    assert {user.entity for user in view.info.users} == {ALICE}

    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob")
    assert _tick(notifier, clock) == []  # the first NOTIFY is still in flight
    _ack(notifier, first)
    [second] = _tick(notifier, clock)
    assert _header(second, "CSeq") == "2 NOTIFY"
    assert b'state="partial"' in second.body
    received = receive(view, second.body)
    assert received.verdict is Verdict.APPLIED
    assert received.view is not None
    assert {user.entity for user in received.view.info.users} == {ALICE, BOB}
    _ack(notifier, second)
    assert _tick(notifier, clock) == []  # nothing changed


def test_a_member_who_left_is_ended_rejected(
    notifier: Notifier, store: ConferenceStore, clock: Clock
) -> None:
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob")
    bob = _subscribe(store, clock, BOB, "sub-b")
    [first] = _tick(notifier, clock)
    _ack(notifier, first)
    store.dialogs.release(CONF, "call-bob")
    [final] = _tick(notifier, clock)
    assert _header(final, "Subscription-State") == "terminated;reason=rejected"
    assert final.body == b""
    _ack(notifier, final)
    assert _tick(notifier, clock) == []
    assert store.subscriptions.get(CONF, bob.sub_id) is None
    assert store.subscriptions.of_node(NODE, limit=10) == []


def test_the_end_of_the_conference_is_a_deleted_document(
    notifier: Notifier, store: ConferenceStore, clock: Clock
) -> None:
    record = _subscribe(store, clock)
    [first] = _tick(notifier, clock)
    _ack(notifier, first)
    store.dialogs.release(CONF, "call-alice")  # the last dialog: the conference ends
    [final] = _tick(notifier, clock)
    assert _header(final, "Subscription-State") == "terminated;reason=noresource"
    assert_valid(final.body)
    held = receive(None, first.body).view
    assert receive(held, final.body).verdict is Verdict.ENDED
    _ack(notifier, final, 481)  # whatever the answer, it is over
    _tick(notifier, clock)
    assert store.subscriptions.get(CONF, record.sub_id) is None


def test_expiry_timer_f_and_481(notifier: Notifier, store: ConferenceStore, clock: Clock) -> None:
    expiring = _subscribe(store, clock, call_id="sub-x")
    silent = _subscribe(store, clock, call_id="sub-y")
    first = {_header(r, "Call-ID"): r for r in _tick(notifier, clock)}
    _ack(notifier, first["sub-x"])
    # sub-y never answers: Timer F (32 s) drops it without another NOTIFY
    assert _tick(notifier, clock, events.TIMER_F) == []
    assert store.subscriptions.get(CONF, silent.sub_id) is None
    [final] = _tick(notifier, clock, 600)
    assert _header(final, "Subscription-State") == "terminated;reason=timeout"
    _ack(notifier, final)
    _tick(notifier, clock)
    assert store.subscriptions.get(CONF, expiring.sub_id) is None
    # a 481 to a live subscription's NOTIFY drops it at once
    dropped = _subscribe(store, clock, call_id="sub-z")
    [notify] = _tick(notifier, clock)
    _ack(notifier, notify, 481)
    assert _tick(notifier, clock) == []
    assert store.subscriptions.get(CONF, dropped.sub_id) is None


def test_refresh_sends_full_state_and_unsubscribe_ends_timeout(
    notifier: Notifier, store: ConferenceStore, clock: Clock
) -> None:
    record = _subscribe(store, clock)
    [first] = _tick(notifier, clock)
    _ack(notifier, first)
    assert store.subscriptions.refresh(CONF, record.sub_id, now=clock.now, expires=3600)
    [full] = _tick(notifier, clock)
    assert _header(full, "Subscription-State") == "active;expires=3600"
    assert b'state="full"' in full.body
    _ack(notifier, full)
    assert store.subscriptions.refresh(CONF, record.sub_id, now=clock.now, expires=0)
    [final] = _tick(notifier, clock)
    assert _header(final, "Subscription-State") == "terminated;reason=timeout"


def test_an_idle_tick_reads_no_record_until_a_signal_or_the_sweep(
    notifier: Notifier, store: ConferenceStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _subscribe(store, clock)
    [first] = _tick(notifier, clock)
    _ack(notifier, first)
    assert _tick(notifier, clock) == []  # the reply applied (the ack woke the node)
    reads: list[int] = []
    get_many = store.subscriptions.get_many

    def counted(pairs: Any) -> Any:
        reads.append(len(pairs))
        return get_many(pairs)

    monkeypatch.setattr(store.subscriptions, "get_many", counted)
    for _ in range(10):  # 0.5 s of ticks: no input, no change, no deadline
        assert _tick(notifier, clock) == []
    assert reads == []
    # A worker's input wakes the node: the refresh is applied at the next tick.
    assert store.subscriptions.refresh(CONF, record.sub_id, now=clock.now, expires=600)
    [full] = _tick(notifier, clock)
    assert b'state="full"' in full.body
    assert reads == [1]
    _ack(notifier, full)
    assert _tick(notifier, clock) == []
    # A change of the conference (its counter) is seen at once, without any input.
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob")
    [partial] = _tick(notifier, clock)
    assert b'state="partial"' in partial.body
    _ack(notifier, partial)
    assert _tick(notifier, clock) == []
    settled = len(reads)
    # Nothing signalled: the full walk still comes once a second (the safety net).
    for _ in range(10):
        assert _tick(notifier, clock, 0.11) == []
    assert len(reads) == settled + 1


def test_kms_bodies_are_cms_under_the_subscription_key(
    notifier: Notifier, store: ConferenceStore, clock: Clock, client: redis.Redis
) -> None:
    client.hset(store.keys.conference(CONF), "mode", "kms")
    key = cms.EventKey(cms.event_key_id(42), bytes(range(32)))
    _subscribe(store, clock, mode="kms", event_key=key)
    [notify] = _tick(notifier, clock)
    assert notify.binary
    assert _header(notify, "Content-Type") == cms.CONTENT_TYPE
    assert _header(notify, "Content-Disposition") == cms.CONTENT_DISPOSITION
    entity = cms.open_protected(notify.body, {key.key_id: key.kek}.get)
    document = cms.split_inner_entity(entity, CONFERENCE_INFO_TYPE)
    assert_valid(document)
    wire = notifier.wire_message(notify)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert body == notify.body
    assert head.startswith(b"NOTIFY sip:alice@127.0.0.1:5099;transport=tls SIP/2.0\r\n")
    assert b"\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK" in head
    assert f"\r\nContent-Length: {len(notify.body)}".encode() in head


def test_a_departed_members_key_opens_nothing_sent_after_he_left(
    notifier: Notifier, store: ConferenceStore, clock: Clock, client: redis.Redis
) -> None:
    """Issue 15: "a departed member's key opens nothing sent after his departure"."""
    client.hset(store.keys.conference(CONF), "mode", "kms")
    store.admission.join(CONF, identity=BOB, call_id="call-bob", leg="leg-bob", mode="kms")
    alice_key = cms.EventKey(cms.event_key_id(41), bytes(range(32)))
    bob_key = cms.EventKey(cms.event_key_id(42), bytes(range(1, 33)))
    _subscribe(store, clock, mode="kms", event_key=alice_key)
    _subscribe(store, clock, BOB, "sub-b", mode="kms", event_key=bob_key)
    for notify in _tick(notifier, clock):
        _ack(notifier, notify)
    store.dialogs.release(CONF, "call-bob")  # bob hangs up
    after = _tick(notifier, clock)
    to_bob = [n for n in after if _header(n, "To").startswith(f"<{BOB}>")]
    to_alice = [n for n in after if _header(n, "To").startswith(f"<{ALICE}>")]
    # bob gets the end of his subscription, with no body: nothing for his key to open
    assert [(_header(n, "Subscription-State"), n.body) for n in to_bob] == [
        ("terminated;reason=rejected", b"")
    ]
    # alice learns he left, under her own key; bob's key opens none of it
    [news] = to_alice
    entity = cms.open_protected(news.body, {alice_key.key_id: alice_key.kek}.get)
    assert BOB.encode() in cms.split_inner_entity(entity, CONFERENCE_INFO_TYPE)
    with pytest.raises(SecconfError):
        cms.open_protected(news.body, {alice_key.key_id: bob_key.kek}.get)
    with pytest.raises(SecconfError):
        cms.open_protected(news.body, {bob_key.key_id: bob_key.kek}.get)


def test_a_long_index_is_walked_a_slice_per_tick(
    settings: Settings, store: ConferenceStore, clock: Clock
) -> None:
    narrow = dataclasses.replace(
        settings, events=dataclasses.replace(settings.events, scan_per_tick=1)
    )
    notifier = Notifier(
        narrow, store.subscriptions, store, clock, lambda n: bytes(n), lambda *_: None
    )
    _subscribe(store, clock, call_id="sub-1")
    clock.now += 1
    _subscribe(store, clock, call_id="sub-2")
    seen = [_header(r, "Call-ID") for _ in range(2) for r in _tick(notifier, clock)]
    assert seen == ["sub-1", "sub-2"]


def _kms(store: ConferenceStore, clock: Clock, client: redis.Redis, **kw: Any) -> cms.EventKey:
    client.hset(store.keys.conference(CONF), "mode", "kms")
    key = cms.EventKey(cms.event_key_id(42), bytes(range(32)))
    _subscribe(store, clock, mode="kms", event_key=key, **kw)
    return key


def _udp(call_id: str) -> dict[str, Any]:
    return {
        "call_id": call_id, "transport": "udp", "contact": "sip:alice@127.0.0.1:5099",
        "socket": "udp:127.0.0.1:5060", "source": "127.0.0.1:5099",
    }  # fmt: skip


def _ticks(notifier: Notifier, clock: Clock, seconds: float) -> list[NotifyRequest]:
    return [r for _ in range(round(seconds / 0.05)) for r in _tick(notifier, clock)]


def test_kms_over_udp_is_retransmitted_byte_for_byte_until_the_reply(
    notifier: Notifier, store: ConferenceStore, clock: Clock, client: redis.Redis
) -> None:
    key = _kms(store, clock, client, **_udp("sub-u"))
    _subscribe(store, clock, mode="kms", event_key=key, call_id="sub-t")  # TLS: never
    first = {_header(r, "Call-ID"): r for r in _tick(notifier, clock)}
    udp, tls = first["sub-u"], first["sub-t"]
    assert udp.wire is not None
    assert tls.wire is not None
    assert b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK" in udp.wire
    record_key = store.keys.subscription(CONF, dialog_id("sub-u"))
    stored = cast(bytes, client.hget(record_key, "wire"))
    assert stored == udp.wire  # kept to resend: the CMS body is ciphertext, no key in it
    assert key.kek not in stored
    assert not client.hget(store.keys.subscription(CONF, dialog_id("sub-t")), "wire")
    # Timer E: 0.5, then 1 s later, then 2 s later (the next is 4 s after that)
    copies = _ticks(notifier, clock, 3.8)
    assert [c.wire for c in copies] == [udp.wire] * 3
    assert {c.next_hop for c in copies} == {"sip:127.0.0.1:5099;transport=udp"}
    _ack(notifier, udp)
    _ack(notifier, tls)
    assert _ticks(notifier, clock, 10.0) == []
    assert not client.hget(record_key, "wire")
    assert store.subscriptions.get(CONF, dialog_id("sub-u")) is not None


def test_kms_over_udp_unanswered_is_dropped_at_timer_f(
    notifier: Notifier, store: ConferenceStore, clock: Clock, client: redis.Redis
) -> None:
    _kms(store, clock, client, **_udp("sub-u"))
    [first] = _tick(notifier, clock)
    copies = _ticks(notifier, clock, events.TIMER_F + 1)
    # 0.5, 1.5, 3.5, then every 4 s up to 31.5 (a tick's lateness may push the last past F)
    assert len(copies) in (9, 10)
    assert {c.wire for c in copies} == {first.wire}
    assert store.subscriptions.get(CONF, dialog_id("sub-u")) is None
    assert _ticks(notifier, clock, 5.0) == []


def test_a_1xx_keeps_timer_e_at_t2(
    notifier: Notifier, store: ConferenceStore, clock: Clock, client: redis.Redis
) -> None:
    _kms(store, clock, client, **_udp("sub-u"))
    [first] = _tick(notifier, clock)
    cseq = int(_header(first, "CSeq").split()[0])
    assert notifier.on_reply("sub-u", f"conf-{CONF}", cseq, 180)
    copies = _ticks(notifier, clock, 5.0)  # 0.5, then 4 s later (not 1, 2)
    assert [c.wire for c in copies] == [first.wire] * 2
    _ack(notifier, first)
    assert _ticks(notifier, clock, 5.0) == []
    assert store.subscriptions.get(CONF, dialog_id("sub-u")) is not None


def test_a_fetch_is_one_full_notify_then_nothing_in_redis(
    notifier: Notifier, store: ConferenceStore, clock: Clock, client: redis.Redis
) -> None:
    answered = _subscribe(store, clock, call_id="fetch-1", notifier=events.fetched(URI, clock.now))
    ttl = client.pttl(store.keys.subscription(CONF, answered.sub_id))
    assert 0 < ttl <= 121_000  # a fetch's record lives a NOTIFY's time, not an expiry's
    [notify] = _tick(notifier, clock)
    assert _header(notify, "Subscription-State") == "terminated;reason=timeout"
    assert b'state="full"' in notify.body
    assert_valid(notify.body)
    assert _tick(notifier, clock, 5.0) == []  # one NOTIFY, whatever changes
    _ack(notifier, notify)
    assert _tick(notifier, clock) == []
    assert store.subscriptions.get(CONF, answered.sub_id) is None
    assert store.subscriptions.of_conference(CONF) == {}
    assert store.subscriptions.of_node(NODE, limit=10) == []
    # unanswered, it goes at Timer F
    silent = _subscribe(store, clock, call_id="fetch-2", notifier=events.fetched(URI, clock.now))
    assert len(_tick(notifier, clock)) == 1
    assert _tick(notifier, clock, events.TIMER_F) == []
    assert store.subscriptions.get(CONF, silent.sub_id) is None
    assert list(client.scan_iter(match=f"*{CONF}*:sub*")) == []
