"""Digest replay attacks on the real Kamailio + secconf module + Redis (issue 12, item 7).

The attacker captured an authenticated request (its ``Proxy-Authorization`` or
``Authorization``) and sends it again: from the same flow in a new transaction,
from another source port, over another transport (TLS from the same address and
port number), with another ``Refer-To``.  Every replay must get a new challenge
(407 from the proxy, 401 from the registrar) with a fresh nonce and
``stale`` not set, and leave every Redis key under the focus's prefix exactly as
it was (type and value: ``DUMP``): no REFER queued, no dialog, no member.

Every SIP message here is raw text over this module's own sockets (UDP, and TLS
with ``ssl``); the digest responses are computed here with ``hashlib``: nothing
of the project's SIP stack or digest code builds them.  The mixer behind
Kamailio is a raw UDP responder too (200 OK with a clear SDP answer).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.sip_users import SipUserStore
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.conftest import UPSTREAM_ANSWER, Focus, _start_focus, offer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.usefixtures("redis_url")]

REALM = "example.com"
DIGEST = f"""
[digest]
realm = "{REALM}"
algorithms = ["SHA-256", "MD5"]
nonce_lifetime = 30
"""
USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
ALICE, BOB, CAROL = "sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
TIMEOUT = 5.0


# -- raw SIP ---------------------------------------------------------------------------------


@dataclass
class Message:
    """A SIP message as received: start line, headers (name lower-cased, in order), body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> Message:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return cls(lines[0], headers, body)

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0 ") else 0

    @property
    def method(self) -> str:
        return self.start.split()[0]

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


def request(
    method: str,
    ruri: str,
    *,
    via: str,
    call_id: str,
    from_: str,
    to: str,
    cseq: int,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {from_}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *(f"{name}: {value}" for name, value in headers or []),
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def with_via(raw: bytes, via: str) -> bytes:
    """*raw* with its (only) Via replaced: what an attacker changes freely (not covered)."""
    return re.sub(rb"\r\nVia: [^\r]*\r\n", f"\r\nVia: {via}\r\n".encode(), raw, count=1)


def challenge_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest", value
    return {
        name.lower(): quoted if quoted else bare
        for name, quoted, bare in re.findall(r'([A-Za-z-]+)=(?:"([^"]*)"|([^\s,]+))', rest)
    }


def authorization(
    challenge: dict[str, str], user: str, method: str, uri: str, nc: int, cnonce: str
) -> str:
    """RFC 7616 §3.4.1 with qop=auth, computed here (hashlib), for *challenge*."""
    algorithm = challenge["algorithm"]
    h = HASHES[algorithm]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hx(f"{user}:{challenge['realm']}:{USERS[user]}")
    count = f"{nc:08x}"
    response = hx(f"{ha1}:{challenge['nonce']}:{count}:{cnonce}:auth:{hx(f'{method}:{uri}')}")
    return (
        f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm={algorithm}, qop=auth, nc={count}, '
        f'cnonce="{cnonce}"'
    )


class UdpPeer:
    """One UDP socket on a free loopback port: sends raw requests, reads the final answer."""

    def __init__(self, server: tuple[str, int], port: int = 0) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(TIMEOUT)
        self.port = int(self.sock.getsockname()[1])

    def via(self, branch: str | None = None) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch or new_branch()};rport"

    def send(self, raw: bytes) -> Message:
        """Send *raw*; the first final answer to its CSeq (1xx skipped)."""
        cseq = Message.parse(raw).get("cseq")
        self.sock.sendto(raw, self.server)
        while True:
            data, _ = self.sock.recvfrom(65535)
            answer = Message.parse(data)
            if answer.status >= 200 and answer.get("cseq") == cseq:
                return answer

    def close(self) -> None:
        self.sock.close()


class TlsPeer:
    """A TLS connection to Kamailio from a given local port (our own ``ssl`` socket)."""

    def __init__(self, server: tuple[str, int], ca: Path, local_port: int) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        raw.bind(("127.0.0.1", local_port))
        raw.settimeout(TIMEOUT)
        raw.connect(server)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.port = local_port
        self.buffer = b""

    def via(self, branch: str | None = None) -> str:
        return f"SIP/2.0/TLS 127.0.0.1:{self.port};branch={branch or new_branch()};rport"

    def _message(self) -> Message:
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                length = int(Message.parse(head + sep).get("content-length") or 0)
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return Message.parse(head + sep + rest[:length])
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("Kamailio closed the TLS connection")
            self.buffer += chunk

    def send(self, raw: bytes) -> Message:
        cseq = Message.parse(raw).get("cseq")
        self.sock.sendall(raw)
        while True:
            answer = self._message()
            if answer.status >= 200 and answer.get("cseq") == cseq:
                return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def udp_and_tcp_port(server: tuple[str, int]) -> UdpPeer:
    """A UDP peer whose port number is free for TCP too (the transport replay binds it)."""
    for _ in range(20):
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            peer = UdpPeer(server, port)
        except OSError:
            continue
        finally:
            probe.close()
        return peer
    raise AssertionError("no loopback port free for both UDP and TCP")


@dataclass
class Mixer:
    """The mixer behind Kamailio, raw: 200 OK with a clear SDP to every INVITE, 200 to the rest."""

    sock: socket.socket
    invites: list[Message] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            incoming = Message.parse(data)
            if incoming.status or incoming.method == "ACK":
                continue
            body = b""
            if incoming.method == "INVITE":
                self.invites.append(incoming)
                body = UPSTREAM_ANSWER
            to = incoming.get("to") or ""
            if ";tag=" not in to:
                to += ";tag=" + secrets.token_hex(4)
            lines = [
                "SIP/2.0 200 OK",
                *(f"Via: {value}" for value in incoming.all("via")),
                *(f"Record-Route: {value}" for value in incoming.all("record-route")),
                f"From: {incoming.get('from')}",
                f"To: {to}",
                f"Call-ID: {incoming.get('call-id')}",
                f"CSeq: {incoming.get('cseq')}",
                f"Contact: <sip:mixer@127.0.0.1:{self.sock.getsockname()[1]}>",
            ]
            if body:
                lines.append("Content-Type: application/sdp")
            lines.append(f"Content-Length: {len(body)}")
            self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, source)


@pytest.fixture(scope="module")
def replay_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Focus]:
    """Kamailio + module with digest, listening on UDP and TLS; the raw mixer upstream."""
    running = _start_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-replay"),
        extra=DIGEST, tls=True,
    )  # fmt: skip
    yield running
    running.server.stop()


@pytest.fixture
def mixer(replay_focus: Focus) -> Iterator[Mixer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", replay_focus.upstream_port))
    running = Mixer(sock)
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    yield running
    running.stop.set()
    thread.join(2)
    sock.close()


@pytest.fixture
def client(replay_focus: Focus) -> Iterator[redis.Redis]:
    handle = connect_blocking(replay_focus.redis_server.url, timeout=1.0)
    users = SipUserStore(handle, replay_focus.wrapper, replay_focus.prefix)
    for user, password in USERS.items():
        users.add(f"sip:{user}@{REALM}", user, REALM, password)
    yield handle
    handle.close()


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, tuple[bytes, bytes | None]]:
    """Every key under *prefix*: its type and its value (``DUMP``)."""
    return {
        key: (client.type(key), client.dump(key))  # type: ignore[misc]
        for key in client.scan_iter(match=f"{prefix}:*")
    }


def assert_fresh_challenge(answer: Message, status: int, captured_nonce: str) -> None:
    """*status* with a new nonce per algorithm, ``stale`` not true (a replay is no stale nonce)."""
    assert answer.status == status, answer.start
    name = "proxy-authenticate" if status == 407 else "www-authenticate"
    challenges = [challenge_params(value) for value in answer.all(name)]
    assert [c["algorithm"] for c in challenges] == ["SHA-256", "MD5"], challenges
    nonces = {c["nonce"] for c in challenges}
    assert len(nonces) == 1
    assert captured_nonce not in nonces
    assert all(c.get("stale", "false").lower() == "false" for c in challenges), challenges
    assert all(c["qop"] == "auth" for c in challenges)


# -- the legitimate exchanges (what the attacker captures) ------------------------------------


@dataclass
class Dialog:
    """alice's call as the raw client made it: what an in-dialog request needs."""

    call_id: str
    from_: str
    to: str
    contact: str
    routes: list[str]
    challenge: dict[str, str]
    invite: bytes  # the authenticated INVITE as sent (the capture)
    conference: str


def challenge_of(answer: Message, status: int, algorithm: str = "MD5") -> dict[str, str]:
    assert answer.status == status, answer.start
    name = "proxy-authenticate" if status == 407 else "www-authenticate"
    return next(c for c in map(challenge_params, answer.all(name)) if c["algorithm"] == algorithm)


def invite(
    peer: UdpPeer, user: str, target: str, *, sdp_port: int, algorithm: str = "MD5"
) -> Dialog:
    """INVITE, 407, INVITE with credentials (nc=1), 200 OK, ACK: the call's parts."""
    call_id = secrets.token_hex(8) + "@attack.test"
    from_ = f"<sip:{user}@{REALM}>;tag={secrets.token_hex(4)}"
    to = f"<{target}>"
    body = offer(port=sdp_port)
    first = request(
        "INVITE", target, via=peer.via(), call_id=call_id, from_=from_, to=to, cseq=1,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{peer.port}>")], body=body,
    )  # fmt: skip
    chosen = challenge_of(peer.send(first), 407, algorithm)
    credentials = authorization(chosen, user, "INVITE", target, 1, secrets.token_hex(8))
    second = request(
        "INVITE", target, via=peer.via(), call_id=call_id, from_=from_, to=to, cseq=2,
        headers=[
            ("Contact", f"<sip:{user}@127.0.0.1:{peer.port}>"),
            ("Proxy-Authorization", credentials),
        ],
        body=body,
    )  # fmt: skip
    answer = peer.send(second)
    assert answer.status == 200, answer.start
    header = answer.get("x-secconf-conference") or ""
    conference = header.split("conf-", 1)[1].split("@", 1)[0]
    contact = (answer.get("contact") or "").strip("<>")
    routes = [r.strip() for value in answer.all("record-route") for r in value.split(",")]
    ack = request(
        "ACK", contact, via=peer.via(), call_id=call_id, from_=from_, to=answer.get("to") or "",
        cseq=2, headers=[("Route", ", ".join(routes))],
    )  # fmt: skip
    peer.sock.sendto(ack, peer.server)
    return Dialog(
        call_id, from_, answer.get("to") or "", contact, routes, chosen, second, conference
    )


# -- the attacks ---------------------------------------------------------------------------------


def test_replayed_invites_create_no_dialog(
    replay_focus: Focus, kamailio_factory: KamailioFactory, mixer: Mixer, client: redis.Redis
) -> None:
    focus = replay_focus
    server = ("127.0.0.1", focus.server.port)
    alice = udp_and_tcp_port(server)
    bob = UdpPeer(server)
    attacker = UdpPeer(server)
    store = ConferenceStore(client, focus.wrapper, focus.prefix)
    try:
        created = invite(alice, "alice", focus.target("conf-factory"), sdp_port=30000)
        conference = created.conference
        joined = invite(bob, "bob", focus.target(f"conf-{conference}"), sdp_port=30002)
        assert store.members(conference) == {ALICE: 1, BOB: 1}
        invites = len(mixer.invites)
        before = snapshot(client, focus.prefix)
        assert any(b":nonce:" in key for key in before)  # the spent nonce-counts

        for capture, peer, nonce in (
            (created.invite, alice, created.challenge["nonce"]),
            (joined.invite, bob, joined.challenge["nonce"]),
        ):
            # The same flow, a new transaction (the branch is not covered by digest).
            same_flow = with_via(capture, peer.via())
            assert_fresh_challenge(peer.send(same_flow), 407, nonce)
            # Another source port (the attacker's own socket).
            assert_fresh_challenge(attacker.send(with_via(capture, attacker.via())), 407, nonce)
        # Another transport: over TLS, from alice's address and port number.
        tls = TlsPeer(
            ("127.0.0.1", focus.server.tls_port), kamailio_factory.tls.ca_cert, alice.port
        )
        try:
            replayed = tls.send(with_via(created.invite, tls.via()))
        finally:
            tls.close()
        assert_fresh_challenge(replayed, 407, created.challenge["nonce"])

        assert snapshot(client, focus.prefix) == before
        assert len(mixer.invites) == invites  # nothing reached the mixer
        assert store.members(conference) == {ALICE: 1, BOB: 1}
    finally:
        for peer in (alice, bob, attacker):
            peer.close()


def test_replayed_refers_queue_nothing(
    replay_focus: Focus, kamailio_factory: KamailioFactory, mixer: Mixer, client: redis.Redis
) -> None:
    focus = replay_focus
    server = ("127.0.0.1", focus.server.port)
    alice = udp_and_tcp_port(server)
    attacker = UdpPeer(server)
    store = ConferenceStore(client, focus.wrapper, focus.prefix)
    try:
        call = invite(alice, "alice", focus.target("conf-factory"), sdp_port=30000)
        conference = call.conference
        target = focus.target(f"conf-{conference}")

        # alice REFERs bob to the conference (out of dialog): 407, then with credentials 202.
        call_id = secrets.token_hex(8) + "@attack.test"
        from_ = f"<{ALICE}>;tag={secrets.token_hex(4)}"

        def refer(cseq: int, refer_to: str, credentials: str | None, via: str) -> bytes:
            headers = [("Refer-To", f"<{refer_to}>"), ("Contact", f"<{ALICE}>")]
            if credentials:
                headers.append(("Proxy-Authorization", credentials))
            return request(
                "REFER", target, via=via, call_id=call_id, from_=from_, to=f"<{target}>",
                cseq=cseq, headers=headers,
            )  # fmt: skip

        chosen = challenge_of(alice.send(refer(1, BOB, None, alice.via())), 407)
        credentials = authorization(chosen, "alice", "REFER", target, 1, secrets.token_hex(8))
        capture = refer(2, BOB, credentials, alice.via())
        accepted = alice.send(capture)
        assert accepted.status == 202, accepted.start
        assert len(store.refers(conference)) == 1

        before = snapshot(client, focus.prefix)
        nonce = chosen["nonce"]
        # Replays: the same flow in a new transaction, with another Refer-To (and CSeq),
        # from another port, over TLS from alice's address and port number.
        assert_fresh_challenge(alice.send(with_via(capture, alice.via())), 407, nonce)
        other_target = capture.replace(f"<{BOB}>".encode(), f"<{CAROL}>".encode())
        other_target = other_target.replace(b"CSeq: 2 REFER", b"CSeq: 3 REFER")
        assert other_target != capture
        assert_fresh_challenge(alice.send(with_via(other_target, alice.via())), 407, nonce)
        assert_fresh_challenge(attacker.send(with_via(capture, attacker.via())), 407, nonce)
        assert_fresh_challenge(attacker.send(with_via(other_target, attacker.via())), 407, nonce)
        tls = TlsPeer(
            ("127.0.0.1", focus.server.tls_port), kamailio_factory.tls.ca_cert, alice.port
        )
        try:
            assert_fresh_challenge(tls.send(with_via(other_target, tls.via())), 407, nonce)
        finally:
            tls.close()
        assert len(store.refers(conference)) == 1
        assert snapshot(client, focus.prefix) == before

        # A phone reuses its INVITE's nonce in the dialog with the next count (RFC 7616
        # §3.4): accepted.  That REFER replayed, or an older count, is not.
        def in_dialog(cseq: int, refer_to: str, nc: int, via: str) -> bytes:
            credentials = authorization(
                call.challenge, "alice", "REFER", call.contact, nc, secrets.token_hex(8)
            )
            return request(
                "REFER", call.contact, via=via, call_id=call.call_id, from_=call.from_,
                to=call.to, cseq=cseq,
                headers=[
                    ("Route", ", ".join(call.routes)),
                    ("Refer-To", f"<{refer_to}>"),
                    ("Proxy-Authorization", credentials),
                ],
            )  # fmt: skip

        second = in_dialog(3, CAROL, 2, alice.via())
        answer = alice.send(second)
        assert answer.status == 202, answer.start
        assert [fields["target"] for _, fields in store.refers(conference)] == [BOB, CAROL]
        before = snapshot(client, focus.prefix)
        nonce = call.challenge["nonce"]
        assert_fresh_challenge(alice.send(with_via(second, alice.via())), 407, nonce)
        assert_fresh_challenge(alice.send(in_dialog(4, BOB, 2, alice.via())), 407, nonce)
        assert_fresh_challenge(alice.send(in_dialog(5, BOB, 1, alice.via())), 407, nonce)
        # A new count from another port, or over TLS from alice's address and port number:
        # the dialog is bound to alice's UDP flow, so the gate refuses it (403) before any
        # credential is looked at (even a count never used).
        refused = attacker.send(in_dialog(6, BOB, 3, attacker.via()))
        assert refused.status == 403, refused.start
        tls = TlsPeer(
            ("127.0.0.1", focus.server.tls_port), kamailio_factory.tls.ca_cert, alice.port
        )
        try:
            refused = tls.send(in_dialog(7, BOB, 4, tls.via()))
            assert refused.status == 403, refused.start
        finally:
            tls.close()
        assert len(store.refers(conference)) == 2
        assert snapshot(client, focus.prefix) == before
        assert len(mixer.invites) == 1
    finally:
        alice.close()
        attacker.close()


def test_replayed_registers_are_challenged(replay_focus: Focus, client: redis.Redis) -> None:
    focus = replay_focus
    server = ("127.0.0.1", focus.server.port)
    phone = UdpPeer(server)
    attacker = UdpPeer(server)
    registrar = f"sip:127.0.0.1:{focus.server.port}"
    call_id = secrets.token_hex(8) + "@attack.test"
    from_ = f"<{BOB}>;tag={secrets.token_hex(4)}"

    def register(cseq: int, credentials: str | None, via: str) -> bytes:
        headers = [("Contact", f"<sip:bob@127.0.0.1:{phone.port}>"), ("Expires", "60")]
        if credentials:
            headers.append(("Authorization", credentials))
        return request(
            "REGISTER", registrar, via=via, call_id=call_id, from_=from_, to=f"<{BOB}>",
            cseq=cseq, headers=headers,
        )  # fmt: skip

    try:
        chosen = challenge_of(phone.send(register(1, None, phone.via())), 401, "SHA-256")

        def signed(nc: int) -> str:
            return authorization(chosen, "bob", "REGISTER", registrar, nc, secrets.token_hex(8))

        capture = register(2, signed(1), phone.via())
        assert phone.send(capture).status == 200
        # A refresh reusing the nonce with the next count (what baresip and linphone do).
        refresh = register(3, signed(2), phone.via())
        assert phone.send(refresh).status == 200
        before = snapshot(client, focus.prefix)
        nonce = chosen["nonce"]
        for raw, peer in (
            (capture, phone),
            (refresh, phone),
            (register(4, signed(2), phone.via()), phone),  # the same count, new response
            (register(5, signed(1), phone.via()), phone),  # an older count
            (refresh, attacker),
            (register(6, signed(7), attacker.via()), attacker),  # a new count, other port
        ):
            assert_fresh_challenge(peer.send(with_via(raw, peer.via())), 401, nonce)
        # RFC 2069 style credentials (no qop, nc, cnonce): refused, 400, never accepted once.
        params = challenge_params(signed(9))
        rfc2069 = (
            f'Digest username="bob", realm="{REALM}", nonce="{nonce}", uri="{registrar}", '
            f'response="{params["response"]}", algorithm=SHA-256'
        )
        assert phone.send(register(7, rfc2069, phone.via())).status == 400
        assert snapshot(client, focus.prefix) == before
        # The next count from the phone's own flow still works.
        assert phone.send(register(8, signed(3), phone.via())).status == 200
    finally:
        phone.close()
        attacker.close()
