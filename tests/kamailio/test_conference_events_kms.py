"""The conference event package in KMS mode, through the real Kamailio, KMS, edge and Redis.

A member subscribes with its own MIKEY-TICKET exchange (``ParticipantAgent.subscription``);
every NOTIFY body is CMS AuthEnvelopedData under that subscription's event key, which the
participant's :class:`~secconf.client.conference_events.ConferenceWatch` opens (a plain
body would be refused 403 in KMS mode).
"""

from __future__ import annotations

import time

import pytest

from secconf.client.conference_events import ConferenceWatch, Protection
from secconf.core.confinfo import ConferenceView

from .conftest import ALICE, BOB, CAROL, FOCUS_IDENTITY, KmsFocus, MixingUpstream, Upstream
from .kms_participants import _agent, _conference_id

pytestmark = pytest.mark.slow


def _users(view: ConferenceView) -> set[str]:
    return {user.entity for user in view.info.users}


def test_kms_member_reads_protected_notifications(kms_focus: KmsFocus) -> None:
    focus = kms_focus

    async def scenario(upstream: Upstream) -> None:
        alice = await _agent(focus, ALICE)
        bob = await _agent(focus, BOB)
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            exchange = await alice.subscription(FOCUS_IDENTITY)
            watch = await ConferenceWatch.start(
                alice.ua, focus.target(f"conf-{conference}"), protection=Protection.KMS,
                kms=exchange,
            )  # fmt: skip
            first = await watch.next_view(5)
            assert _users(first) == {ALICE}
            call_b = await bob.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
            joined = time.monotonic()
            while BOB not in _users(view := await watch.next_view(5)):
                pass
            assert time.monotonic() - joined < 0.5
            assert view.version > first.version
            assert list(watch.counters.refusals) == []
            await watch.close()
            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            for agent in (alice, bob):
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
