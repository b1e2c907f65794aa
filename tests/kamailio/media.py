"""Media helpers of the Kamailio tests: SRTP participants and what they heard."""

from __future__ import annotations

import asyncio
from typing import Any, Self

from secconf.client.media import SrtpEndpoint
from secconf.client.phone import SUITE, SdesPhone
from secconf.client.sip import Call, UserAgent
from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode

__all__ = ["SUITE", "SdesParticipant", "ratio", "talk"]


class SdesParticipant(SdesPhone):
    """The tests' SDES phone: :class:`secconf.client.phone.SdesPhone` (like linphone, or
    baresip 1.0.0 with ``follow = False``), started without receiver reports by default
    and inviting with a P-Asserted-Identity (the test focus trusts 127.0.0.1)."""

    @classmethod
    async def start(
        cls,
        identity: str,
        ua: UserAgent | None = None,
        *,
        host: str = "127.0.0.1",
        rtcp_interval: float | None = None,
        suite: str = SUITE,
    ) -> Self:
        """A phone on *ua* (e.g. a TLS user agent), else on a new UDP one."""
        return await super().start(
            identity, ua, host=host, rtcp_interval=rtcp_interval, suite=suite
        )

    async def invite(self, target: str, identity: str | None = None, **options: Any) -> Call:
        return await super().invite(target, asserted=identity, **options)


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
