"""Per-leg SRTP suites at the edge (docs/mikey-decisions.md #30).

One conference, one epoch number, one key per suite in use: an AES_CM_128 leg,
an AES_256_CM_HMAC_SHA1_80 leg and an AES_256_CM_HMAC_SHA1_32 leg (KMS and SDES)
hear each other through the real edge (its HTTP API, real sockets, real
SrtpEndpoints) and the fake Asterisk of edge_harness, the mixer side on the
edge's own AES_CM_128 key.  A rekey gives each leg the new epoch in its own
suite; a leg is never switched to an epoch without a key in its suite; the
epoch's keys in every suite survive a restart, wrapped in Redis.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from secconf.client.media import SrtpEndpoint
from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.media.keys import SrtpKey
from secconf.store import generate_key_file
from tests.media.edge_harness import (
    EdgeUnderTest,
    FakeAsterisk,
    edge_config,
    join,
    key_json,
    material,
    new_key,
    redis_settings,
    settle,
)
from tests.store.aio import client, dump_everything

CM_128 = "AES_CM_128_HMAC_SHA1_80"
CM_256_80 = "AES_256_CM_HMAC_SHA1_80"
CM_256_32 = "AES_256_CM_HMAC_SHA1_32"
# (suite, mode) of each participant: KMS legs send under the group key, SDES legs under their own
LEGS = ((CM_128, "kms"), (CM_256_80, "kms"), (CM_256_32, "sdes"))
FREQS = (500.0, 900.0, 1400.0)


def run(coro: Coroutine[Any, Any, None], timeout: float = 45.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


async def put_epoch_keys(edge: EdgeUnderTest, conference: str, number: int) -> dict[str, SrtpKey]:
    keys = {suite: new_key(suite) for suite in (CM_128, CM_256_80, CM_256_32)}
    for key in keys.values():
        await edge.put_epoch(conference, number, key)
    return keys


async def talk(endpoints: list[SrtpEndpoint], frames: int = 30) -> None:
    """Each in turn sends a tone; each other one must hear it (FakeAsterisk forwards)."""
    for speaker, (endpoint, freq) in enumerate(zip(endpoints, FREQS, strict=True)):
        assert (
            await endpoint.send_audio(ToneGenerator(freq).frames(frames), endpoint.ssrc) == frames
        )
        listeners = [e for i, e in enumerate(endpoints) if i != speaker]
        assert await settle(
            lambda group=listeners: all(len(e.queue._queue) >= frames for e in group)
        )  # type: ignore[misc, union-attr]
        for listener in listeners:
            received = listener.drain()
            assert len(received) == frames
            samples = ulaw_decode(b"".join(r.packet.payload for r in received))
            assert tone_ratio(samples, freq) > 0.9
            assert listener.totals.auth_failures == 0
        assert endpoint.drain() == []


def test_legs_of_three_suites_hear_each_other_and_rekey_per_suite() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=True)
        endpoints: list[SrtpEndpoint] = []
        try:
            epoch1 = await put_epoch_keys(edge, "conf-mix", 1)
            answers = []
            for suite, mode in LEGS:
                own = new_key(suite)
                body: dict[str, Any] = {"mode": mode, "internal": "srtp"}
                if mode == "sdes":
                    body["participant"] = key_json(own)
                else:
                    body["suite"] = suite
                tx = own if mode == "sdes" else epoch1[suite]
                answer, endpoint = await join(
                    edge, asterisk, "conf-mix", tx=tx, rx=epoch1[suite], **body
                )
                assert answer["internal"]["edge_key"]["suite"] == CM_128  # the mixer side
                answers.append(answer)
                endpoints.append(endpoint)
            state = await edge.conference("conf-mix")
            assert [leg["suite"] for leg in state["legs"]] == [s for s, _ in LEGS]
            assert [k["suite"] for k in state["epochs"][0]["keys"]] == [
                CM_128,
                CM_256_80,
                CM_256_32,
            ]
            await talk(endpoints)

            # the rekey: epoch 2 in each suite; each leg switches to its own suite's key
            epoch2 = await put_epoch_keys(edge, "conf-mix", 2)
            for (suite, mode), endpoint, answer in zip(LEGS, endpoints, answers, strict=True):
                tx = None if mode == "sdes" else material(epoch2[suite])
                endpoint.rekey(tx=tx, rx=material(epoch2[suite]), grace=0)
                switched = await edge.call("POST", f"/v1/legs/{answer['leg']}/switch", {"epoch": 2})
                assert switched["changed"]
                assert switched["epoch"] == 2
            await talk(endpoints)
            # epoch 1's keys (every suite) go one grace window after the last leg left it
            relay = edge.edge.service.relay
            assert await settle(lambda: 1 not in relay.conferences["conf-mix"].keys, timeout=3.0)
            counters = (await edge.conference("conf-mix"))["counters"]
            assert counters["auth_failures"] == counters["internal_auth_failures"] == 0
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_a_suite_the_epoch_lacks_is_refused_and_changes_nothing() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        try:
            g1 = new_key(CM_128)
            await edge.put_epoch("conf-r", 1, g1)
            kms = await edge.leg("conf-r", mode="kms", suite=CM_128)
            before = await edge.conference("conf-r")
            # a leg in a suite epoch 1 holds no key in: 404, no leg
            await edge.call(
                "POST", "/v1/legs", {"conference": "conf-r", "mode": "kms", "suite": CM_256_80}, 404
            )
            # an SDES key in another suite than the one asked
            await edge.call(
                "POST",
                "/v1/legs",
                {
                    "conference": "conf-r",
                    "participant": key_json(new_key(CM_256_80)),
                    "suite": CM_128,
                },
                400,
            )
            # a suite the edge does not relay
            await edge.call(
                "POST", "/v1/legs", {"conference": "conf-r", "mode": "kms", "suite": "NULL"}, 400
            )
            # epoch 2 without a key in the leg's suite: the switch is refused
            await edge.put_epoch("conf-r", 2, new_key(CM_256_32))
            await edge.call("POST", f"/v1/legs/{kms['leg']}/switch", {"epoch": 2}, 404)
            # another key under a known (epoch, suite)
            await edge.call(
                "PUT", "/v1/conferences/conf-r/epochs/1", key_json(new_key(CM_128)), 409
            )
            after = await edge.conference("conf-r")
            assert after["legs"] == before["legs"]
            assert [leg["epoch"] for leg in after["legs"]] == [1]
            assert after["epochs"][0] == before["epochs"][0]
            # the same key again: idempotent
            again = await edge.call("PUT", "/v1/conferences/conf-r/epochs/1", key_json(g1))
            assert again["created"] is False
        finally:
            await edge.close()

    run(scenario())


def test_restart_brings_back_every_suite_of_an_epoch(redis_url: str, tmp_path: Path) -> None:
    kek = tmp_path / "kek"
    generate_key_file(kek)
    config = edge_config(redis=redis_settings(redis_url, kek, prefix="edge-mixed"))

    async def scenario() -> None:
        edge = await EdgeUnderTest.start(config)
        try:
            keys = await put_epoch_keys(edge, "conf-p", 1)
            leg = await edge.leg("conf-p", mode="kms", suite=CM_256_32)
            async with client(redis_url) as handle:
                everything = b"".join(await dump_everything(handle))
            for key in keys.values():
                for form in (key.key, key.key.hex().encode(), base64.b64encode(key.key)):
                    assert form not in everything
            await edge.close()
            edge = await EdgeUnderTest.start(config)
            state = await edge.conference("conf-p")
            assert [(k["suite"], k["fingerprint"]) for k in state["epochs"][0]["keys"]] == [
                (suite, key.fingerprint) for suite, key in keys.items()
            ]
            restored = state["legs"][0]
            assert (restored["leg"], restored["suite"]) == (leg["leg"], CM_256_32)
            relay = edge.edge.service.relay
            conference = relay.conferences["conf-p"]
            assert conference.key(1, CM_256_80) is not None
            assert relay.legs[leg["leg"]].rx[0].key.fingerprint == keys[CM_256_32].fingerprint
        finally:
            await edge.close()

    run(scenario())
