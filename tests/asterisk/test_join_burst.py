"""A burst of 30 joins in 3 s through the real chain costs at most 2 rekeys (issue 6).

Real Kamailio + module, edge, Asterisk 22 ConfBridge and the watcher with the
default join policy (a join rekeys, for backward security) and a 2 s debounce
window: 30 SDES phones (secconf.client.phone) join within 3 s.  The watcher
batches them: at most two rekeys, and afterwards every leg at the edge and every
dialog record is on the conference's final epoch.  (The decision alone is
property-tested in tests/unit/test_roster.py; this is the same claim end to end.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import pytest

from secconf.asterisk.watcher import Watcher
from secconf.client.phone import SdesPhone
from secconf.core.roster import RekeyPolicy
from tests.asterisk.support import (  # noqa: F401 - `stack` is the module's fixture
    ALICE,
    BOB,
    Stack,
    bounded,
    conference_of,
    stack,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

JOINERS = 29  # plus the creator: 30 joins


def test_thirty_joins_in_three_seconds_cost_at_most_two_rekeys(stack: Stack) -> None:  # noqa: F811
    async def scenario() -> None:
        settings = dataclasses.replace(
            stack.watcher_settings("burst"),
            policy=RekeyPolicy(debounce=2.0, rekey_on_join=True),
            verify_timeout=6.0,
        )
        watcher = Watcher(settings)
        await watcher.start()
        phones: list[SdesPhone] = []
        store = stack.store()
        try:
            phones = [await SdesPhone.start(ALICE)]
            phones += [await SdesPhone.start(BOB) for _ in range(JOINERS)]
            started = time.monotonic()
            call = await phones[0].invite(stack.target("conf-factory"), asserted=ALICE)
            conference = conference_of(call)

            async def join(index: int, phone: SdesPhone) -> None:
                # Spread over 3 s from the creator's join.
                await asyncio.sleep(max(0.0, started + 2.9 * index / JOINERS - time.monotonic()))
                await phone.invite(stack.target(f"conf-{conference}"), asserted=BOB)

            await asyncio.gather(*(join(i, p) for i, p in enumerate(phones[1:], start=1)))
            joined = time.monotonic() - started
            assert joined < 3.5, f"the joins took {joined:.1f} s"
            await wait_for(
                lambda: len(watcher.tracker.members(conference)) == 1 + JOINERS, 10, "30 members"
            )
            # Quiet: two debounce windows and the rekeys' own time, then nothing more.
            await wait_for(lambda: len(watcher.reports) >= 1, 15, "the first rekey")
            await asyncio.sleep(2.0 + 6.0)
            reports = [r for r in watcher.reports if r.conference == conference]
            assert 1 <= len(reports) <= 2, [r.summary() for r in reports]
            assert all("join" in r.reasons for r in reports)
            final = store.get(conference)
            assert final is not None
            assert final.epoch == 1 + len(reports)
            state = stack.edge.get(f"/v1/conferences/{conference}")
            epochs = [leg["epoch"] for leg in state["legs"]]  # type: ignore[index]
            assert len(epochs) == 1 + JOINERS
            assert set(epochs) == {final.epoch}, sorted(epochs)
            print(
                f"\n30 joins in {joined:.1f} s -> {len(reports)} rekey(s), every leg on epoch "
                f"{final.epoch}"
            )
        finally:
            for phone in phones:
                if phone.call is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(phone.call.bye(timeout=2), 3)
            for phone in phones:
                await bounded(phone.close(), "close a phone")
            await bounded(watcher.close(), "close the watcher")
            store.client.close()

    asyncio.run(scenario())
