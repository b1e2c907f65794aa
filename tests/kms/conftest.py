"""A real KMS process (`secconf kms serve`) against the real Redis of the session."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from secconf.store import generate_key_file
from tests.fixtures.redis_server import RedisServer

SECCONF = str(Path(sys.executable).parent / "secconf")
KMS_IDENTITY = "sip:kms.test.invalid"
START_DEADLINE = 15.0


@dataclass
class RunningKms:
    url: str
    config: Path
    identity: str
    redis_url: str
    workdir: Path
    process: subprocess.Popen[str]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `secconf kms ...` against this KMS's configuration."""
        result = subprocess.run(
            [SECCONF, "kms", *args, "--config", str(self.config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"secconf kms {' '.join(args)} failed: {result.stderr}")
        return result

    def add_user(self, identity: str) -> Path:
        """Provision *identity* with a fresh PSK file (as an operator would); return the file."""
        psk_file = self.workdir / (identity.replace(":", "_").replace("@", "_") + ".psk")
        self.cli("user", "add", identity, "--psk-file", str(psk_file))
        return psk_file


def _write_config(workdir: Path, redis_url: str) -> Path:
    kek = workdir / "kek"
    generate_key_file(kek)
    config = workdir / "kms.toml"
    config.write_text(
        f"""
[kms]
identity = "{KMS_IDENTITY}"
listen = "127.0.0.1"
port = 0
kek_file = "{kek}"
clock_skew = 60
max_ticket_lifetime = 3600

[redis]
url = "{redis_url}"
timeout = 0.5
prefix = "kmstest"
"""
    )
    return config


@pytest.fixture(scope="module")
def kms(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningKms]:
    workdir = tmp_path_factory.mktemp("kms")
    redis_server.start()
    redis_url = redis_server.url
    config = _write_config(workdir, redis_url)
    process = subprocess.Popen(
        [SECCONF, "kms", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr or ()], daemon=True
    ).start()
    deadline = time.monotonic() + START_DEADLINE
    url = None
    seen: list[str] = []
    while url is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if "listening on" in line:
            url = "http://" + line.rsplit(" ", 1)[1].strip()
    if url is None:
        process.kill()
        raise RuntimeError("KMS did not start: " + "".join(seen[-20:]))
    try:
        yield RunningKms(url, config, KMS_IDENTITY, redis_url, workdir, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
