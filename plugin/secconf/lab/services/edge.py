"""``secconf edge serve`` on loopback: the media edge the demo, tests and benchmarks run."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .process import ServiceError, log_tail, serve_secconf, terminate, toml_table, toml_value

__all__ = ["EdgeProcess"]


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
        lines = ["[edge]", *(f"{key} = {toml_value(value)}" for key, value in values.items())]
        lines += ["", "[verify]", "settle = 0.3", "deadline = 5.0", "min_packets = 10"]
        lines += toml_table("http", self.http)
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
        self.process, url = serve_secconf("edge", config, self.deadline, self.lines)
        if url is None:
            self.stop()
            raise ServiceError("media edge did not start: " + log_tail("".join(self.lines), 20))
        self.url = url

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate(process, 10.0)

    def __enter__(self) -> EdgeProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
