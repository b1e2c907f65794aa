"""KMS benchmark: REQUEST and RESOLVE round trips against a real KMS and Redis.

Run with ``.venv/bin/python bench/kms_bench.py [--seconds 5] [--concurrency 16]``.
It starts its own redis-server and ``secconf kms serve`` on free loopback
ports, provisions two identities, then measures for a fixed time each:

* ``/healthz`` (the same HTTP stack and one Redis round trip: the ceiling of
  this stack and of this load generator together),
* REQUEST_INIT -> REQUEST_RESP, each a fresh, fully verified ticket,
* RESOLVE_INIT -> RESOLVE_RESP of one ticket (fresh RANDs each time),

and reports requests/s, p50/p99 latency and the ratio to ``/healthz``; then
the core-only cost of reading and verifying a TRANSFER_INIT, in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from secconf.core.mikey import GenericIdEntry, SrtpSessionData
from secconf.core.mikey import ticket as mt
from secconf.lab.services.redis_server import RedisProcess
from secconf.store import KeyWrapper, UserStore, connect, generate_key_file, load_key_file

SECCONF = str(Path(sys.executable).parent / "secconf")
KMS_ID = "sip:kms.bench.invalid"
ALICE = "sip:alice@bench.invalid"
FACTORY = "sip:factory@bench.invalid"
MIKEY = {"content-type": "application/mikey"}


def _start_kms(workdir: Path, redis_url: str, kek: Path) -> tuple[subprocess.Popen[str], str]:
    config = workdir / "kms.toml"
    config.write_text(
        f'[kms]\nidentity = "{KMS_ID}"\nport = 0\nkek_file = "{kek}"\n'
        f'[redis]\nurl = "{redis_url}"\ntimeout = 1.0\nprefix = "bench"\n'
        # One user asks for every ticket of the run: lift its limit (docs/kms.md).
        "[tickets]\nmax_per_user = 100000000\n"
    )
    process = subprocess.Popen(
        [SECCONF, "kms", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "listening on" in line:
            # Keep draining its log, or a full pipe would stall the KMS.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, "http://" + line.rsplit(" ", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise SystemExit("KMS did not start")


async def _provision(redis_url: str, kek: Path, psks: dict[str, bytes]) -> None:
    client = connect(redis_url, timeout=2)
    try:
        users = UserStore(client, KeyWrapper(load_key_file(kek), "kek-1"), "bench")
        for identity, psk in psks.items():
            await users.add(identity, psk)
    finally:
        await client.aclose()


async def _measure(
    seconds: float, concurrency: int, one: Callable[[httpx.AsyncClient], Awaitable[None]]
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=10) as http:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    await one(http)
                except Exception:  # counted and reported, never hidden
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies, errors


def _row(table: Table, name: str, result: tuple[float, list[float], int], base: float) -> float:
    elapsed, latencies, errors = result
    rate = len(latencies) / elapsed
    ordered = sorted(latencies) or [float("nan")]
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    ratio = f"{rate / base:.2f}" if base else "1.00"
    table.add_row(name, f"{len(latencies)}", f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
                  ratio, str(errors))  # fmt: skip
    return rate


async def _bench(url: str, psks: dict[str, bytes], seconds: float, concurrency: int) -> Table:
    alice, factory = psks[ALICE], psks[FACTORY]
    desired = mt.DesiredPolicy(recipients=(FACTORY,), valid_until=time.time() + 3600)

    async def healthz(http: httpx.AsyncClient) -> None:
        (await http.get(url + "/healthz")).raise_for_status()

    async def request(http: httpx.AsyncClient) -> None:
        pending = mt.build_request_init(
            initiator=ALICE, kms=KMS_ID, psk=alice, desired=desired, now=time.time(),
            random_bytes=secrets.token_bytes,
        )  # fmt: skip
        response = await http.post(url + "/mikey/v1/request", content=pending.data, headers=MIKEY)
        response.raise_for_status()
        mt.process_request_resp(pending, response.content, psk=alice, now=time.time())

    async with httpx.AsyncClient(timeout=10) as http:
        pending = mt.build_request_init(
            initiator=ALICE, kms=KMS_ID, psk=alice, desired=desired, now=time.time(),
            random_bytes=secrets.token_bytes,
        )  # fmt: skip
        reply = await http.post(url + "/mikey/v1/request", content=pending.data, headers=MIKEY)
        issued = mt.process_request_resp(pending, reply.content, psk=alice, now=time.time())
    transfer = mt.TransferInit.read(_transfer_init(issued).data)

    async def resolve(http: httpx.AsyncClient) -> None:
        pending = mt.build_resolve_init(
            transfer, responder=FACTORY, kms=KMS_ID, psk=factory, now=time.time(),
            random_bytes=secrets.token_bytes,
        )  # fmt: skip
        response = await http.post(url + "/mikey/v1/resolve", content=pending.data, headers=MIKEY)
        response.raise_for_status()
        mt.process_resolve_resp(pending, response.content, transfer, psk=factory, now=time.time())

    table = Table(title=f"KMS round trips ({concurrency} concurrent clients, {seconds:.0f} s each)")
    for column in ("exchange", "done", "per s", "p50 ms", "p99 ms", "vs healthz", "errors"):
        table.add_column(column, justify="right")
    base = _row(table, "GET /healthz", await _measure(seconds, concurrency, healthz), 0)
    _row(table, "REQUEST", await _measure(seconds, concurrency, request), base)
    _row(table, "RESOLVE", await _measure(seconds, concurrency, resolve), base)
    return table


def _transfer_init(issued: mt.IssuedTicket) -> mt.PendingTransfer:
    return mt.build_transfer_init(
        issued, initiator=ALICE, responder=FACTORY,
        sessions=[GenericIdEntry.for_srtp(1, [0], SrtpSessionData(0x1234, 0, 0))],
        now=time.time(), random_bytes=secrets.token_bytes,
    )  # fmt: skip


def _core_costs(url: str, psks: dict[str, bytes]) -> Table:
    """Microseconds per TRANSFER_INIT read+early check, and per full verification."""
    alice, factory = psks[ALICE], psks[FACTORY]
    desired = mt.DesiredPolicy(recipients=(FACTORY,), valid_until=time.time() + 3600)
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS_ID, psk=alice, desired=desired, now=time.time(),
        random_bytes=secrets.token_bytes,
    )  # fmt: skip
    reply = httpx.post(url + "/mikey/v1/request", content=pending.data, headers=MIKEY)
    issued = mt.process_request_resp(pending, reply.content, psk=alice, now=time.time())
    data = _transfer_init(issued).data
    transfer = mt.TransferInit.read(data)
    resolve = mt.build_resolve_init(
        transfer, responder=FACTORY, kms=KMS_ID, psk=factory, now=time.time(),
        random_bytes=secrets.token_bytes,
    )  # fmt: skip
    answer = httpx.post(url + "/mikey/v1/resolve", content=resolve.data, headers=MIKEY).content
    now = time.time()

    def read_and_check() -> None:
        mt.TransferInit.read(data).early_check(FACTORY, now=now)

    def verify_all() -> None:
        mt.process_resolve_resp(resolve, answer, mt.TransferInit.read(data), psk=factory, now=now)

    table = Table(title=f"Core only: TRANSFER_INIT of {len(data)} bytes (forking ticket)")
    table.add_column("step")
    table.add_column("µs per message", justify="right")
    for name, step in (
        ("read + early policy check", read_and_check),
        ("RESOLVE_RESP verify + KEMAC open + TRANSFER_INIT MAC + Vi check", verify_all),
    ):
        runs = 2000
        best = min(timeit.repeat(step, number=runs, repeat=5)) / runs
        table.add_row(name, f"{best * 1e6:.1f}")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    console = Console()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    console.print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder, RedisProcess(Path(folder)) as redis_process:
        workdir = Path(folder)
        kek = workdir / "kek"
        generate_key_file(kek)
        psks = {ALICE: secrets.token_bytes(32), FACTORY: secrets.token_bytes(32)}
        asyncio.run(_provision(redis_process.url, kek, psks))
        kms_process, url = _start_kms(workdir, redis_process.url, kek)
        try:
            console.print(asyncio.run(_bench(url, psks, args.seconds, args.concurrency)))
            console.print(_core_costs(url, psks))
        finally:
            kms_process.terminate()
            kms_process.wait(10)
    console.print(
        "The KMS runs as one process (one core); the load generator runs in this process on "
        "the other core, so the healthz row is the ceiling of both together."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
