"""sipp as a conference participant through Kamailio + module, edge and Asterisk ConfBridge.

Scenarios in tests/interop/sipp/: ``sdes_join.xml`` offers RTP/SAVP with one
``a=crypto`` (identity asserted from 127.0.0.1), must get a 200 OK with the
conference's group key, stays in the bridge, and hangs up; ``plain_refused.xml``
offers plain RTP and must get 488.  The key in sipp's 200 OK is compared with
the conference's current epoch in Redis, and the edge's and Asterisk's views are
checked while sipp is in the bridge and after it left.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
import time
from pathlib import Path

import pytest

from secconf.asterisk.watcher import Watcher
from secconf.lab.phones.ports import free_rtp_port, free_udp_port
from tests.asterisk.support import bounded, conference_of, phone, wait_for
from tests.interop.conftest import ALICE, PREFIX, SIPP, InteropStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

SCENARIOS = Path(__file__).parent / "sipp"
SIPP_BIN = "/usr/bin/sipp"


async def run_sipp(
    scenario: str, stack: InteropStack, service: str, workdir: Path, **keys: str
) -> tuple[int, str]:
    """Run one sipp call; (exit status, the messages it traced).  sipp's own timeout bounds it."""
    if shutil.which(SIPP_BIN) is None:
        pytest.skip("sipp not installed (apt-get install sip-tester)")
    messages = workdir / f"{scenario}-messages.log"
    errors = workdir / f"{scenario}-errors.log"
    argv = [
        "setpriv", "--pdeathsig", "KILL", SIPP_BIN,
        "-sf", str(SCENARIOS / f"{scenario}.xml"),
        "-s", service, "-m", "1", "-i", "127.0.0.1",
        # sipp's "-p 0" is 5060 and "-mp 0" 6000, which other programs may hold
        "-p", str(free_udp_port()), "-mp", str(free_rtp_port()),
        "-timeout", "15", "-timeout_error", "-recv_timeout", "10000", "-nostdin",
        "-trace_msg", "-message_file", str(messages),
        "-trace_err", "-error_file", str(errors),
        "-key", "identity", SIPP,
    ]  # fmt: skip
    for name, value in keys.items():
        argv += ["-d", value] if name == "hold" else ["-key", name, value]
    argv.append(f"127.0.0.1:{stack.kamailio.port}")
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 25)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"sipp {scenario} did not finish in 25 s") from None
    traced = messages.read_text(errors="replace") if messages.exists() else ""
    if process.returncode != 0:
        detail = errors.read_text(errors="replace") if errors.exists() else ""
        raise AssertionError(
            f"sipp {scenario} exited {process.returncode}:\n{stderr.decode(errors='replace')}"
            f"\n{detail}\n{traced[-3000:]}"
        )
    return process.returncode, traced


def received(traced: str, status: int) -> str:
    """The text of the response with *status* that sipp received (its message trace)."""
    for block in re.split(r"\n-+ [^\n]*\n", traced):
        message = block.split("bytes :\n", 1)[-1].lstrip()
        if block.lstrip().startswith("UDP message received") and message.startswith(
            f"SIP/2.0 {status} "
        ):
            return message
    raise AssertionError(f"no {status} in sipp's trace:\n{traced[-3000:]}")


def test_sipp_joins_with_sdes_gets_the_group_key_and_leaves(
    interop: InteropStack, tmp_path: Path
) -> None:
    async def scenario() -> None:
        watcher = Watcher(interop.watcher_settings("interop-sipp"))
        await watcher.start()
        alice = await phone(ALICE)
        store = interop.store()
        try:
            call_a = await alice.invite(interop.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 1, 5, "alice")
            own = base64.b64encode(secrets.token_bytes(30)).decode()
            started = time.monotonic()
            sipp = asyncio.ensure_future(
                run_sipp(
                    "sdes_join", interop, f"conf-{conference}", tmp_path, inline=own, hold="2500"
                )
            )
            # While sipp is in: a second bridge member, a second edge leg.
            await wait_for(
                lambda: len(watcher.tracker.members(conference)) == 2 or sipp.done(),
                8,
                "sipp's ConfbridgeJoin",
            )
            if sipp.done():
                await sipp  # raises with sipp's own account of what went wrong
            assert {m.caller_id for m in watcher.tracker.members(conference)} == {"alice", "sipp"}
            assert len(interop.conference(conference)["legs"]) == 2
            _, traced = await sipp
            elapsed = time.monotonic() - started
            ok = received(traced, 200)
            match = re.search(r"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:(\S{40})", ok)
            assert match is not None, ok
            material = base64.b64decode(match.group(1))
            group = store.group_key(conference)
            # sipp was given the conference's current group key (epoch 1), as alice was.
            assert (material[:16], material[16:]) == (group.key, group.salt)
            assert alice.group is not None
            assert alice.group[1:] == (group.key, group.salt)
            assert material != base64.b64decode(own)  # the focus never echoes the offer's key
            assert "RTP/SAVP" in ok
            assert "127.0.0.1" in ok  # the edge's external address, not Asterisk's
            # sipp's BYE: it left the bridge and its edge leg is gone.
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 1, 5, "leave")
            await wait_for(
                lambda: len(interop.conference(conference)["legs"]) == 1, 5, "edge leg removed"
            )
            print(f"\nsipp join + 2.5 s hold + BYE: {elapsed:.2f} s")
        finally:
            if alice.call is not None:
                await bounded(alice.call.bye(timeout=2), "alice's BYE")
            await bounded(alice.close(), "close alice")
            await bounded(watcher.close(), "close watcher")
            store.client.close()

    asyncio.run(scenario())


def test_sipp_plain_rtp_offer_is_refused_with_488(interop: InteropStack, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await phone(ALICE)
        store = interop.store()
        try:
            call_a = await alice.invite(interop.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            legs_before = len(interop.conference(conference)["legs"])
            dialogs_before = sorted(store.client.scan_iter(f"{PREFIX}:conf:*:dialog:*"))
            _, traced = await run_sipp("plain_refused", interop, f"conf-{conference}", tmp_path)
            refusal = received(traced, 488)
            # The reason is logged; sipp, not authenticated, gets the status only.
            assert "Warning:" not in refusal, refusal
            # Nothing written: no edge leg, no dialog record.
            assert len(interop.conference(conference)["legs"]) == legs_before
            assert sorted(store.client.scan_iter(f"{PREFIX}:conf:*:dialog:*")) == dialogs_before
        finally:
            if alice.call is not None:
                await bounded(alice.call.bye(timeout=2), "alice's BYE")
            await bounded(alice.close(), "close alice")
            store.client.close()

    asyncio.run(scenario())
