"""Per-leg SRTP suites end to end: Kamailio + module, edge, Asterisk ConfBridge, watcher.

Issue 14 / docs/mikey-decisions.md #30.  The conference runs AES_CM_128_HMAC_SHA1_80 (the
focus's ``suite``); ``[focus] suites`` also allows RFC 6188's AES_256_CM_HMAC_SHA1_80 and
_32.  A joins in AES_CM_128, B in AES_256_CM_HMAC_SHA1_80, C in AES_256_CM_HMAC_SHA1_32:
each decrypts, with its own suite's key of the epoch, what the real ConfBridge mixed from
the others (the edge decrypts each leg into the mixer side, AES_CM_128 or clear, and
encrypts the mix per leg's suite).  C leaves: the watcher rekeys, Asterisk re-INVITEs A
and B through Kamailio, each gets epoch 2 in its own suite, and media still flows both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from secconf.asterisk.rekey_driver import RekeyReport
from secconf.asterisk.watcher import Watcher
from secconf.core.g711 import ToneGenerator
from tests.asterisk.stack import Stack, running_stack
from tests.asterisk.support import (
    ALICE,
    BOB,
    CAROL,
    SETTINGS,
    TONE,
    assert_tone,
    bounded,
    conference_of,
    heard,
    wait_for,
)
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.media import SdesParticipant
from tests.unit.test_suite_keys import expected_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

CM_128, CM_256_80, CM_256_32 = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_32",
)
MIXED = SETTINGS.replace(
    'server_name = "focus.e2e"\n',
    f'server_name = "focus.e2e"\nsuites = ["{CM_256_80}", "{CM_256_32}"]\n',
)


@pytest.fixture(scope="module")
def mixed_stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    assert MIXED != SETTINGS
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("e2e-mixed"), MIXED,
    ) as running:  # fmt: skip
        yield running


async def speak(speaker: SdesParticipant, listeners: list[SdesParticipant]) -> None:
    """*speaker*'s tone reaches every listener through the ConfBridge mix, in its own suite."""
    await asyncio.sleep(0.2)
    for p in (speaker, *listeners):
        p.media.drain()
    await speaker.media.send_audio(ToneGenerator(TONE).frames(60), speaker.media.ssrc)
    await asyncio.sleep(0.3)
    for listener in listeners:
        assert_tone(heard(listener))


def test_members_of_three_suites_hear_each_other_through_asterisk_and_rekey(
    mixed_stack: Stack,
) -> None:
    stack = mixed_stack

    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("e2e-mixed"))
        await watcher.start()
        a = await SdesParticipant.start(ALICE, rtcp_interval=0.3, suite=CM_128)
        b = await SdesParticipant.start(BOB, rtcp_interval=0.3, suite=CM_256_80)
        c = await SdesParticipant.start(CAROL, rtcp_interval=0.3, suite=CM_256_32)
        store = stack.store()
        try:
            call_a = await a.invite(stack.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            await b.invite(stack.target(f"conf-{conference}"), BOB)
            call_c = await c.invite(stack.target(f"conf-{conference}"), CAROL)
            await wait_for(
                lambda: len(watcher.tracker.members(conference)) == 3, 5, "three ConfbridgeJoin"
            )
            base = store.group_key(conference)
            for p in (a, b, c):
                assert p.group == expected_key(base, p.suite)
            edge = stack.edge.get(f"/v1/conferences/{conference}")
            assert sorted(leg["suite"] for leg in edge["legs"]) == sorted(
                [CM_128, CM_256_80, CM_256_32]
            )
            await speak(a, [b, c])
            await speak(b, [a, c])
            await speak(c, [a, b])
            old = (a.group, b.group)

            # C leaves: one rekey, re-INVITEs to A and B, each in its own suite.
            waiter = asyncio.ensure_future(watcher.next_report(30))
            await call_c.bye(timeout=5)
            report: RekeyReport = await waiter
            assert report.epoch == 2
            assert report.all_switched is not None
            assert set(report.verdicts.values()) == {"followed"}, report.verdicts
            new = store.group_key(conference)
            assert new.epoch == 2
            assert a.group == expected_key(new, CM_128)
            assert b.group == expected_key(new, CM_256_80)
            assert (a.group, b.group) != old
            edge = stack.edge.get(f"/v1/conferences/{conference}")
            assert sorted(leg["epoch"] for leg in edge["legs"]) == [2, 2]
            await asyncio.sleep(0.3)  # packets in flight at the switch are lost (1-2)
            lost = (a.media.totals.auth_failures, b.media.totals.auth_failures)
            assert max(lost) <= 5, lost
            await speak(a, [b])
            await speak(b, [a])
            assert (a.media.totals.auth_failures, b.media.totals.auth_failures) == lost
            assert store.rekey_failures(conference) == []
        finally:
            for p in (a, b, c):
                if p.call is not None and p is not c:
                    with contextlib.suppress(Exception):
                        await p.call.bye(timeout=2)
                await bounded(p.close(), f"close {p.ua.identity}")
            await bounded(watcher.close(), "close watcher")
            store.client.close()

    asyncio.run(scenario())
