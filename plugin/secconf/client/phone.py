"""An SDES phone (RFC 4568) for conferences: what linphone does, on secconf's own SIP and SRTP.

It offers ``a=crypto`` with its own sending key and receives with the key the
focus answers (the conference's group key).  On a re-INVITE from the focus it
switches its receive key **when it sends the 200 OK** and keeps its own sending
key, as linphonec 5.1.65 does (DESIGN.md §2); with ``follow = False`` it accepts
the new key in signalling but keeps decrypting with the old one, as baresip
1.0.0 does.  It can answer the focus's dial-out (``accept_calls``) and send
receiver reports so the media edge can verify that it switched.

Used by ``make demo``, the benchmarks and the tests.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Self

from ..core.errors import NotAcceptable
from ..core.g711 import tone_share, ulaw_decode
from ..core.sdes import CryptoAttribute, CryptoSuite
from ..core.sdp import SessionDescription
from ..srtp import supported_suite
from .media import KeyMaterial, SrtpEndpoint
from .sip import Answer, Call, IncomingRequest, UserAgent

__all__ = ["SUITE", "SdesPhone"]

#: The suite a phone offers unless started with another (the conference's must match).
SUITE = "AES_CM_128_HMAC_SHA1_80"


def _crypto_key(section_crypto: list[str | None], suite: str) -> tuple[int, KeyMaterial]:
    if len(section_crypto) != 1:
        raise NotAcceptable("expected exactly one a=crypto from the focus")
    crypto = CryptoAttribute.parse(section_crypto[0] or "")
    if crypto.suite.name != suite:
        raise NotAcceptable(f"unexpected suite {crypto.suite.name}")
    param = crypto.key_params[0]
    return crypto.tag, (suite, param.key, param.salt)


@dataclass
class SdesPhone:
    """One SDES phone: a SIP user agent, an SRTP endpoint and its own sending key."""

    ua: UserAgent
    media: SrtpEndpoint
    own: KeyMaterial = field(repr=False)
    call: Call | None = None
    group: KeyMaterial | None = field(default=None, repr=False)
    #: answer re-INVITEs with this status instead of following them
    refuse: int | None = None
    #: the focus's re-offers, in order
    reoffers: list[bytes] = field(default_factory=list, repr=False)
    #: answer new calls (the focus's dial-out) instead of 480
    accept_calls: bool = False
    #: False: like baresip 1.0.0, take a new key in signalling but keep decrypting with the old
    follow: bool = True

    @classmethod
    async def start(
        cls,
        identity: str,
        ua: UserAgent | None = None,
        *,
        host: str = "127.0.0.1",
        rtcp_interval: float | None = 0.3,
        suite: str = SUITE,
    ) -> Self:
        """A phone on *ua* (e.g. a TLS user agent), else on a new UDP one on *host*.

        *suite*: the SDES suite it offers and accepts (e.g. RFC 6188's AES_256_CM_HMAC_SHA1_80).
        """
        known = supported_suite(suite)
        ua = ua or await UserAgent.start(host, identity=identity)
        media = await SrtpEndpoint.open(host, rtcp_interval=rtcp_interval)
        material = secrets.token_bytes(known.key_salt_length)
        phone = cls(
            ua, media, (known.name, material[: known.key_length], material[known.key_length :])
        )
        ua.on_invite = phone._on_invite
        return phone

    def offer(self, tag: int = 1) -> bytes:
        """The phone's SDP: RTP/SAVP, PCMU, rtcp-mux, its own key under *tag*, its SSRC."""
        suite, key, salt = self.own
        inline = base64.b64encode(key + salt).decode()
        host, port = self.media.local_address
        lines = [
            "v=0", f"o=- 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
            f"m=audio {port} RTP/SAVP 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux",
            f"a=crypto:{tag} {suite} inline:{inline}",
            f"a=ssrc:{self.media.ssrc} cname:secconf", "a=sendrecv",
        ]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n").encode()

    async def invite(
        self,
        target: str,
        *,
        asserted: str | None = None,
        credentials: tuple[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Call:
        """Call the factory or a conference; receive with the group key of the answer.

        *asserted*: a P-Asserted-Identity (from a trusted source only);
        *credentials*: ``(user, password)`` for a digest challenge.
        """
        headers = [("P-Asserted-Identity", f"<{asserted}>")] if asserted else []
        call = await self.ua.invite(
            target, self.offer(), extra_headers=headers, timeout=timeout, credentials=credentials
        )
        self.call = call
        answer = SessionDescription.parse(call.remote_sdp)
        section = answer.media[0]
        connection = section.connection or answer.session.connection
        if connection is None:
            raise NotAcceptable("the focus's answer has no connection address")
        _, self.group = _crypto_key(section.attributes("crypto"), self.suite)
        self.media.set_remote((connection.address, section.port))
        self.media.set_keys(tx=self.own, rx=self.group)
        return call

    async def _on_invite(self, incoming: IncomingRequest) -> Answer:
        if incoming.call is None:
            return self._answer_call(incoming) if self.accept_calls else Answer(480)
        self.reoffers.append(incoming.body)
        if self.refuse is not None:
            return Answer(self.refuse)
        try:
            crypto = SessionDescription.parse(incoming.body).media[0].attributes("crypto")
            tag, offered = _crypto_key(crypto, self.suite)
        except (NotAcceptable, ValueError, IndexError):
            return Answer(488)
        if offered != self.group and self.follow:
            # linphone: the receive key changes with the 200 OK, no overlap (grace 0).
            self.media.rekey(rx=offered, grace=0.0)
            self.group = offered
        return Answer(200, self.offer(tag=tag), "application/sdp")

    def _answer_call(self, incoming: IncomingRequest) -> Answer:
        """The focus calls (dial-out): receive with the offered group key, answer SDES."""
        try:
            offer = SessionDescription.parse(incoming.body)
            section = offer.media[0]
            if section.proto != "RTP/SAVP":
                return Answer(488)
            tag, group = _crypto_key(section.attributes("crypto"), self.suite)
        except (NotAcceptable, ValueError, IndexError):
            return Answer(488)
        connection = section.connection or offer.session.connection
        if connection is None:
            return Answer(488)
        self.group = group
        self.media.set_remote((connection.address, section.port))
        self.media.set_keys(tx=self.own, rx=self.group)
        return Answer(200, self.offer(tag=tag), "application/sdp")

    @property
    def suite(self) -> str:
        """The SDES suite of this phone (its own key's; the group key must be in it too)."""
        suite = self.own[0]
        return suite.name if isinstance(suite, CryptoSuite) else suite

    def heard(self, tone: float, control: float = 1000.0) -> float:
        """Share of *tone* in what arrived since the last call, silence around it cut off.

        0.0 when less than half a second of audio came or its energy at *tone*
        is not clearly (20 times) above that at *control*, which nobody sends.
        """
        samples: list[int] = []
        for packet in self.media.drain():
            samples.extend(ulaw_decode(packet.packet.payload))
        return tone_share(samples, tone, control)

    async def close(self) -> None:
        await self.media.close(bye=False)
        await self.ua.close()
