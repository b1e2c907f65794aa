"""KMS configuration, read from a TOML file (see config/kms.toml)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..config_files import read_config
from ..core.config import ConfigError, Schema
from ..httpguard import HttpLimits
from ..store._names import is_identity
from ..store.tickets import DEFAULT_MARGIN_SECONDS, DEFAULT_MAX_PER_USER

__all__ = ["HTTP_DEFAULTS", "SCHEMA", "KmsConfig", "KmsConfigError", "load_config"]

#: The KMS's ``[http]`` defaults (docs/kms.md "Slow and greedy clients").
HTTP_DEFAULTS = HttpLimits(keep_alive_timeout=5)


class KmsConfigError(ConfigError):
    """The KMS's configuration file is missing, unreadable or has a bad value."""


#: Every setting the KMS reads (config/kms.toml, docs/kms.md); anything else is refused.
SCHEMA: Final[Schema] = {
    "kms": frozenset({
        "identity", "listen", "port", "kek_file", "kek_id", "clock_skew", "max_ticket_lifetime",
    }),
    "redis": frozenset({"url", "timeout", "prefix"}),
    "tickets": None,  # _tickets names an unknown [tickets] setting itself
    "http": None,  # HttpLimits.updated names an unknown [http] setting itself
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class KmsConfig:
    identity: str
    listen: str
    port: int
    kek_file: Path
    kek_id: str
    redis_url: str
    redis_timeout: float
    redis_prefix: str
    clock_skew: float
    max_ticket_lifetime: float
    http: HttpLimits = HTTP_DEFAULTS
    #: ``[tickets]`` (docs/kms.md "Tickets per user"): live ticket records per initiator,
    #: exceptions per identity, and how long a record outlives its ticket.
    max_tickets_per_user: int = DEFAULT_MAX_PER_USER
    max_tickets_per_identity: dict[str, int] = field(default_factory=dict)
    ticket_record_margin: float = DEFAULT_MARGIN_SECONDS

    def ticket_limit(self, identity: str) -> int:
        """The live-ticket limit of *identity*: its own if configured, else the default."""
        return self.max_tickets_per_identity.get(identity, self.max_tickets_per_user)


def _get(table: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = table.get(key, default)
    if value is None:
        raise KmsConfigError(f"missing setting {key!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KmsConfigError(f"setting {key!r} must be a {kind.__name__}")
    return value


def _limit(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KmsConfigError(f"[tickets] {what} must be a whole number >= 1")
    return value


def _tickets(table: dict[str, Any]) -> dict[str, Any]:
    """The ``[tickets]`` settings as KmsConfig keyword arguments."""
    unknown = set(table) - {"max_per_user", "max_per_identity", "record_margin"}
    if unknown:
        raise KmsConfigError(f"[tickets]: unknown setting {sorted(unknown)[0]!r}")
    per_identity = table.get("max_per_identity", {})
    if not isinstance(per_identity, dict):
        raise KmsConfigError("[tickets.max_per_identity] must be a table of identity = limit")
    for identity in per_identity:
        if not is_identity(identity):
            raise KmsConfigError("[tickets.max_per_identity]: a key is not a usable identity")
    margin = _get(table, "record_margin", float, DEFAULT_MARGIN_SECONDS)
    if not (math.isfinite(margin) and margin >= 0):
        raise KmsConfigError("[tickets] record_margin must be a number >= 0")
    return {
        "max_tickets_per_user": _limit(
            table.get("max_per_user", DEFAULT_MAX_PER_USER), "max_per_user"
        ),
        "max_tickets_per_identity": {
            identity: _limit(value, f"max_per_identity for {identity!r}")
            for identity, value in per_identity.items()
        },
        "ticket_record_margin": margin,
    }


def load_config(path: str | Path) -> KmsConfig:
    """Read and check *path*; relative ``kek_file`` paths are relative to the file."""
    path = Path(path)
    data = read_config(path, SCHEMA, error=KmsConfigError, doc="docs/kms.md")
    kms = data.get("kms", {})
    redis = data.get("redis", {})
    http = data.get("http", {})
    tickets = data.get("tickets", {})
    if not all(isinstance(table, dict) for table in (kms, redis, http, tickets)):
        raise KmsConfigError("[kms], [redis], [http] and [tickets] must be tables")
    try:
        http_limits = HTTP_DEFAULTS.updated(http)
    except ValueError as exc:
        raise KmsConfigError(f"[http]: {exc}") from None
    kek_file = Path(_get(kms, "kek_file", str))
    if not kek_file.is_absolute():
        kek_file = path.parent / kek_file
    config = KmsConfig(
        identity=_get(kms, "identity", str),
        listen=_get(kms, "listen", str, "127.0.0.1"),
        port=_get(kms, "port", int, 8444),
        kek_file=kek_file,
        kek_id=_get(kms, "kek_id", str, "kek-1"),
        redis_url=_get(redis, "url", str),
        redis_timeout=_get(redis, "timeout", float, 0.5),
        redis_prefix=_get(redis, "prefix", str, "secconf"),
        clock_skew=_get(kms, "clock_skew", float, 60.0),
        max_ticket_lifetime=_get(kms, "max_ticket_lifetime", float, 86400.0),
        http=http_limits,
        **_tickets(tickets),
    )
    if not 0 <= config.port <= 65535:
        raise KmsConfigError("port must be 0..65535")
    for name in ("redis_timeout", "clock_skew", "max_ticket_lifetime"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise KmsConfigError(f"{name} must be a positive number")
    if not config.identity.startswith(("sip:", "sips:")):
        raise KmsConfigError("the KMS identity must be a SIP URI")
    return config
