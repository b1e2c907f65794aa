"""SIP and SIPS URIs (RFC 3261 §19.1, grammar in §25.1).

    >>> uri = SipUri.parse("sip:alice@[2001:db8::1]:5070;transport=tls?Subject=hi")
    >>> uri.host, uri.port, uri.param("transport")
    ('[2001:db8::1]', 5070, 'tls')
    >>> str(uri)                       # the text it came from

Parts are kept as written (escapes are not decoded, case is kept), so
``str(SipUri.parse(text)) == text`` for every URI this module accepts.

Decisions (docs/sip.md): a password in the userinfo is refused (RFC 3261
§19.1.1 says NOT RECOMMENDED; a client that sends one leaks it), and the host
must be a hostname, an IPv4 address or a bracketed IPv6 reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import MalformedSipMessage, redact_line

__all__ = ["SipUri", "format_host_port", "split_host_port"]

_SCHEME_RE = re.compile(r"^(sips?):", re.IGNORECASE)
# RFC 3261 §25.1 user = 1*( unreserved / escaped / user-unreserved )
_USER_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
# hostname / IPv4address (RFC 3261 §25.1); IPv6 references are checked apart.
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?$")
_IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]{2,45}\]$")
# paramchar = param-unreserved / unreserved / escaped
_PARAM_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})*$")
# hnv-unreserved / unreserved / escaped
_HEADER_PART_RE = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*$")

Param = tuple[str, str | None]


def _bad(message: str, text: str) -> MalformedSipMessage:
    return MalformedSipMessage(f"{message}: {redact_line(text)!r}")


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (RFC 3261 §25.1 hostport); IPv6 stays in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _bad("unterminated IPv6 reference", text)
        host, rest = text[: end + 1], text[end + 1 :]
        if not _IPV6_RE.match(host) or host.count(":") < 2:
            raise _bad("invalid IPv6 reference", text)
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not _HOSTNAME_RE.match(host):
            raise _bad("invalid host", text)
    if not rest:
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
        raise _bad("invalid port", text)
    if len(rest) > 6 or not 0 < int(rest[1:]) <= 65535:
        raise _bad("port out of range", text)
    return host, int(rest[1:])


def format_host_port(host: str, port: int | None) -> str:
    """Inverse of :func:`split_host_port`; a bare IPv6 address gets its brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def _parse_params(text: str, whole: str) -> tuple[Param, ...]:
    params: list[Param] = []
    for item in text.split(";")[1:]:
        name, eq, value = item.partition("=")
        if not name or not _PARAM_RE.match(name) or not _PARAM_RE.match(value):
            raise _bad("invalid URI parameter", whole)
        params.append((name, value if eq else None))
    return tuple(params)


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1), parts as written."""

    scheme: str
    host: str
    user: str | None = None
    port: int | None = None
    params: tuple[Param, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse *text*; raise :class:`MalformedSipMessage` if it is not a SIP(S) URI."""
        match = _SCHEME_RE.match(text)
        if match is None:
            raise _bad("not a sip: or sips: URI", text)
        scheme = match.group(1)
        rest = text[match.end() :]
        user: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if ":" in userinfo:
                # RFC 3261 §19.1.1: passwords in URIs are NOT RECOMMENDED; we refuse them.
                raise MalformedSipMessage("SIP URI carries a password (refused, RFC 3261 §19.1.1)")
            if not _USER_RE.match(userinfo):
                raise _bad("invalid user part", text)
            user = userinfo
        rest, question, header_text = rest.partition("?")
        host_port, *_ = rest.split(";", 1)
        host, port = split_host_port(host_port)
        params = _parse_params(rest[len(host_port) :], text)
        headers: list[tuple[str, str]] = []
        if question:
            for item in header_text.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq:
                    raise _bad("invalid URI header", text)
                if not _HEADER_PART_RE.match(name) or not _HEADER_PART_RE.match(value):
                    raise _bad("invalid URI header", text)
                headers.append((name, value))
        return cls(scheme, host, user, port, params, tuple(headers))

    def __str__(self) -> str:
        text = f"{self.scheme}:"
        if self.user is not None:
            text += f"{self.user}@"
        text += format_host_port(self.host, self.port)
        for name, value in self.params:
            text += f";{name}" if value is None else f";{name}={value}"
        if self.headers:
            text += "?" + "&".join(f"{name}={value}" for name, value in self.headers)
        return text

    # -- accessors ----------------------------------------------------------

    @property
    def secure(self) -> bool:
        """``True`` for ``sips:`` (RFC 3261 §26.2.2: TLS on every hop)."""
        return self.scheme.lower() == "sips"

    def param(self, name: str) -> str | None:
        """Value of URI parameter *name* (case-insensitive); ``""`` for a flag."""
        for key, value in self.params:
            if key.lower() == name.lower():
                return "" if value is None else value
        return None

    def has_param(self, name: str) -> bool:
        return self.param(name) is not None

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, or ``None``."""
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return format_host_port(self.host, self.port)

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets (what a socket call wants)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with these parameters set (``None`` for a flag), others kept in order."""
        kept = [(k, v) for k, v in self.params if k.lower() not in {p.lower() for p in params}]
        return replace(self, params=(*kept, *params.items()))

    def without_params(self, *names: str) -> SipUri:
        lowered = {name.lower() for name in names}
        return replace(
            self, params=tuple((k, v) for k, v in self.params if k.lower() not in lowered)
        )
