"""A passive capture on the loopback interface, read back with Wireshark's dissectors.

What the lab shows and the tests check about the wire is read by ``tshark`` (Wireshark
4.0 on Debian 12), a codec we did not write: a NOTIFY's SIP framing and headers, and its
body's CMS ``ContentInfo`` (Wireshark names the content type; it does not open
AuthEnvelopedData, which is the point: neither can an eavesdropper).

    with LoopbackCapture(workdir / "notify.pcapng", "udp port 5070") as capture:
        ...                                   # traffic
    rows = capture.fields("sip.Method == NOTIFY", ("sip.Call-ID", "cms.contentType"))

Capturing needs root (or dumpcap's capabilities); the lab runs as root.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["CaptureError", "LoopbackCapture", "tshark_fields"]

#: tshark prints this on stderr once the capture runs (dumpcap has opened the interface).
_STARTED = b"Capturing on"


class CaptureError(RuntimeError):
    """tshark is missing, did not start, or could not read the capture."""


def _tshark() -> str:
    binary = shutil.which("tshark")
    if binary is None:
        raise CaptureError("tshark is not installed (docker/bootstrap-debian.sh installs it)")
    return binary


def tshark_fields(
    path: Path, display_filter: str, fields: Sequence[str], *, timeout: float = 30.0
) -> list[dict[str, str]]:
    """Each packet of *path* matching *display_filter*: the *fields* tshark dissected."""
    command = [_tshark(), "-r", str(path), "-Y", display_filter, "-T", "fields",
               "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]  # fmt: skip
    for name in fields:
        command += ["-e", name]
    done = subprocess.run(  # noqa: S603 - fixed argument list
        command, capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise CaptureError(f"tshark could not read {path.name}: {done.stderr.decode()[-300:]}")
    rows = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        values = line.split("\t")
        rows.append(dict(zip(fields, values + [""] * (len(fields) - len(values)), strict=True)))
    return rows


class LoopbackCapture:
    """``tshark -i lo -f BPF -w PATH`` for the duration of a ``with`` block."""

    def __init__(self, path: Path, bpf: str, *, start_timeout: float = 15.0) -> None:
        self.path = path
        self.bpf = bpf
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LoopbackCapture:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
            [_tshark(), "-i", "lo", "-f", self.bpf, "-w", str(self.path), "-q"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_started()
        return self

    def _wait_started(self) -> None:
        process = self._process
        if process is None or process.stderr is None:
            raise CaptureError("tshark not started")
        deadline = time.monotonic() + self.start_timeout
        seen = b""
        while _STARTED not in seen:
            remaining = deadline - time.monotonic()
            if process.poll() is not None or remaining <= 0:
                self._stop()
                raise CaptureError(f"tshark did not start capturing: {seen.decode()[-300:]}")
            readable, _, _ = select.select([process.stderr], [], [], remaining)
            if readable:
                seen += os.read(process.stderr.fileno(), 4096)
        # tshark says so before dumpcap has compiled the filter and attached it: give it a
        # moment, and a filter it refused ends the process.
        time.sleep(0.5)
        if process.poll() is not None:
            seen += os.read(process.stderr.fileno(), 4096)
            self._stop()
            raise CaptureError(f"tshark did not start capturing: {seen.decode()[-300:]}")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # tshark flushes the file and exits
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stderr is not None:
            process.stderr.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        time.sleep(0.3)  # the last packets through the kernel's buffer to dumpcap
        self._stop()

    def fields(self, display_filter: str, fields: Sequence[str]) -> list[dict[str, str]]:
        """What :func:`tshark_fields` reads from this capture (after the ``with`` block)."""
        if self._process is not None:
            raise CaptureError("the capture is still running")
        return tshark_fields(self.path, display_filter, fields)
