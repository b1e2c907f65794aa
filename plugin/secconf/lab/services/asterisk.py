"""Asterisk from the cached Debian sid tree, chrooted, on loopback; the tree itself.

The tree is restored from its cache by ``docker/asterisk-tree.sh`` and pinned to the Asterisk
version of ``docker/asterisk.lock``; :class:`AsteriskProcess` renders the project's config
into it and runs Asterisk chrooted there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .process import (
    MIXER_TOKEN_ENV,
    ROOT,
    ServiceError,
    free_port,
    log_tail,
    pdeathsig,
    repository_file,
    terminate,
)

__all__ = [
    "ASTERISK_CONFIG_DIR",
    "ASTERISK_DIALPLAN",
    "ASTERISK_LOCK",
    "ASTERISK_TREE_SCRIPT",
    "AsteriskProcess",
    "ami_login",
    "asterisk_tree_cached",
    "check_asterisk_tree",
    "pinned_asterisk_version",
    "processes_in",
    "restore_asterisk_tree",
    "tree_asterisk_version",
]


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
            terminate(process, 10.0)
    if process.returncode != 0:
        raise ServiceError(f"asterisk-tree.sh restore failed: {log_tail(stderr or '')}")
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
        from ...store import generate_key_file, load_key_file

        if not self.mixer_token_file.exists():
            self.mixer_token_file.parent.mkdir(parents=True, exist_ok=True)
            generate_key_file(self.mixer_token_file, "mixer token secret")
        return load_key_file(self.mixer_token_file, "mixer token secret")

    def configure(self, kamailio_port: int | None = None) -> None:
        """Render the project's config with this server's ports into the tree."""
        from ...asterisk.config import MIXER_TOKEN_SECRET, render

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
            *pdeathsig("KILL"), "unshare", "--mount", "--propagation", "private", "--fork",
            "--kill-child=TERM", f"--mount-proc={self.tree / 'proc'}",
            *pdeathsig("KILL"), "chroot", str(self.tree), "/usr/sbin/asterisk", "-f",
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
            self.sip_port = free_port(socket.SOCK_DGRAM)
            self.ami_port = free_port(socket.SOCK_STREAM)
            # Kamailio's address in pjsip.conf identifies it by host (127.0.0.1), not by port.
            self.kamailio_port = free_port(socket.SOCK_DGRAM)
            start = min(free_port(socket.SOCK_DGRAM) & ~1, 65534 - self.RTP_PORTS)
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
                    f"ami {self.ami_port}):\n" + log_tail(self.log(), 20)
                )
            if time.monotonic() > stop:
                self.stop()
                raise ServiceError(
                    f"asterisk did not answer AMI on {self.ami_port} within "
                    f"{self.deadline:.0f} s:\n" + log_tail(self.log(), 20)
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started
        # The SIP transport binds before FullyBooted; a clash shows in the log.
        if "Unable to bind" in self.log() or "Address already in use" in self.log():
            self.stop()
            raise ServiceError(
                f"asterisk: SIP port {self.sip_port} in use:\n" + log_tail(self.log(), 20)
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
