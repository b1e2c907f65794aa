"""The edge's control API: token, precise refusals without state change, Redis, restart."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from secconf.core.g711 import ToneGenerator
from secconf.store import generate_key_file
from tests.media.edge_harness import (
    HOST,
    EdgeUnderTest,
    FakeAsterisk,
    edge_config,
    join,
    key_json,
    new_key,
    redis_settings,
    settle,
)
from tests.store.aio import client, dump_everything


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def test_refusals_are_precise_and_change_nothing() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        try:
            assert (
                await edge.http.get("/v1/conferences/x", headers={"authorization": ""})
            ).status_code == 401
            wrong = {"authorization": "Bearer not-the-token-at-all"}
            assert (await edge.http.get("/metrics", headers=wrong)).status_code == 401
            assert (await edge.http.get("/healthz")).status_code == 200
            await edge.call("GET", "/v1/conferences/none", status=404)
            await edge.call("GET", "/v1/legs/none", status=404)
            # a leg before any epoch: 404 (no conference)
            await edge.call(
                "POST", "/v1/legs", {"conference": "c", "participant": key_json(new_key())}, 404
            )
            key = new_key()
            await edge.put_epoch("c", 5, key)
            assert (await edge.call("PUT", "/v1/conferences/c/epochs/5", key_json(key)))[
                "created"
            ] is False
            await edge.call("PUT", "/v1/conferences/c/epochs/5", key_json(new_key()), 409)
            await edge.call("PUT", "/v1/conferences/c/epochs/4", key_json(new_key()), 409)
            bad_key = {"suite": "AES_CM_128_HMAC_SHA1_80", "key": "AAAA", "salt": "AAAA"}
            await edge.call("PUT", "/v1/conferences/c/epochs/6", bad_key, 400)
            await edge.call(
                "PUT",
                "/v1/conferences/c/epochs/6",
                {"suite": "F8_128_HMAC_SHA1_80", "key": "", "salt": ""},
                400,
            )
            await edge.call("PUT", "/v1/conferences/c/epochs/x", key_json(new_key()), 400)
            raw = await edge.http.post("/v1/legs", content=b"{not json")
            assert raw.status_code == 400
            await edge.call("POST", "/v1/legs", {"conference": "c"}, 400)  # SDES without a key
            await edge.call(
                "POST",
                "/v1/legs",
                {"conference": "c", "mode": "kms", "participant": key_json(new_key())},
                400,
            )
            await edge.call("POST", "/v1/legs", {"conference": "c", "bogus": 1}, 400)
            await edge.call("POST", "/v1/legs", {"conference": "bad id!", "mode": "kms"}, 400)
            leg = await edge.leg("c", mode="kms")
            await edge.call("POST", f"/v1/legs/{leg['leg']}/switch", {"epoch": 9}, 404)
            await edge.call(
                "PUT", f"/v1/legs/{leg['leg']}/internal-remote", {"host": "nowhere", "port": 1}, 400
            )
            await edge.call(
                "PUT", f"/v1/legs/{leg['leg']}/internal-remote", {"host": HOST, "port": 70000}, 400
            )
            await edge.call(
                "PUT", f"/v1/legs/{leg['leg']}/participant-key", key_json(new_key()), 409
            )
            await edge.call("DELETE", "/v1/conferences/c/epochs/5", status=409)  # in use
            # the crypto-line form the Kamailio module sends
            line = "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode()
            other = await edge.leg(
                "c", leg="dialog-1", streams=[{"media": "audio", "crypto": line}]
            )
            assert other["leg"] == "dialog-1"
            assert other["external"]["ports"] == [other["participant"]["port"]]
            await edge.call(
                "POST", "/v1/legs", {"conference": "c", "leg": "dialog-1", "crypto": line}, 409
            )
            state = await edge.conference("c")
            assert [e["epoch"] for e in state["epochs"]] == [5]
            assert sorted(x["leg"] for x in state["legs"]) == sorted([leg["leg"], "dialog-1"])
            assert all(x["epoch"] == 5 for x in state["legs"])
            assert str(key.key) not in str(state)
            assert key.fingerprint in str(state)
            await edge.call("DELETE", f"/v1/legs/{leg['leg']}")
            await edge.call("DELETE", f"/v1/legs/{leg['leg']}", status=404)
        finally:
            await edge.close()

    run(scenario())


def test_restart_recovers_legs_from_redis(
    redis_url: str, redis_server: Any, tmp_path: Path
) -> None:
    """Legs come back on their ports with their keys; keys are never in Redis in clear."""
    kek = tmp_path / "kek"
    generate_key_file(kek)
    config = edge_config(redis=redis_settings(redis_url, kek))

    async def scenario() -> None:
        group, own = new_key(), new_key()
        edge = await EdgeUnderTest.start(config)
        asterisk = FakeAsterisk(forward=False)
        endpoint = None
        try:
            await edge.put_epoch("conf-p", 1, group)
            answer, endpoint = await join(
                edge, asterisk, "conf-p", tx=own, rx=group, participant=key_json(own),
                internal="srtp",
            )  # fmt: skip
            channel = asterisk.channels[answer["leg"]]
            channel.send(b"\x01" * 160)
            assert (await endpoint.receive(2.0)).packet.ssrc == answer["ssrc"]
            await endpoint.send_audio([b"\x02" * 160] * 3, endpoint.ssrc)
            assert await settle(lambda: len(channel.received) == 3)
            async with client(redis_url) as handle:
                everything = b"".join(await dump_everything(handle))
            for secret in (group, own):
                for form in (secret.key, secret.key.hex().encode(), base64.b64encode(secret.key)):
                    assert form not in everything
            await edge.close()
            # the same ports are free again: a new edge takes them back
            edge = await EdgeUnderTest.start(config)
            state = await edge.conference("conf-p")
            assert len(state["legs"]) == 1
            restored = state["legs"][0]
            assert restored["leg"] == answer["leg"]
            assert restored["participant"]["port"] == answer["participant"]["port"]
            assert restored["internal"]["port"] == answer["internal"]["port"]
            assert restored["ssrc"] != answer["ssrc"]  # never the same (key, SSRC) twice
            assert restored["participant_ssrcs"] == [endpoint.ssrc]
            before = len(channel.received)
            await endpoint.send_audio([b"\x03" * 160] * 3, endpoint.ssrc)
            assert await settle(lambda: len(channel.received) == before + 3)
            channel.send(b"\x04" * 160)
            got = await endpoint.receive(2.0)
            assert (got.packet.ssrc, got.packet.payload) == (restored["ssrc"], b"\x04" * 160)
            # Redis down (this test server keeps nothing): 503, and nothing changes
            redis_server.stop()
            try:
                refused = await edge.http.post(
                    "/v1/legs", json={"conference": "conf-p", "participant": key_json(new_key())}
                )
                assert refused.status_code == 503
                await edge.call("POST", f"/v1/legs/{answer['leg']}/switch", {"epoch": 1})
                assert len((await edge.conference("conf-p"))["legs"]) == 1
                # a departed leg stops at once even so; the deletion is written later
                assert (await edge.http.delete(f"/v1/legs/{answer['leg']}")).status_code == 503
                assert (await edge.conference("conf-p"))["legs"] == []
            finally:
                redis_server.start()
        finally:
            if endpoint is not None:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario(), timeout=60)


def test_audio_under_load_stays_intact() -> None:
    """A few hundred packets through one leg quickly: all arrive and decrypt."""

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        endpoint = None
        try:
            group, own = new_key(), new_key()
            await edge.put_epoch("conf-l", 1, group)
            answer, endpoint = await join(
                edge, asterisk, "conf-l", tx=own, rx=group, participant=key_json(own)
            )
            channel = asterisk.channels[answer["leg"]]
            tone = ToneGenerator(1000)
            for _ in range(300):
                channel.send(tone.frame(160))
                if channel.sent % 50 == 0:
                    await asyncio.sleep(0.005)
            assert await settle(lambda: endpoint is not None and endpoint.totals.packets == 300)
        finally:
            if endpoint is not None:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_internal_remote_with_switch_epoch_is_one_call_and_refuses_atomically() -> None:
    """The module's 200 OK path: the mixer's address and the leg's switch in one PUT."""

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        try:
            await edge.put_epoch("c", 1, new_key())
            leg = await edge.leg("c", mode="kms")
            path = f"/v1/legs/{leg['leg']}/internal-remote"
            before = await edge.call("GET", f"/v1/legs/{leg['leg']}")
            # Unknown epoch: 404 and neither the remote nor the epoch changed.
            await edge.call("PUT", path, {"host": HOST, "port": 4000, "switch_epoch": 2}, 404)
            await edge.call("PUT", path, {"host": HOST, "port": 4000, "switch_epoch": "x"}, 400)
            assert await edge.call("GET", f"/v1/legs/{leg['leg']}") == before
            await edge.put_epoch("c", 2, new_key())
            described = await edge.call(
                "PUT", path, {"host": HOST, "port": 4000, "switch_epoch": 2}
            )
            assert described["internal_remote"] == {"host": HOST, "port": 4000}
            assert (await edge.call("GET", f"/v1/legs/{leg['leg']}"))["epoch"] == 2
            # Back to an older epoch: 409, the remote stays where it is.
            await edge.call("PUT", path, {"host": HOST, "port": 4002, "switch_epoch": 1}, 409)
            after = await edge.call("GET", f"/v1/legs/{leg['leg']}")
            assert after["internal_remote"] == {"host": HOST, "port": 4000}
            assert after["epoch"] == 2
        finally:
            await edge.close()

    run(scenario())
