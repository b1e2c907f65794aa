"""Interop with SIPp (Debian sip-tester) as a real peer, over UDP on loopback."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from secconf.client.sip import Answer, IncomingRequest, UserAgent
from tests.fixtures.ports import free_udp_port

pytestmark = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"
)

OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


@contextmanager
def sipp(*args: str, port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run sipp for one call (-m 1) with a global timeout; always killed and reaped."""
    command = [
        "sipp", *args, "-i", "127.0.0.1", "-p", str(port or free_udp_port()), "-mp", str(free_udp_port()),
        "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def wait(process: subprocess.Popen[bytes]) -> int:
    return process.wait(timeout=30)


def test_our_uac_calls_sipp_uas() -> None:
    port = free_udp_port()

    async def main() -> int:
        with sipp("-sn", "uas", port=port) as process:
            await asyncio.sleep(0.3)  # let sipp bind
            ua = await UserAgent.start("127.0.0.1", identity="sip:alice@example.com")
            try:
                call = await ua.invite(f"sip:service@127.0.0.1:{port}", OFFER, timeout=10)
                assert call.response is not None
                assert call.response.status == 200
                assert call.remote_sdp.startswith(b"v=0")
                assert (
                    call.dialog.remote_tag.endswith("SIPpTag011")
                    or "SIPpTag" in call.dialog.remote_tag
                )
                bye = await call.bye(timeout=10)
                assert bye.status == 200
            finally:
                await ua.close()
            return await asyncio.to_thread(wait, process)

    assert asyncio.run(main()) == 0  # sipp: every call succeeded


def test_sipp_uac_calls_our_uas() -> None:
    async def main() -> int:
        ua = await UserAgent.start("127.0.0.1", identity="sip:service@example.com")
        invites: list[IncomingRequest] = []

        async def on_invite(incoming: IncomingRequest) -> Answer:
            invites.append(incoming)
            return Answer(200, OFFER, "application/sdp")

        ua.on_invite = on_invite
        try:
            with sipp("-sn", "uac", f"127.0.0.1:{ua.local_port}") as process:
                call = await ua.next_call(15)  # INVITE answered and ACKed
                await call.wait_ended(15)  # sipp hangs up with BYE
                assert call.ended_by_remote
                assert invites[0].request.get("subject") == "Performance Test"
                return await asyncio.to_thread(wait, process)
        finally:
            await ua.close()

    assert asyncio.run(main()) == 0
