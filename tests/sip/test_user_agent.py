"""Two of our user agents on loopback: UDP, a lossy UDP, and TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secconf.client.sip import Answer, IncomingRequest, SipRequestFailed, SipTimeout, UserAgent
from secconf.core.sip.dialog import parse_sipfrag_status
from secconf.core.sip.transaction import TimerConfig

OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0\r\na=key-mgmt:mikey AQAFgM0X\r\n"
ANSWER = b"v=0\r\no=bob 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/SAVP 0\r\n"

Scenario = Callable[[UserAgent, UserAgent], Awaitable[None]]


def run(
    scenario: Scenario,
    transport: str = "udp",
    ssl_pair: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    timers: TimerConfig | None = None,
) -> None:
    async def main() -> None:
        server_ctx, client_ctx = ssl_pair if ssl_pair else (None, None)
        alice = await UserAgent.start("127.0.0.1", transport=transport, ssl_context=server_ctx,  # type: ignore[arg-type]
                                      client_ssl_context=client_ctx, identity="sip:alice@example.com", timers=timers)  # fmt: skip
        bob = await UserAgent.start("127.0.0.1", transport=transport, ssl_context=server_ctx,  # type: ignore[arg-type]
                                    client_ssl_context=client_ctx, identity="sip:bob@example.com", timers=timers)  # fmt: skip
        try:
            await asyncio.wait_for(scenario(alice, bob), 30)
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(main())


def target(ua: UserAgent, user: str = "bob") -> str:
    suffix = ";transport=tls" if ua.transport == "tls" else ""
    return f"sip:{user}@127.0.0.1:{ua.local_port}{suffix}"


async def answer_ok(incoming: IncomingRequest) -> Answer:
    return Answer(200, ANSWER, "application/sdp")


async def full_call(alice: UserAgent, bob: UserAgent) -> None:
    offers: list[bytes] = []

    async def on_invite(incoming: IncomingRequest) -> Answer:
        offers.append(incoming.body)
        return Answer(200, ANSWER)

    bob.on_invite = on_invite
    call = await alice.invite(target(bob), OFFER, timeout=10)
    assert call.remote_sdp == ANSWER
    assert call.response is not None
    assert call.response.status == 200
    incoming = await bob.next_call(5)  # only after the ACK came
    assert incoming.call_id == call.call_id
    assert incoming.remote_sdp == OFFER
    # re-INVITE from the caller, with a new key-mgmt line
    new_offer = OFFER.replace(b"AQAFgM0X", b"AQAFgM1Y")
    response = await call.reinvite(new_offer, timeout=10)
    assert response.status == 200
    assert offers[-1] == new_offer
    assert call.dialog.local_seq == 2
    # re-INVITE from the callee (without a handler the caller would answer 488)
    alice.on_invite = answer_ok
    await incoming.reinvite(ANSWER, timeout=10)
    assert incoming.dialog.local_seq == 1
    assert call.dialog.remote_seq == 1
    # BYE from the caller
    bye = await call.bye(timeout=10)
    assert bye.status == 200
    await incoming.wait_ended(5)
    assert incoming.ended_by_remote


def test_udp_invite_reinvite_bye() -> None:
    run(full_call)


def test_udp_rejected_call_raises_with_the_status() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        async def busy(incoming: IncomingRequest) -> Answer:
            return Answer(486)

        bob.on_invite = busy
        with pytest.raises(SipRequestFailed) as info:
            await alice.invite(target(bob), OFFER, timeout=10)
        assert info.value.status_code == 486
        assert "486 Busy Here" in str(info.value)
        assert info.value.response is not None
        assert info.value.response.to.tag

    run(scenario)


def test_udp_cancel_before_answer_gives_487() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        entered = asyncio.Event()

        async def slow(incoming: IncomingRequest) -> Answer:
            entered.set()
            await asyncio.sleep(20)
            return Answer(200, ANSWER)

        bob.on_invite = slow
        outgoing = alice.place_call(target(bob), OFFER)
        await asyncio.wait_for(entered.wait(), 5)
        cancel_response = await alice.cancel(outgoing, timeout=5)
        assert cancel_response is not None
        assert cancel_response.status == 200
        with pytest.raises(SipRequestFailed) as info:
            await outgoing.answered(5)
        assert info.value.status_code == 487
        assert outgoing.provisional[0].status == 100

    run(scenario)


def test_udp_refer_202_with_mikey_body_and_notify() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        bob.on_invite = answer_ok
        refers: list[IncomingRequest] = []

        async def on_refer(incoming: IncomingRequest) -> Answer:
            refers.append(incoming)
            return Answer(202)

        bob.on_refer = on_refer
        call = await alice.invite(target(bob), OFFER, timeout=10)
        response = await alice.refer(
            call,
            "sip:carol@example.com",
            body=b"\x01\x00MIKEY",
            content_type="application/mikey",
            timeout=10,
        )
        assert response.status == 202
        request = refers[0].request
        assert request.get("refer-to") == "<sip:carol@example.com>"
        assert request.content_type == "application/mikey"
        assert request.body == b"\x01\x00MIKEY"
        assert refers[0].call is not None
        notify = await call.next_notification(5)
        assert notify.get("event") == "refer"
        assert parse_sipfrag_status(notify.body) == 100
        await call.bye(timeout=5)

    run(scenario)


def test_udp_subscribe_200_and_first_notify() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        async def on_subscribe(incoming: IncomingRequest) -> Answer:
            assert incoming.request.get("event") == "conference"
            return Answer(200)

        bob.on_subscribe = on_subscribe
        subscription = await alice.subscribe(
            target(bob, "conf"), "conference", body=b"x", content_type="text/plain", timeout=10
        )
        assert subscription.response is not None
        assert subscription.response.status == 200
        notify = await subscription.next_notification(5)
        assert notify.get(
            "subscription-state",
        )
        assert notify.get("event") == "conference"
        # an unknown event package is refused (RFC 6665 §8.3.1: 489)
        bob.on_subscribe = None
        with pytest.raises(SipRequestFailed) as info:
            await alice.subscribe(target(bob, "conf"), "presence", timeout=10)
        assert info.value.status_code == 489

    run(scenario)


def test_udp_first_invite_datagram_lost_timer_a_recovers() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        bob.on_invite = answer_ok
        dropped: list[bytes] = []

        def drop_first_invite(data: bytes) -> bool:
            if data.startswith(b"INVITE ") and not dropped:
                dropped.append(data)
                return True
            return False

        alice.outgoing_filter = drop_first_invite
        loop = asyncio.get_running_loop()
        started = loop.time()
        call = await alice.invite(target(bob), OFFER, timeout=10)
        elapsed = loop.time() - started
        assert len(dropped) == 1
        assert 0.45 <= elapsed < 3.0  # the retransmission after T1 = 0.5 s carried it
        await call.bye(timeout=5)

    run(scenario)


def test_udp_lost_ack_makes_the_uas_retransmit_its_2xx() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        bob.on_invite = answer_ok
        acks: list[bytes] = []

        def drop_first_ack(data: bytes) -> bool:
            if data.startswith(b"ACK "):
                acks.append(data)
                return len(acks) == 1
            return False

        alice.outgoing_filter = drop_first_ack
        call = await alice.invite(target(bob), OFFER, timeout=10)
        incoming = await bob.next_call(5)  # confirmed by the re-sent ACK
        assert len(acks) >= 2
        assert acks[0] == acks[1]
        assert incoming.confirmed.is_set()
        await call.bye(timeout=5)

    run(scenario, timers=TimerConfig(t1=0.1, t2=0.4, t4=0.5))


def test_udp_unanswered_invite_times_out() -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        alice.outgoing_filter = lambda data: data.startswith(b"INVITE")
        with pytest.raises(SipTimeout) as info:
            await alice.invite(target(bob), OFFER, timeout=10)
        assert info.value.status_code == 408

    run(scenario, timers=TimerConfig(t1=0.02, t2=0.1, t4=0.1))  # Timer B = 1.28 s


# -- TLS ----------------------------------------------------------------------------------


def make_tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secconf test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert_file)  # check_hostname and CERT_REQUIRED stay on
    return server, client


def test_tls_invite_reinvite_bye(tmp_path: Path) -> None:
    run(full_call, transport="tls", ssl_pair=make_tls_pair(tmp_path))


def test_tls_refer_and_cancel(tmp_path: Path) -> None:
    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        await test_cancel_scenario(alice, bob)
        bob.on_invite = answer_ok
        call = await alice.invite(target(bob), OFFER, timeout=10)
        assert call.dialog.secure
        response = await alice.refer(call, "sip:carol@example.com", timeout=10)
        assert response.status == 202
        await call.bye(timeout=5)

    async def test_cancel_scenario(alice: UserAgent, bob: UserAgent) -> None:
        async def slow(incoming: IncomingRequest) -> Answer:
            await asyncio.sleep(20)
            return Answer(200)

        bob.on_invite = slow
        outgoing = alice.place_call(target(bob), OFFER)
        await alice.cancel(outgoing, timeout=5)
        with pytest.raises(SipRequestFailed, match="487"):
            await outgoing.answered(5)

    run(scenario, transport="tls", ssl_pair=make_tls_pair(tmp_path))


def test_tls_refuses_an_untrusted_server(tmp_path: Path) -> None:
    server, _ = make_tls_pair(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path)
    _, other_client = make_tls_pair(
        tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path
    )

    async def scenario(alice: UserAgent, bob: UserAgent) -> None:
        bob.on_invite = answer_ok
        with pytest.raises(SipRequestFailed) as info:
            await alice.invite(target(bob), OFFER, timeout=5)
        assert info.value.status_code == 503

    run(scenario, transport="tls", ssl_pair=(server, other_client))
