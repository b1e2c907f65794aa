"""Kamailio with the shipped ``config/kamailio/kamailio.cfg`` and the secconf module, on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import time
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path

from .process import (
    MIXER_TOKEN_ENV,
    PACKAGE_PARENT,
    ROOT,
    ServiceError,
    free_port,
    log_tail,
    pdeathsig,
    repository_file,
    terminate,
)

__all__ = [
    "KAMAILIO",
    "KAMAILIO_CONFIG",
    "KAMAILIO_ENTRY",
    "KAMAILIO_TLS_DIR",
    "KAMAILIO_TLS_TEMPLATE",
    "KamailioProcess",
    "kamailio_tls_config",
    "options_ping",
]


def _accepts(port: int, timeout: float = 0.3) -> bool:
    """A TCP connection to 127.0.0.1:*port* is accepted (True when *port* is 0: none asked)."""
    if not port:
        return True
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


KAMAILIO_CONFIG = ROOT / "config" / "kamailio" / "kamailio.cfg"
KAMAILIO_ENTRY = ROOT / "config" / "kamailio" / "secconf_kemi.py"
KAMAILIO_TLS_TEMPLATE = ROOT / "config" / "kamailio" / "tls.cfg"
#: The directory the shipped tls.cfg names (``secconf tls init`` writes there).
KAMAILIO_TLS_DIR = "/etc/secconf/tls/"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"


def options_ping(port: int, timeout: float = 0.3) -> str | None:
    """Send one OPTIONS to 127.0.0.1:*port*; the status line of the answer, or None."""
    branch = "z9hG4bK" + uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        sock.settimeout(timeout)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            return None
    return data.split(b"\r\n", 1)[0].decode("ascii", "replace")


def kamailio_tls_config(tls_dir: Path, path: Path) -> Path:
    """Write the shipped ``tls.cfg`` to *path* with its files taken from *tls_dir*.

    *tls_dir* holds ``ca.pem``, ``server.pem`` and ``server.key`` as
    :func:`secconf.lab.tlsca.init_ca` writes them; a missing file is refused here
    rather than by Kamailio at start (whose message is less clear).
    """
    for name in ("ca.pem", "server.pem", "server.key"):
        if not (tls_dir / name).is_file():
            raise ServiceError(f"TLS directory {tls_dir} has no {name} (secconf tls init)")
    text = repository_file(KAMAILIO_TLS_TEMPLATE).read_text()
    if KAMAILIO_TLS_DIR not in text:
        raise ServiceError(f"{KAMAILIO_TLS_TEMPLATE} does not name {KAMAILIO_TLS_DIR}")
    path.write_text(text.replace(KAMAILIO_TLS_DIR, str(tls_dir.resolve()) + "/"))
    return path


class KamailioProcess:
    """Kamailio with the shipped ``config/kamailio/kamailio.cfg`` and the secconf module.

    The module's TOML (*settings_toml*, if given) is written to *settings_path*
    (default ``workdir/secconf.toml``); the entry script is given with ``-A
    SECCONF_KEMI=...`` and overrides (*env*, e.g. ``SECCONF_UPSTREAM``) in the
    environment, so the cfg is not edited.  Ready when it answers an OPTIONS.  The
    main process dies with this one (``setpriv --pdeathsig TERM``; its children
    follow it).  :meth:`start` picks a free UDP port the first time and reuses it
    after :meth:`stop`.  Inside the context: ``port``, ``settings_path``, ``env``,
    ``log()``.

    *config* is another cfg (a benchmark's native relay), *debug* its log level and
    *memory* its shared/private memory in MiB.

    The module needs the secret it shares with the mixer for the join tokens
    (``[upstream] token_secret_file``): pass the mixer's as ``SECCONF_MIXER_TOKEN_FILE``
    in *env* (:attr:`AsteriskProcess.focus_env`).  Without it in *env* or in the
    settings, :meth:`start` makes a fresh one in *workdir* (mode 0600) and sets that
    variable: enough for a stand-in mixer that checks no token.

    With *tls_dir* (a directory as :func:`secconf.lab.tlsca.init_ca` writes it) Kamailio
    also listens for SIP over TLS on 127.0.0.1:``tls_port`` (``-A WITH_TLS``, the
    shipped ``tls.cfg`` rendered into *workdir* with that directory's files).
    """

    def __init__(
        self,
        workdir: Path,
        settings_toml: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        children: int = 2,
        deadline: float = 15.0,
        settings_path: Path | None = None,
        tls_dir: Path | None = None,
        config: Path = KAMAILIO_CONFIG,
        debug: int = 2,
        memory: tuple[int, int] = (64, 16),
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.debug = debug
        self.memory = memory  # shared and private memory, MiB (-m, -M)
        self.tls_dir = tls_dir
        self.tls_port = 0
        self.settings_path = settings_path or workdir / "secconf.toml"
        self.settings_toml = settings_toml
        self.env = dict(env or {})
        self.children = children
        self.deadline = deadline
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Kamailio's main process (its workers are its children), while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def tls_uri(self) -> str:
        """The TLS listener as a SIP URI (empty without *tls_dir*)."""
        return f"sip:127.0.0.1:{self.tls_port};transport=tls" if self.tls_port else ""

    @property
    def tls_config_path(self) -> Path:
        return self.workdir / "tls.cfg"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def command(self, port: int, tls_port: int = 0) -> list[str]:
        tls: list[str] = []
        if tls_port:
            tls = [
                "-l", f"tls:127.0.0.1:{tls_port}", "-A", "WITH_TLS",
                "-A", f'SECCONF_TLS_CONFIG="{self.tls_config_path}"',
            ]  # fmt: skip
        return [
            *pdeathsig("TERM"), KAMAILIO, "-DD", "-E",
            "-f", str(self.config), "-l", f"udp:127.0.0.1:{port}", *tls,
            "-n", str(self.children), "-Y", str(self.workdir),
            "-m", str(self.memory[0]), "-M", str(self.memory[1]),
            "-A", f'SECCONF_KEMI="{KAMAILIO_ENTRY}"', "-A", f"SECCONF_DEBUG={self.debug}",
            "--atexit=no",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SECCONF_", "PYTHON"))}
        # app_python3 embeds Debian's Python, which finds its prefix from the first
        # "python3" on PATH: another Python there (pyenv puts its own bin first for its
        # children) makes it load that Python's extension modules (_ssl: "undefined
        # symbol"), so the system directories come first.
        system = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        rest = [d for d in env.get("PATH", "").split(os.pathsep) if d and d not in system]
        env.update(
            PATH=os.pathsep.join(system + rest),
            SECCONF_KAMAILIO_CONFIG=str(self.settings_path),
            # The package this launcher runs comes first: the environment's site-packages
            # may hold an editable install of another checkout (a git worktree beside the
            # main one), whose .pth would otherwise win inside Kamailio.
            SECCONF_PYTHONPATH=os.pathsep.join(
                [str(PACKAGE_PARENT), sysconfig.get_paths()["purelib"]]
            ),
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(self.env)
        return env

    def start(self) -> None:
        """Start on a free port the first time, on the same port after :meth:`stop`."""
        if self.running:
            return
        repository_file(KAMAILIO_ENTRY)
        if self.config == KAMAILIO_CONFIG:
            repository_file(KAMAILIO_CONFIG)
        if not os.access(KAMAILIO, os.X_OK):
            raise ServiceError(f"kamailio not found at {KAMAILIO} (make setup)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.settings_toml is not None:
            self.settings_path.write_text(self.settings_toml)
        self._mixer_token()
        if self.tls_dir is not None:
            kamailio_tls_config(self.tls_dir, self.tls_config_path)
        if self.port:
            if self.tls_dir is not None and not self.tls_port:
                self.tls_port = free_port(socket.SOCK_STREAM)
            self._launch(self.port, self.tls_port)
            return
        last = ""
        for _ in range(5):  # the port may be taken between probe and bind
            port = free_port(socket.SOCK_DGRAM)
            tls_port = free_port(socket.SOCK_STREAM) if self.tls_dir is not None else 0
            try:
                self._launch(port, tls_port)
            except ServiceError as exc:
                last = str(exc)
                if "already in use" in last or "bind" in last:
                    continue
                raise
            self.port = port
            self.tls_port = tls_port
            return
        raise ServiceError(f"kamailio: no free port after 5 attempts: {last}")

    def _mixer_token(self) -> None:
        """A join-token secret for the module if neither *env* nor the settings name one."""
        if MIXER_TOKEN_ENV in self.env:
            return
        try:
            named = tomllib.loads(self.settings_path.read_text()).get("upstream", {})
        except (OSError, tomllib.TOMLDecodeError):
            named = {}  # Kamailio's module reports the unusable file itself
        if isinstance(named, dict) and named.get("token_secret_file"):
            return
        from ...store import generate_key_file

        path = self.workdir / "mixer-token"
        if not path.exists():
            generate_key_file(path, "mixer token secret")
        self.env[MIXER_TOKEN_ENV] = str(path)

    def _launch(self, port: int, tls_port: int = 0) -> None:
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - fixed argument list
                self.command(port, tls_port), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self.environment(), cwd=self.workdir,
                start_new_session=True,
            )  # fmt: skip
        self._process = process
        stop = time.monotonic() + self.deadline
        status: str | None = None
        while time.monotonic() < stop:
            if process.poll() is not None:
                self._process = None
                raise ServiceError(
                    f"kamailio on port {port} exited with {process.returncode}:\n"
                    + log_tail(self.log())
                )
            status = options_ping(port)
            if status is not None and status.startswith("SIP/2.0 200") and _accepts(tls_port):
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"kamailio on port {port} did not answer OPTIONS within {self.deadline:.0f} s "
            f"(last: {status}):\n" + log_tail(self.log())
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, 5.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> KamailioProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
