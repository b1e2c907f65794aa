"""Media edge configuration, read from a TOML file (see config/edge.toml)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..config_files import read_config
from ..core.config import ConfigError, Schema
from ..core.edge import VerifyPolicy
from ..core.errors import SecconfError
from ..httpguard import HttpLimits

__all__ = [
    "HTTP_DEFAULTS",
    "EdgeConfig",
    "EdgeConfigError",
    "RedisSettings",
    "load_config",
]

INTERNAL_MODES = ("rtp", "srtp")
#: Suites of the edge's own key towards the mixer: the two Asterisk 22's SDES takes
#: (core/sdes.py).  A participant leg may run RFC 6188's AES_256_CM_HMAC_SHA1_80/_32 (the
#: conference's suite); the mixer side stays AES_CM_128 (issue 14, docs/mikey-decisions.md).
INTERNAL_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
#: The control API's ``[http]`` defaults (docs/edge.md "Slow and greedy clients"); the Kamailio
#: workers keep one connection each alive between INVITEs.
HTTP_DEFAULTS = HttpLimits(keep_alive_timeout=30)


class EdgeConfigError(ConfigError):
    """The edge's configuration file is missing, unreadable or has a bad value."""


#: Every setting the edge reads (config/edge.toml, docs/edge.md); anything else is refused.
SCHEMA: Final[Schema] = {
    "edge": frozenset({
        "id", "listen", "port", "token_file", "media_host", "participant_host",
        "participant_advertise", "internal_host", "port_min", "port_max", "internal_mode",
        "internal_suite", "grace", "tick",
    }),
    "verify": frozenset({
        "settle", "deadline", "min_packets", "loss_fraction", "srtcp_restart_window",
    }),
    "redis": frozenset({"url", "timeout", "prefix", "kek_file", "kek_id"}),
    "http": None,  # HttpLimits.updated names an unknown [http] setting itself
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    timeout: float
    prefix: str
    kek_file: Path
    kek_id: str


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    edge_id: str = "edge-1"
    listen: str = "127.0.0.1"  # control API (loopback only)
    port: int = 8446
    token_file: Path | None = None
    participant_host: str = "127.0.0.1"  # bind address of participant-facing sockets
    participant_advertise: str = ""  # address given to phones; default: participant_host
    internal_host: str = "127.0.0.1"  # bind address of the sockets towards Asterisk
    port_min: int = 0  # 0, 0: the kernel picks (tests)
    port_max: int = 0
    internal_mode: str = "rtp"
    internal_suite: str = "AES_CM_128_HMAC_SHA1_80"
    grace: float = 2.0
    tick: float = 0.1
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)
    redis: RedisSettings | None = None
    http: HttpLimits = HTTP_DEFAULTS

    def __post_init__(self) -> None:
        if self.internal_mode not in INTERNAL_MODES:
            raise EdgeConfigError("internal_mode must be rtp or srtp")
        if self.internal_suite not in INTERNAL_SUITES:
            raise EdgeConfigError(f"internal_suite must be one of {', '.join(INTERNAL_SUITES)}")
        if (self.port_min == 0) != (self.port_max == 0):
            raise EdgeConfigError("port_min and port_max are both 0 or both set")
        if self.port_min and not 1024 <= self.port_min < self.port_max <= 65535:
            raise EdgeConfigError("need 1024 <= port_min < port_max <= 65535")
        if not 0 <= self.port <= 65535:
            raise EdgeConfigError("port must be 0..65535")
        for name in ("grace", "tick"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 3600):
                raise EdgeConfigError(f"{name} must be 0..3600 seconds")
        if self.tick <= 0:
            raise EdgeConfigError("tick must be positive")
        for name in ("listen", "participant_host", "internal_host"):
            try:
                ipaddress.ip_address(getattr(self, name))
            except ValueError:
                raise EdgeConfigError(f"{name} must be an IP address") from None
        if not ipaddress.ip_address(self.listen).is_loopback:
            raise EdgeConfigError("the control API listens on loopback only")

    @property
    def advertise(self) -> str:
        return self.participant_advertise or self.participant_host

    @property
    def media_fds(self) -> int:
        """File descriptors the media sockets may take: the port range (0 if the kernel picks)."""
        return self.port_max - self.port_min + 1 if self.port_min else 0


def _get(table: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = table.get(key, default)
    if value is None:
        raise EdgeConfigError(f"missing setting {key!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EdgeConfigError(f"setting {key!r} must be a {kind.__name__}")
    return value


def _path(base: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base / path


def load_config(path: str | Path) -> EdgeConfig:
    """Read and check *path*; relative file paths are relative to the file."""
    path = Path(path)
    data = read_config(path, SCHEMA, error=EdgeConfigError, doc="docs/edge.md")
    edge = data.get("edge", {})
    verify = data.get("verify", {})
    redis = data.get("redis")
    http = data.get("http", {})
    if not isinstance(edge, dict) or not isinstance(verify, dict) or not isinstance(http, dict):
        raise EdgeConfigError("[edge], [verify] and [http] must be tables")
    try:
        http_limits = HTTP_DEFAULTS.updated(http)
    except ValueError as exc:
        raise EdgeConfigError(f"[http]: {exc}") from None
    redis_settings = None
    if redis is not None:
        if not isinstance(redis, dict):
            raise EdgeConfigError("[redis] must be a table")
        redis_settings = RedisSettings(
            url=_get(redis, "url", str),
            timeout=_get(redis, "timeout", float, 0.5),
            prefix=_get(redis, "prefix", str, "secconf"),
            kek_file=_path(path.parent, _get(redis, "kek_file", str)),
            kek_id=_get(redis, "kek_id", str, "kek-1"),
        )
    try:
        policy = VerifyPolicy(
            settle=_get(verify, "settle", float, 0.5),
            deadline=_get(verify, "deadline", float, 12.0),
            min_packets=_get(verify, "min_packets", int, 10),
            loss_fraction=_get(verify, "loss_fraction", float, 0.5),
            srtcp_restart_window=_get(verify, "srtcp_restart_window", float, 10.0),
        )
    except SecconfError as exc:
        raise EdgeConfigError(f"[verify]: {exc.message}") from None
    media_host = _get(edge, "media_host", str, "127.0.0.1")
    token = edge.get("token_file")
    return EdgeConfig(
        edge_id=_get(edge, "id", str, "edge-1"),
        listen=_get(edge, "listen", str, "127.0.0.1"),
        port=_get(edge, "port", int, 8446),
        token_file=None if token is None else _path(path.parent, _get(edge, "token_file", str)),
        participant_host=_get(edge, "participant_host", str, media_host),
        participant_advertise=_get(edge, "participant_advertise", str, ""),
        internal_host=_get(edge, "internal_host", str, media_host),
        port_min=_get(edge, "port_min", int, 0),
        port_max=_get(edge, "port_max", int, 0),
        internal_mode=_get(edge, "internal_mode", str, "rtp"),
        internal_suite=_get(edge, "internal_suite", str, "AES_CM_128_HMAC_SHA1_80"),
        grace=_get(edge, "grace", float, 2.0),
        tick=_get(edge, "tick", float, 0.1),
        verify=policy,
        redis=redis_settings,
        http=http_limits,
    )
