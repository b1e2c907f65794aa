"""``secconf kms serve`` on loopback, and its users provisioned as an operator does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .process import ServiceError, log_tail, serve_secconf, terminate, toml_table, toml_value

__all__ = ["KmsProcess"]


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
        from ...store import generate_key_file

        self.workdir.mkdir(parents=True, exist_ok=True)
        kek = self.workdir / "kms-kek"
        if not kek.exists():
            generate_key_file(kek, "KMS key-encryption key")
        self.config.write_text(
            "[kms]\n"
            f"identity = {toml_value(self.identity)}\n"
            'listen = "127.0.0.1"\nport = 0\n'
            f"kek_file = {toml_value(str(kek))}\n"
            "clock_skew = 60\nmax_ticket_lifetime = 3600\n\n"
            "[redis]\n"
            f"url = {toml_value(self.redis_url)}\ntimeout = 0.5\n"
            f"prefix = {toml_value(self.prefix)}\n"
            + "".join(line + "\n" for line in toml_table("http", self.http))
            + "".join(line + "\n" for line in toml_table("tickets", self.tickets))
        )
        self.lines = []
        self.process, url = serve_secconf("kms", self.config, self.deadline, self.lines)
        if url is None:
            self.stop()
            raise ServiceError("KMS did not start: " + log_tail("".join(self.lines), 20))
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
            raise ServiceError(f"secconf kms user add {identity} failed: {log_tail(result.stderr)}")
        return psk_file

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate(process, 10.0)

    def __enter__(self) -> KmsProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
