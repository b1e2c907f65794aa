"""SDES-mode flows through the real Kamailio (Debian 5.6 + app_python3) and the real Redis.

A :class:`~secconf.client.sip.UserAgent` stands in for Asterisk (``Upstream``);
participants are UserAgents too, their identity asserted with
P-Asserted-Identity from a trusted source (127.0.0.1).
"""

from __future__ import annotations

import time

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.sdes import CryptoAttribute
from secconf.core.sdp import SessionDescription

from .conftest import ALICE, BOB, CAROL, DAVE, Focus, Upstream, crypto_line, offer, pai

pytestmark = pytest.mark.usefixtures("redis_url")


def _crypto(body: bytes) -> CryptoAttribute:
    section = SessionDescription.parse(body).media[0]
    values = section.attributes("crypto")
    assert len(values) == 1
    return CryptoAttribute.parse(values[0] or "")


def _conference_id(header: str | None) -> str:
    assert header is not None
    assert header.startswith("<sip:conf-")
    return header[len("<sip:conf-") :].split("@", 1)[0]


def test_create_join_leave(focus: Focus) -> None:
    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            alice_offer = offer(crypto=[crypto_line(1, "AES_256_CM_HMAC_SHA1_80"), crypto_line(2)])
            call_a = await alice.invite(
                focus.target("conf-factory"), alice_offer, extra_headers=pai(ALICE), timeout=5
            )
            assert call_a.response is not None
            assert call_a.response.status == 200
            answer_a = call_a.remote_sdp
            key_a = _crypto(answer_a)
            assert key_a.tag == 2  # the first offered line in the conference's suite
            assert b"RTP/SAVP" in answer_a
            # Asterisk's side: a conference user part, clear RTP, no key of anyone's.
            invite = upstream.invites[0].request
            assert invite.uri.startswith("sip:conf-")
            assert f":{upstream.port}" in invite.uri
            assert b"a=crypto" not in invite.body
            assert b"RTP/AVP" in invite.body
            conference = _conference_id(call_a.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            assert invite.uri.startswith(f"sip:conf-{conference}@")

            store, client = focus.store()
            assert store.members(conference) == {ALICE: 1}
            assert store.dialog(conference, call_a.call_id).state == "up"  # type: ignore[union-attr]

            call_b = await bob.invite(
                focus.target(f"conf-{conference}"), offer(), extra_headers=pai(BOB), timeout=5
            )
            key_b = _crypto(call_b.remote_sdp)
            # R5: the same group key in every dialog of the conference.
            assert key_b.key_params[0].key == key_a.key_params[0].key
            assert key_b.key_params[0].salt == key_a.key_params[0].salt
            assert store.group_key(conference).key == key_a.key_params[0].key
            assert store.members(conference) == {ALICE: 1, BOB: 1}

            await call_b.bye(timeout=5)
            assert store.members(conference) == {ALICE: 1}
            await call_a.bye(timeout=5)
            info = store.get(conference)
            assert info is not None
            assert info.state == "ended"
            client.close()
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario)


def _refused(focus: Focus, target: str, body: bytes, identity: str, headers=None) -> int:  # type: ignore[no-untyped-def]
    async def scenario(upstream: Upstream) -> int:
        ua = await UserAgent.start("127.0.0.1", identity=identity)
        try:
            with pytest.raises(SipRequestFailed) as info:
                await ua.invite(
                    focus.target(target),
                    body,
                    extra_headers=pai(identity) if headers is None else headers,
                    timeout=5,
                )
            assert upstream.invites == []
            response = info.value.response
            assert response is not None
            if info.value.status_code not in (500,):
                # The reason is logged (a Warning only for an authenticated sender).
                assert focus.server.refusal(response.get("Call-ID") or "")
            return info.value.status_code
        finally:
            await ua.close()

    return focus.run(scenario)


def _conference(focus: Focus) -> str:
    """A conference created by Alice (her call stays up in Redis: no BYE)."""

    async def scenario(upstream: Upstream) -> str:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            call = await alice.invite(
                focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
            )
            return _conference_id(call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
        finally:
            await alice.close()

    return focus.run(scenario)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("non-member", 403),
        ("plain-rtp", 488),
        ("best-effort-srtp", 488),
        ("no-crypto", 488),
        ("unsupported-suite", 488),
        ("malformed-sdp", 400),
        ("oversized", 413),
        ("no-asserted-identity", 403),
        ("unknown-conference", 404),
        ("ssrc-collision", 488),
    ],
)
def test_join_refusals_leave_state_untouched(focus: Focus, case: str, status: int) -> None:
    conference = _conference(focus)
    target = f"conf-{conference}"
    identity, body, headers = BOB, offer(), None
    if case == "non-member":
        identity = DAVE
    elif case == "plain-rtp":
        body = offer(proto="RTP/AVP", crypto=[])
    elif case == "best-effort-srtp":
        body = offer(proto="RTP/AVP")
    elif case == "no-crypto":
        body = offer(crypto=[])
    elif case == "unsupported-suite":
        body = offer(crypto=["a=crypto:1 F8_128_HMAC_SHA1_80 inline:" + "A" * 40])
    elif case == "malformed-sdp":
        body = b"v=0\r\nthis is not sdp\r\n"
    elif case == "oversized":
        body = offer(extra="a=x-pad:" + "p" * 5000)
    elif case == "no-asserted-identity":
        headers = []
    elif case == "unknown-conference":
        target = "conf-0000000000000000"
    elif case == "ssrc-collision":
        first = offer(extra="a=ssrc:4242 cname:x")
        _joined = _join_ok(focus, conference, first)
        body = offer(extra="a=ssrc:4242 cname:y")
    before = focus.snapshot()
    assert _refused(focus, target, body, identity, headers) == status
    assert focus.snapshot() == before


def _join_ok(focus: Focus, conference: str, body: bytes) -> str:
    async def scenario(upstream: Upstream) -> str:
        carol = await UserAgent.start("127.0.0.1", identity=CAROL)
        try:
            call = await carol.invite(
                focus.target(f"conf-{conference}"), body, extra_headers=pai(CAROL), timeout=5
            )
            return call.call_id
        finally:
            await carol.close()

    return focus.run(scenario)


def test_create_refusals(focus: Focus) -> None:
    before = focus.snapshot()
    assert _refused(focus, "conf-factory", offer(), BOB) == 403  # not a creator
    assert _refused(focus, "conf-factory", offer(proto="RTP/AVP", crypto=[]), ALICE) == 488
    assert focus.snapshot() == before


def test_subscribe_to_a_conference_is_refused(focus: Focus) -> None:
    conference = _conference(focus)

    async def scenario(upstream: Upstream) -> None:
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            with pytest.raises(SipRequestFailed) as info:
                await bob.subscribe(focus.target(f"conf-{conference}"), "conference", timeout=5)
            assert info.value.status_code == 403
        finally:
            await bob.close()

    focus.run(scenario)


def test_failed_upstream_call_releases_the_roster_entry(focus: Focus) -> None:
    conference = _conference(focus)
    store, client = focus.store()
    before = store.members(conference)

    async def scenario(upstream: Upstream) -> None:
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            with pytest.raises(SipRequestFailed) as info:
                await bob.invite(
                    focus.target(f"conf-{conference}"), offer(), extra_headers=pai(BOB), timeout=5
                )
            assert info.value.status_code == 486
        finally:
            await bob.close()

    focus.run(scenario, Upstream(focus.upstream_port, status=486))
    assert store.members(conference) == before
    client.close()


def test_clear_answer_from_upstream_never_reaches_the_participant(focus: Focus) -> None:
    conference = _conference(focus)
    store, client = focus.store()
    before = store.members(conference)

    async def scenario(upstream: Upstream) -> None:
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            # A proxy cannot turn a 2xx into a failure: the answer arrives with every stream
            # rejected (port 0), never with the mixer's clear media.
            call = await bob.invite(
                focus.target(f"conf-{conference}"), offer(), extra_headers=pai(BOB), timeout=5
            )
            answer = SessionDescription.parse(call.remote_sdp)
            assert [m.port for m in answer.media] == [0]
            assert b"not sdp" not in call.remote_sdp
            await call.bye(timeout=5)
        finally:
            await bob.close()

    broken = Upstream(focus.upstream_port, answer=b"v=0\r\nnot sdp\r\n")
    focus.run(scenario, broken)
    assert store.members(conference) == before
    client.close()


def test_redis_down_is_503_fast_and_kamailio_recovers(focus: Focus) -> None:
    conference = _conference(focus)
    focus.redis_server.stop()
    try:
        started = time.monotonic()
        assert _refused(focus, f"conf-{conference}", offer(), BOB) == 503
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert _refused(focus, "conf-factory", offer(), ALICE) == 503
        assert time.monotonic() - started < 1.0
    finally:
        focus.redis_server.start()
    # Redis is back (empty: no persistence): Kamailio serves again without a restart.
    conference = _conference(focus)
    _join_ok(focus, conference, offer())
    assert focus.server.running
