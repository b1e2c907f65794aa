"""The conference event package end to end: real Asterisk (ConfBridge + AMI watcher), Kamailio,
edge and Redis, members over TLS, the participant's ConferenceWatch as subscriber.

What a member sees is the bridge as it is: after the watcher sees a leg join ConfBridge its
endpoint is ``connected`` with its SSRC as ``src-id``; a leave is a partial NOTIFY with the
endpoint ``disconnected`` (``departed``) within 500 ms of the BYE; every NOTIFY body as
received is valid against the RFC 4575 schema (xmlschema).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from secconf.asterisk.watcher import Watcher
from secconf.client.conference_events import ConferenceWatch, Protection
from secconf.client.sip import Answer, UserAgent
from secconf.core.confinfo import ConferenceView, DisconnectionMethod, EndpointStatus
from secconf.core.sip.message import SipRequest
from secconf.lab.tlsca import participant_contexts
from tests.asterisk.stack import Stack, running_stack
from tests.asterisk.support import ALICE, BOB, SETTINGS, bounded, conference_of, wait_for
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.confinfo import assert_valid
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.media import SdesParticipant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

REALM = "example.com"
PASSWORD = "alice-secret-1"
EVENTS_SETTINGS = (
    SETTINGS.replace(
        'trusted_sources = ["udp:127.0.0.1"]',
        'trusted_sources = ["udp:127.0.0.1", "tls:127.0.0.1"]',
    )
    + f'\n[digest]\nrealm = "{REALM}"\nalgorithms = ["SHA-256"]\n\n[events]\nnode_id = "e2e"\n'
)


@pytest.fixture(scope="module")
def tls_stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("e2e-events"), EVENTS_SETTINGS, tls=True,
    ) as running:  # fmt: skip
        yield running


async def _tls_phone(factory: KamailioFactory, identity: str) -> SdesParticipant:
    server, client = participant_contexts(factory.tls, "participant")
    ua = await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip
    return await SdesParticipant.start(identity, ua, rtcp_interval=0.3)


def _tls(stack: Stack, user: str) -> str:
    return f"sip:{user}@127.0.0.1:{stack.kamailio.tls_port};transport=tls"


def _endpoints(view: ConferenceView, identity: str) -> list[object]:
    return [e for user in view.info.users if user.entity == identity for e in user.endpoints]


async def _until(
    watch: ConferenceWatch, wanted: Callable[[ConferenceView], bool], seconds: float = 5
) -> ConferenceView:
    deadline = time.monotonic() + seconds
    while True:
        view = await watch.next_view(max(0.01, deadline - time.monotonic()))
        if wanted(view):
            return view


def test_a_member_watches_the_bridge(tls_stack: Stack, kamailio_factory: KamailioFactory) -> None:
    stack = tls_stack
    stack.add_sip_user(ALICE, "alice", REALM, PASSWORD)

    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("e2e-events"))
        await watcher.start()
        alice = await _tls_phone(kamailio_factory, ALICE)
        bob = await _tls_phone(kamailio_factory, BOB)
        try:
            call_a = await alice.invite(_tls(stack, "conf-factory"), ALICE)
            conference = conference_of(call_a)
            watch = await ConferenceWatch.start(
                alice.ua, _tls(stack, f"conf-{conference}"), protection=Protection.SDES,
                credentials=("alice", PASSWORD),
            )  # fmt: skip
            assert watch._subscription is not None
            handler = watch._subscription.on_notify
            assert handler is not None
            wire: list[SipRequest] = []

            def recording(request: SipRequest) -> Answer:
                wire.append(request)
                return handler(request)

            watch._subscription.on_notify = recording
            await _until(watch, lambda v: any(
                e.status is EndpointStatus.CONNECTED for e in _endpoints(v, ALICE)  # type: ignore[attr-defined]
            ))  # fmt: skip

            call_b = await bob.invite(_tls(stack, f"conf-{conference}"), BOB)
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 2, 5, "bob joins")
            view = await _until(watch, lambda v: any(
                e.status is EndpointStatus.CONNECTED for e in _endpoints(v, BOB)  # type: ignore[attr-defined]
            ))  # fmt: skip
            [bob_leg] = _endpoints(view, BOB)
            assert [m.src_id for m in bob_leg.media] == [bob.media.ssrc]  # type: ignore[attr-defined]
            assert view.info.state is not None
            assert view.info.state.user_count == 2

            await call_b.bye(timeout=5)
            left = time.monotonic()
            view = await _until(watch, lambda v: any(
                e.status is EndpointStatus.DISCONNECTED for e in _endpoints(v, BOB)  # type: ignore[attr-defined]
            ))  # fmt: skip
            assert time.monotonic() - left < 0.5
            [gone] = _endpoints(view, BOB)
            assert gone.disconnection_method is DisconnectionMethod.DEPARTED  # type: ignore[attr-defined]
            assert list(watch.counters.refusals) == []
            bodies = [n.body for n in wire if n.body]
            assert len(bodies) >= 3
            for body in bodies:
                assert_valid(body)
            await watch.close()
            await call_a.bye(timeout=5)
        finally:
            await bounded(alice.close(), "close alice")
            await bounded(bob.close(), "close bob")
            await bounded(watcher.close(), "close watcher")

    asyncio.run(scenario())
