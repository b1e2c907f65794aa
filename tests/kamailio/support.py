"""What the focus tests share besides their fixtures: the mixer's side, rekeys, the edge's view.

Test modules import these from here, never from one another; the fixtures (Kamailio with the
module, the stand-in mixer, the KMS) are in conftest.py.
"""

from __future__ import annotations

import asyncio

from secconf.client.sip import Call, UserAgent
from secconf.focus.rekey import rekey
from secconf.focus.settings import load_settings
from tests.fixtures.edge_server import RunningEdge

from .conftest import Focus, Upstream

TONE_A, TONE_B = 440.0, 1000.0

MIXER_OFFER = (
    b"v=0\r\no=asterisk 1 1 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 40010 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtcp-mux\r\na=sendrecv\r\n"
)


def dial(mixer: UserAgent, focus: Focus, target: str, conference: str | None) -> asyncio.Future:
    """The mixer's dial-out INVITE as Asterisk sends it through kamailio-out."""
    headers = [("Route", f"<sip:127.0.0.1:{focus.server.port};lr>")]
    if conference is not None:
        headers.append(("X-Secconf-Conference", conference))
    outgoing = mixer.place_call(target, MIXER_OFFER, extra_headers=headers)
    return asyncio.ensure_future(outgoing.answered(5))


async def _mixer_calls(upstream: Upstream, n: int) -> dict[str, Call]:
    assert upstream.ua is not None
    calls = [await upstream.ua.next_call(5) for _ in range(n)]
    return {call.call_id: call for call in calls}


def _conference_id(call: Call) -> str:
    header = call.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
    assert header is not None
    return header.split("conf-", 1)[1].split("@", 1)[0]


def _rekey(focus: Focus, conference: str) -> int:
    settings = load_settings(focus.server.settings_path, env=focus.server.extra_env)
    return rekey(conference, settings)


def _leg_epochs(edge: RunningEdge, conference: str) -> list[int]:
    return sorted(leg["epoch"] for leg in edge.get(f"/v1/conferences/{conference}")["legs"])


def _epochs(edge: RunningEdge, conference: str) -> list[int]:
    return [e["epoch"] for e in edge.get(f"/v1/conferences/{conference}")["epochs"]]
