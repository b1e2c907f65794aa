"""The caller's CPU per Lua script call: redis-py's ``Script`` against ``DirectScript``.

Run with ``.venv/bin/python bench/redis_script_bench.py [--calls 5000] [--trials 5]``.
It starts its own redis-server on a free loopback port, then, for each trial and in
alternating order, makes *calls* calls of a script with two keys and thirteen
arguments (the size of the focus's ``join`` and ``answered`` calls) three ways:

* ``redis-py Script``: ``client.register_script(text)(keys=..., args=...)``, as the
  stores called scripts before (pool check-out, retry closure, per-argument encoding);
* ``DirectScript``: ``secconf.store.redis.register_script(client, text)``, the path the
  Kamailio workers take now;
* ``bare socket``: the same ``EVALSHA`` packed once by hiredis, written and read on a
  plain socket with a hiredis reader: the floor of a round trip from Python here.

Each figure is the caller's CPU (``time.process_time``) divided by the calls: what a
Kamailio worker pays, not the latency (the server's time is not counted). Medians over
the trials and the range are printed; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hiredis
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))

from secconf.lab.services.process import free_port
from secconf.store.redis import connect_blocking, register_script

SCRIPT = "return #ARGV + #KEYS"
KEYS = ["secconf:conf:{0123456789abcdef}", "secconf:conf:{0123456789abcdef}:dialogs"]
ARGS = [f"argument-{n}" for n in range(12)] + [1234567890]


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return process, port
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not answer within 10 s")


def cpu_per_call(call: Callable[[], object], calls: int) -> float:
    call()  # connect and load the script outside the measurement
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def bare_socket(port: int, sha: bytes) -> Callable[[], object]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    command = hiredis.pack_command((b"EVALSHA", sha, len(KEYS), *KEYS, *ARGS))
    reader = hiredis.Reader()

    def call() -> object:
        sock.sendall(command)
        while True:
            reader.feed(sock.recv(65536))
            reply = reader.gets()
            if reply is not False:
                return reply

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="secconf-rsbench-") as tmp:
        process, port = start_redis(Path(tmp))
        try:
            client = connect_blocking(f"redis://127.0.0.1:{port}/0", timeout=1.0)
            sha = client.script_load(SCRIPT)
            sha_bytes = sha if isinstance(sha, bytes) else sha.encode()
            pooled = client.register_script(SCRIPT)
            direct = register_script(client, SCRIPT)
            ways: dict[str, Callable[[], object]] = {
                "redis-py Script": lambda: pooled(keys=KEYS, args=ARGS),
                "DirectScript": lambda: direct(keys=KEYS, args=ARGS),
                "bare socket": bare_socket(port, sha_bytes),
            }
            results: dict[str, list[float]] = {name: [] for name in ways}
            for trial in range(args.trials):
                order = list(ways) if trial % 2 == 0 else list(reversed(ways))
                for name in order:
                    results[name].append(cpu_per_call(ways[name], args.calls))
            print(f"{args.calls} calls x {args.trials} trials, alternating order; "
                  "caller's CPU µs per script call: median (range)")  # fmt: skip
            for name, values in results.items():
                print(f"  {name:16} {statistics.median(values):6.1f} "
                      f"({min(values):.1f}-{max(values):.1f})")  # fmt: skip
            client.close()
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
