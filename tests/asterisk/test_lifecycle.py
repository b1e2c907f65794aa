"""Nothing stays running or mounted after Asterisk, even when its test process is SIGKILLed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures.asterisk_server import (
    AsteriskServer,
    ami_login,
    mounts_under,
    processes_in,
    restore_tree,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from tests.fixtures.asterisk_server import AsteriskServer
server = AsteriskServer(Path(sys.argv[1]))
server.start()
print(server.ami_port, server.ami_user, server.ami_secret, flush=True)
time.sleep(120)
"""


def wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_sigkill_of_the_owner_leaves_no_process_and_no_mount(asterisk_tree: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    directory = Path(tempfile.mkdtemp(prefix="secconf-asterisk-kill-"))
    tree = directory / "tree"
    try:
        restore_tree(tree)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tree)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        port, user, secret = holder.stdout.readline().split()
        assert ami_login(int(port), user, secret)
        assert processes_in(tree), "Asterisk is not running in the tree"
        # /proc is mounted only inside Asterisk's private mount namespace.
        assert mounts_under(tree) == []
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        assert wait_until(lambda: not processes_in(tree), 5.0), processes_in(tree)
        assert not ami_login(int(port), user, secret, timeout=0.3)
        assert mounts_under(tree) == []
    finally:
        for pid in processes_in(tree):
            os.kill(pid, signal.SIGKILL)
        if not mounts_under(directory):
            shutil.rmtree(directory, ignore_errors=True)


def test_stop_and_restart_on_the_same_ports(asterisk_tree: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="secconf-asterisk-restart-"))
    tree = directory / "tree"
    try:
        restore_tree(tree)
        server = AsteriskServer(tree)
        server.start()
        ports = (server.sip_port, server.ami_port)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5.0
        assert processes_in(tree) == []
        assert "cleanly ending" in server.log() or "Executing last minute cleanups" in server.log()
        server.start()
        assert (server.sip_port, server.ami_port) == ports
        assert ami_login(server.ami_port, server.ami_user, server.ami_secret)
        server.stop()
    finally:
        if not mounts_under(directory):
            shutil.rmtree(directory, ignore_errors=True)
