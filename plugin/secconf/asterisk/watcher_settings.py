"""The roster watcher's settings: config/watcher.toml read and checked (docs/asterisk.md).

The watcher shares the Kamailio module's TOML (``[watcher] focus_config``) for
Redis, the KEK and the edge; its own file names the AMI connection, the rekey
policy (``[rekey]``), the timeouts of a rekey and where dial-outs go.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from secconf.config_files import read_config, read_private_file
from secconf.core.config import ConfigError, Schema
from secconf.core.errors import SecconfError
from secconf.core.roster import FailurePolicy, RekeyPolicy
from secconf.focus.settings import Settings as FocusSettings
from secconf.focus.settings import load_settings as load_focus_settings

from .ami import AmiSettings

__all__ = ["SCHEMA", "WatcherConfigError", "WatcherSettings", "load_watcher_settings"]


class WatcherConfigError(ConfigError):
    """The watcher's configuration is unusable; the message names the key."""


#: Every setting the watcher reads (config/watcher.toml, docs/asterisk.md); anything else is
#: refused. ``[rekey]`` is checked by RekeyPolicy.from_mapping (it names an unknown key).
SCHEMA: Final[Schema] = {
    "watcher": frozenset({
        "id", "focus_config", "lease_ttl", "refresh_timeout", "verify_timeout", "poll_interval",
        "max_parallel", "on_failure", "accept_unverified", "redis_timeout",
    }),
    "dialout": frozenset({"endpoint", "context", "exten", "ring_timeout", "poll"}),
    "ami": frozenset({
        "host", "port", "username", "secret_file", "connect_timeout", "action_timeout",
        "keepalive",
    }),
    "rekey": None,
}  # fmt: skip


@dataclass(frozen=True)
class WatcherSettings:
    ami: AmiSettings
    focus: FocusSettings = field(repr=False)
    policy: RekeyPolicy = field(default_factory=RekeyPolicy)
    watcher_id: str = ""
    lease_ttl: float = 15.0
    refresh_timeout: float = 5.0
    verify_timeout: float = 15.0
    poll_interval: float = 0.1
    max_parallel: int = 8
    on_failure: FailurePolicy = FailurePolicy.REPLACE
    accept_unverified: bool = True
    redis_timeout: float = 1.0
    #: dial-out (REFER targets, replacement calls): seconds a target may ring
    dialout_timeout: float = 30.0
    #: seconds between reads of the conferences' REFER streams
    dialout_poll: float = 0.25
    #: the pjsip endpoint whose outbound_proxy is Kamailio (config/asterisk/pjsip.conf)
    dialout_endpoint: str = "kamailio-out"
    #: dialplan context and extension that put an answered dial-out into its bridge
    dialout_context: str = "secconf-dialout"
    dialout_exten: str = "join"

    @property
    def prefix(self) -> str:
        return self.focus.redis_prefix


def _number(table: Mapping[str, Any], key: str, default: float, *, section: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise WatcherConfigError(f"[{section}] {key} must be a positive number")
    return float(value)


def _beside(base: Path, name: str) -> Path:
    """*name* as the configuration means it: relative paths are relative to its file."""
    path = Path(name)
    return path if path.is_absolute() else base / path


def _read(config_path: Path) -> dict[str, Any]:
    return read_config(config_path, SCHEMA, error=WatcherConfigError, doc="docs/asterisk.md")


def _ami_secret(ami: Mapping[str, Any], base: Path, environ: Mapping[str, str]) -> str:
    """``$SECCONF_AMI_SECRET``, else the first line of the secret file (never in the TOML)."""
    secret = environ.get("SECCONF_AMI_SECRET", "")
    secret_file = environ.get("SECCONF_AMI_SECRET_FILE") or ami.get("secret_file")
    if not secret and secret_file:
        data = read_private_file(
            _beside(base, secret_file), what="[ami] secret", max_bytes=4096,
            error=WatcherConfigError,
        )  # fmt: skip
        lines = data.decode("utf-8", "replace").splitlines()
        secret = lines[0].strip() if lines else ""
    if not secret:
        raise WatcherConfigError("[ami] secret_file (or $SECCONF_AMI_SECRET) is required")
    return secret


def _ami_settings(ami: Mapping[str, Any], secret: str, environ: Mapping[str, str]) -> AmiSettings:
    port = environ.get("SECCONF_AMI_PORT") or ami.get("port", 5038)
    return AmiSettings(
        host=str(ami.get("host", "127.0.0.1")),
        port=int(port),
        username=str(ami.get("username", "secconf")),
        secret=secret,
        connect_timeout=_number(ami, "connect_timeout", 2.0, section="ami"),
        action_timeout=_number(ami, "action_timeout", 2.0, section="ami"),
        keepalive=_number(ami, "keepalive", 10.0, section="ami"),
    )


def _dialplan_names(dialout: Mapping[str, Any]) -> tuple[str, str, str]:
    """``[dialout]`` endpoint, context, exten: they end up in an AMI ``Originate``."""
    endpoint = str(dialout.get("endpoint", "kamailio-out"))
    context = str(dialout.get("context", "secconf-dialout"))
    exten = str(dialout.get("exten", "join"))
    for name, value in (("endpoint", endpoint), ("context", context), ("exten", exten)):
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise WatcherConfigError(f"[dialout] {name} must be letters, digits, '-' or '_'")
    return endpoint, context, exten


def _on_failure(watcher: Mapping[str, Any]) -> FailurePolicy:
    on_failure = str(watcher.get("on_failure", "replace"))
    if on_failure not in ("replace", "remove"):
        raise WatcherConfigError('[watcher] on_failure must be "replace" or "remove"')
    return FailurePolicy(on_failure)


def _accept_unverified(watcher: Mapping[str, Any]) -> bool:
    accept_unverified = watcher.get("accept_unverified", True)
    if not isinstance(accept_unverified, bool):
        raise WatcherConfigError("[watcher] accept_unverified must be true or false")
    return accept_unverified


def _max_parallel(watcher: Mapping[str, Any]) -> int:
    max_parallel = watcher.get("max_parallel", 8)
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise WatcherConfigError("[watcher] max_parallel must be a positive integer")
    return max_parallel


def load_watcher_settings(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> WatcherSettings:
    """Read config/watcher.toml (see the sample); relative paths are relative to the file."""
    environ = os.environ if env is None else env
    config_path = Path(path)
    data = _read(config_path)
    base = config_path.parent
    watcher = data.get("watcher", {})
    ami = data.get("ami", {})
    focus_path = environ.get("SECCONF_KAMAILIO_CONFIG") or watcher.get("focus_config")
    if not focus_path:
        raise WatcherConfigError("[watcher] focus_config (the Kamailio module's TOML) is required")
    # The watcher relays no INVITE to the mixer: it never reads the join-token secret.
    focus = load_focus_settings(_beside(base, focus_path), env, mixer_token=False)
    secret = _ami_secret(ami, base, environ)
    try:
        ami_settings = _ami_settings(ami, secret, environ)
        policy = RekeyPolicy.from_mapping(data.get("rekey", {}))
    except (ValueError, SecconfError) as exc:
        raise WatcherConfigError(str(exc)) from None
    on_failure = _on_failure(watcher)
    dialout = data.get("dialout", {})
    endpoint, context, exten = _dialplan_names(dialout)
    accept_unverified = _accept_unverified(watcher)
    max_parallel = _max_parallel(watcher)
    return WatcherSettings(
        ami=ami_settings,
        focus=focus,
        policy=policy,
        watcher_id=str(watcher.get("id") or f"{socket.gethostname()}-{os.getpid()}"),
        lease_ttl=_number(watcher, "lease_ttl", 15.0, section="watcher"),
        refresh_timeout=_number(watcher, "refresh_timeout", 5.0, section="watcher"),
        verify_timeout=_number(watcher, "verify_timeout", 15.0, section="watcher"),
        poll_interval=_number(watcher, "poll_interval", 0.1, section="watcher"),
        max_parallel=max_parallel,
        on_failure=on_failure,
        accept_unverified=accept_unverified,
        redis_timeout=_number(watcher, "redis_timeout", 1.0, section="watcher"),
        dialout_timeout=_number(dialout, "ring_timeout", 30.0, section="dialout"),
        dialout_poll=_number(dialout, "poll", 0.25, section="dialout"),
        dialout_endpoint=endpoint,
        dialout_context=context,
        dialout_exten=exten,
    )
