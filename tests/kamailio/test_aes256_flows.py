"""Conferences keyed in AES_256_CM_HMAC_SHA1_80 (RFC 6188) through the real Kamailio, Redis,
KMS and media edge (issue 14).

The suite of a conference is the focus's ``[focus] suite``; here it is RFC 6188's
AES_256_CM_HMAC_SHA1_80.  KMS mode: participants' TRANSFER_INITs ask for AES-CM with a
256-bit key (RFC 3830 §6.10.1 type 1 = 32) and get a TRANSFER_RESP with a 256-bit group
key; SDES mode: ``a=crypto:1 AES_256_CM_HMAC_SHA1_80``.  Media runs through the real edge
(participant side in the conference's suite, mixer side the edge's own key or clear RTP,
never the group key).  A joiner asking for another suite, or for a policy secconf does not
run, is refused with a specific answer and leaves the focus's Redis keys byte-identical.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.mikey import PolicyParam, SecurityPolicy
from secconf.core.mikey.constants import SrtpParam
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import SUITES
from secconf.lab.phones.audio import write_tone_wav
from secconf.lab.phones.linphone import LINPHONEC, LinphonePhone
from secconf.lab.phones.phone import SUITE as PHONE_SUITE
from secconf.store.conferences import connect_blocking
from secconf.store.sip_users import SipUserStore
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.phones import PhoneFactory
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    FOCUS_IDENTITY,
    Focus,
    KmsFocus,
    MixingUpstream,
    Upstream,
    _start_focus,
    crypto_line,
    offer,
    pai,
    start_kms_focus,
)
from .kms_participants import _agent, _conference_id, _hear_each_other, _offer, _refused
from .media import SdesParticipant, ratio, talk

AES_256 = SUITES["AES_256_CM_HMAC_SHA1_80"]
FOCUS_LINES = 'suite = "AES_256_CM_HMAC_SHA1_80"\n'


@pytest.fixture(scope="module")
def kms_focus_256(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
    kms: RunningKms,
) -> Iterator[KmsFocus]:
    focus = start_kms_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-kms-256"), media_edge,
        kms, focus_lines=FOCUS_LINES,
    )  # fmt: skip
    yield focus
    focus.stop()


@pytest.fixture(scope="module")
def sdes_focus_256(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    focus = _start_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-sdes-256"),
        env=media_edge.focus_env, focus_lines=FOCUS_LINES,
    )  # fmt: skip
    yield focus
    focus.server.stop()


def _create_256(focus: KmsFocus) -> str:
    async def scenario(upstream: Upstream) -> str:
        alice = await _agent(focus, ALICE)
        alice.suite = AES_256
        try:
            call = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            await call.media.close(bye=False)
            return _conference_id(call.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
        finally:
            await alice.ua.close()

    return focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_kms_join_asking_for_aes_256_cm_gets_a_256_bit_group_key_and_media(
    kms_focus_256: KmsFocus,
) -> None:
    focus = kms_focus_256
    assert focus.edge is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        alice = await _agent(focus, ALICE)
        bob = await _agent(focus, BOB)
        alice.suite = bob.suite = AES_256  # their TRANSFER_INITs ask for AES-CM, 256-bit key
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            call_b = await bob.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
            store, _ = focus.store()
            info = store.get(conference)
            assert info is not None
            assert info.suite == "AES_256_CM_HMAC_SHA1_80"
            for call in (call_a, call_b):
                assert call.group_key is not None
                assert len(call.group_key.key) == 32  # RFC 6188: 256-bit master key
                assert len(call.group_key.salt) == 14  # ... 112-bit salt
            assert call_a.group_key == call_b.group_key
            state = edge.get(f"/v1/conferences/{conference}")
            assert {e["suite"] for e in state["epochs"]} == {"AES_256_CM_HMAC_SHA1_80"}
            await _hear_each_other(call_a, call_b)
            assert call_a.media.totals.auth_failures == call_b.media.totals.auth_failures == 0
            for invite in upstream.invites:  # nothing of the keys reached the mixer
                assert b"key-mgmt" not in invite.request.body
                assert b"crypto" not in invite.request.body
            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            for agent in (alice, bob):
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_kms_join_asking_for_another_suite_is_refused_statelessly(
    kms_focus_256: KmsFocus,
) -> None:
    conference = _create_256(kms_focus_256)
    # AES-CM-128 (the RFC 3830 defaults) for an AES-256-CM conference: the focus answers no
    # TRANSFER_RESP (it would key the joiner at lengths the conference does not run).
    body, _ = asyncio.run(
        _offer(kms_focus_256, BOB, policy=policy_for_suite(0, SUITES["AES_CM_128_HMAC_SHA1_80"]))
    )
    _refused(kms_focus_256, f"conf-{conference}", body, BOB, 488,
             "the conference's SRTP suite is AES_256_CM_HMAC_SHA1_80")  # fmt: skip
    # AES-CM with a 192-bit key: no suite secconf runs (MIKEY ERR 10, Invalid SPpar).
    aes_192 = SecurityPolicy(0, params=(PolicyParam.of_int(SrtpParam.SESSION_ENCR_KEY_LENGTH, 24),))
    body, _ = asyncio.run(_offer(kms_focus_256, BOB, policy=aes_192))
    _refused(kms_focus_256, f"conf-{conference}", body, BOB, 488, "SRTP policy not supported")


def test_sdes_join_with_aes_256_cm_and_media(
    sdes_focus_256: Focus, media_edge: RunningEdge
) -> None:
    focus = sdes_focus_256

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE, suite="AES_256_CM_HMAC_SHA1_80")
        bob = await SdesParticipant.start(BOB, suite="AES_256_CM_HMAC_SHA1_80")
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            assert alice.group == bob.group
            assert alice.group is not None
            assert alice.group[0] == "AES_256_CM_HMAC_SHA1_80"
            assert len(alice.group[1]) == 32
            state = media_edge.get(f"/v1/conferences/{conference}")
            assert {e["suite"] for e in state["epochs"]} == {"AES_256_CM_HMAC_SHA1_80"}
            heard_a, heard_b = await talk([alice.media, bob.media], [440.0, 1000.0], 1.0)
            assert ratio(heard_a, 1000.0) > 0.8, ratio(heard_a, 1000.0)
            assert ratio(heard_b, 440.0) > 0.8, ratio(heard_b, 440.0)
            assert alice.media.totals.auth_failures == bob.media.totals.auth_failures == 0

            # A later joiner offering AES-CM-128 only: 488, nothing of the focus's keys changes.
            before = focus.snapshot(ours_only=True)
            ua = await UserAgent.start("127.0.0.1", identity=BOB)
            try:
                with pytest.raises(SipRequestFailed) as caught:
                    await ua.invite(
                        focus.target(f"conf-{conference}"),
                        offer(crypto=[crypto_line(1, "AES_CM_128_HMAC_SHA1_80")]),
                        extra_headers=pai(BOB),
                        timeout=5,
                    )
                assert caught.value.status_code == 488
                response = caught.value.response
                assert response is not None
                reason = focus.server.refusal(response.get("Call-ID") or "")
                assert "no usable AES_256_CM_HMAC_SHA1_80 key" in reason, reason
                assert "suite AES_CM_128_HMAC_SHA1_80 is not the conference's" in reason, reason
            finally:
                await ua.close()
            assert focus.snapshot(ours_only=True) == before
            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


# -- interop: linphonec 5.1.65 offering AES_256_CM_HMAC_SHA1_80 --------------------------------

DIGEST = """
[digest]
realm = "example.com"
algorithms = ["MD5"]
nonce_lifetime = 30
"""
ALICE_PASSWORD = "alice-aes256-secret"
LINPHONE_TONE, BOB_TONE = 700.0, 1300.0


class Linphone256(LinphonePhone):
    """linphonec made to insist on RFC 6188's suite (``srtp_crypto_suites``, SRTP mandatory)."""

    def config(self) -> str:
        text = super().config()
        assert f"srtp_crypto_suites={PHONE_SUITE}\n" in text
        return text.replace(
            f"srtp_crypto_suites={PHONE_SUITE}\n", "srtp_crypto_suites=AES_256_CM_HMAC_SHA1_80\n"
        )


@pytest.fixture(scope="module")
def digest_focus_256(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    focus = _start_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-digest-256"),
        env=media_edge.focus_env, extra=DIGEST, focus_lines=FOCUS_LINES,
    )  # fmt: skip
    yield focus
    focus.server.stop()


@pytest.mark.slow
def test_linphone_creates_an_aes_256_cm_conference_and_an_sdes_participant_joins(
    digest_focus_256: Focus, media_edge: RunningEdge, phones: PhoneFactory, tmp_path: Path
) -> None:
    """A real phone's ``a=crypto:1 AES_256_CM_HMAC_SHA1_80`` (linphonec, digest over UDP):
    the focus answers the group key in that suite, the edge relays, both sides hear."""
    if shutil.which(LINPHONEC) is None:
        pytest.skip("linphonec not installed (apt-get install linphone-cli)")
    focus = digest_focus_256
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    SipUserStore(client, focus.wrapper, focus.prefix).add(
        ALICE, "alice", "example.com", ALICE_PASSWORD
    )
    client.close()
    tone = write_tone_wav(tmp_path / "linphone-tone.wav", LINPHONE_TONE, 30.0)
    directory = tmp_path / "linphone-256"
    directory.mkdir()
    linphone = Linphone256(
        directory, "alice", password=ALICE_PASSWORD, realm="example.com", tone=tone
    )
    phones.started.append(linphone)
    linphone.start()

    async def scenario(upstream: Upstream) -> None:
        linphone.dial(f"sip:conf-factory@127.0.0.1:{focus.server.port}")
        await asyncio.to_thread(linphone.wait_connected, 10.0)
        match = re.search(rb"conf-([0-9a-z]{16})", bytes(upstream.invites[0].request))
        assert match is not None
        conference = match.group(1).decode()
        store, redis_client = focus.store()
        info = store.get(conference)
        redis_client.close()
        assert info is not None
        assert info.suite == "AES_256_CM_HMAC_SHA1_80"
        debug = (linphone.directory / "debug.log").read_text(errors="replace")
        assert "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:" in debug  # its offer (and answer)
        bob = await SdesParticipant.start(BOB, suite="AES_256_CM_HMAC_SHA1_80")
        try:
            call = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            mark = linphone.mark()
            heard = await talk([bob.media], [BOB_TONE], 3.0)
            assert ratio(heard[0], LINPHONE_TONE) > 0.5, ratio(heard[0], LINPHONE_TONE)
            assert bob.media.totals.auth_failures == 0
            await asyncio.sleep(0.5)
            _, samples = linphone.heard(mark)
            assert ratio(samples, BOB_TONE) > 0.5, ratio(samples, BOB_TONE)
            state = media_edge.get(f"/v1/conferences/{conference}")
            assert {e["suite"] for e in state["epochs"]} == {"AES_256_CM_HMAC_SHA1_80"}
            assert all(leg["counters"]["auth_failures"] == 0 for leg in state["legs"])
            await call.bye(timeout=5)
        finally:
            await bob.close()
        await asyncio.to_thread(linphone.hangup)
        await asyncio.to_thread(linphone.wait_ended, 5.0)

    focus.run(scenario, MixingUpstream(focus.upstream_port))
