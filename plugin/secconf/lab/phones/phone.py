"""What the phone drivers share: :class:`Phone` (its options and interface) and its child process.

:class:`PhoneProcess` keeps a program's output lines (and a log file of them) so that a driver
waits for the line that tells a call's or registration's state; :class:`Phone` holds the
options both programs are configured with and the operations the drivers implement.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .audio import data_size, read_wav
from .ports import HOST, free_rtp_port, free_sip_port

__all__ = ["SUITE", "Phone", "PhoneError", "PhoneProcess", "Transport"]

Transport = Literal["udp", "tls"]

#: The SRTP suite both programs are made to insist on.
SUITE = "AES_CM_128_HMAC_SHA1_80"


class PhoneError(RuntimeError):
    """A phone did not do what it was asked in time; the message carries its log's tail."""


class PhoneProcess:
    """A child process whose output lines are kept (and written to a log file)."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = cwd / "output.log"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        command = ["setpriv", "--pdeathsig", "KILL", "stdbuf", "-oL", "-eL", *argv]
        self.proc = subprocess.Popen(  # noqa: S603 - our own argument list
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.proc.stdout is None:  # pragma: no cover - Popen(stdout=PIPE) sets it
            return
        with self.log_path.open("w", encoding="utf-8") as log:
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(f"{time.monotonic():.3f} {line}\n")
                log.flush()
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def write(self, text: str) -> None:
        if self.proc.stdin is None:  # pragma: no cover - Popen(stdin=PIPE) sets it
            raise PhoneError(f"{self.name} has no stdin")
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise PhoneError(f"{self.name} is gone ({exc}):\n{self.tail()}") from None

    def wait_line(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """The first output line from index *start* on matching *pattern*."""
        return self.wait_line_at(pattern, timeout, start)[1]

    def wait_line_at(
        self, pattern: str, timeout: float, start: int = 0
    ) -> tuple[int, re.Match[str]]:
        """(index, match) of the first output line from *start* on matching *pattern*."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return index, match
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.running and not self._reader.is_alive()):
                    raise PhoneError(
                        f"{self.name}: no line matching {pattern!r} within {timeout} s:\n"
                        + self.tail()
                    )
                self._changed.wait(min(remaining, 0.2))

    def tail(self, count: int = 40) -> str:
        with self._changed:
            return "\n".join(self.lines[-count:])

    def stop(self, polite: Callable[[], None] | None, timeout: float = 5.0) -> None:
        if self.running and polite is not None:
            with contextlib.suppress(Exception):
                polite()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(2.0)
        self._reader.join(2.0)
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()


class Phone:
    """A real phone program, configured and driven: :class:`LinphonePhone`, :class:`BaresipPhone`.

    *directory* is the phone's own (created by the caller, written here).
    *user* is the user part of its identity ``sip:user@realm`` (``realm`` or
    127.0.0.1) and the digest user name; *password* its digest password (the
    phone answers 401/407 challenges of *realm*).  *tone* is a WAV file the phone
    sends in every call (8000 Hz mono 16-bit; :func:`write_tone_wav`), else
    silence.

    *transport* is how the phone speaks SIP to a proxy or registrar: ``"udp"``,
    or ``"tls"`` (it listens on a TLS port too, and dials ``;transport=tls``
    URIs over TLS).  *ca_file* is the CA (PEM) that signed the server's
    certificate; *certificate* a PEM file (``(chain, key)`` paths) the phone
    presents when Kamailio connects to it.  *registrar* is a SIP URI (e.g.
    ``sip:127.0.0.1:5061;transport=tls``) where the phone REGISTERs its
    identity with digest at :meth:`start` (every *reg_expires* seconds);
    :meth:`wait_registered` tells when that succeeded.  *sip_trace*: baresip
    prints every SIP message it sends or receives (``-s``) in its output
    (:meth:`output`); linphonec's ``debug.log`` in *directory* always has them.
    """

    program = "phone"

    def __init__(
        self,
        directory: Path,
        user: str,
        *,
        password: str | None = None,
        realm: str | None = None,
        tone: Path | None = None,
        transport: Transport = "udp",
        ca_file: Path | None = None,
        certificate: tuple[Path, Path] | None = None,
        registrar: str | None = None,
        reg_expires: int = 600,
        sip_trace: bool = False,
    ) -> None:
        if transport not in ("udp", "tls"):
            raise ValueError(f"transport must be 'udp' or 'tls', not {transport!r}")
        if transport == "tls" and ca_file is None:
            raise ValueError("transport 'tls' needs ca_file (the CA of the server's certificate)")
        if registrar is not None and password is None:
            raise ValueError("registrar needs password (the registrar challenges with digest)")
        self.directory = directory
        self.user = user
        self.password = password
        self.realm = realm
        self.tone = tone
        self.transport: Transport = transport
        self.ca_file = ca_file
        self.certificate = certificate
        self.registrar = registrar
        self.reg_expires = reg_expires
        self.sip_trace = sip_trace
        self.sip_port = free_sip_port()
        self.tls_port = self.sip_port + 1
        self.rtp_port = free_rtp_port()
        self.process: PhoneProcess | None = None
        self._dial_from = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.user!r}, sip={self.sip_port}, {self.transport})"

    @property
    def identity(self) -> str:
        """The phone's address of record, ``sip:user@realm``."""
        return f"sip:{self.user}@{self.realm or HOST}"

    @property
    def contact(self) -> str:
        """Where the phone takes calls directly (no registrar in between)."""
        if self.transport == "tls":
            return f"sip:{self.user}@{HOST}:{self.tls_port};transport=tls"
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    def start(self, timeout: float = 10.0) -> Phone:
        """Write the configuration and start the program; returns ``self`` once it is ready.

        With a *registrar*, the REGISTER is sent as the program starts: use
        :meth:`wait_registered`.
        """
        raise NotImplementedError

    def stop(self) -> None:
        """Hang up, quit (killed if it does not within a few seconds)."""
        raise NotImplementedError

    def dial(self, uri: str) -> None:
        """Place a call to *uri* (``;transport=tls`` in it for TLS); :meth:`wait_connected`."""
        raise NotImplementedError

    def wait_connected(self, timeout: float = 10.0) -> None:
        """The call placed by :meth:`dial` is up; :class:`PhoneError` if it failed."""
        raise NotImplementedError

    def wait_ended(self, timeout: float = 10.0) -> str:
        """The current call ended; returns the program's reason text."""
        raise NotImplementedError

    def ended(self) -> bool:
        """Whether the current call (since :meth:`dial` or :meth:`wait_incoming`) has ended."""
        raise NotImplementedError

    def hangup(self) -> None:
        """Hang up the current call."""
        raise NotImplementedError

    def position(self) -> int:
        """A point in the phone's history; :meth:`wait_incoming` looks after it."""
        raise NotImplementedError

    def wait_incoming(self, since: int, timeout: float = 10.0) -> str:
        """An incoming call auto-answered and up after *since*; returns the caller."""
        raise NotImplementedError

    def wait_registered(self, timeout: float = 10.0) -> None:
        """The next registration outcome is a success (the registrar answered 200).

        Each call consumes one outcome: the first call waits for the REGISTER sent
        at start, a later one for the next (a refresh).  :class:`PhoneError` with
        the program's log when the outcome is a failure or none comes in *timeout*.
        """
        raise NotImplementedError

    def _proc(self) -> PhoneProcess:
        if self.process is None:
            raise PhoneError(f"{self} was not started")
        return self.process

    @property
    def running(self) -> bool:
        """Whether the program is running."""
        return self.process is not None and self.process.running

    def output(self) -> str:
        """Everything the program printed so far."""
        return self.process.tail(len(self.process.lines)) if self.process is not None else ""

    def log(self, lines: int = 400) -> str:
        """The last *lines* of the program's output."""
        return self.process.tail(lines) if self.process is not None else ""

    def recording(self) -> Path | None:
        """The WAV file of what the phone decoded in its current call."""
        raise NotImplementedError

    def mark(self) -> int:
        """A position in the recording; :meth:`heard` from there on."""
        path = self.recording()
        return data_size(path) if path is not None else 0

    def heard(self, since: int = 0) -> tuple[int, list[int]]:
        """(sample rate, samples) the phone decoded since the :meth:`mark` *since*."""
        path = self.recording()
        if path is None:
            return 8000, []
        return read_wav(path, since)
