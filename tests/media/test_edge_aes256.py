"""The media edge relaying participant legs in AES_256_CM_HMAC_SHA1_80/_32 (RFC 6188).

Real sockets, the real edge with its HTTP API, real SrtpEndpoints as participants and the
fake Asterisk of edge_harness.  The participant side runs the conference's AES-256-CM
suite; the mixer side stays on the edge's own AES_CM_128_HMAC_SHA1_80 key (issue 14).
What the edge sends a participant is also opened by the RFC 3711/6188 reference of
tests/unit/test_rfc6188.py (pyca/cryptography, not libsrtp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.media.config import EdgeConfig, EdgeConfigError
from secconf.srtp import srtp_session
from tests.media.edge_harness import (
    HOST,
    EdgeUnderTest,
    FakeAsterisk,
    RawParticipant,
    join,
    key_json,
    new_key,
    rtp_packet,
    settle,
)
from tests.unit.test_rfc6188 import Reference

AES_256_CM = ("AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32")


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.mark.parametrize("suite", AES_256_CM)
@pytest.mark.parametrize("mode", ["kms", "sdes"])
def test_participants_in_aes_256_cm_hear_each_other(suite: str, mode: str) -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=True)
        endpoints = []
        try:
            group = new_key(suite)
            await edge.put_epoch("conf-256", 1, group)
            answers = []
            for _ in range(2):
                own = new_key(suite)
                body: dict[str, Any] = {"mode": mode, "internal": "srtp"}
                if mode == "sdes":
                    body["participant"] = key_json(own)
                tx = own if mode == "sdes" else group
                answer, endpoint = await join(edge, asterisk, "conf-256", tx=tx, rx=group, **body)
                answers.append(answer)
                endpoints.append(endpoint)
                # the mixer side keeps the edge's AES-CM-128 key
                assert answer["internal"]["edge_key"]["suite"] == "AES_CM_128_HMAC_SHA1_80"
            freqs = (700.0, 1300.0)
            sends = [
                e.send_audio(ToneGenerator(f).frames(40), e.ssrc)
                for e, f in zip(endpoints, freqs, strict=True)
            ]
            assert await asyncio.gather(*sends) == [40, 40]
            assert await settle(lambda: all(len(e.queue._queue) >= 40 for e in endpoints))  # type: ignore[union-attr]
            for index, endpoint in enumerate(endpoints):
                received = endpoint.drain()
                assert len(received) == 40
                samples = ulaw_decode(b"".join(r.packet.payload for r in received))
                assert tone_ratio(samples, freqs[1 - index]) > 0.9
                assert endpoint.totals.auth_failures == 0
            for endpoint in endpoints:  # SRTCP in: the edge reads the RFC 3711 §3.4 trailer
                endpoint.send_rtcp()

            async def counters() -> dict[str, int]:
                return dict((await edge.conference("conf-256"))["counters"])

            for _ in range(100):
                if (await counters())["rtcp_in"] >= 2:
                    break
                await asyncio.sleep(0.02)
            counters_now = await counters()
            assert counters_now["rtp_in"] == 80
            assert counters_now["rtcp_in"] >= 2
            assert counters_now["auth_failures"] == counters_now["internal_auth_failures"] == 0
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


@pytest.mark.parametrize("suite", AES_256_CM)
def test_what_the_edge_sends_a_participant_opens_under_the_rfc_reference(suite: str) -> None:
    """A KMS leg's outbound SRTP, captured raw, decrypts with RFC 3711/6188 by hand."""

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        raw = RawParticipant()
        try:
            group = new_key(suite)
            await edge.put_epoch("conf-ref", 1, group)
            remote = {"host": HOST, "port": raw.address[1]}
            answer = await edge.leg(
                "conf-ref", mode="kms", internal="srtp", participant_remote=remote
            )
            await asterisk.attach(edge, answer)
            # the participant talks first (under the group key, from the raw socket), then Asterisk
            sender = srtp_session(suite, group.key, group.salt, inbound=False)
            edge_address = (answer["participant"]["host"], answer["participant"]["port"])
            for seq in range(3):
                raw.send(sender.protect(rtp_packet(0x5EC0C0F1, seq, bytes(160))), edge_address)
            asterisk.generate(answer["leg"], 0.4, payload=bytes(range(160)))
            await asterisk.wait()
            rtp = lambda: [d for d in raw.datagrams if not 192 <= d[1] <= 223]  # noqa: E731
            assert await settle(lambda: len(rtp()) >= 15)
            reference = Reference(suite, group.key, group.salt)
            for datagram in rtp()[:15]:
                plain = reference.unprotect(datagram)  # asserts the tag
                assert int.from_bytes(plain[8:12], "big") == answer["ssrc"]
                assert plain[12:] == bytes(range(160))
                tag = 10 if suite.endswith("_80") else 4
                assert len(datagram) == 12 + 160 + tag
        finally:
            raw.close()
            asterisk.close()
            await edge.close()

    run(scenario())


@pytest.mark.parametrize("suite", [*AES_256_CM, "AES_CM_128_HMAC_SHA1_8O"])
def test_the_mixer_side_stays_aes_cm_128(suite: str) -> None:
    """[edge] internal_suite: only what Asterisk's SDES takes (a typo fails at start, too)."""
    with pytest.raises(EdgeConfigError, match="internal_suite must be one of"):
        EdgeConfig(internal_suite=suite)
    assert EdgeConfig(internal_suite="AES_CM_128_HMAC_SHA1_32").internal_suite.startswith("AES_CM")
