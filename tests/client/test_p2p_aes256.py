"""A MIKEY-TICKET call whose TRANSFER_INIT asks for AES-CM with a 256-bit key (RFC 6188).

Two in-process :class:`~secconf.client.agent.ParticipantAgent`\\ s and the real KMS: the
caller's policy asks for AES_256_CM_HMAC_SHA1_80 or _32 (RFC 3830 §6.10.1, session
encryption key length 32), the callee (configured for AES-CM-128) applies the Initiator's
policy, both derive 256-bit SRTP master keys (RFC 6043 §5.1.3 at the policy's lengths) and
each hears the other's tone.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from typing import Any

import pytest

from secconf.client.agent import ParticipantAgent
from secconf.client.sip import UserAgent
from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.core.sdes import SUITES
from secconf.kms.async_client import KmsClient
from secconf.store.keywrap import load_key_file
from tests.fixtures.kms_server import RunningKms

pytestmark = pytest.mark.slow


def run(coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


async def _agent(kms: RunningKms, identity: str) -> ParticipantAgent:
    psk = load_key_file(kms.add_user(identity), "PSK")
    ua = await UserAgent.start("127.0.0.1", identity=identity)
    return ParticipantAgent(identity, KmsClient(kms.url, kms.identity, identity, psk), ua)


@pytest.mark.parametrize("suite", ["AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"])
def test_a_call_asking_for_aes_256_cm_runs_it_both_ways(kms: RunningKms, suite: str) -> None:
    async def scenario() -> None:
        alice_id = f"sip:alice-{secrets.token_hex(4)}@example.com"
        bob_id = f"sip:bob-{secrets.token_hex(4)}@example.com"
        alice, bob = await _agent(kms, alice_id), await _agent(kms, bob_id)
        alice.suite = SUITES[suite]  # bob keeps the default AES_CM_128_HMAC_SHA1_80
        bob.answer_calls()
        try:
            target = f"sip:bob@127.0.0.1:{bob.ua.local_port}"
            call_a = await alice.call(target, bob_id, timeout=10)
            call_b = await asyncio.wait_for(bob.answered.get(), 10)
            assert call_a.suite.name == call_b.suite.name == suite
            for call in (call_a, call_b):
                assert {len(k.key) for k in call.keys.values()} == {32}
                assert {len(k.salt) for k in call.keys.values()} == {14}
            await asyncio.gather(
                call_a.media.send_audio(ToneGenerator(600).frames(50), call_a.tx_ssrc),
                call_b.media.send_audio(ToneGenerator(1100).frames(50), call_b.tx_ssrc),
            )
            await asyncio.sleep(0.3)
            for call, tone in ((call_a, 1100), (call_b, 600)):
                received = call.media.drain()
                assert len(received) >= 45
                samples = ulaw_decode(b"".join(r.packet.payload for r in received))
                assert tone_ratio(samples, tone) > 0.9
                assert call.media.totals.auth_failures == 0
            await call_a.call.bye(timeout=5)
            for call in (call_a, call_b):
                await call.media.close(bye=False)
        finally:
            await alice.ua.close()
            await bob.ua.close()

    run(scenario())
