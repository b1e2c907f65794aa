"""The focus tells the edge whether a participant muxes RTCP (RFC 5761) or uses port + 1.

linphonec 5.1.65 and baresip 1.0.0 offer no ``a=rtcp-mux`` and send SRTCP from
their RTP port + 1 (RFC 3550 §11); the edge's default is a muxed participant side,
where such a phone's receiver reports would never arrive and no rekey could be
verified.  Real Kamailio and Redis, the recording edge double of conftest.py.
"""

from __future__ import annotations

import pytest

from secconf.client.sip import UserAgent

from .conftest import ALICE, EdgeDouble, Focus, Upstream, offer, pai

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("", {"participant": False}), ("a=rtcp-mux", None)],
    ids=["no-rtcp-mux", "rtcp-mux"],
)
def test_leg_rtcp_mux_follows_the_offer(
    focus_with_edge: Focus, edge_double: EdgeDouble, extra: str, expected: object
) -> None:
    edge_double.calls.clear()
    edge_double.fail = False

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            call = await alice.invite(
                focus_with_edge.target("conf-factory"),
                offer(extra=extra),
                extra_headers=pai(ALICE),
                timeout=5,
            )
            await call.bye(timeout=5)
        finally:
            await alice.close()

    focus_with_edge.run(scenario)
    creates = [
        body for method, path, body in edge_double.calls if (method, path) == ("POST", "/v1/legs")
    ]
    assert len(creates) == 1
    assert creates[0].get("rtcp_mux") == expected
