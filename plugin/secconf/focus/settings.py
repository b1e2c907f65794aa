"""Configuration of the Kamailio module: a TOML file, a few values overridable from the environment.

The file's path comes from ``SECCONF_KAMAILIO_CONFIG`` (see docs/kamailio.md
for every key).  ``SECCONF_REDIS_URL``, ``SECCONF_UPSTREAM``,
``SECCONF_EDGE_URL`` and ``SECCONF_MIXER_TOKEN_FILE`` override the file, so one
shipped file serves several deployments (and the tests).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from secconf.config_files import read_config, read_token
from secconf.core.config import ConfigError, Schema
from secconf.core.edge import RELAYED_SUITES
from secconf.core.errors import SecconfError
from secconf.core.focus import normalize_identity
from secconf.core.mixer_token import MixerTokenError, MixerTokenKeys
from secconf.core.sdes import SUITES, CryptoSuite
from secconf.core.sip.uri import SipUri
from secconf.store.keywrap import load_key_file
from secconf.store.redis_url import RedisUrlError, parse_redis_url

__all__ = [
    "ENV_CONFIG",
    "ENV_MIXER_TOKEN",
    "DigestSettings",
    "KmsSettings",
    "Settings",
    "SettingsError",
    "load_settings",
]

ENV_CONFIG = "SECCONF_KAMAILIO_CONFIG"
#: Overrides ``[upstream] token_secret_file`` (the lab launchers pass the mixer's secret so).
ENV_MIXER_TOKEN = "SECCONF_MIXER_TOKEN_FILE"  # noqa: S105 - a variable name
#: ``[upstream] token_ttl`` bounds, seconds.
MIXER_TOKEN_TTL_RANGE = (1, 300)


class SettingsError(ConfigError):
    """The focus's configuration is unusable; the message names the key."""


#: Every setting the focus reads (config/kamailio/secconf.toml, docs/kamailio.md): anything
#: else is a typo that would silently keep a default, and the module does not start.
SCHEMA: Final[Schema] = {
    "focus": frozenset({
        "factory_pattern", "conference_pattern", "conference_user", "domain", "suite",
        "suites", "max_body", "server_name", "timing", "peer_table",
    }),
    "identity": frozenset({"trusted_sources", "asserted_header"}),
    "limits": frozenset({"dialogs_per_identity", "refers_per_minute"}),
    "policy": frozenset({
        "creators", "allowed", "uri_list", "uri_list_max", "uri_list_outside", "mixed_modes",
    }),
    "upstream": frozenset({"uri", "token_secret_file", "token_ttl"}),
    "redis": frozenset({"url", "timeout", "prefix", "kek_file", "kek_id"}),
    "edge": frozenset({"url", "token_file", "timeout"}),
    "kms": frozenset({
        "url", "psk_file", "kms_identity", "focus_identity", "timeout", "skew",
        "epoch_ticket_lifetime",
    }),
    "digest": frozenset({"realm", "algorithms", "nonce_lifetime"}),
    "dialout": frozenset({"contacts", "kms_users"}),
    "lab": frozenset({"sdes_over_udp"}),
    "events": frozenset({
        "node_id", "max_per_conference", "max_per_identity", "notifies_per_tick",
        "scan_per_tick",
    }),
}  # fmt: skip


@dataclass(frozen=True)
class EventSettings:
    """``[events]``: the conference event package (docs/event-package.md, "The focus's side")."""

    #: the Kamailio node this module runs in: its timer sends the NOTIFYs of the
    #: subscriptions whose flow arrived here (default: the host name; set one per node
    #: when several Kamailio instances share a host and a Redis).
    node_id: str = field(default_factory=socket.gethostname)
    #: subscriptions a conference holds at most; beyond: 403 + Retry-After.
    max_per_conference: int = 64
    #: subscriptions one identity holds in one conference at most (a phone and a spare).
    max_per_identity: int = 2
    #: NOTIFYs one timer tick sends at most (the rest wait for the next tick, 50 ms on).
    notifies_per_tick: int = 200
    #: subscriptions of the node one tick looks at, at most.
    scan_per_tick: int = 2000


@dataclass(frozen=True)
class KmsSettings:
    """KMS mode: the focus is a KMS user (its own PSK) and resolves participants' tickets."""

    url: str
    kms_identity: str
    focus_identity: str
    psk: bytes = field(repr=False)
    timeout: float = 0.5
    skew: float = 60.0
    #: Requested validity of a rekey's group-key (GTGK) ticket; the KMS may clamp it.
    epoch_ticket_lifetime: float = 86400.0


@dataclass(frozen=True)
class DigestSettings:
    """SDES mode: digest authentication (RFC 3261 §22, RFC 7616) of requests without a
    trusted asserted identity; users' HA1 values in Redis (``secconf focus user add``)."""

    realm: str
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    nonce_lifetime: int = 30


@dataclass(frozen=True)
class Settings:
    factory: re.Pattern[str]
    conference: re.Pattern[str]
    conference_user: str
    domain: str
    upstream: SipUri
    suite: CryptoSuite
    max_body: int
    trusted_sources: frozenset[str]
    asserted_header: str
    creators: frozenset[str]
    allowed: frozenset[str]
    redis_url: str = field(repr=False)
    redis_timeout: float
    redis_prefix: str
    kek_file: Path
    kek_id: str
    edge_url: str | None
    edge_timeout: float
    server_name: str
    edge_token: str | None = field(default=None, repr=False)
    kms: KmsSettings | None = None
    digest: DigestSettings | None = None
    #: RFC 5366 URI lists on create (SDES mode): accepted at all, cap, names outside ``allowed``.
    uri_list: bool = True
    uri_list_max: int = 64
    uri_list_outside: str = "refuse"
    #: Per-INVITE timing (parse, Redis, edge, rewrite) into Redis counters; off by default.
    timing: bool = False
    #: ``[focus] peer_table``: the Kamailio htable keeping fresh dialogs' peers for their ACKs
    #: (peer_cache.py); empty: every ACK is checked in Redis.
    peer_table: str = "secconf_peers"
    #: A conference takes joins/REFERs authenticated in the other mode too (SDES members
    #: of a KMS conference, or the reverse); false (default): refused 488/403 (fail closed).
    mixed_modes: bool = False
    #: ``[dialout] contacts``: identity -> fixed contact URI, for phones that do not
    #: REGISTER (used when the location service has no contact for the identity).
    dialout_contacts: Mapping[str, str] = field(default_factory=dict)
    #: ``[dialout] kms_users``: with ``policy.mixed_modes``, dial-out targets known to be
    #: KMS (MIKEY-TICKET) users: the focus calls them in KMS mode (its own TRANSFER_INIT),
    #: everyone else in SDES mode.  Without ``mixed_modes`` the conference's mode decides.
    dialout_kms_users: frozenset[str] = frozenset()
    #: ``[lab] sdes_over_udp``: SDES keys (the group key) on plain UDP/TCP. Off by default and
    #: refused (488) then: RFC 4568 §8.3 wants SDES on a secure transport. Lab use only.
    sdes_over_udp: bool = False
    #: ``[limits]``: concurrent dialogs per identity, REFERs per member per minute.
    dialogs_per_identity: int = 4
    refers_per_minute: int = 6
    #: ``[upstream] token_secret_file``: the join-token keys shared with Asterisk; every INVITE
    #: relayed to the mixer carries a token made with them (secconf.focus.mixer_token).
    #: Required by :func:`load_settings`; ``None`` only in a hand-made Settings, where the
    #: relay then fails closed (503).
    mixer_token: MixerTokenKeys | None = field(default=None, repr=False)
    #: ``[upstream] token_ttl``: seconds a join token stays valid (Asterisk's clock).
    mixer_token_ttl: int = 30
    #: ``[focus] suites``: further SRTP suites a participant's leg may run (its offer
    #: chooses; ``suite`` is always allowed and preferred), docs/mikey-decisions.md #30.
    extra_suites: tuple[CryptoSuite, ...] = ()
    #: ``[events]``: subscriptions to the conference event package.
    events: EventSettings = field(default_factory=EventSettings)

    @property
    def leg_suites(self) -> tuple[CryptoSuite, ...]:
        """The suites a leg may run, in the focus's order of preference."""
        return (self.suite, *(s for s in self.extra_suites if s != self.suite))

    @property
    def kms_mode(self) -> bool:
        return self.kms is not None

    def conference_uri(self, conference_id: str) -> str:
        return f"sip:{self.conference_user.format(id=conference_id)}@{self.domain}"

    def upstream_uri(self, conference_id: str) -> str:
        user = self.conference_user.format(id=conference_id)
        return f"{self.upstream.scheme}:{user}@{self.upstream.host_port}"


def _get(table: Mapping[str, Any], section: str, key: str, kind: type, default: Any = None) -> Any:
    value = table.get(section, {}).get(key, default)
    if value is None:
        raise SettingsError(f"[{section}] {key} is required")
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SettingsError(f"[{section}] {key} must be a {kind.__name__}")
    return value


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    mixer_token: bool = True,
) -> Settings:
    """Read the TOML file at *path* (default: ``$SECCONF_KAMAILIO_CONFIG``).

    *mixer_token* (the module: always) requires and reads ``[upstream]
    token_secret_file``; the watcher and the CLI, which relay no INVITE to the mixer,
    pass False and never read the secret (``Settings.mixer_token`` is then None).
    """
    environ = os.environ if env is None else env
    data, base = _read_file(path, environ)
    focus = _focus_section(data)
    upstream = _upstream_section(data, environ)
    policy = _policy_section(data)
    edge = _edge_section(data, environ, base)
    kms = _kms_settings(data, environ, base)
    digest = _digest_settings(data)
    redis = _redis_section(data, environ, base)
    dialout_contacts = _dialout_contacts(data)
    dialout_kms_users = _dialout_kms_users(data, kms)
    token_keys, token_ttl = _mixer_token(data, environ, base) if mixer_token else (None, 30)
    return Settings(
        **focus,
        **upstream,
        **policy,
        **edge,
        **redis,
        trusted_sources=_trusted_sources(data),
        asserted_header=_get(data, "identity", "asserted_header", str, "P-Asserted-Identity"),
        kms=kms,
        digest=digest,
        dialout_contacts=dialout_contacts,
        dialout_kms_users=dialout_kms_users,
        mixer_token=token_keys,
        mixer_token_ttl=token_ttl,
        sdes_over_udp=_get(data, "lab", "sdes_over_udp", bool, False),
        dialogs_per_identity=_bounded(data, "limits", "dialogs_per_identity", 4, 1, 1000),
        refers_per_minute=_bounded(data, "limits", "refers_per_minute", 6, 1, 600),
        events=_events_section(data),
    )


def _events_section(data: Mapping[str, Any]) -> EventSettings:
    """``[events]``: the node's id and the bounds of subscriptions and of the timer's work."""
    node_id = _get(data, "events", "node_id", str, socket.gethostname())
    if not node_id or not node_id.isprintable() or len(node_id) > 64 or " " in node_id:
        raise SettingsError("[events] node_id must be 1..64 printable characters, no spaces")
    return EventSettings(
        node_id=node_id,
        max_per_conference=_bounded(data, "events", "max_per_conference", 64, 1, 1000),
        max_per_identity=_bounded(data, "events", "max_per_identity", 2, 1, 16),
        notifies_per_tick=_bounded(data, "events", "notifies_per_tick", 200, 1, 10_000),
        scan_per_tick=_bounded(data, "events", "scan_per_tick", 2000, 1, 100_000),
    )


# Each reader below checks one section and returns its part of Settings' keyword arguments.


#: Settings that no longer exist, and why (an upgrading operator is told what replaced them).
REMOVED: Final[Mapping[str, str]] = {
    "[focus] relay_other": "the focus relays nothing it did not authorize; "
    "run a general proxy beside it (docs/security.md)",
}


def _read_file(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> tuple[dict[str, Any], Path]:
    """The parsed file (known keys only, removed ones refused) and its directory."""
    if path is None:
        path = environ.get(ENV_CONFIG)
        if not path:
            raise SettingsError(f"{ENV_CONFIG} is not set: no configuration file")
    config_path = Path(path)
    data = read_config(
        config_path, SCHEMA, error=SettingsError, doc="docs/kamailio.md", removed=REMOVED
    )
    return data, config_path.parent


def _focus_section(data: Mapping[str, Any]) -> dict[str, Any]:
    """``[focus]``: the factory and conference names, the suite, the limits of a body."""
    try:
        factory = re.compile(_get(data, "focus", "factory_pattern", str, "conf-factory"))
        conference = re.compile(
            _get(data, "focus", "conference_pattern", str, "conf-(?P<id>[0-9a-z]{16})")
        )
    except re.error as exc:
        raise SettingsError(f"[focus] pattern: {exc}") from None
    if "id" not in conference.groupindex:
        raise SettingsError("[focus] conference_pattern needs a group named 'id'")
    conference_user = _get(data, "focus", "conference_user", str, "conf-{id}")
    if not conference.fullmatch(conference_user.format(id="0123456789abcdef")):
        raise SettingsError("[focus] conference_user must match conference_pattern")
    suite_name = _get(data, "focus", "suite", str, "AES_CM_128_HMAC_SHA1_80")
    names = [suite_name, *_get(data, "focus", "suites", list, [])]
    for name in names:
        if not isinstance(name, str) or name not in SUITES or name not in RELAYED_SUITES:
            # A suite the edge cannot relay would only fail at the first join's edge leg.
            raise SettingsError(
                f"[focus] suite {name!r} is not supported "
                f"(one of {', '.join(sorted(RELAYED_SUITES))})"
            )
    return {
        "factory": factory,
        "conference": conference,
        "conference_user": conference_user,
        "suite": SUITES[suite_name],
        "extra_suites": tuple(SUITES[name] for name in dict.fromkeys(names[1:])),
        "domain": _get(data, "focus", "domain", str),
        "max_body": _get(data, "focus", "max_body", int, 16384),
        "server_name": _get(data, "focus", "server_name", str, "secconf-focus"),
        "timing": _get(data, "focus", "timing", bool, False),
        "peer_table": _get(data, "focus", "peer_table", str, "secconf_peers"),
    }


def _upstream_section(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``[upstream] uri`` (or ``$SECCONF_UPSTREAM``): the mixer; its token is :func:`_mixer_token`."""
    upstream_text = environ.get("SECCONF_UPSTREAM") or _get(data, "upstream", "uri", str)
    try:
        return {"upstream": SipUri.parse(upstream_text)}
    except SecconfError as exc:
        raise SettingsError(f"[upstream] uri: {exc}") from None


def _policy_section(data: Mapping[str, Any]) -> dict[str, Any]:
    """``[policy]``: who may create and join, URI lists, mixed modes."""
    try:
        creators = frozenset(
            normalize_identity(x) for x in _get(data, "policy", "creators", list, [])
        )
        allowed = frozenset(
            normalize_identity(x) for x in _get(data, "policy", "allowed", list, [])
        )
    except SecconfError as exc:
        raise SettingsError(f"[policy] identities: {exc}") from None
    uri_list_max = _get(data, "policy", "uri_list_max", int, 64)
    if not 1 <= uri_list_max <= 1024:
        raise SettingsError("[policy] uri_list_max must be in 1..1024")
    uri_list_outside = _get(data, "policy", "uri_list_outside", str, "refuse")
    if uri_list_outside not in ("refuse", "accept"):
        raise SettingsError('[policy] uri_list_outside is "refuse" or "accept"')
    return {
        "creators": creators,
        "allowed": allowed,
        "uri_list": _get(data, "policy", "uri_list", bool, True),
        "uri_list_max": uri_list_max,
        "uri_list_outside": uri_list_outside,
        "mixed_modes": _get(data, "policy", "mixed_modes", bool, False),
    }


def _edge_section(
    data: Mapping[str, Any], environ: Mapping[str, str], base: Path
) -> dict[str, Any]:
    """``[edge]`` (``$SECCONF_EDGE_URL``, ``$SECCONF_EDGE_TOKEN_FILE``): the media edge's API."""
    edge_url = environ.get("SECCONF_EDGE_URL") or data.get("edge", {}).get("url") or None
    edge_token = None
    token_text = environ.get("SECCONF_EDGE_TOKEN_FILE") or data.get("edge", {}).get("token_file")
    if token_text:
        token_path = Path(token_text)
        try:
            edge_token = read_token(
                token_path if token_path.is_absolute() else base / token_path, error=SettingsError
            )
        except SettingsError as exc:
            raise SettingsError(f"[edge] token_file: {exc.message}") from None
    return {
        "edge_url": edge_url,
        "edge_token": edge_token,
        "edge_timeout": float(_get(data, "edge", "timeout", float, 0.3)),
    }


def _redis_section(
    data: Mapping[str, Any], environ: Mapping[str, str], base: Path
) -> dict[str, Any]:
    """``[redis]`` (``$SECCONF_REDIS_URL``): where the state is, and the KEK wrapping its keys."""
    kek_file = Path(_get(data, "redis", "kek_file", str))
    redis_url = environ.get("SECCONF_REDIS_URL") or _get(data, "redis", "url", str)
    try:
        parse_redis_url(redis_url)  # the same parser connect_blocking uses: fail at start-up
    except RedisUrlError as exc:
        raise SettingsError(f"[redis] url: {exc}") from None
    return {
        "redis_url": redis_url,
        "redis_timeout": float(_get(data, "redis", "timeout", float, 0.3)),
        "redis_prefix": _get(data, "redis", "prefix", str, "secconf"),
        "kek_file": kek_file if kek_file.is_absolute() else base / kek_file,
        "kek_id": _get(data, "redis", "kek_id", str, "kek-1"),
    }


def _bounded(data: Mapping[str, Any], section: str, key: str, default: int, low: int,
             high: int) -> int:  # fmt: skip
    value: int = _get(data, section, key, int, default)
    if not low <= value <= high:
        raise SettingsError(f"[{section}] {key} must be in {low}..{high}")
    return value


_FLOW_RE = re.compile(r"^(udp|tcp|tls):(\[[0-9a-fA-F:.]+\]|[0-9.]+)(?::([0-9]{1,5}))?$")


def _trusted_sources(data: Mapping[str, Any]) -> frozenset[str]:
    """``[identity] trusted_sources = ["udp:192.0.2.5:5060", "tls:192.0.2.6"]``.

    RFC 3325 §5: P-Asserted-Identity is believed only from a trusted element.  An entry
    names the transport and the address, and should name the port: an address alone would
    let any process on that host assert any identity (a warning at start says so).  The
    stored form is ``transport:address:port`` or ``transport:address:*``.  Default: none.
    """
    entries = _get(data, "identity", "trusted_sources", list, [])
    found = set()
    for entry in entries:
        match = _FLOW_RE.match(entry) if isinstance(entry, str) else None
        if match is None:
            raise SettingsError(
                f"[identity] trusted_sources: {entry!r} is not transport:address[:port] "
                '(e.g. "udp:192.0.2.5:5060"; a bare address is no longer accepted)'
            )
        transport, address, port = match.groups()
        address = address.strip("[]").lower()
        if port is not None and not 1 <= int(port) <= 65535:
            raise SettingsError(f"[identity] trusted_sources: {entry!r} has no valid port")
        found.add(f"{transport}:{address}:{port or '*'}")
    return frozenset(found)


def _mixer_token(
    data: Mapping[str, Any], environ: Mapping[str, str], base: Path
) -> tuple[MixerTokenKeys, int]:
    """``[upstream] token_secret_file`` (required) and ``token_ttl``: read once, at start.

    The file holds the 32-byte secret shared with Asterisk's renderer (mode 0600;
    raw, 64 hex digits or base64).  Missing or unreadable: the module does not
    start (fail closed).  Errors name the file, never its content.
    """
    text = environ.get(ENV_MIXER_TOKEN) or data.get("upstream", {}).get("token_secret_file")
    if not text:
        raise SettingsError(
            f"[upstream] token_secret_file is required (or ${ENV_MIXER_TOKEN}): the secret "
            "shared with Asterisk for the join tokens"
        )
    if not isinstance(text, str):
        raise SettingsError("[upstream] token_secret_file must be a str")
    path = Path(text) if Path(text).is_absolute() else base / text
    try:
        keys = MixerTokenKeys.derive(load_key_file(path, "mixer token secret"))
    except (SecconfError, MixerTokenError) as exc:
        raise SettingsError(f"[upstream] token_secret_file: {exc.message}") from None
    ttl = _get(data, "upstream", "token_ttl", int, 30)
    low, high = MIXER_TOKEN_TTL_RANGE
    if not low <= ttl <= high:
        raise SettingsError(f"[upstream] token_ttl must be in {low}..{high} s")
    return keys, ttl


def _dialout_kms_users(data: Mapping[str, Any], kms: KmsSettings | None) -> frozenset[str]:
    """``[dialout] kms_users = ["sip:dave@example.com"]``: needs ``[kms]``."""
    users = data.get("dialout", {}).get("kms_users", [])
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise SettingsError("[dialout] kms_users is a list of identities")
    if users and kms is None:
        raise SettingsError("[dialout] kms_users needs [kms] (KMS mode)")
    try:
        return frozenset(normalize_identity(u) for u in users)
    except SecconfError as exc:
        raise SettingsError(f"[dialout] kms_users: {exc}") from None


def _dialout_contacts(data: Mapping[str, Any]) -> dict[str, str]:
    """``[dialout] contacts = { "sip:dave@example.com" = "sip:dave@192.0.2.7:5060" }``."""
    table = data.get("dialout", {}).get("contacts", {})
    if not isinstance(table, dict):
        raise SettingsError("[dialout] contacts is a table of identity = contact URI")
    contacts: dict[str, str] = {}
    for identity, contact in table.items():
        try:
            if not isinstance(contact, str) or any(c in contact for c in '<>"\r\n '):
                raise SettingsError("not a plain URI")
            uri = SipUri.parse(contact)
            if not uri.host:
                raise SettingsError("no host")
            contacts[normalize_identity(identity)] = contact
        except (SecconfError, SettingsError) as exc:
            raise SettingsError(f"[dialout] contacts {identity!r}: {exc}") from None
    return contacts


def _digest_settings(data: Mapping[str, Any]) -> DigestSettings | None:
    """``[digest]``: present (with a realm) turns digest authentication on (SDES mode)."""
    if "digest" not in data:
        return None
    realm = _get(data, "digest", "realm", str)
    algorithms = tuple(
        str(a).upper() for a in _get(data, "digest", "algorithms", list, ["SHA-256", "MD5"])
    )
    if not algorithms or any(a not in ("SHA-256", "MD5") for a in algorithms):
        raise SettingsError("[digest] algorithms: SHA-256 and/or MD5")
    lifetime = _get(data, "digest", "nonce_lifetime", int, 30)
    if not 1 <= lifetime <= 3600 or not realm or ":" in realm or '"' in realm:
        raise SettingsError("[digest] nonce_lifetime in 1..3600 s, realm without ':' or quotes")
    return DigestSettings(realm, algorithms, lifetime)


def _kms_settings(
    data: Mapping[str, Any], environ: Mapping[str, str], base: Path
) -> KmsSettings | None:
    """``[kms]``: present (with a URL) turns KMS mode on; the PSK file is read here, once."""
    table = data.get("kms")
    url = environ.get("SECCONF_KMS_URL") or (table or {}).get("url")
    if not url:
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SettingsError("[kms] url must be an http(s) URL")
    psk_text = _get(data, "kms", "psk_file", str)
    psk_path = Path(psk_text) if Path(psk_text).is_absolute() else base / psk_text
    try:
        psk = load_key_file(psk_path, "PSK")
        focus_identity = normalize_identity(_get(data, "kms", "focus_identity", str))
    except SecconfError as exc:
        raise SettingsError(f"[kms]: {exc.message}") from None
    timeout = float(_get(data, "kms", "timeout", float, 0.5))
    skew = float(_get(data, "kms", "skew", float, 60.0))
    if not (0 < timeout <= 5) or not (0 < skew <= 600):
        raise SettingsError("[kms] timeout must be in (0, 5] s and skew in (0, 600] s")
    lifetime = float(_get(data, "kms", "epoch_ticket_lifetime", float, 86400.0))
    if not 60 <= lifetime <= 7 * 86400:
        raise SettingsError("[kms] epoch_ticket_lifetime must be in [60, 604800] s")
    return KmsSettings(
        url=url,
        kms_identity=_get(data, "kms", "kms_identity", str),
        focus_identity=focus_identity,
        psk=psk,
        timeout=timeout,
        skew=skew,
        epoch_ticket_lifetime=lifetime,
    )
