"""What every launcher shares: the checkout's files, free ports, starting and stopping a child.

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
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "MIXER_TOKEN_ENV",
    "PACKAGE_PARENT",
    "ROOT",
    "ROOT_ENV",
    "ServiceError",
    "free_port",
    "listening_url",
    "log_tail",
    "pdeathsig",
    "repository_file",
    "repository_root",
    "serve_secconf",
    "terminate",
    "toml_table",
    "toml_value",
]

#: Names the secconf checkout whose files the launchers use (default: this source tree).
ROOT_ENV = "SECCONF_ROOT"


def repository_root() -> Path:
    """``$SECCONF_ROOT`` if set, else the source tree this package is in (plugin/secconf/lab/)."""
    configured = os.environ.get(ROOT_ENV)
    return Path(configured).resolve() if configured else Path(__file__).resolve().parents[4]


ROOT = repository_root()
#: The directory holding the ``secconf`` package the launchers run: ``plugin/`` in a checkout,
#: site-packages when installed.  Kamailio's embedded Python loads the module from there.
PACKAGE_PARENT = Path(__file__).resolve().parents[3]
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


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port (TCP, or UDP with ``socket.SOCK_DGRAM``) nobody holds right now.

    The kernel's pick: another program may take it before the caller binds, so the
    launchers retry a start that fails on a taken port.
    """
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pdeathsig(signame: str) -> list[str]:
    """Prefix making the child die with us (Linux ``setpriv``), or nothing elsewhere."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return []
    return [setpriv, "--pdeathsig", signame]


def terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str], deadline: float) -> None:
    """SIGTERM *process*, SIGKILL if it has not exited after *deadline* seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(deadline)


def log_tail(text: str, lines: int = 15) -> str:
    """The last *lines* lines of a log, for an error message."""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


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


def serve_secconf(
    command: str, config: Path, deadline: float, lines: list[str]
) -> tuple[subprocess.Popen[str], str | None]:
    """Start ``secconf <command> serve --config <config>``; (process, its URL or None).

    The process dies with this one (``setpriv --pdeathsig TERM``) and runs in its own
    session, so a Ctrl-C at the terminal reaches only us and we stop it in order.
    """
    secconf = str(Path(sys.executable).parent / "secconf")
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        [*pdeathsig("TERM"), secconf, command, "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    return process, listening_url(process, deadline, lines)


def toml_value(value: object) -> str:
    """*value* as a TOML literal (the launchers' config files hold strings, numbers, booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def toml_table(name: str, values: Mapping[str, object]) -> list[str]:
    """``[name]`` and its ``key = value`` lines (nothing when *values* is empty)."""
    if not values:
        return []
    return ["", f"[{name}]", *(f"{key} = {toml_value(value)}" for key, value in values.items())]
