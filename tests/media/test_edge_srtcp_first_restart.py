"""linphone's SRTCP index restart when it had sent a single report before the key change.

Measured with linphonec 5.1.65 through the whole chain (tests/interop): a rekey
re-INVITE came ~3 s into the call, after linphone's first SRTCP report (index 1);
on the key change linphone rebuilt its sending context and its next report had
index 1 again, under the same key.  The edge took that for a replay (the restart
rule wanted an index *below* the highest seen), dropped the report and verified
the switch one report interval later.  An index equal to the highest seen is the
same restart.  Real loopback sockets and pylibsrtp (tests/media/edge_harness.py).
"""

from __future__ import annotations

import asyncio

from tests.media.edge_harness import (
    EdgeUnderTest,
    FakeAsterisk,
    join_non_mux,
    key_json,
    new_key,
    settle,
)


def test_restart_after_a_single_report_is_not_a_replay() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        rtcp = follower = None
        try:
            g1, g2 = new_key(), new_key()
            await edge.put_epoch("conf-r", 1, g1)
            own = new_key()
            answer, follower, rtcp = await join_non_mux(
                edge, asterisk, "conf-r", tx=own, rx=g1, participant=key_json(own)
            )
            leg = answer["leg"]
            asterisk.generate(leg, 6.0)
            assert await settle(lambda: follower.totals.packets >= 20, timeout=3)
            assert rtcp.send_reports(follower) == 1  # one report, SRTCP index 1
            await edge.put_epoch("conf-r", 2, g2)
            follower.rekey(rx=(g2.suite, g2.key, g2.salt), grace=0)
            rtcp.switch_rx(g2)
            rtcp.restart_index()  # linphone: same key, SRTCP index from the start again
            edge.edge.service.relay.switch(leg, 2)
            rtcp.report_every(follower, 0.3)

            async def described() -> dict:  # type: ignore[type-arg]
                return (await edge.conference("conf-r"))["legs"][0]  # type: ignore[no-any-return]

            started = asyncio.get_running_loop().time()
            while (state := (await described())["switch"]["state"]) == "pending":
                assert asyncio.get_running_loop().time() - started < 5.0
                await asyncio.sleep(0.05)
            leg_now = await described()
            assert state == "followed", leg_now["switch"]
            assert leg_now["counters"]["srtcp_restarts"] == 1
            assert leg_now["counters"]["replays"] == 0
        finally:
            if rtcp is not None:
                rtcp.close()
            if follower is not None:
                await follower.close(bye=False)
            asterisk.close()
            await edge.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
