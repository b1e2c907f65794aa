"""What the end-to-end tests share: the e2e stack's settings and fixture, phones, waits, tone checks.

Test modules import from here, never from one another.  :func:`stack` is a module-scoped
fixture: a module that uses it imports it (``# noqa: F401``) and gets its own stack, with
the module TOML :data:`SETTINGS` (SDES over UDP, alice creates, bob and carol allowed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from secconf.asterisk.ami import AmiClient, AmiSettings
from secconf.client.sip import Call
from secconf.core.g711 import ulaw_decode
from tests.asterisk.stack import Stack, running_stack
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.media import SdesParticipant, ratio

ALICE, BOB, CAROL = "sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"
TONE = 440.0
PREFIX = "sce2e"

SETTINGS = f"""
[focus]
domain = "conf.test.invalid"
server_name = "focus.e2e"

[lab]
# The test UAs send SDES over UDP (tests/security checks the TLS-only default).
sdes_over_udp = true

[identity]
trusted_sources = ["udp:127.0.0.1"]

[limits]
# Functional tests and benchmarks hold many dialogs per identity (tests/security checks the limit).
dialogs_per_identity = 1000
refers_per_minute = 600

[policy]
creators = ["{ALICE}"]
allowed = ["{BOB}", "{CAROL}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "{PREFIX}"
kek_file = "@KEK@"
kek_id = "e2e-kek"

[edge]
timeout = 1.0
"""


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("e2e"), SETTINGS,
    ) as running:  # fmt: skip
        yield running


async def phone(identity: str) -> SdesParticipant:
    """An SDES phone sending receiver reports every ~0.3 s (the edge verifies switches)."""
    return await SdesParticipant.start(identity, rtcp_interval=0.3)


def conference_of(call: Call) -> str:
    header = call.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
    assert header is not None
    return header.split("conf-", 1)[1].split("@", 1)[0]


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def bounded(step: Awaitable[object], what: str, timeout: float = 5.0) -> None:
    """Teardown steps never hang the test."""
    try:
        await asyncio.wait_for(step, timeout)
    except TimeoutError:
        tasks = "\n".join(repr(task) for task in asyncio.all_tasks())
        raise AssertionError(f"{what} took longer than {timeout} s; tasks:\n{tasks}") from None


def heard(participant: SdesParticipant) -> list[int]:
    """What the participant decoded since the last call, without the silence around the tone.

    The mixer sends all the time (silence when nobody talks); the Goertzel ratio is the
    tone's share of the whole buffer, so leading and trailing silence is cut off.
    """
    samples: list[int] = []
    for packet in participant.media.drain():
        samples.extend(ulaw_decode(packet.packet.payload))
    loud = [index for index, sample in enumerate(samples) if abs(sample) > 1000]
    return samples[loud[0] : loud[-1] + 1] if loud else []


CONTROL_TONE = 1000.0  # a frequency nobody sends: the mix's energy there is noise only


def assert_tone(samples: list[int]) -> None:
    """*samples* carry the tone A sent: most of their energy is at TONE, none at a control tone.

    Under load Asterisk's mix fills late frames with silence, which lowers the tone's
    share without making it any less the tone; the control frequency tells noise apart.
    """
    assert len(samples) >= 4000, f"only {len(samples)} samples of audio"
    at_tone, at_control = ratio(samples, TONE), ratio(samples, CONTROL_TONE)
    assert at_tone > 0.5, (at_tone, at_control)
    assert at_tone > 20 * at_control, (at_tone, at_control)


def ami_client(server: AsteriskServer) -> AmiClient:
    """An AMI client of the session's Asterisk, with short timeouts."""
    return AmiClient(
        AmiSettings(
            port=server.ami_port,
            username=server.ami_user,
            secret=server.ami_secret,
            connect_timeout=2.0,
            action_timeout=2.0,
        )
    )
