"""Structured SIP header values (RFC 3261 §20, grammar in §25.1) and builders.

Every parser here takes the header *value* (after ``Name:``), raises
:class:`MalformedSipMessage` on input outside the grammar, and has a
``__str__`` that gives a value which parses back to an equal object.

Randomness is passed in (:data:`RandomBytes`): the core never imports a
random source, so branches, tags and Call-IDs are reproducible in tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import MalformedSipMessage, redact_line
from .uri import SipUri, format_host_port, split_host_port

__all__ = [
    "MAGIC_COOKIE",
    "Address",
    "CSeq",
    "RandomBytes",
    "Via",
    "format_params",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_params",
    "split_header_values",
]

#: ``RandomBytes(n)`` returns *n* unpredictable bytes (``secrets.token_bytes`` in production).
RandomBytes = Callable[[int], bytes]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
MAGIC_COOKIE = "z9hG4bK"

#: RFC 3261 §8.1.1.5: CSeq numbers are below 2**31.
MAX_CSEQ = 2**31 - 1

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")  # RFC 3261 §25.1 token
_WORD_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+$")  # §25.1 word
_PARAM_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\]|\\.)*\")$")
_CSEQ_RE = re.compile(r"^([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)$")
_VIA_PROTOCOL_RE = re.compile(
    r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(.+)$",
    re.DOTALL,
)

Param = tuple[str, str | None]


def _bad(message: str, text: str) -> MalformedSipMessage:
    return MalformedSipMessage(f"{message}: {redact_line(text)!r}")


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 §7.3.1).

    Commas inside double quotes (with backslash escapes) or angle brackets do
    not split; each element is stripped of surrounding whitespace.
    """
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for index, char in enumerate(value):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            parts.append(value[start:index].strip(" \t"))
            start = index + 1
    if in_quotes or in_angle:
        raise _bad("unbalanced quotes or angle brackets", value)
    parts.append(value[start:].strip(" \t"))
    return parts


def parse_params(text: str) -> tuple[Param, ...]:
    """Parse ``;name[=value]`` generic parameters (RFC 3261 §25.1 generic-param).

    Values may be tokens, hosts (incl. IPv6) or quoted strings, kept as written.
    """
    params: list[Param] = []
    rest = text.strip(" \t")
    while rest:
        if not rest.startswith(";"):
            raise _bad("expected ';' before a parameter", text)
        rest = rest[1:].lstrip(" \t")
        match = re.match(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*", rest)
        if match is None:
            raise _bad("invalid parameter name", text)
        name = match.group(1)
        rest = rest[match.end() :]
        if not rest.startswith("="):
            params.append((name, None))
            continue
        rest = rest[1:].lstrip(" \t")
        if rest.startswith('"'):
            value_match = re.match(r"\"(?:[^\"\\]|\\.)*\"", rest, re.DOTALL)
        else:
            value_match = re.match(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+", rest)
        if value_match is None:
            raise _bad("invalid parameter value", text)
        params.append((name, value_match.group(0)))
        rest = rest[value_match.end() :].lstrip(" \t")
    return tuple(params)


def format_params(params: tuple[Param, ...]) -> str:
    """``;name=value;flag`` text for *params*."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _get_param(params: tuple[Param, ...], name: str) -> str | None:
    for key, value in params:
        if key.lower() == name.lower():
            return "" if value is None else value
    return None


def _set_param(params: tuple[Param, ...], name: str, value: str | None) -> tuple[Param, ...]:
    """Replace *name* in place if present (keeping order), else append it."""
    if value is not None and not _PARAM_VALUE_RE.match(value):
        raise ValueError(f"parameter value {value!r} is not a token or quoted string")
    out: list[Param] = []
    done = False
    for key, old in params:
        if key.lower() == name.lower():
            if not done:
                out.append((key, value))
                done = True
        else:
            out.append((key, old))
    if not done:
        out.append((name, value))
    return tuple(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Address:
    """A name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39).

    ``display`` is the display name as written (a quoted string keeps its
    quotes); :attr:`display_name` gives the unquoted text.  ``uri`` is the
    URI text; :attr:`sip_uri` parses it when it is a SIP(S) URI.
    """

    uri: str
    display: str | None = None
    params: tuple[Param, ...] = ()

    @classmethod
    def build(
        cls, uri: str | SipUri, display_name: str | None = None, **params: str | None
    ) -> Address:
        """A name-addr for *uri*, quoting *display_name* as needed (RFC 3261 §25.1)."""
        display = None
        if display_name is not None:
            display = display_name if _TOKEN_RE.match(display_name) else _quote(display_name)
        address = cls(str(uri), display)
        for name, value in params.items():
            address = address.with_param(name, value)
        return address

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse a From/To/Contact/Refer-To/Route value (one element, not a list)."""
        value = text.strip(" \t")
        display: str | None = None
        if value.startswith('"'):
            match = re.match(r"\"(?:[^\"\\]|\\.)*\"", value, re.DOTALL)
            if match is None:
                raise _bad("unterminated quoted display name", text)
            display = match.group(0)
            value = value[match.end() :].lstrip(" \t")
            if not value.startswith("<"):
                raise _bad("display name without <URI>", text)
        elif "<" in value:
            before, _, _ = value.partition("<")
            words = before.split()
            if words and not all(_TOKEN_RE.match(word) for word in words):
                raise _bad("invalid display name", text)
            display = " ".join(words) or None
            value = value[len(before) :]
        if value.startswith("<"):
            end = value.find(">")
            if end < 0:
                raise _bad("unterminated <URI>", text)
            uri = value[1:end]
            rest = value[end + 1 :]
        else:
            # RFC 3261 §20.10: without <>, everything after the first ';' is a header param.
            uri, semi, rest = value.partition(";")
            uri, rest = uri.rstrip(" \t"), semi + rest
            if any(char in uri for char in ",?"):
                raise _bad("addr-spec with ',' or '?' must be in <>", text)
        _check_uri(uri, text)
        return cls(uri, display, parse_params(rest))

    def __str__(self) -> str:
        if self.display is None and not _needs_angle(self.uri):
            return self.uri + format_params(self.params)
        prefix = f"{self.display} " if self.display is not None else ""
        return f"{prefix}<{self.uri}>{format_params(self.params)}"

    @property
    def display_name(self) -> str | None:
        if self.display is None or not self.display.startswith('"'):
            return self.display
        return re.sub(r"\\(.)", r"\1", self.display[1:-1])

    @property
    def sip_uri(self) -> SipUri:
        """The URI parsed as SIP(S); raises :class:`MalformedSipMessage` for other schemes."""
        return SipUri.parse(self.uri)

    def param(self, name: str) -> str | None:
        return _get_param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), ``None`` when absent."""
        return self.param("tag") or None

    def with_param(self, name: str, value: str | None) -> Address:
        return replace(self, params=_set_param(self.params, name, value))

    def with_tag(self, tag: str) -> Address:
        return self.with_param("tag", tag)


def _needs_angle(uri: str) -> bool:
    return any(char in uri for char in ";,?")


def _check_uri(uri: str, text: str) -> None:
    if not re.match(r"^[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+$", uri):
        raise _bad("invalid URI", text)
    if uri[:4].lower() == "sip:" or uri[:5].lower() == "sips:":
        SipUri.parse(uri)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42, §18.2.1; RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: tuple[Param, ...] = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def build(
        cls, transport: str, host: str, port: int | None, branch: str, *, rport: bool = True
    ) -> Via:
        """A Via for a request we send; ``rport`` asks for RFC 3581 symmetric responses."""
        params: tuple[Param, ...] = (("branch", branch),)
        if rport:
            params += (("rport", None),)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return cls(transport.upper(), host, port, params)

    @classmethod
    def parse(cls, text: str) -> Via:
        match = _VIA_PROTOCOL_RE.match(text.strip(" \t"))
        if match is None:
            raise _bad("invalid Via", text)
        name, version, transport, rest = match.groups()
        end = len(rest)
        for index, char in enumerate(rest):
            if char in "; \t(":
                end = index
                break
        host_port = rest[:end]
        tail = rest[end:].lstrip(" \t")
        if tail.startswith(":"):  # RFC 3261 allows LWS around the port colon
            port_match = re.match(r":[ \t]*([0-9]+)", tail)
            if port_match is None:
                raise _bad("invalid Via port", text)
            host_port += ":" + port_match.group(1)
            tail = tail[port_match.end() :]
        host, port = split_host_port(host_port)
        return cls(transport, host, port, parse_params(tail), f"{name}/{version}")

    def __str__(self) -> str:
        sent_by = format_host_port(self.host, self.port)
        return f"{self.protocol}/{self.transport} {sent_by}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return _get_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> Via:
        return replace(self, params=_set_param(self.params, name, value))

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value filled in by the server (RFC 3581 §4), else ``None``."""
        value = self.param("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def default_port(self) -> int:
        """RFC 3261 §18.2.2 / §19.1.2: 5061 for TLS, 5060 otherwise."""
        return 5061 if self.transport.upper() == "TLS" else 5060

    @property
    def sent_by(self) -> tuple[str, int]:
        """(host lower-cased, port with its default): what §17.2.3 matching compares."""
        return self.host.lower(), self.port if self.port is not None else self.default_port


@dataclass(frozen=True, slots=True)
class CSeq:
    """A CSeq value (RFC 3261 §20.16): sequence number and method."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        match = _CSEQ_RE.match(text.strip(" \t"))
        if match is None:
            raise _bad("invalid CSeq", text)
        number = int(match.group(1))
        if number > MAX_CSEQ:
            raise _bad("CSeq number over 2**31-1 (RFC 3261 §8.1.1.5)", text)
        return cls(number, match.group(2))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def _hex(random_bytes: RandomBytes, count: int) -> str:
    data = random_bytes(count)
    if len(data) != count:
        raise ValueError("RandomBytes returned the wrong number of bytes")
    return data.hex()


def new_branch(random_bytes: RandomBytes) -> str:
    """A fresh branch: magic cookie + 96 random bits (RFC 3261 §8.1.1.7)."""
    return MAGIC_COOKIE + _hex(random_bytes, 12)


def new_tag(random_bytes: RandomBytes) -> str:
    """A fresh tag with 64 random bits (RFC 3261 §19.3 asks for at least 32)."""
    return _hex(random_bytes, 8)


def new_call_id(random_bytes: RandomBytes, host: str | None = None) -> str:
    """A fresh Call-ID: 128 random bits, ``@host`` appended when given (RFC 3261 §8.1.1.4)."""
    local = _hex(random_bytes, 16)
    return f"{local}@{host}" if host else local


def is_token(text: str) -> bool:
    """Whether *text* is an RFC 3261 §25.1 token (methods, parameter names)."""
    return bool(_TOKEN_RE.match(text))


def is_word(text: str) -> bool:
    """Whether *text* is an RFC 3261 §25.1 word (Call-ID halves)."""
    return bool(_WORD_RE.match(text))
