"""Media helpers of the Kamailio tests: SRTP participants and what they heard."""

from __future__ import annotations

import asyncio
import base64
import secrets
from dataclasses import dataclass, field

from secconf.client.media import KeyMaterial, SrtpEndpoint
from secconf.client.sip import Answer, Call, IncomingRequest, UserAgent
from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.core.sdes import CryptoAttribute
from secconf.core.sdp import SessionDescription

SUITE = "AES_CM_128_HMAC_SHA1_80"


@dataclass
class SdesParticipant:
    """An SDES phone: its own sending key in the offer, the group key from the answer."""

    ua: UserAgent
    media: SrtpEndpoint
    own: KeyMaterial = field(repr=False)
    call: Call | None = None
    group: KeyMaterial | None = field(default=None, repr=False)
    refuse: int | None = None  # answer re-INVITEs with this status
    reoffers: list[bytes] = field(default_factory=list, repr=False)
    #: answer new calls (the focus's dial-out) instead of 480
    accept_calls: bool = False
    #: False: like baresip 1.0.0, accept a new key in signalling but keep decrypting
    #: with the old one (DESIGN.md §2); the edge sees the leg "not-followed"
    follow: bool = True

    @classmethod
    async def start(cls, identity: str, ua: UserAgent | None = None) -> SdesParticipant:
        """A phone on *ua* (e.g. a TLS user agent), else on a new UDP one."""
        ua = ua or await UserAgent.start("127.0.0.1", identity=identity)
        media = await SrtpEndpoint.open("127.0.0.1", rtcp_interval=None)
        material = secrets.token_bytes(30)
        participant = cls(ua, media, (SUITE, material[:16], material[16:]))
        ua.on_invite = participant._on_invite
        return participant

    async def _on_invite(self, incoming: IncomingRequest) -> Answer:
        """A re-INVITE from the focus: like linphone, the receive key switches with the 200 OK.

        The phone keeps its own sending key (linphone's default) and answers
        under the offered tag; no overlap with the old receive key (grace 0).
        """
        if incoming.call is None:
            if not self.accept_calls:
                return Answer(480)
            return self._answer_call(incoming)
        self.reoffers.append(incoming.body)
        if self.refuse is not None:
            return Answer(self.refuse)
        section = SessionDescription.parse(incoming.body).media[0]
        crypto = CryptoAttribute.parse(section.attributes("crypto")[0] or "")
        param = crypto.key_params[0]
        offered = (SUITE, param.key, param.salt)
        if offered != self.group and self.follow:
            self.media.rekey(rx=offered, grace=0.0)
            self.group = offered
        return Answer(200, self.offer(tag=crypto.tag), "application/sdp")

    def _answer_call(self, incoming: IncomingRequest) -> Answer:
        """A call from the focus (dial-out): receive with the offered group key, answer SDES."""
        offer = SessionDescription.parse(incoming.body)
        section = offer.media[0]
        values = section.attributes("crypto")
        if section.proto != "RTP/SAVP" or len(values) != 1:
            return Answer(488)
        crypto = CryptoAttribute.parse(values[0] or "")
        param = crypto.key_params[0]
        self.group = (SUITE, param.key, param.salt)
        connection = section.connection or offer.session.connection
        if connection is None:
            return Answer(488)
        self.media.set_remote((connection.address, section.port))
        self.media.set_keys(tx=self.own, rx=self.group)
        return Answer(200, self.offer(tag=crypto.tag), "application/sdp")

    def offer(self, tag: int = 1) -> bytes:
        _, key, salt = self.own
        inline = base64.b64encode(key + salt).decode()
        port = self.media.local_address[1]
        lines = [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            f"m=audio {port} RTP/SAVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=rtcp-mux",
            f"a=crypto:{tag} {SUITE} inline:{inline}",
            f"a=ssrc:{self.media.ssrc} cname:test",
            "a=sendrecv",
        ]
        return ("\r\n".join(lines) + "\r\n").encode()

    async def invite(self, target: str, identity: str) -> Call:
        call = await self.ua.invite(
            target, self.offer(), extra_headers=[("P-Asserted-Identity", f"<{identity}>")],
            timeout=5,
        )  # fmt: skip
        self.call = call
        answer = SessionDescription.parse(call.remote_sdp)
        section = answer.media[0]
        connection = section.connection or answer.session.connection
        assert connection is not None
        crypto = CryptoAttribute.parse(section.attributes("crypto")[0] or "")
        param = crypto.key_params[0]
        self.group = (SUITE, param.key, param.salt)
        self.media.set_remote((connection.address, section.port))
        self.media.set_keys(tx=self.own, rx=self.group)
        return call

    async def close(self) -> None:
        await self.media.close(bye=False)
        await self.ua.close()


async def talk(
    endpoints: list[SrtpEndpoint], tones: list[float], seconds: float = 1.0
) -> list[list[int]]:
    """Every endpoint sends its tone at once; returns the decoded samples each one received."""
    frames = int(seconds / 0.02)
    await asyncio.gather(
        *(
            endpoint.send_audio(ToneGenerator(tone).frames(frames), endpoint.ssrc)
            for endpoint, tone in zip(endpoints, tones, strict=True)
        )
    )
    await asyncio.sleep(0.3)
    heard: list[list[int]] = []
    for endpoint in endpoints:
        samples: list[int] = []
        for packet in endpoint.drain():
            samples.extend(ulaw_decode(packet.packet.payload))
        heard.append(samples)
    return heard


def ratio(samples: list[int], tone: float) -> float:
    return tone_ratio(samples, tone) if samples else 0.0
