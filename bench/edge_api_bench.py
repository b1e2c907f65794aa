"""Control API latency of the media edge: p50/p99 per call, over real HTTP on loopback.

Starts ``secconf edge serve`` as a subprocess (optionally with Redis, keys
wrapped, as in production) and times each call from a keep-alive client:

    .venv/bin/python bench/edge_api_bench.py [--legs 200] [--redis]

The client is a minimal HTTP/1.1 keep-alive client on a raw socket (httpx
adds ~0.3-0.5 ms of its own per call, which would hide the edge's figure);
``--httpx`` measures with httpx instead, as the Kamailio module calls it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))

from secconf.lab.services.process import free_port
from secconf.lab.services.redis_server import RedisProcess
from secconf.store import generate_key_file

SUITE = "AES_CM_128_HMAC_SHA1_80"


def key() -> dict[str, str]:
    return {
        "suite": SUITE,
        "key": base64.b64encode(os.urandom(16)).decode(),
        "salt": base64.b64encode(os.urandom(14)).decode(),
    }


class RawClient:
    """HTTP/1.1 keep-alive over one socket; enough for JSON request/response timing."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.token = token
        self.buffer = b""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {self.token}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(65536)
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, json.loads(payload) if payload else None


class HttpxClient:
    def __init__(self, port: int, token: str) -> None:
        import httpx

        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"authorization": f"Bearer {token}"},
            timeout=5,
            trust_env=False,
        )

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = self.http.request(method, path, json=body)
        return response.status_code, response.json() if response.content else None


def timed(samples: dict[str, list[float]], name: str, client: Any, *args: Any) -> Any:
    start = time.perf_counter()
    status, answer = client.call(*args)
    samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)
    if status >= 300:
        raise RuntimeError(f"{name}: {status} {answer}")
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=200)
    parser.add_argument("--redis", action="store_true", help="persist to a throw-away Redis")
    parser.add_argument("--httpx", action="store_true", help="time with httpx instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(32)
        token_file = work / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        port = free_port()
        config = (
            f'[edge]\nlisten = "127.0.0.1"\nport = {port}\ntoken_file = "{token_file}"\n'
            'media_host = "127.0.0.1"\n'
        )
        redis = RedisProcess(work) if args.redis else None
        if redis is not None:
            redis.__enter__()
            generate_key_file(work / "kek")
            config += f'[redis]\nurl = "{redis.url}"\nkek_file = "{work / "kek"}"\n'
        (work / "edge.toml").write_text(config)
        secconf = str(Path(sys.executable).parent / "secconf")
        process = subprocess.Popen(
            [secconf, "edge", "serve", "--config", str(work / "edge.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    client: Any = (HttpxClient if args.httpx else RawClient)(port, token)
                    client.call("GET", "/healthz")
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("edge did not start") from None
                    time.sleep(0.1)
            samples: dict[str, list[float]] = {}
            conferences = max(1, args.legs // 20)
            for c in range(conferences):
                timed(samples, "PUT epoch", client, "PUT", f"/v1/conferences/b{c}/epochs/1", key())
            legs = []
            for i in range(args.legs):
                body = {"conference": f"b{i % conferences}", "participant": key()}
                answer = timed(samples, "POST leg", client, "POST", "/v1/legs", body)
                legs.append(answer["leg"])
                remote = {"host": "127.0.0.1", "port": 9}
                path = f"/v1/legs/{answer['leg']}/internal-remote"
                timed(samples, "PUT internal-remote", client, "PUT", path, remote)
            for c in range(conferences):
                timed(samples, "PUT epoch", client, "PUT", f"/v1/conferences/b{c}/epochs/2", key())
            for leg in legs:
                timed(
                    samples, "POST switch", client, "POST", f"/v1/legs/{leg}/switch", {"epoch": 2}
                )
            for c in range(conferences):
                timed(samples, "GET conference", client, "GET", f"/v1/conferences/b{c}")
            for leg in legs:
                timed(samples, "DELETE leg", client, "DELETE", f"/v1/legs/{leg}")
            mode = "httpx" if args.httpx else "raw keep-alive"
            print(f"edge control API, {args.legs} legs, redis={'on' if redis else 'off'}, {mode}")
            print(f"{'call':<22}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
            for name, values in samples.items():
                values.sort()
                p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
                print(
                    f"{name:<22}{len(values):>6}{statistics.median(values):>10.3f}"
                    f"{p99:>10.3f}{values[-1]:>10.3f}"
                )
        finally:
            process.terminate()
            process.wait(5)
            if redis is not None:
                redis.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
