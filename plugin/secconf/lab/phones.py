"""Real SRTP phones driven headless: linphonec and baresip (tests and ``make demo``).

A :class:`LinphonePhone` or :class:`BaresipPhone` writes a private config
directory, starts the program and drives it: dial, answer (auto), hang up,
register, and read what it heard.  Both are configured alike: SIP over UDP or
TLS on free loopback ports, SDES SRTP mandatory (``AES_CM_128_HMAC_SHA1_80``),
PCMU only, no video, no ICE/STUN/TURN/DTLS/ZRTP, auto-answer, optional digest
credentials (answered to a proxy's 407 or a registrar's 401) and an optional
registration with a registrar (so a focus can call the phone back).  Audio:
no sound card.  Each phone can send a known tone (a WAV file made with
:func:`write_tone_wav`) and records what it decodes to a WAV file
(:meth:`Phone.heard`).

- **linphonec 5.1.65** (Debian ``linphone-cli``): ``linphonec -c RC -a``,
  commands on stdin (``soundcard use files``, ``play F``, ``record F``,
  ``codec disable N``, ``call URI``, ``terminate``, ``quit``); call states are
  its ``Call N ...`` lines, registration its ``Registration on ...`` lines.
  ``HOME`` is the phone's directory (it needs ``~/.local/share/linphone`` for
  its databases or its core never starts).
- **baresip 1.0.0** (Debian ``baresip-core``): ``baresip -f DIR``, commands
  and events as JSON netstrings on its ``ctrl_tcp`` module; ``aufile`` is the
  audio source (8000 Hz mono WAV), ``sndfile`` writes ``dump-*-dec.wav`` (what
  it decoded) and ``dump-*-enc.wav`` (what it sent), ``aubridge`` is a player
  that goes nowhere.

TLS (``transport="tls"``): the phone trusts *ca_file* for the server's
certificate.  linphonec verifies it (``root_ca``, ``verify_server_certs``,
``verify_server_cn``); **baresip 1.0.0 loads ``sip_cafile`` but does not
verify the server** (measured: tests/kamailio/test_tls.py).  *certificate*
(a PEM certificate chain and its key) is what the phone presents on its own
TLS listener, where Kamailio connects for requests towards the phone's
Contact.

Every process runs under ``setpriv --pdeathsig KILL`` (it dies with its
parent) and ``stdbuf -oL`` (its output arrives line by line, also kept in
``output.log`` in its directory).  Every wait has a timeout and raises
:class:`PhoneError` with the program's log tail.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BARESIP",
    "LINPHONEC",
    "BaresipPhone",
    "LinphonePhone",
    "Phone",
    "PhoneError",
    "Transport",
    "data_size",
    "free_rtp_port",
    "free_sip_port",
    "free_tcp_port",
    "free_udp_port",
    "read_wav",
    "write_tone_wav",
]

Transport = Literal["udp", "tls"]

HOST = "127.0.0.1"
SUITE = "AES_CM_128_HMAC_SHA1_80"
LINPHONEC = "/usr/bin/linphonec"
BARESIP = "/usr/bin/baresip"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")


class PhoneError(RuntimeError):
    """A phone did not do what it was asked in time; the message carries its log's tail."""


# --- ports and audio files ------------------------------------------------------------


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 and on the IPv6 wildcard (linphone binds ``[::]``).

    A dual-stack ``[::]`` socket holds the port for both families.
    """
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


def free_sip_port() -> int:
    """A port free for UDP (dual stack) and, with the next one, for TCP on 127.0.0.1.

    baresip 1.0.0 listens on UDP and TCP at ``sip_listen`` and on TCP port + 1 (SIP/TLS).
    """
    for _ in range(100):
        port = free_udp_port()
        if port >= 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 1):
                    tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    tcp.bind((HOST, candidate))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def free_rtp_port() -> int:
    """An even UDP port whose odd neighbour (RTCP without rtcp-mux) is free too."""
    for _ in range(200):
        port = free_udp_port()
        if port % 2 or port > 65000:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 1):
                    sock = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    sock.bind(("::", candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free even/odd UDP port pair")


def write_tone_wav(
    path: Path, frequency: float, seconds: float, rate: int = 8000, amplitude: int = 8000
) -> Path:
    """A mono 16-bit WAV of a sine at *frequency* (what a phone sends); amplitude 0: silence.

    baresip 1.0.0 hangs up when its ``aufile`` source ends, so a file a phone sends
    must last as long as its calls.
    """
    count = int(seconds * rate)
    if amplitude == 0:
        frames = bytes(2 * count)
    else:
        step = 2 * math.pi * frequency / rate
        samples = (int(amplitude * math.sin(step * i)) for i in range(count))
        frames = struct.pack(f"<{count}h", *samples)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def read_wav(path: Path, start: int = 0) -> tuple[int, list[int]]:
    """(sample rate, mono samples from byte *start* of the data) of a 16-bit PCM WAV.

    Reads the chunks by hand: a recording still being written has a header whose
    sizes are not final yet (libsndfile and mediastreamer fix them at close), so the
    data chunk is taken to run to the end of the file.
    """
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        # mediastreamer's recorder writes the header only when it closes the file:
        # until then the first 44 bytes are zeros, the rest 16-bit mono at the call's rate.
        if data[:44].strip(b"\0"):
            raise ValueError(f"{path} is not a WAV file")
        pcm = data[44 + start :]
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        return 8000, list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    offset, rate, channels = 12, 8000, 1
    while offset + 8 <= len(data):
        chunk, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        body = offset + 8
        if chunk == b"fmt ":
            _, channels, rate = struct.unpack("<HHI", data[body : body + 8])
        elif chunk == b"data":
            pcm = data[body + start :]
            pcm = pcm[: len(pcm) - len(pcm) % (2 * channels)]
            samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
            return rate, samples[::channels]
        offset = body + size + (size & 1)
    return rate, []


def data_size(path: Path) -> int:
    """Bytes of sample data in a WAV being written (0 if it does not exist yet)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    return max(0, size - 44)


# --- the process wrapper ----------------------------------------------------------------


class _Process:
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


# --- phones ------------------------------------------------------------------------------


def _free_tcp_port(exclude: tuple[int, ...] = ()) -> int:
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port not in exclude:
            return port
    raise RuntimeError("no free TCP port")


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 (a TLS listener, a control socket)."""
    return _free_tcp_port()


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
        self.process: _Process | None = None
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

    def _proc(self) -> _Process:
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


class LinphonePhone(Phone):
    """linphonec 5.1.65 driven on stdin."""

    program = "linphonec"

    def start(self, timeout: float = 10.0) -> LinphonePhone:
        if self.transport == "tls":
            self.tls_port = _free_tcp_port((self.sip_port,))
        home = self.directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.record_path = self.directory / "heard.wav"
        rc = self.directory / "linphonerc"
        rc.write_text(self.config())
        env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
        }
        self.process = _Process(
            f"linphonec[{self.user}]",
            [LINPHONEC, "-c", str(rc), "-a", "-d", "4", "-l", str(self.directory / "debug.log")],
            self.directory,
            env,
        )
        proc = self.process
        proc.write("soundcard use files\n")
        proc.wait_line(r"Using wav files instead of soundcard", timeout)
        if self.tone is not None:
            proc.write(f"play {self.tone}\n")
        proc.write(f"record {self.record_path}\n")
        # Codecs: PCMU only.  The config's [audio_codec_N] sections get rewritten by
        # liblinphone's own codec list at start, so the list is edited by command.
        for match in self._codecs(timeout):
            index, name, rate, state = match.groups()
            wanted = name == "PCMU" and rate == "8000"
            if wanted and state == "disabled":
                proc.write(f"codec enable {index}\n")
            elif not wanted and state == "enabled":
                proc.write(f"codec disable {index}\n")
        enabled = [m.group(2) for m in self._codecs(timeout) if m.group(4) == "enabled"]
        if enabled != ["PCMU"]:
            raise PhoneError(f"linphonec codecs: {enabled}\n{proc.tail()}")
        # The core starts asynchronously: a call placed before its SIP socket exists
        # fails ("no channel available").  Its debug log says when the socket is there.
        debug, deadline = self.directory / "debug.log", time.monotonic() + timeout
        while not debug.exists() or "Creating listening point" not in debug.read_text(
            errors="replace"
        ):
            if time.monotonic() > deadline or not proc.running:
                raise PhoneError(f"linphonec opened no SIP socket in {timeout} s\n{proc.tail()}")
            time.sleep(0.05)
        return self

    def _codecs(self, timeout: float) -> list[re.Match[str]]:
        """``codec list``, read up to the output of a sentinel command (``ports``)."""
        proc = self._proc()
        start = len(proc.lines)
        proc.write("codec list\nports\n")
        proc.wait_line(r"sip port = ", timeout, start)
        pattern = re.compile(r"^(?:linphonec> )?\s*(\d+): (\S+) \((\d+)\) (enabled|disabled)$")
        matches = (pattern.match(line) for line in proc.lines[start:])
        return [match for match in matches if match]

    def config(self) -> str:
        """The ``linphonerc`` text."""
        auth = ""
        if self.password is not None:
            auth = (
                "\n[auth_info_0]\n"
                f"username={self.user}\n"
                f"passwd={self.password}\n"
                f"realm={self.realm}\n"
                f"domain={self.realm}\n"
            )
        tls = "sip_tls_port=0\n"
        if self.transport == "tls":
            tls = (
                f"sip_tls_port={self.tls_port}\n"
                f"root_ca={self.ca_file}\n"
                "verify_server_certs=1\n"
                "verify_server_cn=1\n"
            )
            if self.certificate is not None:
                tls += (
                    f"client_cert_chain={self.certificate[0]}\n"
                    f"client_cert_key={self.certificate[1]}\n"
                )
        proxy = ""
        if self.registrar is not None:
            proxy = (
                "\n[proxy_0]\n"
                f"reg_proxy=<{self.registrar}>\n"
                f'reg_identity="{self.user}" <{self.identity}>\n'
                f"reg_expires={self.reg_expires}\n"
                "reg_sendregister=1\n"
                "publish=0\n"
                "dial_escape_plus=0\n"
                "quality_reporting_enabled=0\n"
                "avpf=0\n"
            )
        return (
            "[sip]\n"
            f"sip_port={self.sip_port}\n"
            "sip_tcp_port=0\n" + tls + "use_ipv6=0\n"
            "ipv6_migration_done=1\n"
            "media_encryption=srtp\n"
            "media_encryption_mandatory=1\n"
            f"srtp_crypto_suites={SUITE}\n"
            f'contact="{self.user}" <{self.identity}>\n'
            "guess_hostname=0\n"
            "inc_timeout=30\n"
            "auto_send_ringing=0\n"
            # No "gruu": Kamailio's registrar hands out a GRUU for +sip.instance, the
            # phone then puts sip:user@realm;gr=... in its dialogs' Contact, and the
            # focus (no GRUU routing) cannot reach it for in-dialog requests.
            + "supported=replaces, outbound\n"
            + ("default_proxy=0\n" if self.registrar is not None else "")
            + "\n[rtp]\n"
            f"audio_rtp_port={self.rtp_port}\n"
            "audio_jitt_comp=60\n"
            "nortp_timeout=30\n"
            "\n[net]\n"
            "firewall_policy=0\n"
            "mtu=1300\n"
            "\n[video]\n"
            "enabled=0\ncapture=0\ndisplay=0\nautomatically_initiate=0\nautomatically_accept=0\n"
            "\n[sound]\n"
            "echocancellation=0\n" + auth + proxy
        )

    def recording(self) -> Path | None:
        return getattr(self, "record_path", None)

    def dial(self, uri: str) -> None:
        self._dial_from = len(self._proc().lines)
        self._proc().write(f"call {uri}\n")

    def wait_connected(self, timeout: float = 10.0) -> None:
        match = self._proc().wait_line(
            r"Call \d+ with .* (connected|error|ended)", timeout, self._dial_from
        )
        if match.group(1) != "connected":
            raise PhoneError(f"{self}: call {match.group(1)}:\n{self._proc().tail()}")

    def wait_ended(self, timeout: float = 10.0) -> str:
        """The reason of the call's end (``Call N with X ended (reason).``)."""
        match = self._proc().wait_line(
            r"Call \d+ with .* ended \((.*)\)\.", timeout, self._dial_from
        )
        return match.group(1)

    def ended(self) -> bool:
        lines = self._proc().lines[self._dial_from :]
        return any(re.search(r"Call \d+ with .* (ended|error)", line) for line in lines)

    def hangup(self) -> None:
        self._proc().write("terminate\n")

    def position(self) -> int:
        return len(self._proc().lines)

    def wait_incoming(self, since: int, timeout: float = 10.0) -> str:
        proc = self._proc()
        deadline = time.monotonic() + timeout
        match = proc.wait_line(
            r"Receiving new incoming call from (.*), assigned id (\d+)", timeout, since
        )
        caller, call = match.group(1), match.group(2)
        proc.wait_line(
            rf"Call {call} with .* connected", max(0.1, deadline - time.monotonic()), since
        )
        self._dial_from = since
        return caller

    def wait_registered(self, timeout: float = 10.0) -> None:
        # linphonec prints no registration state: its debug log has every transition.
        if self.registrar is None:
            raise PhoneError(f"{self} has no registrar")
        pattern = re.compile(r"moving from state \[\w+\] to \[LinphoneRegistration(Ok|Failed)\]")
        debug, deadline = self.directory / "debug.log", time.monotonic() + timeout
        seen = getattr(self, "_registrations_seen", 0)
        while True:
            text = debug.read_text(errors="replace") if debug.exists() else ""
            outcomes = list(pattern.finditer(text))
            if len(outcomes) > seen:
                self._registrations_seen = seen + 1
                if outcomes[seen].group(1) == "Ok":
                    return
                errors = [line for line in text.splitlines() if "-error-" in line][-8:]
                raise PhoneError(f"{self}: registration failed:\n" + "\n".join(errors))
            if time.monotonic() > deadline or not self._proc().running:
                raise PhoneError(f"{self}: no registration outcome in {timeout} s\n{self.log(40)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(lambda: self._proc().write("terminate all\nquit\n"))


class BaresipPhone(Phone):
    """baresip 1.0.0 driven over its ``ctrl_tcp`` module (JSON netstrings).

    ``events`` holds every ctrl_tcp message (responses and events such as
    ``CALL_ESTABLISHED``, ``CALL_CLOSED``, ``REGISTER_OK``), each with
    ``_received``: the ``time.monotonic()`` of its arrival here.

    Its SIP/TLS listener is ``sip_listen``'s port + 1 (baresip's own choice).
    """

    program = "baresip"

    def start(self, timeout: float = 10.0) -> BaresipPhone:
        """Start baresip; a port taken between our check and its bind gets new ports (3 tries)."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PhoneError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                if self.process is not None:
                    self.process.stop(None)
                self.process = None
                self.sip_port, self.rtp_port = free_sip_port(), free_rtp_port()
                self.tls_port = self.sip_port + 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self, timeout: float) -> BaresipPhone:
        self.ctrl_port = _free_tcp_port((self.sip_port, self.sip_port + 1))
        (self.directory / "config").write_text(self.config())
        (self.directory / "accounts").write_text(self.account() + "\n")
        (self.directory / "contacts").write_text("")
        self.events: list[dict[str, Any]] = []
        self._events_changed = threading.Condition()
        env = {"HOME": str(self.directory), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.process = _Process(
            f"baresip[{self.user}]",
            [BARESIP, "-f", str(self.directory), *(["-s"] if self.sip_trace else [])],
            self.directory,
            env,
        )
        self.process.wait_line(r"baresip is ready", timeout)
        self._ctrl = socket.create_connection((HOST, self.ctrl_port), timeout=timeout)
        self._ctrl.settimeout(None)
        self._ctrl_reader = threading.Thread(target=self._read_ctrl, daemon=True)
        self._ctrl_reader.start()
        return self

    def config(self) -> str:
        """The ``config`` file's text."""
        tone = self.tone
        if tone is None:  # ausine would need 48 kHz: silence from a file instead, long
            # enough for any call here (baresip 1.0.0 hangs up when its source ends)
            tone = write_tone_wav(self.directory / "silence.wav", 0.0, 1800.0, amplitude=0)
        source = f"aufile,{tone}"
        modules = [
            "g711.so",
            "aufile.so",
            "aubridge.so",
            "sndfile.so",
            "srtp.so",
            "account.so",
            "menu.so",  # dial, hangup, quit
            "ctrl_tcp.so",
        ]
        tls = ""
        if self.transport == "tls":
            tls = f"sip_cafile {self.ca_file}\n"
            if self.certificate is not None:
                # baresip wants the certificate and its key in one PEM file.
                combined = self.directory / "sip-certificate.pem"
                combined.touch(mode=0o600)
                combined.write_bytes(
                    self.certificate[0].read_bytes() + self.certificate[1].read_bytes()
                )
                tls += f"sip_certificate {combined}\n"
        return (
            f"module_path {BARESIP_MODULES}\n"
            + "".join(f"module {name}\n" for name in modules)
            + f"ctrl_tcp_listen {HOST}:{self.ctrl_port}\n"
            f"sip_listen {HOST}:{self.sip_port}\n"
            + tls
            + f"rtp_ports {self.rtp_port}-{self.rtp_port + 1}\n"
            "rtcp_mux no\n"
            f"audio_source {source}\n"
            "audio_player aubridge,nowhere\n"
            "audio_alert aubridge,nowhere\n"
            "ausrc_srate 8000\nausrc_channels 1\nauplay_srate 8000\nauplay_channels 1\n"
            f"snd_path {self.directory}\n"
            "call_local_timeout 30\n"
            f"net_interface {HOST}\n"
        )

    def account(self) -> str:
        """The ``accounts`` line."""
        aor = self.identity + (";transport=tls" if self.transport == "tls" else "")
        params = [
            f"regint={self.reg_expires if self.registrar is not None else 0}",
            "answermode=auto",
            "mediaenc=srtp-mand",
            "audio_codecs=PCMU",
            "medianat=",
        ]
        if self.registrar is not None:
            params.append(f'outbound="{self.registrar}"')
        if self.password is not None:
            params += [f"auth_user={self.user}", f"auth_pass={self.password}"]
        return f"<{aor}>;" + ";".join(params)

    def _read_ctrl(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._ctrl.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while b":" in buffer:
                length_text, _, rest = buffer.partition(b":")
                length = int(length_text)
                if len(rest) < length + 1:
                    break
                payload, buffer = rest[:length], rest[length + 1 :]
                with contextlib.suppress(ValueError):
                    message = json.loads(payload)
                    message["_received"] = time.monotonic()  # when it arrived here
                    with self._events_changed:
                        self.events.append(message)
                        self._events_changed.notify_all()
        with self._events_changed:
            self._events_changed.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Send a ctrl_tcp command; its response message."""
        token = f"t{time.monotonic_ns()}"
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._ctrl.sendall(str(len(payload)).encode() + b":" + payload + b",")
        return self.wait_event(lambda m: m.get("response") and m.get("token") == token, timeout)

    def wait_event(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float, start: int = 0
    ) -> dict[str, Any]:
        """The first ctrl_tcp message from index *start* on for which *predicate* holds."""
        deadline = time.monotonic() + timeout
        with self._events_changed:
            index = start
            while True:
                while index < len(self.events):
                    if predicate(self.events[index]):
                        return self.events[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._ctrl_reader.is_alive():
                    raise PhoneError(
                        f"{self}: no such event within {timeout} s; events "
                        f"{[e.get('type') for e in self.events]}:\n{self._proc().tail()}"
                    )
                self._events_changed.wait(min(remaining, 0.2))

    def dial(self, uri: str) -> None:
        self._dial_from = len(self.events)
        answer = self.command("dial", uri)
        if not answer.get("ok"):
            raise PhoneError(f"{self}: dial refused: {answer}\n{self._proc().tail()}")

    def _call_event(self, *types: str, timeout: float) -> dict[str, Any]:
        return self.wait_event(
            lambda m: m.get("event") and m.get("class") == "call" and m.get("type") in types,
            timeout,
            self._dial_from,
        )

    def wait_connected(self, timeout: float = 10.0) -> None:
        event = self._call_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=timeout)
        if event["type"] != "CALL_ESTABLISHED":
            raise PhoneError(f"{self}: call closed: {event}\n{self._proc().tail()}")

    def wait_ended(self, timeout: float = 10.0) -> str:
        """The reason of the call's end (baresip's ``CALL_CLOSED`` parameter)."""
        return str(self._call_event("CALL_CLOSED", timeout=timeout).get("param", ""))

    def ended(self) -> bool:
        return any(
            e.get("event") and e.get("type") == "CALL_CLOSED"
            for e in self.events[self._dial_from :]
        )

    def hangup(self) -> None:
        self.command("hangup")

    def position(self) -> int:
        return len(self.events)

    def wait_incoming(self, since: int, timeout: float = 10.0) -> str:
        event = self.wait_event(
            lambda m: (
                m.get("event")
                and m.get("type") == "CALL_ESTABLISHED"
                and m.get("direction") == "incoming"
            ),
            timeout,
            since,
        )
        self._dial_from = since
        return str(event.get("peeruri", ""))

    def wait_registered(self, timeout: float = 10.0) -> None:
        if self.registrar is None:
            raise PhoneError(f"{self} has no registrar")
        # Its output, not ctrl_tcp's REGISTER_OK: the first REGISTER goes out at start,
        # and its answer may come before the control connection exists (events lost).
        proc = self._proc()
        index, match = proc.wait_line_at(
            r"\{\d+/\w+/v[46]\} (\d{3}) |reg: \S+: Register: ",
            timeout,
            getattr(self, "_registrations_from", 0),
        )
        self._registrations_from = index + 1
        if match.group(1) != "200":
            raise PhoneError(f"{self}: registration failed: {match.string}\n{proc.tail()}")

    def recording(self) -> Path | None:
        # One dump per call (named by its start, to the second): the newest is this call's.
        found = sorted(self.directory.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def stop(self) -> None:
        if self.process is None:
            return

        def polite() -> None:
            with contextlib.suppress(PhoneError, OSError):
                self.command("hangup", timeout=1.0)
            with contextlib.suppress(PhoneError, OSError):
                self.command("quit", timeout=1.0)

        self.process.stop(polite)
        with contextlib.suppress(OSError, AttributeError):
            self._ctrl.close()
