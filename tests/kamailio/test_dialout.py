"""REGISTER (digest as a registrar) and the mixer's dial-out, through the real Kamailio.

Real Kamailio 5.6 with the module (usrloc in memory), real Redis, real media edge;
the mixer is a ``UserAgent`` bound to the ``upstream.uri`` port (what Asterisk's
``kamailio-out`` endpoint sends from), placing INVITEs to a target with the
``X-Secconf-Conference`` header and the preloaded Route to Kamailio.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from secconf.client.media import SrtpEndpoint
from secconf.client.sip import Answer, Call, IncomingRequest, SipRequestFailed, UserAgent
from secconf.core import digest
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES, CryptoAttribute
from secconf.core.sdp import SessionDescription
from secconf.focus.rekey import rekey
from secconf.focus.settings import load_settings
from secconf.store.sip_users import SipUserStore
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.ports import free_udp_port
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    Focus,
    Upstream,
    _start_focus,
    crypto_line,
)
from .media import SUITE as SUITE_NAME
from .media import SdesParticipant
from .support import MIXER_OFFER, dial

pytestmark = pytest.mark.usefixtures("redis_url")

REALM = "example.com"
DIGEST = f"""
[digest]
realm = "{REALM}"
algorithms = ["SHA-256", "MD5"]
nonce_lifetime = 30
"""
PASSWORDS = {BOB: "bob-secret-22", DAVE: "dave-secret-333", CAROL: "carol-secret-4444"}


#: Alice's phone does not REGISTER: the focus has a fixed contact for her.
STATIC_PORT = free_udp_port()
STATIC = f"""
[dialout]
contacts = {{ "{ALICE}" = "sip:alice@127.0.0.1:{STATIC_PORT}" }}
"""


@pytest.fixture(scope="module")
def dialout_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    running = _start_focus(
        kamailio_factory,
        redis_server,
        tmp_path_factory.mktemp("focus-dialout"),
        env=media_edge.focus_env,
        extra=DIGEST + STATIC,
    )
    yield running
    running.server.stop()


def _add_users(focus: Focus) -> None:
    """HA1 values in Redis (each test starts with an empty database)."""
    _, client = focus.store()
    users = SipUserStore(client, focus.wrapper, focus.prefix)
    for identity, password in PASSWORDS.items():
        users.add(identity, identity[4:].split("@")[0], REALM, password)
    client.close()


def _user(identity: str) -> tuple[str, str]:
    return identity[4:].split("@")[0], PASSWORDS[identity]


def registrar(focus: Focus) -> str:
    return f"sip:127.0.0.1:{focus.server.port}"


def test_register_challenges_and_refuses_then_accepts(dialout_focus: Focus) -> None:
    focus = dialout_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            before = focus.snapshot(ours_only=True)
            # RFC 3261 §10.3 / §22.2: a registrar challenges with 401 + WWW-Authenticate.
            response = await bob.register(registrar(focus), timeout=5)
            assert response.status == 401
            challenges = [digest.parse_challenge(v) for v in response.get_all("WWW-Authenticate")]
            assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
            assert response.get("Proxy-Authenticate") is None
            # Wrong password: 403, the same answer as an unknown user.
            wrong = await bob.register(
                registrar(focus), credentials=("bob", "not-the-password"), timeout=5
            )
            assert wrong.status == 403
            assert wrong.get("Warning") is None  # unauthenticated: the status only
            assert "digest authentication failed" in focus.server.refusal(
                wrong.get("Call-ID") or ""
            )
            # Someone else's address of record with Bob's credentials: 403.
            dave = await UserAgent.start("127.0.0.1", identity=DAVE)
            try:
                other = await dave.register(registrar(focus), credentials=_user(BOB), timeout=5)
                assert other.status == 403
                assert "address of record" in focus.server.refusal(other.get("Call-ID") or "")
            finally:
                await dave.close()
            # Registrations are not in Redis.  Bob's credentials were proven before the AOR
            # check refused them, so their nonce-count is spent (one P:nonce: record, TTL'd);
            # nothing else was written.
            after = focus.snapshot(ours_only=True)
            spent = [key.decode() for key in after.keys() - before.keys()]
            assert [key.split("{")[0] for key in spent] == [f"{focus.prefix}:nonce:"]
            assert {key: after[key] for key in before} == before
            ok = await bob.register(registrar(focus), credentials=_user(BOB), timeout=5)
            assert ok.status == 200, ok.status
            assert any(str(bob.local_port) in value for value in ok.get_all("Contact"))
            removed = await bob.register(
                registrar(focus), credentials=_user(BOB), expires=0, timeout=5
            )
            assert removed.status == 200
        finally:
            await bob.close()

    focus.run(scenario)


def test_dialout_keys_the_call_and_refusals_change_nothing(dialout_focus: Focus) -> None:
    focus = dialout_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        mixer = upstream.ua
        assert mixer is not None
        alice = await SdesParticipant.start(ALICE)
        bob = await SdesParticipant.start(BOB)
        bob.accept_calls = True
        dave = await UserAgent.start("127.0.0.1", identity=DAVE)
        stranger = await UserAgent.start("127.0.0.1", identity="sip:asterisk@127.0.0.1")
        store, client = focus.store()
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            assert header is not None
            conference = header.split("conf-", 1)[1].split("@", 1)[0]
            for who in (bob.ua, dave):
                answer = await who.register(
                    registrar(focus), credentials=_user(str(who.identity.uri)), timeout=5
                )
                assert answer.status == 200

            # (d) refusals: a specific answer with a Warning, nothing written.
            before = focus.snapshot(ours_only=True)
            cases = [
                (mixer, DAVE, conference, 403, "not allowed"),  # registered, not allowed
                (mixer, CAROL, conference, 480, "not registered"),  # allowed, not registered
                (mixer, BOB, None, 403, "must name its conference"),
                (mixer, BOB, "0123456789abcdef", 404, "no such conference"),
                (stranger, BOB, conference, 403, "only from the mixer"),
            ]
            for ua, target, conf, status, warning in cases:
                with pytest.raises(SipRequestFailed) as info:
                    await dial(ua, focus, target, conf)
                assert info.value.status_code == status, (target, conf, info.value.status_code)
                response = info.value.response
                assert response is not None
                assert warning in (response.get("Warning") or ""), response.get("Warning")
                assert focus.snapshot(ours_only=True) == before
            assert not bob.ua._incoming_calls.qsize()

            # The dial-out to Bob: keyed with the conference's group key, via the edge.
            mixer_call: Call = await dial(mixer, focus, BOB, conference)
            bob_call = await bob.ua.next_call(5)
            bob.call = bob_call
            offered = SessionDescription.parse(bob_call.remote_sdp)
            section = offered.media[0]
            assert section.proto == "RTP/SAVP"
            crypto = [CryptoAttribute.parse(v or "") for v in section.attributes("crypto")]
            assert len(crypto) == 1
            assert crypto[0].tag == 1
            assert bob.group == alice.group  # the one group key of epoch 1
            assert bob_call.invite.get("X-Secconf-Conference") == (
                f"<sip:conf-{conference}@conf.test.invalid>"
            )
            assert bob_call.invite.get("Route") is None
            # The mixer's answer: clear, at the edge's internal leg, no key.
            answer = SessionDescription.parse(mixer_call.remote_sdp)
            assert answer.media[0].proto == "RTP/AVP"
            assert not answer.media[0].attributes("crypto")
            assert b"inline:" not in mixer_call.remote_sdp
            dialog = store.dialog(conference, mixer_call.call_id)
            assert dialog is not None
            assert (dialog.identity, dialog.state, dialog.epoch, dialog.dialout) == (
                BOB,
                "up",
                1,
                True,
            )
            assert dialog.ssrcs == (bob.media.ssrc,)
            assert store.members(conference) == {ALICE: 1, BOB: 1}

            # A rekey re-INVITE from the mixer (the dialog's caller here) keys Bob's leg.
            epoch = rekey(
                conference, load_settings(focus.server.settings_path, env=focus.server.extra_env)
            )
            assert epoch == 2
            await mixer_call.reinvite(MIXER_OFFER.replace(b"1 1 IN", b"1 2 IN"), timeout=5)
            assert bob.group is not None
            assert bob.group != alice.group
            new_key = store.group_key(conference)
            assert bob.group[1:] == (new_key.key, new_key.salt)
            dialog = store.dialog(conference, mixer_call.call_id)
            assert dialog is not None
            assert dialog.epoch == 2
            assert b"inline:" not in (mixer_call.remote_sdp or b"")

            # BYE from the mixer releases the dial-out dialog.
            await mixer_call.bye(timeout=5)
            assert store.dialog(conference, mixer_call.call_id) is None
            assert store.members(conference) == {ALICE: 1}
            assert bob.media.ssrc not in store.ssrcs(conference)
        finally:
            client.close()
            for p in (alice, bob):
                await p.close()
            await dave.close()
            await stranger.close()

    focus.run(scenario)


def test_static_contact_and_kms_conference(dialout_focus: Focus) -> None:
    """``[dialout] contacts`` reaches a phone that does not register; a KMS-mode conference
    on a focus without ``[kms]`` is 488 (its dial-out needs the focus's TRANSFER_INIT)."""
    focus = dialout_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        mixer = upstream.ua
        assert mixer is not None
        alice = await SdesParticipant.start(ALICE)
        phone = await UserAgent.start("127.0.0.1", STATIC_PORT, identity=ALICE)
        helper = SdesParticipant(phone, alice.media, alice.own, accept_calls=True)
        phone.on_invite = helper._on_invite
        store, client = focus.store()
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            assert header is not None
            conference = header.split("conf-", 1)[1].split("@", 1)[0]
            # The phone answers with an SSRC already used in the conference (Alice's own
            # call's): the mixer gets an answer rejecting the stream, nothing is kept.
            mixer_call: Call = await dial(mixer, focus, ALICE, conference)
            await phone.next_call(5)
            rejected = SessionDescription.parse(mixer_call.remote_sdp)
            assert rejected.media[0].port == 0
            # Refused: only the peers stay, so its ACK and BYE pass (a closing record).
            closing = store.dialog(conference, mixer_call.call_id)
            assert closing is not None
            assert (closing.state, closing.identity, closing.leg) == ("closing", "", "")
            await mixer_call.bye(timeout=5)
            assert store.dialog(conference, mixer_call.call_id) is None  # gone with the BYE
            # A clear (RTP/AVP) answer, and one with two a=crypto lines: never to the
            # mixer as if keyed; the mixer gets a stream-rejecting answer, nothing kept.
            clear = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            bad_answers = [
                clear + b"m=audio 30070 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                clear
                + b"m=audio 30072 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                + (crypto_line(1) + "\r\n" + crypto_line(1) + "\r\n").encode(),
            ]
            for bad in bad_answers:

                async def answer_badly(incoming: IncomingRequest, body: bytes = bad) -> Answer:
                    return Answer(200, body, "application/sdp")

                phone.on_invite = answer_badly
                mixer_call = await dial(mixer, focus, ALICE, conference)
                await phone.next_call(5)
                assert SessionDescription.parse(mixer_call.remote_sdp).media[0].port == 0
                # Refused: only the peers stay, so its ACK and BYE pass (a closing record).
                closing = store.dialog(conference, mixer_call.call_id)
                assert closing is not None
                assert (closing.state, closing.identity, closing.leg) == ("closing", "", "")
                await mixer_call.bye(timeout=5)
                assert store.dialog(conference, mixer_call.call_id) is None  # gone with the BYE
            phone.on_invite = helper._on_invite
            # With its own SSRC the static contact's call is keyed and recorded.
            helper.media = await SrtpEndpoint.open("127.0.0.1", rtcp_interval=None)
            mixer_call = await dial(mixer, focus, ALICE, conference)
            await phone.next_call(5)
            assert helper.group == alice.group
            dialog = store.dialog(conference, mixer_call.call_id)
            assert dialog is not None
            assert dialog.dialout
            assert dialog.ssrcs == (helper.media.ssrc,)
            await mixer_call.bye(timeout=5)

            # A KMS-mode conference, and this focus has no [kms] (it could not mint the
            # epoch nor build its TRANSFER_INIT): 488, nothing written.  The KMS dial-out
            # itself: tests/kamailio/test_kms_dialout.py.
            kms_conference = "00000000000000aa"
            store.admission.create(
                kms_conference,
                creator=ALICE,
                uri=f"sip:conf-{kms_conference}@conf.test.invalid",
                group_key=GroupKey.generate(1, SUITES[SUITE_NAME], secrets.token_bytes),
                call_id="kms-creator@test",
                leg=f"{kms_conference}-leg",
                allowed=[BOB],
                mode="kms",
            )
            before = focus.snapshot(ours_only=True)
            with pytest.raises(SipRequestFailed) as info:
                await dial(mixer, focus, BOB, kms_conference)
            assert info.value.status_code == 488
            warning = info.value.response.get("Warning") or ""  # type: ignore[union-attr]
            assert "KMS mode is not configured" in warning
            assert focus.snapshot(ours_only=True) == before
        finally:
            client.close()
            if helper.media is not alice.media:
                await helper.media.close(bye=False)
            await phone.close()
            await alice.close()

    focus.run(scenario)
