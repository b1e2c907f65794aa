"""baresip 1.0.0 (Debian ``baresip-core``) driven headless over its ``ctrl_tcp`` socket.

``baresip -f DIR``, commands and events as JSON netstrings on its ``ctrl_tcp`` module;
``aufile`` is the audio source (8000 Hz mono WAV), ``sndfile`` writes ``dump-*-dec.wav`` (what
it decoded) and ``dump-*-enc.wav`` (what it sent), ``aubridge`` is a player that goes nowhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .audio import write_tone_wav
from .phone import Phone, PhoneError, PhoneProcess
from .ports import HOST, free_rtp_port, free_sip_port, free_tcp_port

__all__ = ["BARESIP", "BARESIP_MODULES", "BaresipPhone"]

BARESIP = "/usr/bin/baresip"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")


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
        self.ctrl_port = free_tcp_port((self.sip_port, self.sip_port + 1))
        (self.directory / "config").write_text(self.config())
        (self.directory / "accounts").write_text(self.account() + "\n")
        (self.directory / "contacts").write_text("")
        self.events: list[dict[str, Any]] = []
        self._events_changed = threading.Condition()
        env = {"HOME": str(self.directory), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.process = PhoneProcess(
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
