"""A raw SIP attacker: its own sockets and its own message text, not the project's SIP stack.

Everything here is written from RFC 3261 §7/§8/§20 directly (request line, Via with a
``z9hG4bK`` branch, From/To/Call-ID/CSeq/Max-Forwards/Contact/Content-Length), so a bug in
``secconf.core.sip`` cannot make an attack look refused.  Responses are read with a few
regular expressions (status line, header lines, compact forms of RFC 3261 §7.3.3).
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field

__all__ = ["Attacker", "Response", "sdp", "sip_request"]

_STATUS_RE = re.compile(rb"^SIP/2\.0 (\d{3}) ([^\r\n]*)\r\n")
_COMPACT = {"i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via", "l": "content-length",
            "c": "content-type"}  # fmt: skip


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, list[str]] = field(repr=False)
    body: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class Received:
    """Any datagram or stream chunk that is not a response: a request someone relayed to us."""

    raw: bytes


def parse(raw: bytes) -> Response | Received:
    match = _STATUS_RE.match(raw)
    if match is None:
        return Received(raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    headers: dict[str, list[str]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("utf-8", "replace").partition(":")
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return Response(int(match.group(1)), match.group(2).decode(), headers, body, raw)


def sdp(*media: str, host: str = "127.0.0.1") -> bytes:
    """An SDP body with the given ``m=`` sections (each a block of lines joined by CRLF)."""
    lines = ["v=0", f"o=mallory 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


def sip_request(
    method: str,
    ruri: str,
    *,
    transport: str,
    via_host: str,
    via_port: int,
    call_id: str,
    from_uri: str,
    from_tag: str,
    to_uri: str,
    to_tag: str | None = None,
    cseq: int = 1,
    routes: tuple[str, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    content_type: str = "application/sdp",
    branch: str | None = None,
) -> bytes:
    """One request's bytes, as RFC 3261 §8.1.1 builds it (the caller writes every field)."""
    branch = branch or "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {via_host}:{via_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:mallory@{via_host}:{via_port};transport={transport.lower()}>",
        *(f"Route: {route}" for route in routes),
        *(f"{name}: {value}" for name, value in headers),
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Attacker:
    """One socket (UDP, or a TLS connection of its own) on loopback."""

    def __init__(self, target: tuple[str, int], *, tls: bool = False, bind: str = "127.0.0.1"):
        self.target = target
        self.transport = "TLS" if tls else "UDP"
        self.received: list[Response | Received] = []
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the attacker does not care who answers
            raw = socket.create_connection(target, timeout=5, source_address=(bind, 0))
            self.sock: socket.socket = context.wrap_socket(raw)
            self._buffer = b""
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((bind, 0))
        self.host, self.port = self.sock.getsockname()[:2]

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, ruri: str, **fields: object) -> bytes:
        return sip_request(
            method, ruri, transport=self.transport, via_host=self.host, via_port=self.port,
            **fields,  # type: ignore[arg-type]
        )  # fmt: skip

    def send(self, message: bytes) -> None:
        if self.transport == "TLS":
            self.sock.sendall(message)
        else:
            self.sock.sendto(message, self.target)

    def _read(self, timeout: float) -> list[bytes]:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            if self.transport == "UDP":
                data, _ = self.sock.recvfrom(65535)
                return [data]
            chunk = self.sock.recv(65535)
        except (TimeoutError, ssl.SSLWantReadError):
            return []
        if not chunk:
            return []
        self._buffer += chunk
        messages = []
        while b"\r\n\r\n" in self._buffer:
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            size = int(length.group(1)) if length else 0
            if len(rest) < size:
                break
            messages.append(head + b"\r\n\r\n" + rest[:size])
            self._buffer = rest[size:]
        return messages

    def final(self, message: bytes, timeout: float = 5.0) -> Response:
        """Send *message* and wait for its final response (1xx skipped; ACK sent for ≥300)."""
        self.send(message)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for raw in self._read(deadline - time.monotonic()):
                parsed = parse(raw)
                self.received.append(parsed)
                if isinstance(parsed, Response) and parsed.status >= 200:
                    if parsed.status >= 300 and message.startswith(b"INVITE "):
                        self.send(_ack_for(message, parsed))
                    return parsed
        raise AssertionError(f"no final response within {timeout} s")

    def listen(self, seconds: float) -> list[Response | Received]:
        """Everything that arrives within *seconds* (e.g. requests relayed to us)."""
        found: list[Response | Received] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found += [parse(raw) for raw in self._read(deadline - time.monotonic())]
        self.received += found
        return found


def _ack_for(invite: bytes, response: Response) -> bytes:
    """RFC 3261 §17.1.1.3: the ACK of a non-2xx final, same branch, To with the answer's tag."""
    head = invite.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    ruri = lines[0].split(" ")[1]
    keep = [line for line in lines[1:] if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "max-forwards", "route")]  # fmt: skip
    to = response.header("to") or ""
    cseq = (re.search(r"(?im)^CSeq:\s*(\d+)", head) or re.search("(1)", "1")).group(1)  # type: ignore[union-attr]
    return (
        "\r\n".join([f"ACK {ruri} SIP/2.0", *keep, f"To: {to}", f"CSeq: {cseq} ACK",
                     "Content-Length: 0"]) + "\r\n\r\n"
    ).encode()  # fmt: skip
