"""Issue 12: the focus's boundary, attacked with raw SIP against the real stack.

Each attack gets its exact answer, tells an unauthenticated sender nothing (no Warning, no
body), and changes nothing: every Redis key under the prefix, the edge's legs and epochs,
the bridge's members (:meth:`SecureStack.state`); nothing is relayed to the attacker or to a
stand-in gateway.  Alice and Bob (SDES over TLS, digest) are in the conference throughout.
"""

from __future__ import annotations

import asyncio
import base64
import secrets

import pytest

from secconf.client.sip import SipRequestFailed
from tests.security.attacker import Attacker, Response, sdp
from tests.security.conftest import BOB, CAROL, PASSWORDS, REALM, SecureStack, tls_phone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MALLORY = f"sip:mallory@{REALM}"
CLEAR_AUDIO = "m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000"


def _crypto() -> str:
    key = base64.b64encode(secrets.token_bytes(30)).decode()
    return f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}"


def _srtp_audio(port: int = 41002) -> str:
    return f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{_crypto()}"


def _tells_nothing(response: Response) -> None:
    assert response.header("warning") is None, response.header("warning")
    assert b"inline:" not in response.raw
    assert response.body == b""


def _new_call_id() -> str:
    return secrets.token_hex(12) + "@mallory"


def _invite_out_of_dialog(attacker: Attacker, user: str, body: bytes, **fields: object) -> bytes:
    host, port = attacker.target
    return attacker.request(
        "INVITE", f"sip:{user}@{host}:{port}", call_id=_new_call_id(), from_uri=MALLORY,
        from_tag=secrets.token_hex(4), to_uri=f"sip:{user}@{host}", body=body, **fields,
    )  # fmt: skip


@pytest.mark.parametrize("spelling", ["conf%2D{id}", "%63onf-{id}", "%63%6f%6e%66%2d{id}"])
def test_encoded_conference_uris_get_no_clear_media_to_the_mixer(
    secure: SecureStack, spelling: str
) -> None:
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        user = spelling.format(id=secure.conference)
        invite = _invite_out_of_dialog(attacker, user, sdp(CLEAR_AUDIO))
        response = attacker.final(invite)
        assert response.status == 488  # the conference, under its canonical name: no RTP/AVP
        _tells_nothing(response)
        assert "SRTP only" in secure.refusal(response.header("call-id") or "")
        assert attacker.listen(0.3) == []
    finally:
        attacker.close()
    assert secure.state() == before


@pytest.mark.parametrize("user", ["conf%2", "conf%zz-1", "%00conf-factory", "conf-%0a"])
def test_broken_escapes_are_400(secure: SecureStack, user: str) -> None:
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        response = attacker.final(_invite_out_of_dialog(attacker, user, sdp(_srtp_audio())))
        assert response.status == 400
        _tells_nothing(response)
    finally:
        attacker.close()
    assert secure.state() == before


def test_an_encoded_spelling_is_the_same_conference_for_a_member(secure: SecureStack) -> None:
    """Carol joins through ``%63onf-<id>``: the mixer gets the canonical conference."""
    before_members = secure.bridge_members()

    async def join() -> None:
        carol = await tls_phone(secure.stack, CAROL)
        try:
            target = f"sip:%63onf-{secure.conference}@127.0.0.1:{secure.tls[1]};transport=tls"
            call = await carol.invite(target, credentials=("carol", PASSWORDS["carol"]))
            for _ in range(100):
                if len(await secure.bridge_members_async()) == len(before_members) + 1:
                    break
                await asyncio.sleep(0.05)
            assert len(await secure.bridge_members_async()) == len(before_members) + 1
            store = secure.stack.store()
            assert CAROL in store.members(secure.conference)
            store.client.close()
            await call.bye(timeout=5)
        finally:
            await carol.close()

    secure.run(join())
    for _ in range(100):
        if secure.bridge_members() == before_members:
            break
        secure.run(asyncio.sleep(0.05))
    assert secure.bridge_members() == before_members


@pytest.mark.parametrize(
    "media",
    [
        [_srtp_audio(41010), "m=audio 41012 rtp/avp 0\r\na=rtpmap:0 PCMU/8000"],
        [_srtp_audio(41010), "m=audio 41012 Rtp/Avp 0"],
        [_srtp_audio(41010), "m=application 41014 udp/bfcp *"],
        [_srtp_audio(41010), "m=image 41016 udptl t38"],
        ["m=audio 41018 rtp/avp 0\r\n" + _crypto()],
    ],
    ids=["second-lowercase-rtp", "mixed-case", "live-bfcp", "live-t38", "crypto-on-clear"],
)
def test_sdp_smuggling_is_488(secure: SecureStack, media: list[str]) -> None:
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        invite = _invite_out_of_dialog(attacker, f"conf-{secure.conference}", sdp(*media))
        response = attacker.final(invite)
        assert response.status == 488
        _tells_nothing(response)
        reason = secure.refusal(response.header("call-id") or "")
        assert "SRTP only" in reason or "not a stream the focus secures" in reason, reason
    finally:
        attacker.close()
    assert secure.state() == before


def test_sdes_over_udp_is_488_even_for_a_member_with_credentials(secure: SecureStack) -> None:
    from tests.kamailio.media import SdesParticipant

    before = secure.state()

    async def join_over_udp() -> str:
        carol = await SdesParticipant.start(CAROL)
        try:
            with pytest.raises(SipRequestFailed) as info:
                await carol.invite(
                    f"sip:conf-{secure.conference}@127.0.0.1:{secure.udp[1]}",
                    credentials=("carol", PASSWORDS["carol"]),
                )
            assert info.value.status_code == 488  # before any challenge: no 407 first
            response = info.value.response
            assert response is not None
            return response.get("Call-ID") or ""
        finally:
            await carol.close()

    call_id = secure.run(join_over_udp())
    assert "SDES keys travel only over TLS" in secure.refusal(call_id)
    assert secure.state() == before


@pytest.mark.parametrize("tls", [False, True], ids=["udp", "tls"])
def test_asserted_identity_is_not_believed_by_default(secure: SecureStack, tls: bool) -> None:
    """No trusted source is configured: a P-Asserted-Identity from loopback is a challenge."""
    before = secure.state()
    attacker = Attacker(secure.tls if tls else secure.udp, tls=tls)
    try:
        invite = _invite_out_of_dialog(
            attacker, f"conf-{secure.conference}", sdp(_srtp_audio()),
            headers=(("P-Asserted-Identity", f"<{BOB}>"),),
        )  # fmt: skip
        response = attacker.final(invite)
        expected = 407 if tls else 488  # over UDP the SDES offer is refused first
        assert response.status == expected
        assert response.header("warning") is None
    finally:
        attacker.close()
    assert secure.state() == before


# -- in-dialog forgeries ---------------------------------------------------------------------

IN_DIALOG = ["INVITE", "BYE", "REFER", "INFO", "UPDATE", "OPTIONS", "MESSAGE", "NOTIFY", "PRACK"]


def _forged(
    secure: SecureStack, attacker: Attacker, method: str, pose: str, routes: list[str],
    ruri: str | None = None,
) -> bytes:  # fmt: skip
    """*method* in Bob's dialog, as the participant or as the mixer, with everything a log or a
    capture could leak: Call-ID, both tags, the genuine Route set (with its MAC)."""
    bob = secure.bob
    assert bob is not None
    participant, mixer = (bob.tag, BOB), (bob.mixer_tag, f"sip:asterisk@{REALM}")
    sender, receiver = (participant, mixer) if pose == "participant" else (mixer, participant)
    headers: tuple[tuple[str, str], ...] = ()
    body = b""
    if method == "REFER":
        headers = (("Refer-To", f"<{CAROL}>"),)
    if method in ("INVITE", "UPDATE"):
        body = sdp(_srtp_audio(41030))
    return attacker.request(
        method, ruri or f"sip:mallory@{attacker.host}:{attacker.port}",
        call_id=bob.call_id, from_uri=sender[1], from_tag=sender[0], to_uri=receiver[1],
        to_tag=receiver[0], cseq=900 + secrets.randbelow(1000), routes=tuple(routes),
        headers=headers, body=body,
    )  # fmt: skip


@pytest.mark.parametrize("method", IN_DIALOG)
@pytest.mark.parametrize("pose", ["participant", "mixer"])
@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_in_dialog_forgeries_from_another_flow_are_403(
    secure: SecureStack, method: str, pose: str, transport: str
) -> None:
    assert secure.bob is not None
    before = secure.state()
    attacker = Attacker(secure.tls if transport == "tls" else secure.udp, tls=transport == "tls")
    try:
        response = attacker.final(_forged(secure, attacker, method, pose, secure.bob.routes))
        reason = secure.refusal(secure.bob.call_id)
        if method == "UPDATE":
            # An SDP body outside an INVITE is refused before anything is looked up.
            assert response.status == 488, (response.status, response.reason)
            assert "an SDP body in UPDATE" in reason
        elif method in ("MESSAGE", "NOTIFY", "PRACK"):
            assert response.status == 403, (response.status, response.reason)
            assert f"{method} is not sent in a conference dialog" in reason
        else:
            assert response.status == 403, (response.status, response.reason)
            assert "not from a peer of the dialog" in reason
        _tells_nothing(response)
        assert attacker.listen(0.3) == []  # nothing relayed to the Request-URI (us)
    finally:
        attacker.close()
    assert secure.state() == before


@pytest.mark.parametrize("method", ["UPDATE", "INFO"])
def test_sdp_without_content_length_over_udp_is_488(secure: SecureStack, method: str) -> None:
    """RFC 3261 §20.14: over UDP the body is the rest of the datagram when Content-Length is
    left out; the gate measures it instead of taking the missing header for "no body"."""
    assert secure.bob is not None
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        message = _forged(secure, attacker, method, "participant", secure.bob.routes)
        head, _, _ = message.partition(b"\r\n\r\n")
        body = sdp(_srtp_audio(41050))
        lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Content-")]
        lines.append(b"Content-Type: application/sdp")
        response = attacker.final(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        assert response.status == 488, (response.status, response.reason)
        assert f"an SDP body in {method}" in secure.refusal(secure.bob.call_id)
        _tells_nothing(response)
    finally:
        attacker.close()
    assert secure.state() == before


@pytest.mark.parametrize(
    "variant", ["no-mac", "wrong-mac", "other-conference", "no-conference", "no-route"]
)
def test_forged_routes_are_403_before_any_lookup(secure: SecureStack, variant: str) -> None:
    bob = secure.bob
    assert bob is not None
    genuine = bob.routes[0]
    routes = {
        "no-mac": [genuine.split(";sc-mac=")[0] + ">"],
        "wrong-mac": [genuine.split(";sc-mac=")[0] + ";sc-mac=" + "0" * 32 + ">"],
        "other-conference": [genuine.replace(secure.conference, "0123456789abcdef")],
        "no-conference": [genuine.split(";sc-conf=")[0] + ">"],
        "no-route": [],
    }[variant]
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        for method in ("INVITE", "BYE"):
            response = attacker.final(_forged(secure, attacker, method, "participant", routes))
            assert response.status == 403, (variant, method, response.status)
            _tells_nothing(response)
        assert attacker.listen(0.3) == []
    finally:
        attacker.close()
    assert secure.state() == before


def test_a_forged_ack_with_sdp_changes_nothing(secure: SecureStack) -> None:
    assert secure.bob is not None
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        for pose in ("participant", "mixer"):
            ack = _forged(secure, attacker, "ACK", pose, secure.bob.routes)
            ack = ack.replace(b"Content-Length: 0\r\n\r\n", b"")
            body = sdp(_srtp_audio(41040))
            ack += b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(body)
            attacker.send(ack.replace(b"\r\n\r\nContent-Type", b"\r\nContent-Type") + body)
        assert attacker.listen(0.5) == []
    finally:
        attacker.close()
    assert secure.state() == before


# -- open relay ------------------------------------------------------------------------------


@pytest.fixture
def gateway() -> Attacker:
    """A stand-in PSTN gateway: a UDP socket that records whatever reaches it."""
    return Attacker(("127.0.0.1", 9))


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "OPTIONS", "SUBSCRIBE", "INFO"])
def test_no_relay_out_of_dialog(secure: SecureStack, gateway: Attacker, method: str) -> None:
    before = secure.state()
    attacker = Attacker(secure.udp)
    try:
        ruri = f"sip:+15551234567@127.0.0.1:{gateway.port}"
        message = attacker.request(
            method, ruri, call_id=_new_call_id(), from_uri=MALLORY, from_tag="m1",
            to_uri=ruri, body=sdp(_srtp_audio()) if method == "INVITE" else b"",
        )  # fmt: skip
        response = attacker.final(message)
        assert response.status == 404
        _tells_nothing(response)
        assert gateway.listen(0.5) == []
    finally:
        attacker.close()
        gateway.close()
    assert secure.state() == before


@pytest.mark.parametrize("route", ["none", "focus-without-conference", "genuine-wrong-flow"])
@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "BYE"])
def test_no_relay_in_dialog_lookalikes(
    secure: SecureStack, gateway: Attacker, route: str, method: str
) -> None:
    assert secure.bob is not None
    before = secure.state()
    attacker = Attacker(secure.udp)
    ruri = f"sip:+15551234567@127.0.0.1:{gateway.port}"
    routes = {
        "none": [],
        "focus-without-conference": [f"<sip:127.0.0.1:{secure.udp[1]};lr>"],
        "genuine-wrong-flow": secure.bob.routes,
    }[route]
    try:
        if route == "genuine-wrong-flow":
            message = _forged(secure, attacker, method, "participant", routes, ruri=ruri)
        else:
            message = attacker.request(
                method, ruri, call_id=_new_call_id(), from_uri=MALLORY, from_tag="m2",
                to_uri=ruri, to_tag="gw1", routes=tuple(routes),
            )  # fmt: skip
        response = attacker.final(message)
        assert response.status == 403, (route, method, response.status)
        _tells_nothing(response)
        assert gateway.listen(0.5) == []
    finally:
        attacker.close()
        gateway.close()
    assert secure.state() == before


def test_members_still_talk_after_the_attacks(secure: SecureStack) -> None:
    """The legitimate dialogs are intact: a re-INVITE from Bob (his own flow) is answered."""
    bob = secure.bob
    assert bob is not None

    async def reinvite() -> int:
        response = await bob.call.reinvite(bob.phone.offer(), timeout=5)
        return response.status

    assert secure.run(reinvite()) == 200
