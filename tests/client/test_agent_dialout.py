"""The agent called by a focus (a KMS dial-out), in memory: no SIP, no KMS process.

The focus's TRANSFER_INIT carries a group epoch (a GTGK ticket from the in-memory KMS
of tests/fixtures/mikey_world.py); the agent must take it only from the focus it
trusts, derive the epoch's key, and answer with a TRANSFER_RESP the focus verifies,
naming the agent's own SSRC in the epoch's crypto session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from secconf.client.agent import ParticipantAgent, build_offer_sdp
from secconf.core.keymgmt import mikey_message
from secconf.core.mikey import group as mg
from secconf.core.mikey import ticket as mt
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import SUITES
from secconf.core.sdp import SessionDescription
from tests.fixtures.mikey_world import (
    BOB,
    FOCUS,
    NOW,
    CountingRandom,
    Kms,
    _epoch,
    _resolve,
)

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
EDGE_SSRC = 0x1234ABCD


@dataclass
class FakeKms:
    """The agent's KMS client over the in-memory KMS; counts resolves."""

    kms: Kms
    identity: str
    resolves: int = 0

    async def resolve(self, transfer: mt.TransferInit) -> mt.ResolvedTicket:
        self.resolves += 1
        return _resolve(self.kms, transfer.data, self.identity)[1]


@dataclass
class FakeUa:
    """Hands out one 'call' once asked (as if its ACK came)."""

    on_invite: object = None
    calls: list[SimpleNamespace] = field(default_factory=list)

    async def next_call(self, timeout: float = 32.0) -> SimpleNamespace:
        call = SimpleNamespace(dialog=SimpleNamespace(call_id=f"dialout-{len(self.calls)}"))
        self.calls.append(call)
        return call


def _incoming(body: bytes, header: str | None = None) -> SimpleNamespace:
    headers = {"X-Secconf-Conference": header} if header else {}
    request = SimpleNamespace(body=body, get=headers.get)
    return SimpleNamespace(request=request, body=body, call=None)


def _focus_offer(kms: Kms) -> tuple[mg.GroupEpochTicket, mt.PendingTransfer, bytes]:
    epoch = _epoch(kms, 2)
    pending = mg.build_group_transfer_init(
        epoch, initiator=FOCUS, responder=BOB, ssrcs=[EDGE_SSRC],
        policies=[policy_for_suite(0, SUITE)], now=NOW, random_bytes=CountingRandom(b"focus"),
    )  # fmt: skip
    offer = build_offer_sdp(address="127.0.0.1", port=40000, mikey=pending.data, session_id=1)
    return epoch, pending, offer


def _agent(kms: FakeKms, trusted: str | None) -> ParticipantAgent:
    return ParticipantAgent(
        BOB,
        kms,
        FakeUa(),
        clock=lambda: NOW,
        rtcp_interval=None,
        dialout_focus=trusted,  # type: ignore[arg-type]
    )


def test_the_focus_calls_in_and_the_agent_answers_with_its_ssrc() -> None:
    async def scenario() -> None:
        kms = Kms(CountingRandom(b"kms"))
        epoch, pending, offer = _focus_offer(kms)
        agent = _agent(FakeKms(kms, BOB), FOCUS)
        answer = await agent._on_invite(_incoming(offer))  # type: ignore[arg-type]
        assert answer.status == 200
        description = SessionDescription.parse(answer.body)
        assert description.media[0].proto == "RTP/SAVP"
        resp = mikey_message(description, description.media[0])
        # The focus verifies it and learns the agent's SSRC in the epoch's session.
        result = mt.process_transfer_resp(pending, resp, now=NOW)
        assert result.responder == BOB
        assert mg.epoch_of_sessions(result.sessions) == (mg.GROUP_CS_ID, 2)
        ssrcs = {entry.srtp_session().ssrc for entry in result.sessions}  # type: ignore[union-attr]
        call = await asyncio.wait_for(agent.answered.get(), 1)
        try:
            assert ssrcs == {EDGE_SSRC, call.tx_ssrc}
            assert call.peer == FOCUS
            assert call.group_epoch == 2
            master = epoch.srtp_master_key()
            assert call.group_key is not None
            assert (call.group_key.key, call.group_key.salt) == (master.key, master.salt)
            # Its later rekey re-INVITEs are followed in this call.
            assert agent._conferences[call.call.dialog.call_id] == (call, FOCUS)
            # The same TRANSFER_INIT again: a replay (403), no second call.
            again = await agent._on_invite(_incoming(offer))  # type: ignore[arg-type]
            assert again.status == 403
        finally:
            await call.media.close(bye=False)

    asyncio.run(scenario())


def test_a_focus_the_agent_does_not_trust_is_refused_before_the_kms() -> None:
    async def scenario() -> None:
        kms = Kms(CountingRandom(b"kms"))
        _, _, offer = _focus_offer(kms)
        for trusted in (None, "sip:other-focus@example.com"):
            client = FakeKms(kms, BOB)
            agent = _agent(client, trusted)
            for header in (None, "<sip:conf-0123456789abcdef@conf.example.com>"):
                answer = await agent._on_invite(_incoming(offer, header))  # type: ignore[arg-type]
                assert answer.status == 403
            assert client.resolves == 0
            assert agent.answered.empty()

    asyncio.run(scenario())
