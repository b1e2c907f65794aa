"""Plain-RTP SIP participants calling straight into Asterisk (no Kamailio, no edge yet).

They stand in for the module: each join carries the join token it would add
(:func:`secconf.core.mixer_token.make_token` with the session Asterisk's secret),
since the dialplan bridges nothing without one (tests/security/test_mixer_token.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from dataclasses import dataclass, field

from secconf.client.sip import Answer, Call, IncomingRequest, UserAgent
from secconf.core.mixer_token import HEADER, MixerTokenKeys, make_token

CODECS = {"0": "PCMU", "8": "PCMA", "3": "GSM", "5": "DVI4"}


def audio_sdp(port: int, payload_types: list[str], version: int = 1) -> bytes:
    maps = "".join(f"a=rtpmap:{pt} {CODECS[pt]}/8000\r\n" for pt in payload_types)
    return (
        f"v=0\r\no=- 4242 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {' '.join(payload_types)} 101\r\n{maps}"
        "a=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\na=sendrecv\r\n"
    ).encode()


def offered_payload_types(body: bytes) -> list[str]:
    match = re.search(rb"m=audio \d+ RTP/AVP ([0-9 ]+)", body)
    return match.group(1).decode().split() if match else []


@dataclass
class Participant:
    """One SIP user agent in a conference; answers re-INVITEs and records them."""

    user: str
    ua: UserAgent
    rtp_port: int
    #: payload types this phone supports; "all" answers every common one, "one" the first
    supports: list[str] = field(default_factory=lambda: ["0", "8"])
    answers: str = "all"
    call: Call | None = None
    reinvites: list[tuple[float, bytes]] = field(default_factory=list)
    reinvite_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _version: int = 1

    @classmethod
    async def start(cls, user: str, rtp_port: int, **kwargs: object) -> Participant:
        ua = await UserAgent.start("127.0.0.1", identity=f"sip:{user}@example.com")
        participant = cls(user, ua, rtp_port, **kwargs)  # type: ignore[arg-type]
        ua.on_invite = participant._on_invite
        return participant

    async def _on_invite(self, incoming: IncomingRequest) -> Answer:
        if incoming.call is None:
            return Answer(480)
        self.reinvites.append((time.monotonic(), incoming.body))
        self.reinvite_seen.set()
        common = [pt for pt in offered_payload_types(incoming.body) if pt in self.supports]
        if not common:
            return Answer(488)
        chosen = common if self.answers == "all" else common[:1]
        self._version += 1
        return Answer(200, audio_sdp(self.rtp_port, chosen, self._version), "application/sdp")

    async def join(self, sip_port: int, conference: str, keys: MixerTokenKeys) -> Call:
        """INVITE ``conf-<conference>`` with the join token the module would add."""
        target = f"sip:conf-{conference}@127.0.0.1:{sip_port}"
        call_id = f"{secrets.token_hex(12)}@127.0.0.1"
        token = make_token(keys, conference, call_id, time.time(), 30)
        outgoing = self.ua.place_call(
            target,
            audio_sdp(self.rtp_port, self.supports),
            extra_headers=[(HEADER, token)],
            call_id=call_id,
        )
        self.call = await outgoing.answered(5.0)
        return self.call

    async def wait_reinvites(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while len(self.reinvites) < count and time.monotonic() < deadline:
            self.reinvite_seen.clear()
            try:
                await asyncio.wait_for(self.reinvite_seen.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return len(self.reinvites)

    async def close(self) -> None:
        if self.call is not None:
            with contextlib.suppress(Exception):  # already gone is fine at teardown
                await self.call.bye(timeout=2.0)
        await self.ua.close()
