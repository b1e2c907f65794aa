"""linphonec 5.1.65 (Debian ``linphone-cli``) driven headless on stdin.

``linphonec -c RC -a``, commands on stdin (``soundcard use files``, ``play F``, ``record F``,
``codec disable N``, ``call URI``, ``terminate``, ``quit``); call states are its ``Call N ...``
lines, registration its ``Registration on ...`` lines.  ``HOME`` is the phone's directory (it
needs ``~/.local/share/linphone`` for its databases or its core never starts).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .phone import SUITE, Phone, PhoneError, PhoneProcess
from .ports import free_tcp_port

__all__ = ["LINPHONEC", "LinphonePhone"]

LINPHONEC = "/usr/bin/linphonec"


class LinphonePhone(Phone):
    """linphonec 5.1.65 driven on stdin."""

    program = "linphonec"

    def start(self, timeout: float = 10.0) -> LinphonePhone:
        if self.transport == "tls":
            self.tls_port = free_tcp_port((self.sip_port,))
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
        self.process = PhoneProcess(
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
