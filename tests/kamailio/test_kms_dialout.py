"""KMS-mode dial-out through the real Kamailio, Redis, KMS and media edge.

The mixer is the stand-in of test_dialout.py (a ``UserAgent`` on the ``upstream.uri``
port sending Asterisk's dial-out INVITE with the preloaded Route and the conference
header) with the forwarding RTP mixer of ``MixingUpstream``, so audio really crosses the
edge.  The phones are ``ParticipantAgent``s: the focus keys its INVITE with its own
TRANSFER_INIT (RFC 6043 §4.2.2.1: the focus is the MIKEY Initiator), carrying an epoch
whose GTGK ticket names the target; the agent resolves it at the KMS, answers with a
TRANSFER_RESP, and hears the conference under the group key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import pytest

from secconf.client.agent import AgentCall, ParticipantAgent
from secconf.client.sip import Call, SipRequestFailed, UserAgent
from secconf.core.keymgmt import mikey_message
from secconf.core.mikey import GenericIdEntry
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.sdp import SessionDescription
from secconf.store.sip_users import SipUserStore
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.ports import free_udp_port
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    FOCUS_IDENTITY,
    KmsFocus,
    MixingUpstream,
    Upstream,
    start_kms_focus,
)
from .kms_participants import _conference_id, _hear_each_other, _kms_client
from .media import SUITE as SUITE_NAME
from .media import SdesParticipant
from .support import _epochs, _leg_epochs, _rekey

REALM = "example.com"
DAVE_PASSWORD = "dave-secret-333"
#: Bob's phone does not REGISTER: the focus has a fixed contact for it.
BOB_PORT = free_udp_port()


@pytest.fixture(scope="module")
def kms_dialout_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
    kms: RunningKms,
) -> Iterator[KmsFocus]:
    """KMS mode, a registrar (digest realm) and a static contact for Bob."""
    extra = f"""
[digest]
realm = "{REALM}"

[dialout]
contacts = {{ "{BOB}" = "sip:bob@127.0.0.1:{BOB_PORT}" }}
"""
    focus = start_kms_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-kms-dialout"),
        media_edge, kms, extra=extra, allow=(DAVE,),
    )  # fmt: skip
    yield focus
    focus.stop()


async def _phone(
    focus: KmsFocus,
    identity: str,
    *,
    port: int = 0,
    trusted: str | None = FOCUS_IDENTITY,
    cls: type[ParticipantAgent] = ParticipantAgent,
) -> ParticipantAgent:
    """A KMS participant that answers calls, trusting *trusted* as the calling focus."""
    ua = await UserAgent.start("127.0.0.1", port, identity=identity)
    agent = cls(identity, _kms_client(focus, identity), ua, dialout_focus=trusted)
    agent.answer_calls()
    return agent


def _mixer_offer(port: int, version: int = 1) -> bytes:
    return (
        f"v=0\r\no=asterisk 7 {version} IN IP4 127.0.0.1\r\ns=Asterisk\r\n"
        "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n"
    ).encode()


def _dial(
    mixer: UserAgent, focus: KmsFocus, target: str, conference: str, body: bytes
) -> asyncio.Future[Call]:
    """The mixer's dial-out INVITE as Asterisk sends it through kamailio-out."""
    headers = [
        ("Route", f"<sip:127.0.0.1:{focus.server.port};lr>"),
        ("X-Secconf-Conference", conference),
    ]
    outgoing = mixer.place_call(target, body, extra_headers=headers)
    return asyncio.ensure_future(outgoing.answered(5))


async def _create(
    focus: KmsFocus, upstream: Upstream, allowed: Sequence[str]
) -> tuple[ParticipantAgent, AgentCall, str, Call]:
    alice = await _phone(focus, ALICE)
    call_a = await alice.join_conference(
        focus.target("conf-factory"), FOCUS_IDENTITY, allowed=tuple(allowed)
    )
    assert call_a.call.response is not None
    conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))
    assert upstream.ua is not None
    mixer_a = await upstream.ua.next_call(5)  # the mixer's side of Alice's call
    return alice, call_a, conference, mixer_a


async def _register(focus: KmsFocus, agent: ParticipantAgent, password: str) -> None:
    _, client = focus.store()
    try:
        users = SipUserStore(client, focus.wrapper, focus.prefix)
        users.add(agent.identity, agent.identity[4:].split("@")[0], REALM, password)
    finally:
        client.close()
    registrar = f"sip:127.0.0.1:{focus.server.port}"
    user = agent.identity[4:].split("@")[0]
    answer = await agent.ua.register(registrar, credentials=(user, password), timeout=5)
    assert answer.status == 200, answer.status


def _transfer_init_of(invite_body: bytes) -> mikey_ticket.TransferInit:
    offer = SessionDescription.parse(invite_body)
    return mikey_ticket.TransferInit.read(mikey_message(offer, offer.media[0]))


def test_kms_dialout_keys_the_call_with_the_focus_transfer_init(
    kms_dialout_focus: KmsFocus,
) -> None:
    """A registered KMS phone is dialled out: the focus's TRANSFER_INIT, a new epoch, audio;
    then a rekey re-INVITE in the dial-out call, which the phone follows."""
    focus = kms_dialout_focus
    assert focus.edge is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        mixer = upstream.ua
        assert mixer is not None
        alice, call_a, conference, mixer_a = await _create(focus, upstream, (BOB, DAVE))
        dave = await _phone(focus, DAVE)
        store, client = focus.store()
        try:
            await _register(focus, dave, DAVE_PASSWORD)
            assert store.get(conference).epoch == 1  # type: ignore[union-attr]

            # The mixer's channel for the dial-out (its address known from the answer).
            channel = upstream.channel("dialout-dave", ("127.0.0.1", 9))
            started = time.monotonic()
            mixer_call = await _dial(
                mixer, focus, DAVE, conference, _mixer_offer(channel.address[1])
            )
            dialled = time.monotonic() - started
            dave_call = await asyncio.wait_for(dave.answered.get(), 5)
            answer = SessionDescription.parse(mixer_call.remote_sdp)
            connection = answer.media[0].connection or answer.session.connection
            assert connection is not None
            channel.edge_addr = (connection.address, answer.media[0].port)

            # Towards the mixer: clear, at the edge's internal leg, nothing of MIKEY.
            assert answer.media[0].proto == "RTP/AVP"
            assert b"key-mgmt" not in mixer_call.remote_sdp
            assert b"a=crypto" not in mixer_call.remote_sdp
            # Towards Dave: RTP/SAVP, the focus's TRANSFER_INIT, no a=crypto, no Route.
            invite = dave_call.call.invite
            assert invite.get("Route") is None
            assert invite.get("X-Secconf-Conference") == (
                f"<sip:conf-{conference}@conf.test.invalid>"
            )
            offered = SessionDescription.parse(invite.body)
            assert offered.media[0].proto == "RTP/SAVP"
            assert not offered.media[0].attributes("crypto")
            transfer = _transfer_init_of(invite.body)
            assert transfer.initiator == FOCUS_IDENTITY
            assert transfer.responder == DAVE
            # A new epoch, minted for the dial-out: its ticket names the members and Dave.
            assert mikey_group.epoch_of_sessions(transfer.sessions) == (1, 2)
            assert set(transfer.policy.recipients) == {ALICE, DAVE}
            info = store.get(conference)
            assert info is not None
            assert (info.epoch, info.kms_legs) == (2, 2)
            stored = store.epoch_ticket(conference, 2)
            assert stored is not None
            assert set(mikey_group.GroupEpochTicket.from_bytes(stored).recipients) == {ALICE, DAVE}
            key = store.group_key(conference, 2)
            assert dave_call.peer == FOCUS_IDENTITY
            assert dave_call.group_epoch == 2
            assert dave_call.group_key is not None
            assert (dave_call.group_key.key, dave_call.group_key.salt) == (key.key, key.salt)

            dialog = store.dialog(conference, mixer_call.call_id)
            assert dialog is not None
            assert (dialog.identity, dialog.mode, dialog.dialout, dialog.state, dialog.epoch) == (
                DAVE, "kms", True, "up", 2,
            )  # fmt: skip
            assert dialog.ssrcs == (dave_call.tx_ssrc,)
            assert store.members(conference) == {ALICE: 1, DAVE: 1}
            # The edge keys per leg: Alice stays on epoch 1 until her next re-INVITE.
            assert _epochs(edge, conference) == [1, 2]
            assert _leg_epochs(edge, conference) == [1, 2]
            legs = {leg["leg"]: leg for leg in edge.get(f"/v1/conferences/{conference}")["legs"]}
            assert legs[dialog.leg]["mode"] == "kms"
            assert call_a.group_epoch == 1

            # Dave and Alice hear each other, each under the key of its own epoch.
            await _hear_each_other(call_a, dave_call)
            assert dave_call.media.totals.auth_failures == 0
            print(
                f"\nKMS dial-out (mint + TRANSFER_INIT + RESOLVE + answer): {dialled * 1000:.0f} ms"
            )

            # A rekey (as the watcher's after a roster change) and the mixer's re-INVITE
            # in the dial-out dialog (the mixer is its caller): Dave follows in this call.
            assert await asyncio.to_thread(_rekey, focus, conference) == 3
            response = await mixer_call.reinvite(_mixer_offer(channel.address[1], 2), timeout=5)
            assert b"key-mgmt" not in response.body
            await asyncio.sleep(0.05)  # the agent switches right after its 200 OK
            assert dave_call.group_epoch == 3
            three = store.group_key(conference, 3)
            assert dave_call.group_key is not None
            assert dave_call.group_key.key == three.key
            assert store.dialog(conference, mixer_call.call_id).epoch == 3  # type: ignore[union-attr]
            assert mikey_ticket.TransferInit.read(dave_call.rekey_transfers[-1]).initiator == (
                FOCUS_IDENTITY
            )
            alice_id = call_a.call.call_id
            await mixer_a.reinvite(upstream.mixer_sdp(alice_id, 3), timeout=5)
            await asyncio.sleep(0.05)
            assert call_a.group_epoch == 3
            assert _leg_epochs(edge, conference) == [3, 3]
            await _hear_each_other(call_a, dave_call)
            assert dave_call.media.totals.auth_failures == 0

            # BYE from the mixer releases the dial-out like any dialog.
            await mixer_call.bye(timeout=5)
            assert store.dialog(conference, mixer_call.call_id) is None
            assert store.members(conference) == {ALICE: 1}
            assert store.get(conference).kms_legs == 1  # type: ignore[union-attr]
            assert _leg_epochs(edge, conference) == [3]  # Alice's leg only
            await call_a.call.bye(timeout=5)
        finally:
            client.close()
            await alice.ua.close()
            await dave.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


class _BadResponder(ParticipantAgent):
    """Answers the focus's TRANSFER_INIT with a TRANSFER_RESP whose MAC does not verify."""

    def _group_transfer_resp(
        self,
        transfer: mikey_ticket.TransferInit,
        resolved: mikey_ticket.ResolvedTicket,
        sessions: Sequence[GenericIdEntry],
    ) -> bytes:
        data = super()._group_transfer_resp(transfer, resolved, sessions)
        return data[:-1] + bytes([data[-1] ^ 1])


def test_kms_dialout_refusals_and_failures_leave_nothing(kms_dialout_focus: KmsFocus) -> None:
    """403 not allowed, 503 KMS down (Redis and edge unchanged), a TRANSFER_RESP that does
    not verify (stream-rejecting answer, nothing left), a phone that does not trust the
    calling focus (403 from the phone, nothing left); then the same target dialled again."""
    focus = kms_dialout_focus
    assert focus.edge is not None
    assert focus.proxy is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        mixer = upstream.ua
        assert mixer is not None
        alice, call_a, conference, _ = await _create(focus, upstream, (BOB,))
        bob = await _phone(focus, BOB, port=BOB_PORT, cls=_BadResponder)
        store, client = focus.store()
        try:
            # Not in the conference's allowed set (Carol is in policy.allowed, but Alice's
            # ticket did not name her): 403, nothing written, no KMS round trip.
            before = focus.snapshot(ours_only=True)
            with pytest.raises(SipRequestFailed) as info:
                await _dial(mixer, focus, CAROL, conference, _mixer_offer(40100))
            assert info.value.status_code == 403
            assert "not allowed" in (info.value.response.get("Warning") or "")  # type: ignore[union-attr]
            assert focus.snapshot(ours_only=True) == before

            # The KMS hangs: 503 to the mixer within the KMS timeout, Redis byte-identical,
            # the edge still on epoch 1 with Alice's leg only, Bob never called.
            assert focus.proxy is not None
            focus.proxy.down = True
            try:
                started = time.monotonic()
                with pytest.raises(SipRequestFailed) as info:
                    await _dial(mixer, focus, BOB, conference, _mixer_offer(40102))
                took = time.monotonic() - started
                # The mixer's INVITE retransmitted while the first worker waited (the
                # refusal is stateless) is taken by another worker: let it meet the KMS
                # down too, not the KMS back up.
                await asyncio.sleep(1.5)
            finally:
                focus.proxy.down = False
            assert info.value.status_code == 503
            response = info.value.response
            assert response is not None
            assert response.get("Warning"), "a 503 names its reason"
            assert took < 2.0, took
            # The dial-out's record was written before the KMS call and withdrawn: no
            # departure, nothing else; only the change counter stepped (a notifier that saw
            # the pending record must see it go).
            after = focus.snapshot(ours_only=True)
            counters = {key for key in before if key.endswith(b":events")}
            assert counters, "the conference has a change counter"
            assert after.keys() == before.keys()
            assert {k: v for k, v in after.items() if k not in counters} == {
                k: v for k, v in before.items() if k not in counters
            }
            assert _epochs(edge, conference) == [1]
            assert _leg_epochs(edge, conference) == [1]
            assert bob.answered.empty()

            # Bob's TRANSFER_RESP does not verify: the mixer gets every stream rejected,
            # no dialog record, no edge leg, Bob's SSRC not taken.
            mixer_call = await _dial(mixer, focus, BOB, conference, _mixer_offer(40104))
            bob_call = await asyncio.wait_for(bob.answered.get(), 5)
            rejected = SessionDescription.parse(mixer_call.remote_sdp)
            assert all(section.port == 0 for section in rejected.media)
            assert b"key-mgmt" not in mixer_call.remote_sdp
            # Refused: only the peers stay, so its ACK and BYE pass (a closing record).
            closing = store.dialog(conference, mixer_call.call_id)
            assert closing is not None
            assert (closing.state, closing.identity, closing.leg) == ("closing", "", "")
            assert store.members(conference) == {ALICE: 1}
            assert store.get(conference).kms_legs == 1  # type: ignore[union-attr]
            assert bob_call.tx_ssrc not in store.ssrcs(conference)
            assert _leg_epochs(edge, conference) == [1]
            # The epoch minted for Bob stays (a rekey nobody switched to yet).
            assert store.get(conference).epoch == 2  # type: ignore[union-attr]
            await mixer_call.bye(timeout=5)
            assert store.dialog(conference, mixer_call.call_id) is None  # gone with the BYE
            await bob_call.media.close(bye=False)
            await bob.ua.close()

            # A phone that does not trust this focus refuses the call (403): released.
            bob = await _phone(focus, BOB, port=BOB_PORT, trusted="sip:other-focus@example.com")
            with pytest.raises(SipRequestFailed) as info:
                await _dial(mixer, focus, BOB, conference, _mixer_offer(40106))
            assert info.value.status_code == 403
            assert store.members(conference) == {ALICE: 1}
            assert _leg_epochs(edge, conference) == [1]
            await bob.ua.close()

            # A phone that trusts it: epoch 2 already names Bob, so no new mint.
            bob = await _phone(focus, BOB, port=BOB_PORT)
            mixer_call = await _dial(mixer, focus, BOB, conference, _mixer_offer(40108))
            bob_call = await asyncio.wait_for(bob.answered.get(), 5)
            assert bob_call.group_epoch == 2
            assert store.get(conference).epoch == 2  # type: ignore[union-attr]
            dialog = store.dialog(conference, mixer_call.call_id)
            assert dialog is not None
            assert (dialog.mode, dialog.epoch, dialog.ssrcs) == ("kms", 2, (bob_call.tx_ssrc,))
            await mixer_call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            client.close()
            await alice.ua.close()
            await bob.ua.close()

    focus.run(scenario)


#: Mixed modes: Dave runs a MIKEY-TICKET client (listed), Bob an SDES phone (not listed).
MIXED_BOB_PORT, MIXED_DAVE_PORT = free_udp_port(), free_udp_port()


@pytest.fixture(scope="module")
def mixed_dialout_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
    kms: RunningKms,
) -> Iterator[KmsFocus]:
    """``policy.mixed_modes`` with ``[dialout] kms_users = [Dave]`` and static contacts."""
    extra = f"""
[dialout]
kms_users = ["{DAVE}"]
contacts = {{ "{BOB}" = "sip:bob@127.0.0.1:{MIXED_BOB_PORT}", "{DAVE}" = "sip:dave@127.0.0.1:{MIXED_DAVE_PORT}" }}
"""
    focus = start_kms_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-mixed-dialout"),
        media_edge, kms, extra=extra, allow=(DAVE,), mixed_modes=True,
    )  # fmt: skip
    yield focus
    focus.stop()


def test_mixed_modes_dial_kms_users_in_kms_mode_and_others_in_sdes(
    mixed_dialout_focus: KmsFocus,
) -> None:
    """In a mixed KMS conference the listed KMS user gets the focus's TRANSFER_INIT, an
    unlisted phone ``a=crypto`` with the same epoch's key."""
    focus = mixed_dialout_focus

    async def scenario(upstream: Upstream) -> None:
        mixer = upstream.ua
        assert mixer is not None
        alice, call_a, conference, _ = await _create(focus, upstream, (BOB, DAVE))
        dave = await _phone(focus, DAVE, port=MIXED_DAVE_PORT)
        bob_ua = await UserAgent.start("127.0.0.1", MIXED_BOB_PORT, identity=BOB)
        bob = await SdesParticipant.start(BOB, bob_ua)
        bob.accept_calls = True
        store, client = focus.store()
        try:
            call_d = await _dial(mixer, focus, DAVE, conference, _mixer_offer(40120))
            dave_call = await asyncio.wait_for(dave.answered.get(), 5)
            assert b"key-mgmt:mikey" in dave_call.call.invite.body
            assert b"a=crypto" not in dave_call.call.invite.body
            assert dave_call.group_epoch == 2
            assert store.dialog(conference, call_d.call_id).mode == "kms"  # type: ignore[union-attr]

            call_b = await _dial(mixer, focus, BOB, conference, _mixer_offer(40122))
            bob.call = await bob_ua.next_call(5)
            assert b"key-mgmt" not in bob.call.invite.body
            assert b"a=crypto:1" in bob.call.invite.body
            two = store.group_key(conference)
            assert two.epoch == 2
            assert bob.group == (SUITE_NAME, two.key, two.salt)
            record = store.dialog(conference, call_b.call_id)
            assert record is not None
            assert (record.mode, record.epoch) == ("sdes", 2)
            for call in (call_b, call_d, call_a.call):
                await call.bye(timeout=5)
        finally:
            client.close()
            await alice.ua.close()
            await dave.ua.close()
            await bob.close()

    focus.run(scenario)
