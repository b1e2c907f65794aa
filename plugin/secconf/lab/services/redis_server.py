"""A throw-away ``redis-server`` on a free loopback port, persisting nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .process import free_port, pdeathsig

__all__ = ["RedisProcess"]


class RedisProcess:
    """A throw-away ``redis-server`` on 127.0.0.1 that persists nothing.

    Use as a context manager; ``url`` is valid inside.  Raises RuntimeError if
    the server does not answer PING within *deadline* seconds.
    """

    def __init__(self, workdir: Path, *, deadline: float = 10.0) -> None:
        self.workdir = workdir
        self.deadline = deadline
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisProcess:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another program may take the port between probe and bind
            self.port = free_port()
            self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
                [*pdeathsig("TERM"), binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            if self._wait_ready():
                return self
            self._stop()
        raise RuntimeError("redis-server did not start")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _wait_ready(self) -> bool:
        stop = time.monotonic() + self.deadline
        while time.monotonic() < stop:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
