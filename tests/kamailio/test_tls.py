"""SIP over TLS between participants and the real Kamailio (tls module), UDP towards the mixer.

Kamailio runs the shipped cfg with ``-A WITH_TLS`` and ``-l tls:127.0.0.1:PORT``, its
certificate from the session's throwaway CA (:mod:`secconf.tlsca`).  Participants are
TLS user agents that verify that certificate against the CA; the mixer's stand-in
speaks UDP.  Double record-routing must bring the mixer's in-dialog requests (rekey
re-INVITE, BYE) back to the participants over TLS.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
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
from secconf.kamailio.rekey import rekey
from secconf.kamailio.settings import load_settings
from secconf.services import options_ping
from secconf.store.conferences import connect_blocking
from secconf.store.sip_users import SipUserStore
from secconf.tlsca import TlsFiles, init_ca, participant_contexts
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer

from .conftest import ALICE, BOB, Focus, MixingUpstream, Upstream, _start_focus
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
        env={
            "SECCONF_EDGE_URL": media_edge.url,
            "SECCONF_EDGE_TOKEN_FILE": str(media_edge.token_file),
        },
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


# -- a real phone: baresip 1.0 (Debian 12) over TLS, digest-authenticated ------------------

# MD5 only: baresip 1.0 (libre) gives up with ENOSYS ("Function not implemented") when the
# first Proxy-Authenticate is SHA-256 instead of trying the MD5 one after it (seen here).
DIGEST = """
[digest]
realm = "example.com"
algorithms = ["MD5"]
nonce_lifetime = 30
"""
ALICE_PASSWORD = "alice-tls-secret"


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


def _sip_listen_port() -> int:
    """A port P with UDP P, TCP P and TCP P+1 free: baresip's SIP/TLS listener takes P+1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tls:
                udp.bind(("127.0.0.1", port))
                tls.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    pytest.fail("no free port pair for baresip")


def _baresip(directory: Path, ca: Path, tls_port: int, seconds: int) -> str:
    """Run baresip with *ca* as its ``sip_cafile``, dialling the factory over TLS; its output.

    Ports are probed, then bound by baresip: another program may take one in between,
    so a start that fails with "Address already in use" is retried (3 times at most).
    """
    baresip = shutil.which("baresip")
    if baresip is None:
        pytest.fail("baresip not found (docker/bootstrap-debian.sh installs baresip-core)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "accounts").write_text(
        f"<sip:alice@example.com;transport=tls>;auth_user=alice;auth_pass={ALICE_PASSWORD};"
        f'regint=0;mediaenc=srtp-mand;outbound="sip:127.0.0.1:{tls_port};transport=tls"\n'
    )
    output = ""
    for _ in range(3):
        (directory / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{_sip_listen_port()}\n"
            f"sip_cafile {ca}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule ausine.so\nmodule aufile.so\nmodule srtp.so\n"
            "module menu.so\nmodule_app account.so\n"
            "audio_source ausine,440\n"
            "ausrc_srate 48000\nausrc_channels 2\n"
            f"audio_player aufile,{directory / 'heard.wav'}\n"
        )
        result = subprocess.run(
            [baresip, "-f", str(directory), "-n", "127.0.0.1", "-s", "-t", str(seconds),
             "-e", f"/dial sip:conf-factory@127.0.0.1:{tls_port};transport=tls"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 20,
            check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        if "Address already in use" not in output:
            return output
    return output


@pytest.mark.slow
def test_baresip_creates_a_conference_over_tls(
    focus_tls_digest: Focus, kamailio_factory: KamailioFactory, tmp_path: Path
) -> None:
    """A real SRTP phone over TLS (the throwaway CA as its ``sip_cafile``): 407, then an
    authenticated INVITE, the group key in the 200 OK, BYE; the mixer side is UDP."""
    focus = focus_tls_digest
    files = kamailio_factory.tls
    client = connect_blocking(focus.redis_server.url, timeout=1.0)  # Redis is emptied per test
    SipUserStore(client, focus.wrapper, focus.prefix).add(
        ALICE, "alice", "example.com", ALICE_PASSWORD
    )
    client.close()

    async def scenario(upstream: Upstream) -> str:
        return await asyncio.to_thread(
            _baresip, tmp_path / "baresip", files.ca_cert, focus.server.tls_port, 4
        )

    upstream = Upstream(focus.upstream_port)
    output = focus.run(scenario, upstream)
    tail = output[-3000:]
    # Every message between phone and Kamailio went over TLS (baresip -s traces them).
    trace = [line for line in output.splitlines() if line.startswith(("TLS ", "UDP ", "TCP "))]
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
    # The phone's BYE (it quits after 4 s) went over TLS and was answered.
    after_bye = output.split("\nBYE sip:", 1)
    assert len(after_bye) == 2, tail
    assert "SIP/2.0 200 OK" in after_bye[1], tail


@pytest.mark.slow
def test_baresip_1_0_does_not_verify_the_server_certificate(
    focus_tls_digest: Focus, tmp_path: Path
) -> None:
    """Measured, not wished: baresip 1.0.0 (Debian 12) loads ``sip_cafile`` but completes the
    TLS handshake with a server its CA did not sign, and sends its INVITE (with its SDES
    key) there.  A man in the middle could read the keys: docs/kamailio.md says so.  If
    this starts failing, Debian's baresip verifies now: update the docs."""
    focus = focus_tls_digest
    rogue = init_ca(tmp_path / "rogue", ["127.0.0.1"])  # not the CA of Kamailio's certificate

    async def scenario(upstream: Upstream) -> str:
        return await asyncio.to_thread(
            _baresip, tmp_path / "baresip", rogue.ca_cert, focus.server.tls_port, 2
        )

    output = focus.run(scenario)
    assert re.search(r"^INVITE sip:conf-factory@", output, re.MULTILINE), output[-2000:]
    assert "a=crypto:" in output
    assert "SIP/2.0 407" in output  # Kamailio answered over the unverified connection
