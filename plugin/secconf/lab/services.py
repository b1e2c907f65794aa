"""Starting the helper services secconf's demo and benchmarks need, on free loopback ports.

Production runs Redis and the KMS under the operator's service manager; these
helpers exist so that ``make demo`` and ``bench/`` run the real programs
without touching ports other software may hold.

The launchers use files of a secconf checkout that the package does not ship: Kamailio's
``config/kamailio/`` (cfg, entry script, tls.cfg), Asterisk's ``config/asterisk/`` and
``dialplan/``, ``docker/asterisk-tree.sh`` and ``docker/asterisk.lock``.  They are taken from
``$SECCONF_ROOT`` (read at import) or else from the source tree this package lives in; a
launcher that needs a file that is not there raises :class:`ServiceError` naming the file and
the variable (docs/ARCHITECTURE.md, "The lab outside a checkout").
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

__all__ = [
    "AsteriskProcess",
    "EdgeProcess",
    "KamailioProcess",
    "RedisProcess",
    "ServiceError",
    "ami_login",
    "free_port",
    "kamailio_tls_config",
    "listening_url",
    "options_ping",
    "processes_in",
    "restore_asterisk_tree",
]

#: Names the secconf checkout whose files the launchers use (default: this source tree).
ROOT_ENV = "SECCONF_ROOT"


def repository_root() -> Path:
    """``$SECCONF_ROOT`` if set, else the source tree this package is in (plugin/secconf/lab/)."""
    configured = os.environ.get(ROOT_ENV)
    return Path(configured).resolve() if configured else Path(__file__).resolve().parents[3]


ROOT = repository_root()
#: The directory holding the ``secconf`` package the launchers run: ``plugin/`` in a checkout,
#: site-packages when installed.  Kamailio's embedded Python loads the module from there.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
#: The module's override of ``[upstream] token_secret_file`` (secconf.focus.settings).
MIXER_TOKEN_ENV = "SECCONF_MIXER_TOKEN_FILE"  # noqa: S105 - a variable name


class ServiceError(RuntimeError):
    """A service did not come up; the message says why (with the tail of its log)."""


def repository_file(path: Path) -> Path:
    """*path* (a file or directory under :data:`ROOT`) if it exists, else :class:`ServiceError`.

    The message names what is missing and where it was looked for, and how to point the
    launchers at a checkout (an installed package has no ``config/``, ``dialplan/`` or
    ``docker/``).
    """
    if path.exists():
        return path
    try:
        name = str(path.relative_to(ROOT))
    except ValueError:
        name = str(path)
    raise ServiceError(
        f"the lab needs {name} from a secconf checkout and there is none under {ROOT}: "
        f"set {ROOT_ENV} to a secconf checkout (default: the source tree this package is in)"
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
                [*_pdeathsig("TERM"), binary, "--port", str(self.port), "--bind", "127.0.0.1",
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


# -- shared helpers -------------------------------------------------------------------------


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pdeathsig(signame: str) -> list[str]:
    """Prefix making the child die with us (Linux ``setpriv``), or nothing elsewhere."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return []
    return [setpriv, "--pdeathsig", signame]


def _terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str], deadline: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(deadline)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


# -- the media edge -------------------------------------------------------------------------


def listening_url(
    process: subprocess.Popen[str], deadline: float, seen: list[str] | None = None
) -> str | None:
    """Read *process*'s stderr until its "listening on HOST:PORT" line: ``http://HOST:PORT``.

    None if it exits or *deadline* seconds pass first; the lines read go to *seen*.
    """
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in process.stderr or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                return None
            continue
        if seen is not None:
            seen.append(line)
        if "listening on" in line:
            return "http://" + line.rsplit(" ", 1)[1].strip()
    return None


def _serve(
    command: str, config: Path, deadline: float, lines: list[str]
) -> tuple[subprocess.Popen[str], str | None]:
    """Start ``secconf <command> serve --config <config>``; (process, its URL or None).

    The process dies with this one (``setpriv --pdeathsig TERM``) and runs in its own
    session, so a Ctrl-C at the terminal reaches only us and we stop it in order.
    """
    secconf = str(Path(sys.executable).parent / "secconf")
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [*_pdeathsig("TERM"), secconf, command, "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    return process, listening_url(process, deadline, lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _toml_table(name: str, values: Mapping[str, object]) -> list[str]:
    """``[name]`` and its ``key = value`` lines (nothing when *values* is empty)."""
    if not values:
        return []
    return ["", f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items())]


class EdgeProcess:
    """``secconf edge serve`` on loopback (control API on a kernel-chosen port, state in memory).

    *settings* override keys of the ``[edge]`` table, *http* sets keys of its ``[http]`` table
    (docs/edge.md "Slow and greedy clients").  The process dies with this one
    (``setpriv --pdeathsig TERM``).  Inside the context (or after :meth:`start`):
    ``url``, ``token``, ``token_file``, ``lines`` (its stderr up to "listening on"),
    ``get(path)`` (authenticated read of the control API).  Raises :class:`ServiceError`
    if it does not say "listening on" within *deadline* seconds.
    """

    TOKEN_PREFIX = "edge-"  # noqa: S105 - a prefix, the secret is random

    def __init__(
        self,
        workdir: Path,
        *,
        deadline: float = 15.0,
        settings: Mapping[str, object] | None = None,
        http: Mapping[str, object] | None = None,
    ) -> None:
        self.workdir = workdir
        self.deadline = deadline
        self.settings = dict(settings or {})
        self.http = dict(http or {})
        self.url = ""
        self.token = ""
        self.token_file = workdir / "edge-token"
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def focus_env(self) -> dict[str, str]:
        """The Kamailio module's environment overrides that point it at this edge."""
        return {"SECCONF_EDGE_URL": self.url, "SECCONF_EDGE_TOKEN_FILE": str(self.token_file)}

    def get(self, path: str) -> object:
        import httpx

        response = httpx.get(
            self.url + path,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=5.0,
            trust_env=False,
        )
        response.raise_for_status()
        return response.json()

    def _config(self) -> Path:
        values: dict[str, object] = {
            "id": f"edge-{secrets.token_hex(3)}",
            "listen": "127.0.0.1",
            "port": 0,
            "token_file": str(self.token_file),
            "media_host": "127.0.0.1",
            "internal_mode": "rtp",
            "grace": 1.0,
            "tick": 0.05,
        }
        values.update(self.settings)
        lines = ["[edge]", *(f"{key} = {_toml_value(value)}" for key, value in values.items())]
        lines += ["", "[verify]", "settle = 0.3", "deadline = 5.0", "min_packets = 10"]
        lines += _toml_table("http", self.http)
        path = self.workdir / "edge.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = self.TOKEN_PREFIX + secrets.token_hex(16)
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        config = self._config()
        self.lines = []
        self.process, url = _serve("edge", config, self.deadline, self.lines)
        if url is None:
            self.stop()
            raise ServiceError("media edge did not start: " + _tail("".join(self.lines), 20))
        self.url = url

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _terminate(process, 10.0)

    def __enter__(self) -> EdgeProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- the KMS --------------------------------------------------------------------------------


class KmsProcess:
    """``secconf kms serve`` on loopback against *redis_url* (a fresh KEK in *workdir*).

    Inside the context (or after :meth:`start`): ``url``, ``identity``, ``config``
    and :meth:`add_user`, which provisions an identity with a fresh PSK file the
    way an operator does (``secconf kms user add``).  *http* sets keys of the
    ``[http]`` table (docs/kms.md "Slow and greedy clients"), *tickets* those of the
    ``[tickets]`` table (docs/kms.md "Tickets per user").  The process dies with this
    one (``setpriv --pdeathsig TERM``); :class:`ServiceError` if it does not say
    "listening on" within *deadline* seconds.
    """

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        *,
        identity: str = "sip:kms.example.invalid",
        prefix: str = "secconf-kms",
        deadline: float = 15.0,
        http: Mapping[str, object] | None = None,
        tickets: Mapping[str, object] | None = None,
    ) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.identity = identity
        self.prefix = prefix
        self.deadline = deadline
        self.http = dict(http or {})
        self.tickets = dict(tickets or {})
        self.config = workdir / "kms.toml"
        self.url = ""
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._secconf = str(Path(sys.executable).parent / "secconf")

    def start(self) -> None:
        from ..store import generate_key_file

        self.workdir.mkdir(parents=True, exist_ok=True)
        kek = self.workdir / "kms-kek"
        if not kek.exists():
            generate_key_file(kek, "KMS key-encryption key")
        self.config.write_text(
            "[kms]\n"
            f"identity = {_toml_value(self.identity)}\n"
            'listen = "127.0.0.1"\nport = 0\n'
            f"kek_file = {_toml_value(str(kek))}\n"
            "clock_skew = 60\nmax_ticket_lifetime = 3600\n\n"
            "[redis]\n"
            f"url = {_toml_value(self.redis_url)}\ntimeout = 0.5\n"
            f"prefix = {_toml_value(self.prefix)}\n"
            + "".join(line + "\n" for line in _toml_table("http", self.http))
            + "".join(line + "\n" for line in _toml_table("tickets", self.tickets))
        )
        self.lines = []
        self.process, url = _serve("kms", self.config, self.deadline, self.lines)
        if url is None:
            self.stop()
            raise ServiceError("KMS did not start: " + _tail("".join(self.lines), 20))
        self.url = url

    def add_user(self, identity: str) -> Path:
        """Provision *identity* with a fresh PSK (mode 0600 file in *workdir*); return the file."""
        name = "".join(c if c.isalnum() else "_" for c in identity)
        psk_file = self.workdir / f"{name}.psk"
        result = subprocess.run(  # noqa: S603 - fixed argument list
            [self._secconf, "kms", "user", "add", identity, "--psk-file", str(psk_file),
             "--config", str(self.config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"secconf kms user add {identity} failed: {_tail(result.stderr)}")
        return psk_file

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _terminate(process, 10.0)

    def __enter__(self) -> KmsProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- Kamailio -------------------------------------------------------------------------------


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
            *_pdeathsig("TERM"), KAMAILIO, "-DD", "-E",
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
            SECCONF_PYTHONPATH=os.pathsep.join(
                [sysconfig.get_paths()["purelib"], str(PACKAGE_PARENT)]
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
                self.tls_port = _free(socket.SOCK_STREAM)
            self._launch(self.port, self.tls_port)
            return
        last = ""
        for _ in range(5):  # the port may be taken between probe and bind
            port = _free(socket.SOCK_DGRAM)
            tls_port = _free(socket.SOCK_STREAM) if self.tls_dir is not None else 0
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
        from ..store import generate_key_file

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
                    + _tail(self.log())
                )
            status = options_ping(port)
            if status is not None and status.startswith("SIP/2.0 200") and _accepts(tls_port):
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"kamailio on port {port} did not answer OPTIONS within {self.deadline:.0f} s "
            f"(last: {status}):\n" + _tail(self.log())
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _terminate(process, 5.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> KamailioProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- Asterisk (cached Debian sid tree, chroot) ----------------------------------------------

ASTERISK_TREE_SCRIPT = ROOT / "docker" / "asterisk-tree.sh"
ASTERISK_LOCK = ROOT / "docker" / "asterisk.lock"
#: The templates :meth:`AsteriskProcess.configure` renders (secconf.asterisk.config).
ASTERISK_CONFIG_DIR = ROOT / "config" / "asterisk"
ASTERISK_DIALPLAN = ROOT / "dialplan" / "extensions.conf"
_BASH = shutil.which("bash") or "/bin/bash"


def pinned_asterisk_version() -> str:
    """The Debian version of Asterisk that docker/asterisk.lock pins the tree to."""
    try:
        text = repository_file(ASTERISK_LOCK).read_text()
    except OSError as exc:
        raise ServiceError(f"cannot read {ASTERISK_LOCK}: {exc.strerror}") from None
    for line in text.splitlines():
        if line.startswith("ASTERISK_DEB_VERSION="):
            return line.partition("=")[2].strip()
    raise ServiceError(f"no ASTERISK_DEB_VERSION in {ASTERISK_LOCK}")


def tree_asterisk_version(tree: Path) -> str:
    """The Debian version of Asterisk a restored tree was built with ("unknown" if unrecorded)."""
    try:
        return (tree / "etc" / "secconf-asterisk-version").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def check_asterisk_tree(tree: Path) -> str:
    """The tree's Asterisk is the pinned one; raise :class:`ServiceError` otherwise."""
    pinned, found = pinned_asterisk_version(), tree_asterisk_version(tree)
    if found != pinned:
        raise ServiceError(
            f"the Asterisk tree at {tree} has asterisk {found}, docker/asterisk.lock pins "
            f"{pinned}: restore the pinned tree (docker/asterisk-tree.sh restore) or take the new "
            "version explicitly (docker/asterisk-tree.sh update, make test, commit the lock)"
        )
    return found


def asterisk_tree_cached() -> bool:
    """True when the tree's tarball exists (restoring takes seconds, not a build)."""
    result = subprocess.run(  # noqa: S603 - fixed argument list
        [_BASH, str(repository_file(ASTERISK_TREE_SCRIPT)), "path"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return result.returncode == 0 and Path(result.stdout.strip()).is_file()


def restore_asterisk_tree(
    directory: Path,
    *,
    timeout: float = 600.0,
    progress: Callable[[float], None] | None = None,
) -> float:
    """``docker/asterisk-tree.sh restore DIR`` (builds the cache first if needed); seconds.

    *progress* is called about once a second with the seconds elapsed.
    """
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [_BASH, str(repository_file(ASTERISK_TREE_SCRIPT)), "restore", str(directory)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while True:
            try:
                _, stderr = process.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    raise ServiceError(
                        f"asterisk-tree.sh restore took longer than {timeout:.0f} s"
                    ) from None
                if progress is not None:
                    progress(elapsed)
    finally:
        if process.poll() is None:
            _terminate(process, 10.0)
    if process.returncode != 0:
        raise ServiceError(f"asterisk-tree.sh restore failed: {_tail(stderr or '')}")
    return time.monotonic() - started


def processes_in(directory: Path) -> list[int]:
    """Pids of processes whose root directory is *directory* (chrooted into the tree)."""
    target = str(directory.resolve())
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/root") == target:
                    pids.append(int(entry))
    return pids


def ami_login(port: int, user: str, secret: str, timeout: float = 1.0) -> bool:
    """An AMI login succeeds and Asterisk has reported FullyBooted."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(
                f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\n"
                "Events: system\r\n\r\n".encode()
            )
            data = b""
            stop = time.monotonic() + timeout
            while time.monotonic() < stop:
                chunk = conn.recv(4096)
                if not chunk or b"Response: Error" in data + chunk:
                    return False
                data += chunk
                if b"Response: Success" in data and b"Event: FullyBooted" in data:
                    conn.sendall(b"Action: Logoff\r\n\r\n")
                    return True
    except OSError:
        return False
    return False


class AsteriskProcess:
    """Asterisk from a restored tree (:func:`restore_asterisk_tree`), chrooted, on loopback.

    The project's config is rendered (:func:`secconf.asterisk.config.render`) with free
    ports into the tree's /etc/asterisk; Asterisk runs as ``unshare --mount --fork
    --mount-proc=TREE/proc chroot TREE asterisk -f`` so /proc is mounted only inside a
    private mount namespace that ends with it, and the chain dies with this process
    (``setpriv --pdeathsig KILL``).  Needs root.  Ready when AMI login succeeds and
    Asterisk reports FullyBooted.  :meth:`start` picks free ports the first time and
    reuses them after :meth:`stop`.  Inside the context: ``sip_port``, ``ami_port``,
    ``ami_user``, ``ami_secret``, ``rtp_range``.

    The join-token secret shared with the Kamailio module is *mixer_token_file*
    (default: ``<tree>-mixer-token`` next to the tree, outside the chroot), made
    (32 random bytes, hex, mode 0600) if missing; only the keys derived from it are
    rendered into the tree.  :attr:`focus_env` points the module at it.
    """

    RTP_PORTS = 200

    def __init__(
        self,
        tree: Path,
        *,
        deadline: float = 20.0,
        system_name: str = "secconf-demo",
        mixer_token_file: Path | None = None,
    ) -> None:
        self.tree = tree
        self.deadline = deadline
        self.system_name = system_name
        self.mixer_token_file = mixer_token_file or tree.parent / f"{tree.name}-mixer-token"
        self.sip_port = 0
        self.ami_port = 0
        self.kamailio_port = 0
        self.rtp_range = (0, 0)
        self.ami_user = "secconf"
        self.ami_secret = secrets.token_hex(12)
        self.start_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def etc(self) -> Path:
        return self.tree / "etc" / "asterisk"

    @property
    def log_path(self) -> Path:
        return self.tree / "var" / "log" / "asterisk" / "messages"

    @property
    def running(self) -> bool:
        """The launcher process or anything chrooted into the tree is alive."""
        alive = self._process is not None and self._process.poll() is None
        return alive or bool(processes_in(self.tree))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def focus_env(self) -> dict[str, str]:
        """The Kamailio module's environment override that gives it this mixer's secret."""
        return {MIXER_TOKEN_ENV: str(self.mixer_token_file)}

    def mixer_token_secret(self) -> bytes:
        """The join-token secret (made on first use); for the module and the tests only."""
        from ..store import generate_key_file, load_key_file

        if not self.mixer_token_file.exists():
            self.mixer_token_file.parent.mkdir(parents=True, exist_ok=True)
            generate_key_file(self.mixer_token_file, "mixer token secret")
        return load_key_file(self.mixer_token_file, "mixer token secret")

    def configure(self, kamailio_port: int | None = None) -> None:
        """Render the project's config with this server's ports into the tree."""
        from ..asterisk.config import MIXER_TOKEN_SECRET, render

        config_dir = repository_file(ASTERISK_CONFIG_DIR)
        dialplan_dir = repository_file(ASTERISK_DIALPLAN).parent
        if self.etc.exists():
            shutil.rmtree(self.etc)
        render(
            self.etc,
            {
                MIXER_TOKEN_SECRET: self.mixer_token_secret(),
                "SYSTEM_NAME": self.system_name,
                "SIP_HOST": "127.0.0.1",
                "SIP_PORT": self.sip_port,
                "KAMAILIO_HOST": "127.0.0.1",
                "KAMAILIO_PORT": kamailio_port or self.kamailio_port,
                "MEDIA_HOST": "127.0.0.1",
                "RTP_START": self.rtp_range[0],
                "RTP_END": self.rtp_range[1],
                "AMI_HOST": "127.0.0.1",
                "AMI_PORT": self.ami_port,
                "AMI_USER": self.ami_user,
                "AMI_SECRET": self.ami_secret,
            },
            config_dir=config_dir,
            dialplan_dir=dialplan_dir,
        )

    def command(self) -> list[str]:
        return [
            *_pdeathsig("KILL"), "unshare", "--mount", "--propagation", "private", "--fork",
            "--kill-child=TERM", f"--mount-proc={self.tree / 'proc'}",
            *_pdeathsig("KILL"), "chroot", str(self.tree), "/usr/sbin/asterisk", "-f",
        ]  # fmt: skip

    def start(self) -> None:
        """Start on fresh free ports the first time, the same ports after :meth:`stop`."""
        if self._process is not None and self._process.poll() is None:
            return
        if os.geteuid() != 0:
            raise ServiceError("Asterisk runs chrooted in the cached tree: needs root")
        check_asterisk_tree(self.tree)
        for tool in ("unshare", "chroot"):
            if shutil.which(tool) is None:
                raise ServiceError(f"{tool} not found (bash docker/bootstrap-debian.sh)")
        if self.sip_port:
            self._launch()
            return
        last = ""
        for _ in range(5):
            self.sip_port = _free(socket.SOCK_DGRAM)
            self.ami_port = _free(socket.SOCK_STREAM)
            # Kamailio's address in pjsip.conf identifies it by host (127.0.0.1), not by port.
            self.kamailio_port = _free(socket.SOCK_DGRAM)
            start = min(_free(socket.SOCK_DGRAM) & ~1, 65534 - self.RTP_PORTS)
            self.rtp_range = (start, start + self.RTP_PORTS - 1)
            try:
                self._launch()
            except ServiceError as exc:
                last = str(exc)
                if "in use" in last or "did not" in last:
                    continue
                raise
            return
        raise ServiceError(f"asterisk: no free ports after 5 attempts: {last}")

    def _launch(self) -> None:
        self.configure()
        rundir = self.tree / "run" / "asterisk"
        rundir.mkdir(parents=True, exist_ok=True)
        # A control socket left by a killed run makes Asterisk believe it is running.
        for stale in (rundir / "asterisk.ctl", rundir / "asterisk.pid", self.log_path):
            stale.unlink(missing_ok=True)
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - fixed argument list
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
            start_new_session=True,
        )  # fmt: skip
        self._process = process
        stop = started + self.deadline
        while not ami_login(self.ami_port, self.ami_user, self.ami_secret):
            if process.poll() is not None:
                self._process = None
                raise ServiceError(
                    f"asterisk exited with {process.returncode} (sip {self.sip_port}, "
                    f"ami {self.ami_port}):\n" + _tail(self.log(), 20)
                )
            if time.monotonic() > stop:
                self.stop()
                raise ServiceError(
                    f"asterisk did not answer AMI on {self.ami_port} within "
                    f"{self.deadline:.0f} s:\n" + _tail(self.log(), 20)
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started
        # The SIP transport binds before FullyBooted; a clash shows in the log.
        if "Unable to bind" in self.log() or "Address already in use" in self.log():
            self.stop()
            raise ServiceError(
                f"asterisk: SIP port {self.sip_port} in use:\n" + _tail(self.log(), 20)
            )

    def asterisk_pid(self) -> int | None:
        """The Asterisk process (the one chrooted into the tree), if running."""
        pids = processes_in(self.tree)
        return pids[0] if pids else None

    def stop(self) -> None:
        """SIGTERM Asterisk itself (clean shutdown), SIGKILL after 5 s; /proc goes with it."""
        process, self._process = self._process, None
        if process is None:
            return
        for pid in processes_in(self.tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(5.0)  # unshare exits when Asterisk has
        except subprocess.TimeoutExpired:
            process.kill()  # Asterisk follows (pdeathsig KILL)
            process.wait(5.0)
        for leftover in processes_in(self.tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)

    def __enter__(self) -> AsteriskProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
