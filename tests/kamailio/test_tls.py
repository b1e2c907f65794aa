"""SIP over TLS between participants and the real Kamailio (tls module), UDP towards the mixer.

Kamailio runs the shipped cfg with ``-A WITH_TLS`` and ``-l tls:127.0.0.1:PORT``, its
certificate from the session's throwaway CA (:mod:`secconf.lab.tlsca`).  Participants are
TLS user agents that verify that certificate against the CA; the mixer's stand-in
speaks UDP.  Double record-routing must bring the mixer's in-dialog requests (rekey
re-INVITE, BYE) back to the participants over TLS.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secconf.client.sip import (
    Answer,
    Call,
    IncomingRequest,
    SipTransportError,
    UserAgent,
)
from secconf.core.sip.headers import Address
from secconf.focus.rekey import rekey
from secconf.focus.settings import load_settings
from secconf.lab.phones.phone import Phone, PhoneError
from secconf.lab.services.kamailio import options_ping
from secconf.lab.tlsca import TlsFiles, init_ca, participant_contexts
from secconf.store.conferences import connect_blocking
from secconf.store.sip_users import SipUserStore
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.phones import PhoneFactory
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    UPSTREAM_ANSWER,
    Focus,
    MixingUpstream,
    Upstream,
    _start_focus,
)
from .media import SdesParticipant, ratio, talk

pytestmark = pytest.mark.usefixtures("redis_url")

TONE_A, TONE_B = 440.0, 1000.0


@pytest.fixture(scope="module")
def focus_tls(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    """Kamailio with a TLS listener (participants) and UDP (mixer), driving the real edge."""
    running = _start_focus(
        kamailio_factory,
        redis_server,
        tmp_path_factory.mktemp("focus-tls"),
        env=media_edge.focus_env,
        tls=True,
    )
    yield running
    running.server.stop()


def _contexts(files: TlsFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts of a participant that trusts only the throwaway CA.

    The server context is for Kamailio's connections back to the participant's
    Contact (its certificate must chain to the CA: tls.cfg's [client:default]).
    """
    return participant_contexts(files, "participant")


async def _tls_ua(files: TlsFiles, identity: str) -> UserAgent:
    server, client = _contexts(files)
    return await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip


def _record_invites(participant: SdesParticipant, seen: list[IncomingRequest]) -> None:
    handler = participant.ua.on_invite
    assert handler is not None

    async def recording(incoming: IncomingRequest) -> Answer:
        seen.append(incoming)
        return await handler(incoming)

    participant.ua.on_invite = recording


def _conference_id(call: Call) -> str:
    header = call.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
    assert header is not None
    return header.split("conf-", 1)[1].split("@", 1)[0]


def _tls_target(focus: Focus, user: str) -> str:
    return f"sip:{user}@127.0.0.1:{focus.server.tls_port};transport=tls"


def _routes(headers: list[str]) -> list[str]:
    return [Address.parse(value.strip()).uri for h in headers for value in h.split(",")]


@pytest.mark.slow
def test_tls_participants_create_join_rekey_and_bye(
    focus_tls: Focus, media_edge: RunningEdge, kamailio_factory: KamailioFactory
) -> None:
    focus = focus_tls
    files = kamailio_factory.tls

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        assert upstream.ua is not None
        alice = await SdesParticipant.start(ALICE, await _tls_ua(files, ALICE))
        bob = await SdesParticipant.start(BOB, await _tls_ua(files, BOB))
        seen_a: list[IncomingRequest] = []
        seen_b: list[IncomingRequest] = []
        _record_invites(alice, seen_a)
        _record_invites(bob, seen_b)
        try:
            call_a = await alice.invite(_tls_target(focus, "conf-factory"), ALICE)
            conference = _conference_id(call_a)
            call_b = await bob.invite(_tls_target(focus, f"conf-{conference}"), BOB)
            assert alice.group == bob.group

            # Double record-routing: the mixer's route set names Kamailio's UDP side
            # first; the participant's names the TLS side first.
            invite = upstream.invites[0].request
            assert invite.top_via.transport == "UDP"
            mixer_routes = _routes(invite.get_all("record-route"))
            assert len(mixer_routes) == 2, mixer_routes
            assert any("transport=tls" in uri for uri in mixer_routes), mixer_routes
            participant_routes = call_a.dialog.route_set
            assert len(participant_routes) == 2, participant_routes
            assert "transport=tls" in Address.parse(participant_routes[0]).uri

            heard_a, heard_b = await talk([alice.media, bob.media], [TONE_A, TONE_B], 0.6)
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)

            # A rekey: the mixer's re-INVITEs (UDP) reach the participants over TLS.
            mixer = {c.call_id: c for c in [await upstream.ua.next_call(5) for _ in range(2)]}
            old = alice.group
            settings = load_settings(focus.server.settings_path, env=focus.server.extra_env)
            assert await asyncio.to_thread(rekey, conference, settings) == 2
            for call in (call_a, call_b):
                response = await mixer[call.call_id].reinvite(
                    upstream.mixer_sdp(call.call_id, 3), timeout=5
                )
                assert response.status == 200
                assert b"a=crypto" not in response.body
            for seen in (seen_a, seen_b):
                assert len(seen) == 1
                via = seen[0].request.top_via
                assert via.transport == "TLS"
                assert via.port == focus.server.tls_port
            assert alice.group == bob.group != old
            store, client = focus.store()
            assert store.dialog(conference, call_a.call_id).epoch == 2  # type: ignore[union-attr]
            alice.media.drain()
            bob.media.drain()
            heard_a, heard_b = await talk([alice.media, bob.media], [TONE_A, TONE_B], 0.6)
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)

            # BYE from the mixer towards Bob (over TLS), BYE from Alice (over TLS).
            await mixer[call_b.call_id].bye(timeout=5)
            await call_b.wait_ended(5)
            assert call_b.ended_by_remote
            await call_a.bye(timeout=5)
            await mixer[call_a.call_id].wait_ended(5)
            deadline = time.monotonic() + 5
            while store.members(conference) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert store.members(conference) == {}
            client.close()
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(
    focus_tls: Focus, kamailio_factory: KamailioFactory
) -> None:
    """The system's CAs do not know the throwaway CA: the handshake fails, nothing is sent."""
    port = focus_tls.server.tls_port
    plain = ssl.create_default_context()  # system trust store only
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
    ):
        plain.wrap_socket(raw, server_hostname="127.0.0.1")

    async def scenario() -> None:
        server, _ = _contexts(kamailio_factory.tls)
        ua = await UserAgent.start(
            "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=plain,
            identity=ALICE,
        )  # fmt: skip
        try:
            with pytest.raises(SipTransportError, match=f"connect to 127.0.0.1:{port}"):
                await ua.invite(_tls_target(focus_tls, "conf-factory"), b"", timeout=5)
        finally:
            await ua.close()

    asyncio.run(scenario())
    # A certificate for another name fails too (hostname check against the SAN).
    trusting = ssl.create_default_context(cafile=str(kamailio_factory.tls.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|doesn't match"),
    ):
        trusting.wrap_socket(raw, server_hostname="focus.elsewhere.invalid")
    assert (options_ping(focus_tls.server.port) or "").startswith("SIP/2.0 200")


def _sip_options(port: int, transport: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_clear_text_to_the_tls_port_is_ignored(focus_tls: Focus) -> None:
    """UDP or clear TCP to the TLS port gets no SIP answer and leaves Kamailio serving."""
    port = focus_tls.server.tls_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.5)
        udp.sendto(_sip_options(port, "UDP"), ("127.0.0.1", port))
        with pytest.raises((TimeoutError, ConnectionRefusedError)):  # nothing, or ICMP unreachable
            udp.recvfrom(65535)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
        tcp.sendall(_sip_options(port, "TCP"))
        tcp.settimeout(5)
        received = b""
        try:
            while chunk := tcp.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert b"SIP/2.0" not in received  # at most a TLS alert, never a SIP answer
    assert (options_ping(focus_tls.server.port) or "").startswith("SIP/2.0 200")
    # ... and TLS still works afterwards.
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ssl.create_default_context(cafile=str(_ca(focus_tls))).wrap_socket(
            raw, server_hostname="127.0.0.1"
        ) as tls,
    ):
        tls.sendall(_sip_options(port, "TLS"))
        tls.settimeout(5)
        assert tls.recv(4096).startswith(b"SIP/2.0 200")


def _ca(focus: Focus) -> Any:
    tls_dir = focus.server.tls_dir
    assert tls_dir is not None
    return tls_dir / "ca.pem"


@pytest.mark.slow
def test_a_tls_participant_is_reached_over_its_own_connection(
    focus_tls: Focus, kamailio_factory: KamailioFactory, tmp_path: Path
) -> None:
    """Rekey re-INVITEs go back over the TLS connection the participant opened (its
    Contact carries nathelper's ``;alias=``), never over a new connection to its Contact:
    a phone needs no certificate of its own, and whatever listens at its Contact address
    (here a listener whose certificate Kamailio would refuse) gets nothing."""
    focus = focus_tls
    files = kamailio_factory.tls
    rogue = init_ca(tmp_path / "rogue", ["127.0.0.1"], clients=["participant"])

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        assert upstream.ua is not None
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(*rogue.clients["participant"])  # not signed by Kamailio's CA
        client = ssl.create_default_context(cafile=str(files.ca_cert))  # trusts Kamailio
        ua = await UserAgent.start(
            "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
            identity=ALICE,
        )  # fmt: skip
        alice = await SdesParticipant.start(ALICE, ua)
        seen: list[IncomingRequest] = []
        _record_invites(alice, seen)
        try:
            call = await alice.invite(_tls_target(focus, "conf-factory"), ALICE)
            conference = _conference_id(call)
            mixer = await upstream.ua.next_call(5)
            assert ";alias=" in (mixer.invite.get("Contact") or "")  # what the mixer targets
            settings = load_settings(focus.server.settings_path, env=focus.server.extra_env)
            assert await asyncio.to_thread(rekey, conference, settings) == 2
            await mixer.reinvite(upstream.mixer_sdp(call.call_id, 3), timeout=10)
            assert len(seen) == 1
            # From Kamailio's TLS listener: the connection Alice opened, not a new one.
            assert seen[0].source == ("127.0.0.1", focus.server.tls_port), seen[0].source
            store, client_redis = focus.store()
            assert store.dialog(conference, call.call_id).epoch == 2  # type: ignore[union-attr]
            client_redis.close()
            assert "certificate verify failed" not in focus.server.log()
            await call.bye(timeout=5)
        finally:
            await alice.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


# -- real phones over TLS (secconf.lab.phones), digest-authenticated ---------------------------

# MD5 only: baresip 1.0 (libre) gives up with ENOSYS ("Function not implemented") when the
# first Proxy-Authenticate is SHA-256 instead of trying the MD5 one after it (seen here).
DIGEST = """
[digest]
realm = "example.com"
algorithms = ["MD5"]
nonce_lifetime = 30
"""
ALICE_PASSWORD = "alice-tls-secret"
BOB_PASSWORD = "bob-tls-secret"
#: the mixer stand-in's rekey re-INVITE offer (its answer's SDP, version 2)
UPSTREAM_REOFFER = UPSTREAM_ANSWER.replace(b"o=asterisk 1 1 ", b"o=asterisk 1 2 ")


@pytest.fixture(scope="module")
def focus_tls_digest(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Focus]:
    """TLS listener plus digest authentication (a phone sends no asserted identity)."""
    running = _start_focus(
        kamailio_factory,
        redis_server,
        tmp_path_factory.mktemp("focus-tls-digest"),
        extra=DIGEST,
        tls=True,
    )
    yield running
    running.server.stop()


def _add_users(focus: Focus) -> None:
    """alice and bob as digest users of realm example.com (Redis is emptied per test)."""
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    users = SipUserStore(client, focus.wrapper, focus.prefix)
    users.add(ALICE, "alice", "example.com", ALICE_PASSWORD)
    users.add(BOB, "bob", "example.com", BOB_PASSWORD)
    client.close()


BYE_ANSWERED = re.compile(r"^SIP/2.0 200 OK$(?:\n(?!\n).*)*?\nCSeq: \d+ BYE$", re.MULTILINE)


async def _wait_output(phone: Phone, pattern: re.Pattern[str], timeout: float) -> None:
    """The phone's output matches *pattern* (a multi-line trace) within *timeout*."""
    deadline = time.monotonic() + timeout
    while not pattern.search(phone.output()):
        if time.monotonic() > deadline:
            pytest.fail(f"{phone}: no {pattern.pattern!r} in {timeout} s:\n{phone.log(60)}")
        await asyncio.sleep(0.05)


def _sip_lines(output: str) -> list[str]:
    """baresip -s: the transport line before each traced SIP message."""
    return [line for line in output.splitlines() if line.startswith(("TLS ", "UDP ", "TCP "))]


@pytest.mark.slow
def test_baresip_creates_a_conference_over_tls(
    focus_tls_digest: Focus, kamailio_factory: KamailioFactory, phones: PhoneFactory
) -> None:
    """A real SRTP phone over TLS (the throwaway CA as its ``sip_cafile``): 407, then an
    authenticated INVITE, the group key in the 200 OK, BYE; the mixer side is UDP."""
    focus = focus_tls_digest
    _add_users(focus)
    baresip = phones.baresip(
        "alice", password=ALICE_PASSWORD, realm="example.com", transport="tls",
        ca_file=kamailio_factory.tls.ca_cert, sip_trace=True,
    )  # fmt: skip

    async def scenario(upstream: Upstream) -> None:
        baresip.dial(_tls_target(focus, "conf-factory"))
        await asyncio.to_thread(baresip.wait_connected, 10.0)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(baresip.hangup)
        await asyncio.to_thread(baresip.wait_ended, 5.0)
        await _wait_output(baresip, BYE_ANSWERED, 5.0)  # while the mixer still answers

    upstream = Upstream(focus.upstream_port)
    focus.run(scenario, upstream)
    output = baresip.output()
    tail = output[-3000:]
    # Every message between phone and Kamailio went over TLS (baresip -s traces them).
    trace = _sip_lines(output)
    assert trace, tail
    assert all(line.startswith("TLS 127.0.0.1:") for line in trace), trace
    assert "SIP/2.0 407" in output, tail
    answered = output.split("SIP/2.0 200 OK", 1)
    assert len(answered) == 2, tail
    assert re.search(r"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", answered[1]), tail
    assert "could not start audio" not in output, tail
    # The mixer side: one INVITE over UDP, clear RTP, no key of anyone's.
    assert len(upstream.invites) == 1
    invite = upstream.invites[0].request
    assert invite.top_via.transport == "UDP"
    assert b"a=crypto" not in invite.body
    # The phone's BYE went over TLS and was answered.
    after_bye = output.split("\nBYE sip:", 1)
    assert len(after_bye) == 2, tail
    assert "SIP/2.0 200 OK" in after_bye[1], tail


@pytest.mark.slow
def test_baresip_1_0_does_not_verify_the_server_certificate(
    focus_tls_digest: Focus, phones: PhoneFactory, tmp_path: Path
) -> None:
    """Measured, not wished: baresip 1.0.0 (Debian 12) loads ``sip_cafile`` but completes the
    TLS handshake with a server its CA did not sign, and sends its INVITE (with its SDES
    key) there.  A man in the middle could read the keys: docs/kamailio.md says so.  If
    this starts failing, Debian's baresip verifies now: update the docs."""
    focus = focus_tls_digest
    rogue = init_ca(tmp_path / "rogue", ["127.0.0.1"])  # not the CA of Kamailio's certificate
    baresip = phones.baresip(
        "alice", password=ALICE_PASSWORD, realm="example.com", transport="tls",
        ca_file=rogue.ca_cert, sip_trace=True,
    )  # fmt: skip

    async def scenario(upstream: Upstream) -> None:
        baresip.dial(_tls_target(focus, "conf-factory"))
        # The 407 can only come back over the (unverified) TLS connection to Kamailio.
        await asyncio.to_thread(baresip._proc().wait_line, r"^SIP/2.0 407", 10.0)

    focus.run(scenario)
    output = baresip.output()
    assert re.search(r"^INVITE sip:conf-factory@", output, re.MULTILINE), output[-2000:]
    assert "a=crypto:" in output
    assert "SIP/2.0 407" in output  # Kamailio answered over the unverified connection


def _conference_of_upstream(upstream: Upstream) -> str:
    match = re.search(rb"conf-([0-9a-z]{16})", bytes(upstream.invites[0].request))
    assert match is not None, upstream.invites[0].request
    return match.group(1).decode()


@pytest.mark.slow
def test_linphone_creates_and_baresip_joins_over_tls_with_registration(
    focus_tls_digest: Focus, kamailio_factory: KamailioFactory, phones: PhoneFactory
) -> None:
    """linphonec (verifying Kamailio's certificate against the CA, name included) registers
    and creates a conference over TLS, baresip registers and joins over TLS; both with
    digest.  The mixer's rekey re-INVITEs reach both over TLS, down the connection each
    phone opened: linphonec's Contact names that connection's port anyway (belle-sip);
    baresip's names its own TLS listener (sip_listen port + 1), but the module's contact
    alias sends the re-INVITE to the connection it came on, not to the listener.
    """
    focus = focus_tls_digest
    files = kamailio_factory.tls
    tls_port = focus.server.tls_port
    _add_users(focus)
    linphone = phones.linphone(
        "alice", password=ALICE_PASSWORD, realm="example.com", transport="tls",
        # Kamailio asks for a client certificate (optional): linphonec without one stalls
        # 10 s in the handshake ("cannot get client certificate to answer server request").
        ca_file=files.ca_cert, certificate=files.clients["participant"],
        # linphone checks the server's name, and its TLS library matches DNS names only
        # (an IP address SAN gives "CN-mismatch"): Kamailio as localhost.
        registrar=f"sip:localhost:{tls_port};transport=tls",
    )  # fmt: skip
    baresip = phones.baresip(
        "bob", password=BOB_PASSWORD, realm="example.com", transport="tls",
        ca_file=files.ca_cert, certificate=files.clients["participant"], sip_trace=True,
        # baresip 1.0 does not check names, and its resolver does not read /etc/hosts
        # ("Destination address required" for localhost).
        registrar=f"sip:127.0.0.1:{tls_port};transport=tls",
    )  # fmt: skip
    linphone.wait_registered(10.0)
    baresip.wait_registered(10.0)
    statuses: list[int] = []

    async def scenario(upstream: Upstream) -> None:
        assert upstream.ua is not None
        linphone.dial(f"sip:conf-factory@localhost:{tls_port};transport=tls")
        await asyncio.to_thread(linphone.wait_connected, 10.0)
        conference = _conference_of_upstream(upstream)
        baresip.dial(_tls_target(focus, f"conf-{conference}"))
        await asyncio.to_thread(baresip.wait_connected, 10.0)
        assert len(upstream.invites) == 2
        store, client = focus.store()
        assert set(store.members(conference)) == {ALICE, BOB}
        client.close()
        mixer = [await upstream.ua.next_call(5) for _ in range(2)]
        settings = load_settings(focus.server.settings_path, env=focus.server.extra_env)
        assert await asyncio.to_thread(rekey, conference, settings) == 2
        for call in mixer:
            response = await call.reinvite(UPSTREAM_REOFFER, timeout=10)
            statuses.append(response.status)
        await asyncio.to_thread(linphone.hangup)
        await asyncio.to_thread(linphone.wait_ended, 5.0)
        await asyncio.to_thread(baresip.hangup)
        await asyncio.to_thread(baresip.wait_ended, 5.0)

    focus.run(scenario)
    assert statuses == [200, 200]
    # baresip: every message over TLS; the re-INVITE came from Kamailio's TLS port down the
    # connection baresip opened (to its ephemeral port), not to its listener.
    output = baresip.output()
    assert all(line.startswith("TLS 127.0.0.1:") for line in _sip_lines(output))
    reinvite = re.search(
        rf"^TLS 127\.0\.0\.1:{tls_port} -> 127\.0\.0\.1:(\d+)\nINVITE sip:bob", output,
        re.MULTILINE,
    )  # fmt: skip
    assert reinvite is not None, output[-3000:]
    assert int(reinvite.group(1)) != baresip.tls_port
    # linphone: the re-INVITE came down the connection it opened to Kamailio, addressed to
    # that connection's port (its Contact), not to its own TLS listener.
    debug = (linphone.directory / "debug.log").read_text(errors="replace")
    received = re.search(
        rf"received \[\d+\] new bytes from \[TLS://localhost:{tls_port}\]:\n"
        r"INVITE sip:alice@127\.0\.0\.1:(\d+);transport=tls",
        debug,
    )
    assert received is not None, debug[-3000:]
    assert int(received.group(1)) != linphone.tls_port


@pytest.mark.slow
def test_a_tls_baresip_without_a_certificate_gets_the_rekey_over_its_own_connection(
    focus_tls_digest: Focus, kamailio_factory: KamailioFactory, phones: PhoneFactory
) -> None:
    """baresip 1.0 over TLS with no certificate of its own, its Contact naming its own
    listener: the rekey re-INVITE still reaches it, down the connection it opened (the
    module's contact alias), and Kamailio never connects to the listener."""
    focus = focus_tls_digest
    tls_port = focus.server.tls_port
    _add_users(focus)
    baresip = phones.baresip(
        "alice", password=ALICE_PASSWORD, realm="example.com", transport="tls",
        ca_file=kamailio_factory.tls.ca_cert, sip_trace=True,
    )  # fmt: skip
    statuses: list[int] = []

    async def scenario(upstream: Upstream) -> None:
        assert upstream.ua is not None
        baresip.dial(_tls_target(focus, "conf-factory"))
        await asyncio.to_thread(baresip.wait_connected, 10.0)
        conference = _conference_of_upstream(upstream)
        mixer = await upstream.ua.next_call(5)
        settings = load_settings(focus.server.settings_path, env=focus.server.extra_env)
        assert await asyncio.to_thread(rekey, conference, settings) == 2
        response = await mixer.reinvite(UPSTREAM_REOFFER, timeout=10)
        statuses.append(response.status)
        await asyncio.to_thread(baresip.hangup)
        await asyncio.to_thread(baresip.wait_ended, 5.0)

    focus.run(scenario)
    assert statuses == [200]
    output = baresip.output()
    reinvite = re.search(
        rf"^TLS 127\.0\.0\.1:{tls_port} -> 127\.0\.0\.1:(\d+)\nINVITE sip:alice", output,
        re.MULTILINE,
    )  # fmt: skip
    assert reinvite is not None, output[-3000:]
    assert int(reinvite.group(1)) != baresip.tls_port
    assert "handshake failure" not in focus.server.log()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["other-ca", "ip-address"])
def test_linphone_verifies_the_server_certificate(
    focus_tls_digest: Focus,
    kamailio_factory: KamailioFactory,
    phones: PhoneFactory,
    tmp_path: Path,
    case: str,
) -> None:
    """linphonec 5.1.65 (mbedtls) refuses a server whose certificate another CA signed, and
    one reached by an IP address: its name check knows DNS names only (the certificate's
    IP address SAN shows as "<unsupported>", then "CN-mismatch").  Nothing is sent."""
    focus = focus_tls_digest
    _add_users(focus)
    if case == "other-ca":
        ca = init_ca(tmp_path / "rogue", ["127.0.0.1", "localhost"]).ca_cert
        registrar = f"sip:localhost:{focus.server.tls_port};transport=tls"
    else:
        ca = kamailio_factory.tls.ca_cert
        registrar = f"sip:127.0.0.1:{focus.server.tls_port};transport=tls"
    linphone = phones.linphone(
        "alice", password=ALICE_PASSWORD, realm="example.com", transport="tls", ca_file=ca,
        certificate=kamailio_factory.tls.clients["participant"], registrar=registrar,
    )  # fmt: skip
    with pytest.raises(PhoneError, match="Certificate verification failed"):
        linphone.wait_registered(10.0)
    debug = (linphone.directory / "debug.log").read_text(errors="replace")
    if case == "ip-address":
        assert "CN-mismatch" in debug
    assert "message sent to [TLS://" not in debug  # no REGISTER left the phone
