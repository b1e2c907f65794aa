"""The one parser of ``redis.url``: a single server, a Redis Cluster or a Sentinel-watched master.

Accepted forms (every service reads the same config key through this module)::

    redis://[[user]:password@]host[:port][/db]          one server (redis-py's from_url)
    rediss://...                                         the same over TLS
    unix://[[user]:password@]/path/to/socket[?db=N]      one server on a local socket
    redis+cluster://[[user]:password@]host:port[,host:port...][/]
                                                         Redis Cluster: any reachable
                                                         node(s) to learn the slot map from
    redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>[/db]
                                                         the master that Sentinel names
                                                         for <service>

Hosts may be names, IPv4 addresses or bracketed IPv6 addresses; a missing
port is 6379 (cluster) or 26379 (sentinel).  The credentials of a cluster URL
are those of every node; those of a sentinel URL are the master's (the
sentinels themselves are asked without credentials).  Percent-escapes in the
user, password and service name are decoded.  A bad URL is a
:class:`RedisUrlError` (a ``ValueError``) whose message never quotes the
password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

__all__ = ["RedisTarget", "RedisUrlError", "parse_redis_url"]

SINGLE_SCHEMES: Final = ("redis", "rediss", "unix")
CLUSTER_SCHEME: Final = "redis+cluster"
SENTINEL_SCHEME: Final = "redis+sentinel"
MAX_NODES: Final = 64
_HOST_RE: Final = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[0-9A-Za-z._-]+))(?::(?P<port>[0-9]{1,5}))?$"
)
_SERVICE_RE: Final = re.compile(r"^[0-9A-Za-z._-]{1,128}$")


class RedisUrlError(ValueError):
    """``redis.url`` is not one of the accepted forms; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a ``redis.url`` names."""

    kind: Literal["single", "cluster", "sentinel"]
    #: single: the URL itself, for redis-py's ``from_url``.
    url: str = field(default="", repr=False)
    #: cluster: startup nodes; sentinel: the sentinels.
    nodes: tuple[tuple[str, int], ...] = ()
    #: sentinel: the monitored master's name.
    service: str = ""
    #: sentinel: the database number on the master (cluster: always 0).
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_redis_url(url: object) -> RedisTarget:
    """Parse *url* (see the module docstring); :class:`RedisUrlError` if it is not usable."""
    if not isinstance(url, str) or not url:
        raise RedisUrlError("redis.url must be a non-empty string")
    if any(ch.isspace() for ch in url) or not url.isprintable():
        raise RedisUrlError("redis.url must not contain spaces or control characters")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise RedisUrlError("redis.url needs a scheme: redis://, rediss://, unix://, "
                            "redis+cluster:// or redis+sentinel://")  # fmt: skip
    if scheme in SINGLE_SCHEMES:
        return _single(url, scheme)
    if scheme == CLUSTER_SCHEME:
        return _cluster(rest)
    if scheme == SENTINEL_SCHEME:
        return _sentinel(rest)
    raise RedisUrlError(
        f"redis.url scheme {scheme!r} is not one of redis, rediss, unix, redis+cluster, "
        "redis+sentinel"
    )


def _single(url: str, scheme: str) -> RedisTarget:
    from redis.connection import parse_url  # redis-py's own reading of the URL

    try:
        parsed = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        # redis-py's message may quote the URL (and so the password): name the problem only.
        text = str(exc).lower()
        reason = "bad port" if "port" in text else "bad database" if "db" in text else "malformed"
        raise RedisUrlError(f"redis.url ({scheme}://): {reason}") from None
    if scheme != "unix":
        path = urlsplit(url).path
        if path not in ("", "/") and not re.fullmatch(r"/[0-9]{1,5}/?", path):
            # redis-py would silently use database 0 for "/x"
            raise RedisUrlError(f"redis.url ({scheme}://): the path is /<database number>")
    if scheme == "unix" and not parsed.get("path"):
        raise RedisUrlError("redis.url (unix://): no socket path")
    if scheme != "unix" and not parsed.get("host"):
        raise RedisUrlError(f"redis.url ({scheme}://): no host")
    return RedisTarget("single", url=url)


def _credentials(rest: str) -> tuple[str | None, str | None, str]:
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        return None, None, rest
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None), hosts


def _nodes(text: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    if not text:
        raise RedisUrlError(f"redis.url ({what}): no host:port")
    nodes: list[tuple[str, int]] = []
    for part in text.split(","):
        match = _HOST_RE.match(part)
        if match is None:
            raise RedisUrlError(f"redis.url ({what}): {part!r} is not host[:port]")
        host = match.group("v6") or match.group("name")
        port = int(match.group("port")) if match.group("port") else default_port
        if not 0 < port < 65536:
            raise RedisUrlError(f"redis.url ({what}): port {port} out of range")
        if (host, port) not in nodes:
            nodes.append((host, port))
    if len(nodes) > MAX_NODES:
        raise RedisUrlError(f"redis.url ({what}): more than {MAX_NODES} nodes")
    return tuple(nodes)


def _cluster(rest: str) -> RedisTarget:
    if "?" in rest or "#" in rest:
        raise RedisUrlError("redis.url (redis+cluster://): no query or fragment accepted")
    username, password, hosts = _credentials(rest)
    hosts, slash, path = hosts.partition("/")
    if slash and path not in ("", "0"):
        raise RedisUrlError("redis.url (redis+cluster://): Redis Cluster has database 0 only")
    nodes = _nodes(hosts, 6379, "redis+cluster://")
    return RedisTarget("cluster", nodes=nodes, username=username, password=password)


def _sentinel(rest: str) -> RedisTarget:
    if "?" in rest or "#" in rest:
        raise RedisUrlError("redis.url (redis+sentinel://): no query or fragment accepted")
    username, password, hosts = _credentials(rest)
    hosts, slash, path = hosts.partition("/")
    nodes = _nodes(hosts, 26379, "redis+sentinel://")
    parts = path.split("/") if slash else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash
    if not 1 <= len(parts) <= 2:
        raise RedisUrlError("redis.url (redis+sentinel://): expected /<service-name>[/db]")
    service = unquote(parts[0])
    if not _SERVICE_RE.match(service):
        raise RedisUrlError(
            "redis.url (redis+sentinel://): the service name is 1 to 128 of [0-9A-Za-z._-]"
        )
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit() or len(parts[1]) > 5:
            raise RedisUrlError("redis.url (redis+sentinel://): the database is a number")
        db = int(parts[1])
    return RedisTarget(
        "sentinel", nodes=nodes, service=service, db=db, username=username, password=password
    )
