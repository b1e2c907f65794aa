"""KMS-mode rekeys and mixed-mode conferences through real Kamailio, Redis, KMS and edge.

``rekey()`` asks the real KMS for a GTGK ticket naming the conference's current
members; the mixer's stand-in re-INVITEs every dialog; the module puts a TRANSFER_INIT
of the focus into the offer towards each KMS participant (a ``ParticipantAgent``),
which resolves it at the KMS, answers with a TRANSFER_RESP and switches; the module
verifies it at the 200 OK and switches the edge leg.  Mixed conferences
(``policy.mixed_modes``) re-key each leg in its own mode.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from secconf.client.agent import AgentCall, ParticipantAgent, build_offer_sdp
from secconf.core.errors import ServiceUnavailable
from secconf.core.mikey import TicketFlags
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.sdp import SessionDescription
from secconf.kms.async_client import KmsRefused
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    FOCUS_IDENTITY,
    KmsFocus,
    MixingUpstream,
    Upstream,
    pai,
    start_kms_focus,
)
from .kms_participants import _agent, _conference_id, _hear_each_other, _kms_client
from .media import SdesParticipant, ratio, talk
from .support import TONE_A, TONE_B, _epochs, _leg_epochs, _mixer_calls, _rekey


async def _conference(
    focus: KmsFocus, upstream: Upstream, members: tuple[str, ...]
) -> tuple[str, list[ParticipantAgent], list[AgentCall], dict[str, object]]:
    """*members*[0] creates (allowing the others and Carol); the rest join; all calls up."""
    agents = [await _agent(focus, identity) for identity in members]
    calls = [
        await agents[0].join_conference(
            focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(*members[1:], CAROL)
        )
    ]
    assert calls[0].call.response is not None
    conference = _conference_id(calls[0].call.response.get("X-Secconf-Conference"))
    for agent in agents[1:]:
        calls.append(
            await agent.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
        )
    mixer = await _mixer_calls(upstream, len(members))
    return conference, agents, calls, mixer


def test_kms_rekey_from_a_gtgk_ticket_switches_every_leg(kms_focus: KmsFocus) -> None:
    focus = kms_focus
    assert focus.edge is not None
    assert focus.kms is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        conference, agents, calls, mixer = await _conference(focus, upstream, (ALICE, BOB, CAROL))
        call_a, call_b, call_c = calls
        store, client = focus.store()
        try:
            assert store.get(conference).kms_legs == 3  # type: ignore[union-attr]
            # Carol leaves; the focus's next epoch must not be hers to resolve.
            await call_c.call.bye(timeout=5)
            assert store.get(conference).kms_legs == 2  # type: ignore[union-attr]
            old = store.group_key(conference, 1)

            epoch = await asyncio.to_thread(_rekey, focus, conference)
            assert epoch == 2
            stored = store.epoch_ticket(conference, 2)
            assert stored is not None
            group_epoch = mikey_group.GroupEpochTicket.from_bytes(stored)
            # The group key is the TEK every recipient derives from the GTGK (G = 0).
            assert set(group_epoch.recipients) == {ALICE, BOB}
            assert TicketFlags.G not in group_epoch.ticket.flags
            new_key = store.group_key(conference)
            master = group_epoch.srtp_master_key()
            assert (new_key.key, new_key.salt) == (master.key, master.salt)
            # Wrapped at rest: no key material of the epoch in Redis in clear.
            raw = b"".join(v for v in client.hvals(store.conference_key(conference, "epochs")))
            for secret in (group_epoch.gtgk, group_epoch.mpki, new_key.key, group_epoch.randri):
                assert secret not in raw
            assert _epochs(edge, conference) == [1, 2]
            assert _leg_epochs(edge, conference) == [1, 1]

            for agent_call in (call_a, call_b):
                call_id = agent_call.call.call_id
                response = await mixer[call_id].reinvite(  # type: ignore[attr-defined]
                    upstream.mixer_sdp(call_id, 3), timeout=5
                )
                # Towards the mixer: clear, via the edge, nothing of MIKEY.
                assert b"key-mgmt" not in response.body
                assert b"a=crypto" not in response.body
                assert b"RTP/AVP" in response.body
                await asyncio.sleep(0.05)  # the agent's switch runs right after its 200 OK
                assert agent_call.group_epoch == 2
                assert agent_call.group_key is not None
                assert agent_call.group_key.key == new_key.key
                assert store.dialog(conference, call_id).epoch == 2  # type: ignore[union-attr]
                transfer = mikey_ticket.TransferInit.read(agent_call.rekey_transfers[-1])
                assert transfer.initiator == FOCUS_IDENTITY
                assert CAROL not in transfer.policy.recipients
                # One crypto session (CS 1, SPI = epoch 2): the participant's SSRC and
                # the edge's outbound SSRC towards it.
                assert mikey_group.epoch_of_sessions(transfer.sessions) == (1, 2)
                ssrcs = [entry.srtp_session().ssrc for entry in transfer.sessions]  # type: ignore[union-attr]
                assert agent_call.tx_ssrc in ssrcs
                assert len(set(ssrcs)) == 2
            assert _leg_epochs(edge, conference) == [2, 2]
            assert old.key != new_key.key

            await _hear_each_other(call_a, call_b)
            for agent_call in (call_a, call_b):
                assert agent_call.media.totals.auth_failures == 0

            # Forward security: Carol, who left, is no recipient of epoch 2's ticket.
            # Resolving the TRANSFER_INIT Bob got, as herself, the KMS refuses (14).
            transfer = mikey_ticket.TransferInit.read(call_b.rekey_transfers[-1])
            with pytest.raises(KmsRefused) as refused:
                await _kms_client(focus, CAROL).resolve(transfer)
            assert refused.value.error_no == 14  # Invalid TICKET: not a recipient

            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
            # The epoch ticket went with the conference's epochs.
            assert store.epoch_ticket(conference, 2) is None
        finally:
            client.close()
            for agent in agents:
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


class _BadResponder(ParticipantAgent):
    """Answers a rekey with a TRANSFER_RESP whose MAC does not verify."""

    def _rekey_transfer_resp(
        self, transfer: mikey_ticket.TransferInit, resolved: mikey_ticket.ResolvedTicket
    ) -> bytes:
        data = super()._rekey_transfer_resp(transfer, resolved)
        return data[:-1] + bytes([data[-1] ^ 1])


def test_a_transfer_resp_that_does_not_verify_keeps_the_leg_and_is_reported(
    kms_focus: KmsFocus,
) -> None:
    focus = kms_focus
    assert focus.edge is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await _agent(focus, ALICE)
        ua = alice.ua
        from secconf.client.sip import UserAgent

        bob_ua = await UserAgent.start("127.0.0.1", identity=BOB)
        bob = _BadResponder(BOB, _kms_client(focus, BOB), bob_ua)
        store, client = focus.store()
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB,)
            )
            assert call_a.call.response is not None
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))
            call_b = await bob.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
            mixer = await _mixer_calls(upstream, 2)
            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            call_id = call_b.call.call_id
            response = await mixer[call_id].reinvite(  # type: ignore[attr-defined]
                upstream.mixer_sdp(call_id, 3), timeout=5
            )
            # The mixer gets an answer rejecting every stream; the leg stays on epoch 1.
            answer = SessionDescription.parse(response.body)
            assert all(section.port == 0 for section in answer.media)
            assert store.dialog(conference, call_id).epoch == 1  # type: ignore[union-attr]
            legs = {
                leg["leg"]: leg["epoch"]
                for leg in edge.get(f"/v1/conferences/{conference}")["legs"]
            }
            assert legs[store.dialog(conference, call_id).leg] == 1  # type: ignore[union-attr]
            failures = store.rekey_failures(conference)
            assert len(failures) == 1
            entry = failures[0][1]
            assert entry["identity"] == BOB
            assert entry["epoch"] == "2"
            assert entry["leg_epoch"] == "1"
            assert entry["status"] == "200"
            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            client.close()
            await ua.close()
            await bob_ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_kms_down_during_a_rekey_is_503_and_changes_nothing(kms_focus: KmsFocus) -> None:
    focus = kms_focus
    assert focus.edge is not None
    assert focus.proxy is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        conference, agents, calls, _ = await _conference(focus, upstream, (ALICE, BOB))
        store, client = focus.store()
        try:
            before = focus.snapshot(ours_only=True)
            assert focus.proxy is not None
            focus.proxy.down = True
            try:
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable):
                    await asyncio.to_thread(_rekey, focus, conference)
                assert time.monotonic() - started < 2.0
            finally:
                focus.proxy.down = False
            assert focus.snapshot(ours_only=True) == before
            assert store.get(conference).epoch == 1  # type: ignore[union-attr]
            assert _epochs(edge, conference) == [1]
            # Back up: the next rekey works.
            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            for agent_call in calls:
                await agent_call.call.bye(timeout=5)
        finally:
            client.close()
            for agent in agents:
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


# -- mixed-mode conferences -----------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
    kms: RunningKms,
) -> Iterator[KmsFocus]:
    """KMS mode with ``policy.mixed_modes = true``: SDES members in KMS conferences."""
    focus = start_kms_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-mixed"),
        media_edge, kms, mixed_modes=True,
    )  # fmt: skip
    yield focus
    focus.stop()


def test_mixed_conference_kms_creator_and_sdes_joiner_rekeyed_each_in_its_mode(
    mixed_focus: KmsFocus,
) -> None:
    focus = mixed_focus
    assert focus.edge is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await _agent(focus, ALICE)
        bob = await SdesParticipant.start(BOB)
        store, client = focus.store()
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB,)
            )
            assert call_a.call.response is not None
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))
            # Bob joins with a=crypto, identified by the trusted P-Asserted-Identity.
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            mixer = await _mixer_calls(upstream, 2)
            assert store.dialog(conference, call_a.call.call_id).mode == "kms"  # type: ignore[union-attr]
            assert store.dialog(conference, call_b.call_id).mode == "sdes"  # type: ignore[union-attr]
            modes = {leg["mode"] for leg in edge.get(f"/v1/conferences/{conference}")["legs"]}
            assert modes == {"kms", "sdes"}
            one = store.group_key(conference, 1)
            assert bob.group is not None
            assert bob.group[1] == one.key
            assert call_a.group_key is not None
            assert call_a.group_key.key == one.key

            bob.media.drain()
            heard_a, heard_b = await talk([call_a.media, bob.media], [TONE_A, TONE_B], 1.0)
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)

            # A REFER authenticated the SDES way in the KMS conference: accepted (mixed).
            response = await call_b.refer(f"<{ALICE}>", extra_headers=pai(BOB), timeout=5)
            assert response.status == 202
            entries = store.refers(conference)
            assert [(e[1]["referrer"], e[1]["mode"]) for e in entries] == [(BOB, "sdes")]

            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            assert store.epoch_ticket(conference, 2) is not None  # from the KMS
            two = store.group_key(conference)
            # Alice (KMS leg): a TRANSFER_INIT from the focus.
            response = await mixer[call_a.call.call_id].reinvite(  # type: ignore[attr-defined]
                upstream.mixer_sdp(call_a.call.call_id, 3), timeout=5
            )
            assert b"RTP/AVP" in response.body
            await asyncio.sleep(0.05)
            assert call_a.group_epoch == 2
            assert call_a.group_key is not None
            assert call_a.group_key.key == two.key
            # Bob (SDES leg): a=crypto with the same epoch's key.
            await mixer[call_b.call_id].reinvite(  # type: ignore[attr-defined]
                upstream.mixer_sdp(call_b.call_id, 3), timeout=5
            )
            assert b"a=crypto" in bob.reoffers[-1]
            assert b"key-mgmt" not in bob.reoffers[-1]
            assert bob.group is not None
            assert bob.group[1] == two.key
            assert _leg_epochs(edge, conference) == [2, 2]

            call_a.media.drain()
            bob.media.drain()
            heard_a, heard_b = await talk([call_a.media, bob.media], [TONE_A, TONE_B], 1.0)
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)
            assert call_a.media.totals.auth_failures == 0
            await call_b.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            client.close()
            await alice.ua.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_a_participant_refuses_a_rekey_transfer_init_not_from_its_focus(
    kms_focus: KmsFocus,
) -> None:
    """Carol (a member, a KMS user) forges a rekey for Bob with her own GTGK ticket: 403."""
    focus = kms_focus

    async def scenario(upstream: Upstream) -> None:
        _, agents, calls, _ = await _conference(focus, upstream, (ALICE, BOB))
        bob, call_b = agents[1], calls[1]
        try:
            issued = await _kms_client(focus, CAROL).request_ticket(
                mikey_group.group_ticket_policy((BOB,), valid_until=time.time() + 600)
            )
            forged_epoch = mikey_group.new_group_epoch(issued, 9, secrets.token_bytes)
            pending = mikey_group.build_group_transfer_init(
                forged_epoch, initiator=CAROL, responder=BOB, ssrcs=[call_b.tx_ssrc],
                now=time.time(), random_bytes=secrets.token_bytes,
            )  # fmt: skip
            offer = build_offer_sdp(
                address="127.0.0.1", port=40000, mikey=pending.data, session_id=1
            )
            # The re-INVITE as Bob's user agent hands it to the agent, in Bob's dialog.
            incoming = SimpleNamespace(body=offer, call=call_b.call)
            answer = await bob._on_invite(incoming)  # type: ignore[arg-type]
            assert answer.status == 403
            assert call_b.group_epoch == 1
            assert call_b.rekey_transfers == []
            for agent_call in calls:
                await agent_call.call.bye(timeout=5)
        finally:
            for agent in agents:
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
