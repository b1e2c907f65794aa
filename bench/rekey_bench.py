"""Rekey benchmark: a leave in a conference of 5, 20 and 50 through the real Asterisk ConfBridge.

Run as root (Asterisk runs chrooted in the cached Debian sid tree):
``.venv/bin/python bench/rekey_bench.py [--sizes 5 20 50] [--debounce 0.5]``.

Everything real, on loopback: redis-server, the media edge (``secconf edge
serve``), Asterisk 22 ConfBridge, Kamailio 5.6 with the secconf module (SDES,
P-Asserted-Identity trusted from 127.0.0.1) and the roster watcher
(:class:`secconf.asterisk.watcher.Watcher`).  The participants are SDES phones
(:class:`secconf.client.phone.SdesPhone`: SRTP with pylibsrtp, their own sending
key, the group key from the focus, receiver reports every 0.3 s, and, like
linphone, a receive-key switch when they answer a re-INVITE).

Per size: everybody joins (joins do not rekey here), the watcher sees them all,
one member sends BYE, and the watcher's rekey report gives the times.  Reported:

- leave -> rekey start (the debounce window), mint (Redis + edge), and
  **leave -> every remaining leg on the new epoch** (each leg switched at its
  phone's 200 OK passing Kamailio), leave -> the edge's verdicts settled;
- re-INVITEs per rekey: re-INVITEs the phones received during the rekey
  (one per remaining member is the floor);
- CPU seconds of Asterisk, Kamailio (all processes), the edge and this process
  (the phones) from the BYE to the settled report, as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from secconf.asterisk.ami import AmiSettings
from secconf.asterisk.watcher import Watcher
from secconf.asterisk.watcher_settings import WatcherSettings
from secconf.client.phone import SdesPhone
from secconf.core.roster import RekeyPolicy, RekeyReason
from secconf.focus.settings import load_settings
from secconf.lab.services.asterisk import AsteriskProcess, processes_in, restore_asterisk_tree
from secconf.lab.services.edge import EdgeProcess
from secconf.lab.services.kamailio import KamailioProcess
from secconf.lab.services.redis_server import RedisProcess
from secconf.store import generate_key_file

TICK = os.sysconf("SC_CLK_TCK")
ALICE, BOB = "sip:alice@example.com", "sip:bob@example.com"
SETTINGS = f"""
[focus]
domain = "conf.bench.invalid"

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
allowed = ["{BOB}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "scrkb"
kek_file = "@KEK@"
kek_id = "bench-kek"

[edge]
timeout = 1.0
"""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of *pids* (fields 14 and 15 of /proc/PID/stat), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def kamailio_pids(main_pid: int) -> list[int]:
    """Kamailio's main process and its children."""
    pids = [main_pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == main_pid:
                    pids.append(int(entry))
    return pids


@dataclass
class SizeResult:
    size: int
    debounce_ms: float
    mint_ms: float
    all_switched_ms: float | None
    settled_ms: float
    reinvites: int
    verdicts: dict[str, int]
    cpu: dict[str, float]
    wall: float
    #: the storm: back-to-back rekeys after the leave (count, seconds, CPU shares,
    #: worst "all legs on the new epoch" from each rekey's start)
    storm: tuple[int, float, dict[str, float], float] | None = None


async def measure(size: int, args: argparse.Namespace, stack: dict[str, object]) -> SizeResult:
    kamailio = stack["kamailio"]
    asterisk = stack["asterisk"]
    edge = stack["edge"]
    if not isinstance(kamailio, KamailioProcess) or not isinstance(asterisk, AsteriskProcess):
        raise TypeError("stack")
    if not isinstance(edge, EdgeProcess):
        raise TypeError("stack")
    focus = load_settings(kamailio.settings_path, env=kamailio.env)
    watcher = Watcher(
        WatcherSettings(
            ami=AmiSettings(
                port=asterisk.ami_port, username=asterisk.ami_user, secret=asterisk.ami_secret
            ),
            focus=focus,
            policy=RekeyPolicy(debounce=args.debounce, rekey_on_join=False),
            watcher_id="bench-watcher",
            refresh_timeout=10.0,
            verify_timeout=15.0,
            poll_interval=0.02,
            max_parallel=args.max_parallel,
        )
    )
    phones: list[SdesPhone] = []
    try:
        await watcher.start()
        # Identities: the shipped demo policy allows Alice to create and Bob/Carol to join;
        # every phone asserts one of the allowed identities (the focus keys dialogs by
        # Call-ID, so one identity may hold several calls).
        identities = [ALICE] + [BOB] * (size - 1)
        for identity in identities:
            phones.append(await SdesPhone.start(identity))
        target = f"sip:conf-factory@127.0.0.1:{kamailio.port}"
        first = await phones[0].invite(target, asserted=ALICE)
        header = first.response.get("X-Secconf-Conference") if first.response else None
        if header is None:
            raise RuntimeError("no conference created")
        conference = header.split("conf-", 1)[1].split("@", 1)[0]
        join_uri = f"sip:conf-{conference}@127.0.0.1:{kamailio.port}"
        for start in range(1, size, 10):  # joins in groups of ten
            await asyncio.gather(
                *(p.invite(join_uri, asserted=BOB) for p in phones[start : start + 10])
            )
        deadline = time.monotonic() + 30
        while len(watcher.tracker.members(conference)) < size:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the watcher saw {len(watcher.tracker.members(conference))}/{size} members"
                )
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # receiver reports flowing on every leg
        invites_before = sum(len(p.reoffers) for p in phones)
        leaver = phones[-1]
        pids = {
            "asterisk": processes_in(asterisk.tree),
            "kamailio": kamailio_pids(kamailio.pid) if kamailio.pid else [],
            "edge": [edge.process.pid] if edge.process else [],
            "phones": [os.getpid()],
        }
        cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
        waiter = asyncio.ensure_future(watcher.next_report(60))
        bye_at = time.monotonic()
        if leaver.call is None:
            raise RuntimeError("the leaver has no call")
        await leaver.call.bye(timeout=5)
        report = await asyncio.wait_for(waiter, 60)
        wall = time.monotonic() - bye_at
        cpu = {name: (cpu_seconds(p) - cpu_before[name]) / wall for name, p in pids.items()}
        counts: dict[str, int] = {}
        for verdict in report.verdicts.values():
            counts[verdict] = counts.get(verdict, 0) + 1
        reinvites = sum(len(p.reoffers) for p in phones) - invites_before
        storm = None
        if args.storm:
            # A rekey storm: the next rekey asked for as soon as the previous one settled.
            storm_before = {name: cpu_seconds(p) for name, p in pids.items()}
            storm_start = time.monotonic()
            worst = 0.0
            for _ in range(args.storm):
                waiter = asyncio.ensure_future(watcher.next_report(60))
                watcher.tracker.request_rekey(conference, watcher.clock(), RekeyReason.PERIODIC)
                watcher.follower.wake()
                each = await asyncio.wait_for(waiter, 60)
                if each.all_switched is None:
                    raise RuntimeError(f"storm rekey to epoch {each.epoch} never switched")
                worst = max(worst, each.all_switched - each.started)
            storm_wall = time.monotonic() - storm_start
            storm = (
                args.storm,
                storm_wall,
                {n: (cpu_seconds(p) - storm_before[n]) / storm_wall for n, p in pids.items()},
                worst,
            )
        return SizeResult(
            size=size,
            debounce_ms=(report.started - bye_at) * 1000,
            mint_ms=(report.minted - report.started) * 1000,
            all_switched_ms=None
            if report.all_switched is None
            else (report.all_switched - bye_at) * 1000,
            settled_ms=(report.settled - bye_at) * 1000,
            reinvites=reinvites,
            verdicts=counts,
            cpu=cpu,
            wall=wall,
            storm=storm,
        )
    finally:
        for phone in phones:
            if phone.call is not None and phone is not phones[-1]:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.call.bye(timeout=2), 3)
        for phone in phones:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.close(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watcher.close(), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--debounce", type=float, default=0.5, help="watcher debounce (s)")
    parser.add_argument("--max-parallel", type=int, default=16, help="refreshes in flight")
    parser.add_argument(
        "--storm", type=int, default=0, help="after the leave: this many back-to-back rekeys"
    )
    args = parser.parse_args()
    console = Console(width=170)
    if os.geteuid() != 0:
        sys.exit("run as root: Asterisk runs chrooted in the cached Debian sid tree")
    results: list[SizeResult] = []
    workdir = Path(tempfile.mkdtemp(prefix="secconf-rekey-bench-"))
    try:
        with contextlib.ExitStack() as services:
            redis = services.enter_context(RedisProcess(workdir / "redis"))
            edge = services.enter_context(EdgeProcess(workdir / "edge"))
            restore_asterisk_tree(workdir / "tree")
            asterisk = services.enter_context(AsteriskProcess(workdir / "tree"))
            kek = workdir / "kek"
            generate_key_file(kek)
            kamailio = services.enter_context(
                KamailioProcess(
                    workdir / "kamailio",
                    SETTINGS.replace("@KEK@", str(kek)),
                    env={
                        "SECCONF_REDIS_URL": redis.url,
                        "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk.sip_port}",
                        **edge.focus_env,
                        **asterisk.focus_env,  # the join tokens' shared secret
                    },
                    children=4,
                )
            )
            stack: dict[str, object] = {"kamailio": kamailio, "asterisk": asterisk, "edge": edge}
            for size in args.sizes:
                console.log(f"conference of {size}: joining, then one leaves")
                result = asyncio.run(asyncio.wait_for(measure(size, args, stack), 300))
                console.log(result)
                results.append(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = Table(
        title=f"Rekey after a leave, real Asterisk ConfBridge; debounce {args.debounce * 1000:.0f}"
        f" ms, {os.cpu_count()} CPUs; times from the BYE"
    )
    for column in ("members", "rekey start", "mint", "all legs on new epoch", "verdicts settled",
                   "re-INVITEs", "verdicts", "CPU (share of a core) ast/kam/edge/phones"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            str(r.size),
            f"{r.debounce_ms:.0f} ms",
            f"{r.mint_ms:.0f} ms",
            "never" if r.all_switched_ms is None else f"{r.all_switched_ms:.0f} ms",
            f"{r.settled_ms:.0f} ms",
            f"{r.reinvites} for {r.size - 1} legs",
            ", ".join(f"{v} {k}" for k, v in sorted(r.verdicts.items())),
            "/".join(f"{r.cpu[k]:.2f}" for k in ("asterisk", "kamailio", "edge", "phones")),
        )
    console.print(table)
    storms = [r for r in results if r.storm is not None]
    if storms:
        table = Table(title="Rekey storm: back-to-back rekeys (each asked as the previous settled)")
        for column in ("members", "rekeys", "seconds", "worst start -> all legs switched",
                       "CPU (share of a core) ast/kam/edge/phones"):  # fmt: skip
            table.add_column(column, justify="right")
        for r in storms:
            count, seconds, shares, worst = r.storm  # type: ignore[misc]
            table.add_row(
                str(r.size), str(count), f"{seconds:.1f}", f"{worst * 1000:.0f} ms",
                "/".join(f"{shares[k]:.2f}" for k in ("asterisk", "kamailio", "edge", "phones")),
            )  # fmt: skip
        console.print(table)


if __name__ == "__main__":
    main()
