"""A legitimate request's latency next to idle/half-open connections, KMS and edge API.

Run from the repository: ``.venv/bin/python bench/http_slow_clients.py [--trials 20]
[--idle 0,250,500,1000] [--before REV | --no-before] [--json out.json]``.

It starts a redis-server, then for each variant the real ``secconf kms serve`` and
``secconf edge serve`` (defaults for everything under ``[http]``) and, per number of idle
connections N: opens N connections from 127.0.0.2..127.0.0.30 (half send nothing, half a
partial request head), then times ``--trials`` legitimate requests from 127.0.0.1, each on a
fresh connection: a Ticket Request through the project's KMS client (verified), and the edge's
``GET /v1/conferences/{c}`` (200 with its epoch).  Last, the same with 64 idle connections from
the legitimate client's own address (the per-source cap's documented limit).

Variants: "after" is this tree; "before" is the code of ``--before REV`` (default: the parent
of the commit that added plugin/secconf/httpguard.py), unpacked with ``git archive`` and put
first on PYTHONPATH of the service processes.  A failed request (503, connection closed,
timeout) counts in the "ok" column and not in the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from secconf.core.errors import SecconfError
from secconf.core.mikey import ticket as mikey_ticket
from secconf.kms.async_client import KmsClient
from secconf.lab.services.edge import EdgeProcess
from secconf.lab.services.kms import KmsProcess
from secconf.lab.services.redis_server import RedisProcess
from secconf.store.keywrap import load_key_file

ROOT = Path(__file__).resolve().parents[1]
KMS_ID = "sip:kms.bench.invalid"
ALICE, BOB = "sip:alice@bench.invalid", "sip:bob@bench.invalid"
ATTACKERS = [f"127.0.0.{n}" for n in range(2, 31)]
LEGIT = "127.0.0.1"
SAME_SOURCE = 64
PARTIAL_HEAD = b"POST /mikey/v1/request HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
KEY = {
    "suite": "AES_CM_128_HMAC_SHA1_80",
    "key": base64.b64encode(bytes(range(16))).decode(),
    "salt": base64.b64encode(bytes(range(14))).decode(),
}


@dataclass
class Row:
    service: str
    variant: str
    idle: str
    ok: int
    trials: int
    median_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    held: int


# -- idle connections -----------------------------------------------------------------------


@contextlib.contextmanager
def idle_connections(
    address: tuple[str, int], count: int, sources: list[str]
) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for n in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((sources[n % len(sources)], 0))
            sock.settimeout(5.0)
            try:
                sock.connect(address)
                if n % 2:
                    sock.sendall(PARTIAL_HEAD)
            except OSError:
                pass  # refused by a cap: counted as not held
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        time.sleep(0.5)  # let the server see the FINs


def held(sockets: list[socket.socket]) -> int:
    """Connections the server has neither closed nor answered."""
    count = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


# -- legitimate requests --------------------------------------------------------------------


Trials = Callable[[int], Awaitable[list[float | None]]]


def _clock(ok: bool, started: float) -> float | None:
    return time.perf_counter() - started if ok else None


def kms_trials(kms: KmsProcess, psk: bytes) -> Trials:
    """Ticket Requests through the project's client (it opens a fresh connection per call)."""
    client = KmsClient(kms.url, KMS_ID, ALICE, psk, timeout=5.0)

    async def run(trials: int) -> list[float | None]:
        results = []
        for _ in range(trials):
            desired = mikey_ticket.DesiredPolicy(recipients=(BOB,), valid_until=time.time() + 600)
            started = time.perf_counter()
            try:
                issued = await client.request_ticket(desired)
                ok = BOB in issued.policy.recipients
            except SecconfError:
                ok = False
            results.append(_clock(ok, started))
        return results

    return run


def edge_trials(edge: EdgeProcess) -> Trials:
    """GET /v1/conferences/bench, each on a fresh connection (no keep-alive) from 127.0.0.1."""
    headers = {"authorization": f"Bearer {edge.token}"}
    url = f"{edge.url}/v1/conferences/bench"

    async def run(trials: int) -> list[float | None]:
        transport = httpx.AsyncHTTPTransport(
            local_address=LEGIT, limits=httpx.Limits(max_keepalive_connections=0)
        )
        results = []
        async with httpx.AsyncClient(
            transport=transport, headers=headers, timeout=5.0, trust_env=False
        ) as http:
            for _ in range(trials):
                started = time.perf_counter()
                try:
                    answer = await http.get(url)
                    ok = answer.status_code == 200 and answer.json()["epochs"][0]["epoch"] == 1
                except httpx.HTTPError:
                    ok = False
                results.append(_clock(ok, started))
        return results

    return run


def measure(
    service: str,
    variant: str,
    url: str,
    trials_of: Trials,
    idle_counts: list[int],
    trials: int,
) -> list[Row]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    address = (parts.hostname, parts.port)
    scenarios = [(str(n), n, ATTACKERS) for n in idle_counts]
    scenarios.append((f"{SAME_SOURCE} from {LEGIT}", SAME_SOURCE, [LEGIT]))
    rows = []
    for label, count, sources in scenarios:
        with idle_connections(address, count, sources) as sockets:
            results = asyncio.run(trials_of(trials))
            still = held(sockets)
        good = sorted(1000 * r for r in results if r is not None)
        p95 = good[min(len(good) - 1, round(0.95 * (len(good) - 1)))] if good else None
        median = statistics.median(good) if good else None
        worst = good[-1] if good else None
        rows.append(Row(service, variant, label, len(good), trials, median, p95, worst, still))
        print(_line(rows[-1]), flush=True)
    return rows


# -- variants -------------------------------------------------------------------------------


def default_before() -> str | None:
    """The parent of the commit that added the guard (None outside a git checkout)."""
    result = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--",
         "plugin/secconf/httpguard.py"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    added = result.stdout.split()
    return f"{added[-1]}^" if result.returncode == 0 and added else None


@contextlib.contextmanager
def old_code(rev: str, directory: Path) -> Iterator[str]:
    """``plugin/`` of *rev* unpacked in *directory*, first on PYTHONPATH meanwhile."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "plugin"],
        capture_output=True, check=True,
    )  # fmt: skip
    tar_path = directory / "plugin.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(directory)  # noqa: S202 - this repository's own archive
    if (directory / "plugin" / "secconf" / "httpguard.py").exists():
        raise SystemExit(f"{rev} already has the guard: pick an older --before")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(directory / "plugin")
    try:
        yield commit
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def run_variant(
    variant: str, workdir: Path, redis_url: str, idle_counts: list[int], trials: int
) -> list[Row]:
    rows = []
    # Alice asks for every ticket of the run: her limit (docs/kms.md) must not be what is measured.
    tickets = {"max_per_user": 100_000_000}
    with KmsProcess(
        workdir / "kms", redis_url, identity=KMS_ID, prefix=variant.split()[0], tickets=tickets
    ) as kms:
        psk = load_key_file(kms.add_user(ALICE), "PSK")
        kms.add_user(BOB)
        rows += measure("kms", variant, kms.url, kms_trials(kms, psk), idle_counts, trials)
    with EdgeProcess(workdir / "edge") as edge:
        created = httpx.put(
            f"{edge.url}/v1/conferences/bench/epochs/1",
            json=KEY,
            headers={"authorization": f"Bearer {edge.token}"},
            trust_env=False,
        )
        created.raise_for_status()
        rows += measure("edge", variant, edge.url, edge_trials(edge), idle_counts, trials)
    return rows


# -- output ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


HEADER = (
    "| service | variant | idle connections | ok | median ms | p95 ms | max ms | idle still held |"
)


def _line(row: Row) -> str:
    return (
        f"| {row.service} | {row.variant} | {row.idle} | {row.ok}/{row.trials} | "
        f"{_ms(row.median_ms)} | {_ms(row.p95_ms)} | {_ms(row.max_ms)} | {row.held} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="requests per row")
    parser.add_argument("--idle", default="0,250,500,1000", help="idle connection counts")
    parser.add_argument("--before", help="git revision of the unprotected code")
    parser.add_argument("--no-before", action="store_true", help="measure this tree only")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    idle_counts = [int(n) for n in args.idle.split(",") if n]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"# {platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, Linux "
        f"{platform.release()}, Python {platform.python_version()}; RLIMIT_NOFILE {hard}",
        flush=True,
    )
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="secconf-slow-"))
    try:
        with RedisProcess(workdir / "redis") as redis_process:
            before = None if args.no_before else (args.before or default_before())
            if before is not None:
                old = workdir / "before"
                old.mkdir()
                with old_code(before, old) as commit:
                    rows += run_variant(
                        f"before ({commit})", old, redis_process.url, idle_counts, args.trials
                    )
            rows += run_variant(
                "after", workdir / "after", redis_process.url, idle_counts, args.trials
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
