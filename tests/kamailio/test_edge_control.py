"""The focus drives the media edge's control API through the real Kamailio and Redis.

A recording HTTP double of the edge (the real one is in test_real_edge.py): here the
exact order of control calls and an edge that fails are what is tested."""

from __future__ import annotations

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.sdp import SessionDescription

from .conftest import ALICE, BOB, EdgeDouble, Focus, Upstream, offer, pai

pytestmark = pytest.mark.usefixtures("redis_url")


def test_legs_epochs_switch_and_release(focus_with_edge: Focus, edge_double: EdgeDouble) -> None:
    edge_double.calls.clear()
    edge_double.fail = False
    focus = focus_with_edge

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            call_a = await alice.invite(
                focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
            )
            header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            conference = header.split("conf-", 1)[1].split("@", 1)[0]  # type: ignore[union-attr]
            # Towards the participant: the edge's external address and port.
            answer = SessionDescription.parse(call_a.remote_sdp)
            assert answer.media[0].connection.address == "127.0.0.2"  # type: ignore[union-attr]
            # Towards the mixer: the edge's internal leg.
            sent = SessionDescription.parse(upstream.invites[0].request.body)
            assert sent.media[0].connection.address == "127.0.0.3"  # type: ignore[union-attr]
            assert sent.media[0].port == answer.media[0].port + 1000

            call_b = await bob.invite(
                focus.target(f"conf-{conference}"), offer(), extra_headers=pai(BOB), timeout=5
            )
            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario)
    kinds = [
        (method, path.split("/")[2] if path.count("/") > 1 else path)
        for method, path, _ in edge_double.calls
    ]
    assert kinds == [
        ("PUT", "conferences"),  # epoch 1 (a leg is created under the newest epoch)
        ("POST", "legs"),  # alice's leg
        ("PUT", "legs"),  # at alice's 200 OK: internal remote + switch to epoch 1, one call
        ("POST", "legs"),  # bob's leg
        ("PUT", "legs"),
        ("DELETE", "legs"),  # bob's BYE
        ("DELETE", "legs"),  # alice's BYE
        ("DELETE", "conferences"),  # the conference ended
    ]
    create = edge_double.calls[1][2]
    assert create["streams"][0]["media"] == "audio"
    assert create["streams"][0]["crypto"].startswith("1 AES_CM_128_HMAC_SHA1_80 inline:")
    assert create["participant_remote"] == {"host": "127.0.0.1", "port": 30000}
    epoch = edge_double.calls[0]
    assert epoch[1].endswith("/epochs/1")
    assert set(epoch[2]) == {"suite", "key", "salt"}
    assert edge_double.calls[2][1].endswith("/internal-remote")
    assert edge_double.calls[2][2] == {"address": "127.0.0.1", "ports": [40000], "switch_epoch": 1}


def test_edge_down_is_503_and_nothing_is_left_in_redis(
    focus_with_edge: Focus, edge_double: EdgeDouble
) -> None:
    focus = focus_with_edge
    edge_double.fail = True
    before = focus.snapshot()
    try:

        async def scenario(upstream: Upstream) -> int:
            alice = await UserAgent.start("127.0.0.1", identity=ALICE)
            try:
                with pytest.raises(SipRequestFailed) as info:
                    await alice.invite(
                        focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
                    )
                assert upstream.invites == []
                return info.value.status_code
            finally:
                await alice.close()

        assert focus.run(scenario) == 503
    finally:
        edge_double.fail = False
    assert focus.snapshot() == before
