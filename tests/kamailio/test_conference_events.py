"""The conference event package at the focus, through the real Kamailio and Redis (SDES/TLS).

Kamailio runs the shipped cfg (rtimer's 50 ms ``secconf_notify`` timer, TLS listener);
members join over TLS with an asserted identity and subscribe with Digest, watched by the
participant's own :class:`~secconf.client.conference_events.ConferenceWatch` (which checks
every NOTIFY it takes).  Covered: the full first NOTIFY listing the members (its content
validated against the RFC 4575 schema by xmlschema), a join and a leave as partial
NOTIFYs with increasing versions within 500 ms, un-SUBSCRIBE removing the record, a
member's hang-up ending his subscription ``rejected``, and the refusals with nothing
stored (non-member 403, UDP 403, factory 404, another event 489, forged refresh 481);
a fetch (``Expires: 0`` outside a dialog, RFC 6665 §4.4.3): 200 ``Expires: 0``, one full
NOTIFY ``terminated;reason=timeout``, nothing left in Redis; a non-member's refused 403
with nothing stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from secconf.client.conference_events import ConferenceWatch, Protection
from secconf.client.sip import Answer, SipRequestFailed, UserAgent
from secconf.core.confinfo import ConferenceView, EndpointStatus, full_document, receive
from secconf.core.sip.message import SipRequest
from secconf.lab.tlsca import participant_contexts
from secconf.store.conferences import connect_blocking
from secconf.store.sip_users import SipUserStore
from tests.fixtures.confinfo import assert_valid
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer

from .conftest import ALICE, BOB, CAROL, Focus, Upstream, _start_focus
from .media import SdesParticipant

pytestmark = [pytest.mark.usefixtures("redis_url"), pytest.mark.slow]

REALM = "example.com"
DIGEST = f"""
[digest]
realm = "{REALM}"
algorithms = ["SHA-256"]
nonce_lifetime = 30

[events]
node_id = "test-node"
"""
PASSWORDS = {ALICE: "alice-secret-1", BOB: "bob-secret-22", CAROL: "carol-secret-3"}


@pytest.fixture(scope="module")
def events_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Focus]:
    running = _start_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-events"),
        extra=DIGEST, tls=True,
    )  # fmt: skip
    yield running
    running.server.stop()


def _add_users(focus: Focus) -> None:
    """Digest users (each test starts on a flushed Redis)."""
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    users = SipUserStore(client, focus.wrapper, focus.prefix)
    for identity, password in PASSWORDS.items():
        users.add(identity, _user(identity)[0], REALM, password)
    client.close()


def _user(identity: str) -> tuple[str, str]:
    return identity[4:].split("@")[0], PASSWORDS[identity]


async def _tls_ua(factory: KamailioFactory, identity: str) -> UserAgent:
    server, client = participant_contexts(factory.tls, "participant")
    return await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip


def _tls(focus: Focus, user: str) -> str:
    return f"sip:{user}@127.0.0.1:{focus.server.tls_port};transport=tls"


def _conference_id(call: object) -> str:
    header = call.response.get("X-Secconf-Conference")  # type: ignore[attr-defined]
    assert header is not None
    return str(header.split("conf-", 1)[1].split("@", 1)[0])


def _statuses(view: ConferenceView) -> dict[str, set[EndpointStatus | None]]:
    return {
        user.entity: {endpoint.status for endpoint in user.endpoints} for user in view.info.users
    }


def _subscription_keys(focus: Focus) -> list[bytes]:
    """Every subscription key but the node's wake-up counter (the node's, not a record's)."""
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    try:
        keys = client.scan_iter(match=f"{focus.prefix}:*sub*")
        return sorted(key for key in keys if not key.endswith(b":wake"))
    finally:
        client.close()


def _state(focus: Focus, snapshot: dict[bytes, object] | None = None) -> dict[bytes, object]:
    """The focus's keys but the Digest nonce records (their counts move with every use)."""
    snapshot = focus.snapshot(ours_only=True) if snapshot is None else snapshot
    return {key: value for key, value in snapshot.items() if b":nonce:" not in key}


#: A departed member: listed as disconnected, or no longer listed.
GONE = {EndpointStatus.DISCONNECTED}


async def _until(
    watch: ConferenceWatch, wanted: Callable[[ConferenceView], bool]
) -> ConferenceView:
    """The first view *wanted* (later changes such as a leg's bridge status may come first)."""
    deadline = time.monotonic() + 5
    while True:
        view = await watch.next_view(max(0.01, deadline - time.monotonic()))
        if wanted(view):
            return view


def _record_notifies(watch: ConferenceWatch) -> list[SipRequest]:
    """The NOTIFYs the watch gets from now on, as received (their bodies as on the wire)."""
    subscription = watch._subscription
    assert subscription is not None
    handler = subscription.on_notify
    assert handler is not None
    seen: list[SipRequest] = []

    def recording(request: SipRequest) -> Answer:
        seen.append(request)
        return handler(request)

    subscription.on_notify = recording
    return seen


async def _watch(ua: UserAgent, focus: Focus, conference: str, identity: str) -> ConferenceWatch:
    return await ConferenceWatch.start(
        ua, _tls(focus, f"conf-{conference}"), protection=Protection.SDES,
        credentials=_user(identity),
    )  # fmt: skip


def test_members_watch_the_roster_live(
    events_focus: Focus, kamailio_factory: KamailioFactory
) -> None:
    focus = events_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE, await _tls_ua(kamailio_factory, ALICE))
        bob = await SdesParticipant.start(BOB, await _tls_ua(kamailio_factory, BOB))
        try:
            call_a = await alice.invite(_tls(focus, "conf-factory"), ALICE)
            conference = _conference_id(call_a)
            watch = await _watch(alice.ua, focus, conference, ALICE)
            first = await watch.next_view(5)
            assert set(_statuses(first)) == {ALICE}
            assert_valid(full_document(first.info, first.version))
            assert first.info.entity.startswith("sip:conf-")
            wire = _record_notifies(watch)

            # Bob joins: a partial NOTIFY, the next version, within 500 ms of his 200.
            call_b = await bob.invite(_tls(focus, f"conf-{conference}"), BOB)
            joined = time.monotonic()
            view = await _until(watch, lambda v: BOB in _statuses(v))
            assert time.monotonic() - joined < 0.5
            assert view.version == first.version + 1  # the join is the next document
            assert list(watch.counters.refusals) == []
            # What the focus sent, checked by xmlschema against the RFC 4575 schema and ours.
            bodies = [notify.body for notify in wire if notify.body]
            assert bodies
            for body in bodies:
                assert_valid(body)
            assert all(n.get("content-type") == "application/conference-info+xml" for n in wire)
            assert all(n.get("event") == "conference" for n in wire)
            assert all(
                (n.get("subscription-state") or "").startswith("active;expires=") for n in wire
            )

            # Bob subscribes too; his hang-up ends his subscription "rejected".
            bob_watch = await _watch(bob.ua, focus, conference, BOB)
            assert set(_statuses(await bob_watch.next_view(5))) == {ALICE, BOB}
            await call_b.bye(timeout=5)
            left = time.monotonic()
            view = await _until(watch, lambda v: _statuses(v).get(BOB, set()) <= GONE)
            assert time.monotonic() - left < 0.5
            assert view.version > first.version + 1
            await asyncio.wait_for(bob_watch.ended.wait(), 5)
            assert bob_watch.end_reason == "terminated (rejected)"

            # Un-SUBSCRIBE: the final NOTIFY, then nothing of the subscription is left.
            await watch.close()
            deadline = time.monotonic() + 5
            while _subscription_keys(focus) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            store, client = focus.store()
            assert store.subscriptions.of_conference(conference) == {}
            client.close()
            await call_a.bye(timeout=5)
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario)


def test_refusals_store_nothing(events_focus: Focus, kamailio_factory: KamailioFactory) -> None:
    focus = events_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE, await _tls_ua(kamailio_factory, ALICE))
        carol = await _tls_ua(kamailio_factory, CAROL)
        udp = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            call_a = await alice.invite(_tls(focus, "conf-factory"), ALICE)
            conference = _conference_id(call_a)
            target = _tls(focus, f"conf-{conference}")
            before = focus.snapshot(ours_only=True)
            assert _subscription_keys(focus) == []
            cases = [
                (carol, target, "conference", _user(CAROL), 403),  # not a member
                (udp, focus.target(f"conf-{conference}"), "conference", _user(ALICE), 403),
                (alice.ua, _tls(focus, "conf-factory"), "conference", _user(ALICE), 404),
                (alice.ua, target, "presence", _user(ALICE), 489),
            ]
            for ua, uri, event, credentials, status in cases:
                with pytest.raises(SipRequestFailed) as refused:
                    await ua.subscribe(uri, event, credentials=credentials, timeout=5)
                assert refused.value.status_code == status, (uri, event)
                if status == 489:
                    response = refused.value.response
                    assert response is not None
                    assert response.get("Allow-Events") == "conference"
            # Only the Digest nonce-counts moved (replay protection of the credentials used)
            assert _state(focus) == _state(focus, before)

            # A forged in-dialog refresh (a subscription's Call-ID, another tag): 481.
            watch = await _watch(alice.ua, focus, conference, ALICE)
            await watch.next_view(5)
            subscription = watch._subscription
            assert subscription is not None
            assert subscription.dialog is not None
            before = focus.snapshot(ours_only=True)
            # alice's dialog (Call-ID, both tags, CSeq), sent from carol's TLS connection
            dialog = subscription.dialog
            layer = carol._dialogs
            request = dialog.create_request(
                "SUBSCRIBE", via=layer.new_via(),
                extra_headers=[("Event", "conference"), ("Expires", "3600")],
            )  # fmt: skip
            forged = await layer.transactions.transact(
                request, layer.transport.dialog_destination(dialog), 5
            )
            assert forged.status == 481
            after = focus.snapshot(ours_only=True)
            assert {k: v for k, v in after.items() if b":sub:" not in k} == {
                k: v for k, v in before.items() if b":sub:" not in k
            }
            await watch.close()
            await call_a.bye(timeout=5)
        finally:
            await alice.close()
            await carol.close()
            await udp.close()

    focus.run(scenario)


def test_a_subscriber_answering_481_is_dropped(
    events_focus: Focus, kamailio_factory: KamailioFactory
) -> None:
    focus = events_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE, await _tls_ua(kamailio_factory, ALICE))
        bob = await SdesParticipant.start(BOB, await _tls_ua(kamailio_factory, BOB))
        try:
            call_a = await alice.invite(_tls(focus, "conf-factory"), ALICE)
            conference = _conference_id(call_a)
            watch = await _watch(alice.ua, focus, conference, ALICE)
            await watch.next_view(5)
            assert len(_subscription_keys(focus)) >= 2  # the record and the conference index
            subscription = watch._subscription
            assert subscription is not None
            subscription.forget()  # from now on alice's agent answers its NOTIFYs 481
            call_b = await bob.invite(_tls(focus, f"conf-{conference}"), BOB)
            deadline = time.monotonic() + 5
            store, client = focus.store()
            while store.subscriptions.of_conference(conference) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert store.subscriptions.of_conference(conference) == {}
            assert store.subscriptions.of_node("test-node", limit=10) == []
            client.close()
            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario)


def test_a_fetch_is_one_notify_and_leaves_nothing(
    events_focus: Focus, kamailio_factory: KamailioFactory
) -> None:
    focus = events_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE, await _tls_ua(kamailio_factory, ALICE))
        carol = await _tls_ua(kamailio_factory, CAROL)
        try:
            call_a = await alice.invite(_tls(focus, "conf-factory"), ALICE)
            conference = _conference_id(call_a)
            target = _tls(focus, f"conf-{conference}")
            accept = (("Accept", "application/conference-info+xml"),)
            # A non-member's fetch is refused like his SUBSCRIBE, with nothing stored.
            before = focus.snapshot(ours_only=True)
            with pytest.raises(SipRequestFailed) as refused:
                await carol.subscribe(
                    target, "conference", expires=0, extra_headers=accept,
                    credentials=_user(CAROL), timeout=5,
                )  # fmt: skip
            assert refused.value.status_code == 403
            assert _state(focus) == _state(focus, before)
            assert _subscription_keys(focus) == []
            # A member's fetch: 200 Expires: 0, one NOTIFY with the full state, ended.
            fetch = await alice.ua.subscribe(
                target, "conference", expires=0, extra_headers=accept,
                credentials=_user(ALICE), timeout=5,
            )  # fmt: skip
            assert fetch.response is not None
            assert fetch.response.get("Expires") == "0"
            notify = await fetch.next_notification(5)
            assert notify.get("subscription-state") == "terminated;reason=timeout"
            assert notify.get("event") == "conference"
            assert notify.get("content-type") == "application/conference-info+xml"
            assert_valid(notify.body)
            assert b'state="full"' in notify.body
            received = receive(None, notify.body)
            assert received.view is not None
            assert set(_statuses(received.view)) == {ALICE}
            # Its 200 removes the record: nothing of the fetch stays in Redis.
            deadline = time.monotonic() + 5
            while _subscription_keys(focus) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert _subscription_keys(focus) == []
            with pytest.raises(TimeoutError):
                await fetch.next_notification(1.0)  # one NOTIFY, no more
            await call_a.bye(timeout=5)
        finally:
            await alice.close()
            await carol.close()

    focus.run(scenario)
