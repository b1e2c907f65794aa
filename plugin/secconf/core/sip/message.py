"""SIP messages (RFC 3261 §7) that round-trip byte for byte.

    >>> msg = parse_message(datagram)
    >>> msg.method, msg.get("call-id"), msg.get("i")   # compact forms are the same header
    >>> bytes(msg) == datagram                         # every byte kept
    True

The model is h11's: bytes in, a message object out, and ``bytes(msg)`` to go
back; nothing here does I/O.  Headers are an ordered list of :class:`Header`
``(name, value)`` pairs in their original spelling; each one parsed from the
wire also keeps its raw text (folding, spacing, line endings), so an
unchanged header is written back exactly as it came.  Headers built or edited
here are written in canonical ``Name: value`` form.

Decisions (docs/sip.md):

* Limits: a message is at most :data:`MAX_MESSAGE_BYTES`, has at most
  :data:`MAX_HEADERS` headers, and a header (with its folded lines) is at most
  :data:`MAX_HEADER_LINE` bytes; over a limit is :class:`SipMessageTooLarge`
  (413), refused before the rest is parsed.
* Lines end in CRLF; a bare LF is accepted as well (and kept), a bare CR is not.
  CRLFs before the start line are skipped (RFC 3261 §7.5).
* The body must be exactly Content-Length bytes (RFC 3261 §18.3 lets a UDP
  receiver drop extra bytes; we refuse them so that what we accept is what we
  re-send).  Without Content-Length the body is the rest of the datagram; on a
  stream Content-Length is mandatory (:class:`StreamFramer`).
* Every message must carry one From, To, Call-ID and CSeq, and at least one
  Via, all parseable; a request's CSeq method must be its method (§8.1.1).
  Other headers are parsed only when asked for.
* Header text is UTF-8 (RFC 3261 §25 allows UTF-8 in display names and
  reason phrases); anything else is malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import MalformedSipMessage, SipMessageTooLarge, VersionNotSupported, redact_line
from .headers import Address, CSeq, Via, split_header_values

__all__ = [
    "COMPACT_FORMS",
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "MAX_MESSAGE_BYTES",
    "Header",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "canonical_name",
    "parse_message",
]

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 200
MAX_HEADER_LINE = 8 * 1024

#: Compact header forms: RFC 3261 §7.3.3 and §20, RFC 3265/6665 (o, u),
#: RFC 3515 (r), RFC 3892 (b), RFC 4028 (x), RFC 8224 (y), RFC 3841 (a, j, d),
#: RFC 4474 (n).
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1 allows
#: combining only these); other values (Date, WWW-Authenticate, ...) may hold
#: commas of their own and are never split.
LIST_HEADERS = frozenset(
    {
        "accept", "accept-encoding", "accept-language", "alert-info", "allow",
        "allow-events", "call-info", "contact", "content-encoding", "content-language",
        "error-info", "in-reply-to", "path", "proxy-require", "reason", "record-route",
        "require", "route", "service-route", "supported", "unsupported", "via", "warning",
    }
)  # fmt: skip

#: Headers whose values are credentials: never shown by ``repr``.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate"}
)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEADER_NAME_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:")
_REQUEST_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:[^\s]+$")
_VERSION_RE = re.compile(r"^SIP/([0-9]+)\.([0-9]+)$", re.IGNORECASE)
_STATUS_RE = re.compile(r"^([1-6][0-9][0-9])$")


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name (``"v"`` and ``"VIA"`` give ``"via"``)."""
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


def _bad(message: str, line: str | None = None) -> MalformedSipMessage:
    if line is None:
        return MalformedSipMessage(message)
    return MalformedSipMessage(f"{message}: {redact_line(line)!r}")


@dataclass(frozen=True, slots=True)
class Header:
    """One header field: ``(name, value)`` plus, if parsed, its exact wire text.

    Unpacks like a tuple (``name, value = header``); ``raw`` takes no part in
    equality and is never shown by ``repr`` (it may hold credentials).
    """

    name: str
    value: str
    raw: str | None = field(default=None, compare=False)

    def __iter__(self) -> Iterator[str]:
        yield self.name
        yield self.value

    def __repr__(self) -> str:
        if self.key in _SECRET_HEADERS:
            return f"Header({self.name!r}, <redacted>)"
        return f"Header({self.name!r}, {redact_line(self.value)!r})"

    @property
    def key(self) -> str:
        """The canonical (lower-case long) name, for lookups."""
        return canonical_name(self.name)

    def __str__(self) -> str:
        return self.raw if self.raw is not None else f"{self.name}: {self.value}\r\n"


def _check_header(name: str, value: str) -> None:
    if not _TOKEN_RE.match(name):
        raise ValueError(f"header name {name!r} is not a token")
    if any(char in value for char in "\r\n\0"):
        raise ValueError("header value may not contain CR, LF or NUL")


class SipMessage:
    """What requests and responses share: headers and body (RFC 3261 §7)."""

    def __init__(
        self,
        headers: Iterable[Header | tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.headers: list[Header] = [
            h if isinstance(h, Header) else Header(h[0], h[1]) for h in headers
        ]
        self.body = body
        self.version = version
        self._start_eol = "\r\n"
        self._end_eol = "\r\n"

    # -- start line (subclasses) -------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        head = self.start_line() + self._start_eol + "".join(str(h) for h in self.headers)
        return (head + self._end_eol).encode("utf-8") + self.body

    # -- header access -----------------------------------------------------

    def get(self, name: str) -> str | None:
        """Value of the first header called *name* (any spelling or compact form)."""
        key = canonical_name(name)
        for header in self.headers:
            if header.key == key:
                return header.value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of *name*, in order; list headers are split on commas (§7.3.1)."""
        key = canonical_name(name)
        values: list[str] = []
        for header in self.headers:
            if header.key != key:
                continue
            if key in LIST_HEADERS:
                values.extend(v for v in split_header_values(header.value) if v)
            else:
                values.append(header.value)
        return values

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def add(self, name: str, value: str) -> None:
        """Append a header at the end."""
        _check_header(name, value)
        self.headers.append(Header(name, value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header before all others (a new top Via, RFC 3261 §8.1.1.7)."""
        _check_header(name, value)
        self.headers.insert(0, Header(name, value))

    def set(self, name: str, value: str) -> None:
        """Make *name* occur once with *value*, at the place of its first occurrence."""
        _check_header(name, value)
        key = canonical_name(name)
        out: list[Header] = []
        placed = False
        for header in self.headers:
            if header.key == key:
                if not placed:
                    out.append(Header(header.name, value))
                    placed = True
            else:
                out.append(header)
        if not placed:
            out.append(Header(name, value))
        self.headers = out

    def remove(self, name: str) -> int:
        """Remove every header called *name*; return how many were removed."""
        key = canonical_name(name)
        before = len(self.headers)
        self.headers = [h for h in self.headers if h.key != key]
        return before - len(self.headers)

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body, keeping Content-Length (and Content-Type) in step."""
        self.body = body
        if content_type is not None:
            self.set("Content-Type", content_type)
        elif not body:
            self.remove("Content-Type")
        self.set("Content-Length", str(len(body)))

    # -- parsed views of the mandatory headers (RFC 3261 §8.1.1) -------------

    def _one(self, name: str) -> str:
        values = [h.value for h in self.headers if h.key == name]
        if len(values) != 1:
            raise _bad(f"expected exactly one {name} header, found {len(values)}")
        return values[0]

    @property
    def call_id(self) -> str:
        return self._one("call-id")

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._one("cseq"))

    @property
    def from_(self) -> Address:
        return Address.parse(self._one("from"))

    @property
    def to(self) -> Address:
        return Address.parse(self._one("to"))

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(value) for value in self.get_all("via")]

    @property
    def top_via(self) -> Via:
        values = self.get_all("via")
        if not values:
            raise _bad("no Via header")
        return Via.parse(values[0])

    @property
    def content_type(self) -> str | None:
        """The media type of the body, lower-cased, without parameters."""
        value = self.get("content-type")
        return value.split(";")[0].strip().lower() if value else None

    def _validate(self) -> None:
        self.call_id  # noqa: B018 - each accessor raises MalformedSipMessage
        self.from_  # noqa: B018
        self.to  # noqa: B018
        if not self.get_all("via"):
            raise _bad("no Via header")
        self.top_via  # noqa: B018
        self.cseq  # noqa: B018


class SipRequest(SipMessage):
    """A request: method, Request-URI (kept as text), headers, body (RFC 3261 §7.1)."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Iterable[Header | tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    @classmethod
    def parse(cls, data: bytes) -> SipRequest:
        """Parse a request; a response (or anything else) is :class:`MalformedSipMessage`."""
        message = parse_message(data)
        if not isinstance(message, SipRequest):
            raise _bad("expected a SIP request, got a response")
        return message

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return (
            f"<SipRequest {self.method} {redact_line(self.uri)} "
            f"({len(self.headers)} headers, {len(self.body)}-byte body)>"
        )


class SipResponse(SipMessage):
    """A response: status code, reason phrase, headers, body (RFC 3261 §7.2)."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Iterable[Header | tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason

    @classmethod
    def parse(cls, data: bytes) -> SipResponse:
        """Parse a response; a request (or anything else) is :class:`MalformedSipMessage`."""
        message = parse_message(data)
        if not isinstance(message, SipResponse):
            raise _bad("expected a SIP response, got a request")
        return message

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return (
            f"<SipResponse {self.status} {redact_line(self.reason)} "
            f"({len(self.headers)} headers, {len(self.body)}-byte body)>"
        )


# -- parsing --------------------------------------------------------------


def _split_lines(data: bytes) -> tuple[list[tuple[str, str]], str, bytes]:
    """Lines of the head as (text, eol), the blank line's eol, and the body bytes."""
    lines: list[tuple[str, str]] = []
    pos = 0
    while data.startswith((b"\r\n", b"\n"), pos):  # RFC 3261 §7.5: skip leading CRLFs
        pos += 2 if data.startswith(b"\r\n", pos) else 1
    while True:
        newline = data.find(b"\n", pos)
        if newline < 0:
            raise _bad("no empty line ends the header section")
        raw = data[pos:newline]
        pos = newline + 1
        eol = "\n"
        if raw.endswith(b"\r"):
            raw, eol = raw[:-1], "\r\n"
        if not raw:
            return lines, eol, data[pos:]
        if len(raw) > MAX_HEADER_LINE:
            raise SipMessageTooLarge(f"header line over {MAX_HEADER_LINE} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("header section is not UTF-8") from None
        if any(char in text for char in "\r\0"):
            raise _bad("bare CR or NUL in the header section", text)
        lines.append((text, eol))


def _parse_start_line(text: str) -> SipRequest | SipResponse:
    parts = text.split(" ", 2)
    if len(parts) < 2:
        raise _bad("invalid start line", text)
    if parts[0].upper().startswith("SIP/"):
        # RFC 3261 §7.2: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        version, status = parts[0], parts[1]
        reason = parts[2] if len(parts) == 3 else None
        _check_version(version, text)
        if not _STATUS_RE.match(status) or reason is None:
            raise _bad("invalid status line", text)
        return SipResponse(int(status), reason, version=version)
    # RFC 3261 §7.1: Request-Line = Method SP Request-URI SP SIP-Version
    if len(parts) != 3:
        raise _bad("invalid request line", text)
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise _bad("invalid method", text)
    if not _REQUEST_URI_RE.match(uri) or uri.startswith("<"):
        raise _bad("invalid Request-URI", text)
    _check_version(version, text)
    return SipRequest(method, uri, version=version)


def _check_version(version: str, line: str) -> None:
    match = _VERSION_RE.match(version)
    if match is None:
        raise _bad("invalid SIP version", line)
    if (int(match.group(1)), int(match.group(2))) != (2, 0):
        raise VersionNotSupported(f"SIP version {redact_line(version)!r} is not SIP/2.0")


def _parse_headers(lines: list[tuple[str, str]]) -> list[Header]:
    headers: list[Header] = []
    current: list[tuple[str, str]] = []

    def finish() -> None:
        first = current[0][0]
        match = _HEADER_NAME_RE.match(first)
        if match is None:
            raise _bad("invalid header line", first)
        pieces = [first[match.end() :]] + [text for text, _ in current[1:]]
        # RFC 3261 §7.3.1: a fold (CRLF + whitespace) is equivalent to one SP.
        value = " ".join(piece.strip(" \t") for piece in pieces if piece.strip(" \t"))
        raw = "".join(text + eol for text, eol in current)
        if len(raw) > MAX_HEADER_LINE:
            raise SipMessageTooLarge(f"header over {MAX_HEADER_LINE} bytes with its folds")
        headers.append(Header(match.group(1), value, raw))
        if len(headers) > MAX_HEADERS:
            raise SipMessageTooLarge(f"more than {MAX_HEADERS} headers")

    for text, eol in lines:
        if text[:1] in (" ", "\t"):
            if not current:
                raise _bad("continuation line before any header", text)
            current.append((text, eol))
            continue
        if current:
            finish()
        current = [(text, eol)]
    if current:
        finish()
    return headers


def _content_length(headers: list[Header]) -> int | None:
    values = {h.value for h in headers if h.key == "content-length"}
    if not values:
        return None
    if len(values) > 1:
        raise _bad("conflicting Content-Length headers")
    (value,) = values
    if not value.isdigit() or not value.isascii() or len(value) > 10:
        raise _bad("invalid Content-Length", value)
    return int(value)


def parse_message(data: bytes, *, require_content_length: bool = False) -> SipRequest | SipResponse:
    """Parse one complete message (a datagram, or a frame from :class:`StreamFramer`).

    Raises :class:`SipMessageTooLarge` over a limit and
    :class:`MalformedSipMessage` for anything outside RFC 3261 §25.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipMessageTooLarge(f"message over {MAX_MESSAGE_BYTES} bytes")
    lines, end_eol, body = _split_lines(data)
    if not lines:
        raise _bad("empty message")
    start_text, start_eol = lines[0]
    message = _parse_start_line(start_text)
    message.headers = _parse_headers(lines[1:])
    message._start_eol = start_eol
    message._end_eol = end_eol
    length = _content_length(message.headers)
    if length is None and require_content_length:
        raise _bad("no Content-Length on a stream transport (RFC 3261 §18.3)")
    if length is not None and length != len(body):
        raise _bad(f"body is {len(body)} bytes, Content-Length says {length}")
    message.body = body
    message._validate()
    if isinstance(message, SipRequest) and message.cseq.method != message.method:
        raise _bad("CSeq method differs from the request method (RFC 3261 §8.1.1.5)")
    return message


class StreamFramer:
    """Cut a TCP/TLS byte stream into messages by Content-Length (RFC 3261 §18.3).

    ``feed()`` returns the complete messages now available, as bytes for
    :func:`parse_message`.  CRLF keep-alives between messages (RFC 5626 §3.5.1)
    are dropped.  A head without Content-Length, or a message or head over the
    limits, raises; the stream cannot be resynchronised after that and the
    connection should be closed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n" or self._buffer[:1] == b"\n":
                del self._buffer[: 2 if self._buffer[:2] == b"\r\n" else 1]
            frame = self._next_frame()
            if frame is None:
                return frames
            frames.append(frame)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    def _next_frame(self) -> bytes | None:
        match = re.search(rb"\r?\n\r?\n", self._buffer)
        if match is None:
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                raise SipMessageTooLarge(f"header section over {MAX_MESSAGE_BYTES} bytes")
            return None
        head = bytes(self._buffer[: match.end()])
        length: int | None = None
        for line in re.split(rb"\r?\n", head):
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                text = value.strip()
                if not text.isdigit() or len(text) > 10:
                    raise _bad("invalid Content-Length on a stream")
                if length is not None and length != int(text):
                    raise _bad("conflicting Content-Length headers")
                length = int(text)
        if length is None:
            raise _bad("no Content-Length on a stream transport (RFC 3261 §18.3)")
        total = match.end() + length
        if total > MAX_MESSAGE_BYTES:
            raise SipMessageTooLarge(f"message over {MAX_MESSAGE_BYTES} bytes")
        if len(self._buffer) < total:
            return None
        frame = bytes(self._buffer[:total])
        del self._buffer[:total]
        return frame
