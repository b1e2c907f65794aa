"""SDP (RFC 8866, formerly RFC 4566) that round-trips byte for byte.

A proxy that rewrites keys must not disturb anything else in a body: phones
compare ``o=`` versions, some break on reordered attributes, and signatures or
hashes over SDP exist in the wild.  So the model here is the list of lines as
they came, each with its own line ending, plus accessors and edits that touch
only the lines (and within them only the tokens) they must.

    >>> sd = SessionDescription.parse(body)
    >>> audio = sd.media[0]
    >>> audio.set_port(40000)
    >>> audio.replace_attributes("crypto", ["1 AES_CM_128_HMAC_SHA1_80 inline:..."])
    >>> str(sd)          # every other byte unchanged

Decisions where RFC 8866 leaves room (see docs/sdp.md):

* Lines may end in CRLF or LF (RFC 8866 §5 asks parsers to accept LF); a bare
  CR, a NUL or an empty line in the middle is malformed.  Blank lines at the
  very end are kept as a trailer (several phones send one).
* ``v=``, ``o=``, ``s=`` must be the first three lines and a ``t=`` must occur
  before the first ``m=``; the order of the other lines is not enforced, and
  lines of unknown type letters are kept in place (RFC 8866 §5 lets a parser
  either ignore or reject them; a proxy must not drop what it does not know).
* ``o=``, ``c=`` and ``m=`` lines are checked when parsed, since edits depend on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .errors import MalformedSdp, MessageTooLarge, redact_line

__all__ = [
    "MAX_SDP_BYTES",
    "MAX_SDP_LINES",
    "Connection",
    "MediaSection",
    "Origin",
    "SdpLine",
    "Section",
    "SessionDescription",
]

#: Bodies above this size are refused before parsing (a SIP body of several
#: media sections with ICE candidates stays far below it).
MAX_SDP_BYTES = 64 * 1024
#: Bodies with more lines than this are refused before parsing.
MAX_SDP_LINES = 1000

_TYPE_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")
_EOLS = ("\r\n", "\n", "")

# RFC 8866 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
_MEDIA_RE = re.compile(
    r"^(?P<media>[^ ]+) (?P<port>[0-9]{1,5})(?:/(?P<count>[0-9]{1,5}))? (?P<proto>[^ ]+)"
    r"(?P<formats>(?: +[^ ]+)+) *$"
)
# RFC 8866 §5.7: c=<nettype> <addrtype> <connection-address>
_CONNECTION_RE = re.compile(r"^(?P<nettype>[^ ]+) (?P<addrtype>[^ ]+) (?P<address>[^ ]+) *$")
# RFC 8866 §5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
_ORIGIN_RE = re.compile(
    r"^(?P<username>[^ ]+) (?P<session_id>[0-9]+) (?P<version>[0-9]+) "
    r"(?P<nettype>[^ ]+) (?P<addrtype>[^ ]+) (?P<address>[^ ]+) *$"
)
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")  # RFC 8866 §9 token


@dataclass(frozen=True, slots=True)
class SdpLine:
    """One ``<type>=<value>`` line and the line ending it had (``""`` at end of body)."""

    kind: str
    value: str
    eol: str = "\r\n"

    def __str__(self) -> str:
        return f"{self.kind}={self.value}{self.eol}"

    def __repr__(self) -> str:
        return f"SdpLine({redact_line(f'{self.kind}={self.value}')!r})"

    @property
    def attribute_name(self) -> str | None:
        """For an ``a=`` line the attribute name, else ``None``."""
        if self.kind != "a":
            return None
        return self.value.partition(":")[0]

    def is_attribute(self, wanted: str) -> bool:
        """An ``a=`` line of the attribute *wanted* (given in lower case), in any letter case.

        RFC 8866 leaves the case of attribute names to each attribute's definition, and peers
        differ; for the attributes that carry or select keys (``crypto``, ``key-mgmt``) a
        case-sensitive match would let ``a=CRYPTO`` or ``a=Key-Mgmt`` pass unseen, so the focus
        treats every spelling as the attribute (safe: what it matches, it checks or removes).
        """
        if self.kind != "a":
            return False
        value, size = self.value, len(wanted)
        return (len(value) == size or value[size : size + 1] == ":") and (
            value[:size].lower() == wanted
        )

    @property
    def attribute_value(self) -> str | None:
        """For an ``a=name:value`` line the value; ``None`` for property attributes."""
        if self.kind != "a":
            return None
        _, colon, value = self.value.partition(":")
        return value if colon else None


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` line (RFC 8866 §5.7)."""

    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Origin:
    """An ``o=`` line (RFC 8866 §5.2)."""

    username: str
    session_id: str
    version: int
    nettype: str
    addrtype: str
    address: str


def _attribute_text(name: str, value: str | None) -> str:
    if not _TOKEN_RE.match(name):
        raise ValueError(f"attribute name {name!r} is not an RFC 8866 token")
    if value is None:
        return name
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("attribute value may not contain CR, LF or NUL")
    return f"{name}:{value}"


class Section:
    """A run of SDP lines: the session level, or one media section.

    Edits keep every line they do not touch exactly as it was.
    """

    #: Line types that may precede ``c=`` in this kind of section (RFC 8866 §9).
    _BEFORE_CONNECTION: frozenset[str] = frozenset("vosiuep")

    def __init__(self, lines: list[SdpLine], eol: str) -> None:
        self.lines = lines
        self._eol = eol or "\r\n"

    def __iter__(self) -> Iterator[SdpLine]:
        return iter(self.lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.lines)} lines>"

    # -- attributes -------------------------------------------------------

    def attributes(self, name: str) -> list[str | None]:
        """Values of every ``a=name`` line here, in order (``None`` for a flag)."""
        wanted = name.lower()
        return [line.attribute_value for line in self.lines if line.is_attribute(wanted)]

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` line, ``None`` if absent or a flag."""
        values = self.attributes(name)
        return values[0] if values else None

    def has_attribute(self, name: str) -> bool:
        wanted = name.lower()
        return any(line.is_attribute(wanted) for line in self.lines)

    def add_attribute(self, name: str, value: str | None = None) -> None:
        """Append ``a=name[:value]`` after the last line of this section."""
        self._insert(len(self.lines), SdpLine("a", _attribute_text(name, value)))

    def remove_attributes(self, name: str) -> int:
        """Remove every ``a=name`` line; return how many were removed."""
        wanted = name.lower()
        positions = [i for i, line in enumerate(self.lines) if line.is_attribute(wanted)]
        for position in reversed(positions):
            self._delete(position)
        return len(positions)

    def replace_attributes(self, name: str, values: Sequence[str | None]) -> None:
        """Make the ``a=name`` lines carry exactly *values*, in order.

        Existing lines are rewritten in place (keeping their position and line
        ending), surplus ones are removed, and extra values are inserted right
        after the last existing one (or at the end of the section).
        """
        texts = [_attribute_text(name, value) for value in values]
        wanted = name.lower()
        positions = [i for i, line in enumerate(self.lines) if line.is_attribute(wanted)]
        for position, text in zip(positions, texts, strict=False):
            old = self.lines[position]
            self.lines[position] = SdpLine("a", text, old.eol)
        for position in reversed(positions[len(texts) :]):
            self._delete(position)
        if len(positions) >= len(texts):
            return
        insert_at = positions[-1] + 1 if positions else len(self.lines)
        for offset, text in enumerate(texts[len(positions) :]):
            self._insert(insert_at + offset, SdpLine("a", text))

    # -- connection -------------------------------------------------------

    @property
    def connection(self) -> Connection | None:
        """The first ``c=`` line of this section, if any."""
        for line in self.lines:
            if line.kind == "c":
                return _parse_connection(line.value)
        return None

    def set_connection(self, address: str, addrtype: str = "IP4", nettype: str = "IN") -> None:
        """Point this section's ``c=`` at *address*, adding the line where RFC 8866 puts it."""
        value = str(Connection(nettype, addrtype, address))
        _parse_connection(value)  # refuse to write what we would not accept
        for position, line in enumerate(self.lines):
            if line.kind == "c":
                self.lines[position] = SdpLine("c", value, line.eol)
                return
        position = 1
        while position < len(self.lines) and self.lines[position].kind in self._BEFORE_CONNECTION:
            position += 1
        self._insert(position, SdpLine("c", value))

    # -- line surgery that keeps line endings consistent ------------------

    def _insert(self, position: int, line: SdpLine) -> None:
        if position == len(self.lines) and self.lines and self.lines[-1].eol == "":
            # The body ended without a line ending; keep it that way.
            last = self.lines[-1]
            self.lines[-1] = SdpLine(last.kind, last.value, self._eol)
            line = SdpLine(line.kind, line.value, "")
        else:
            line = SdpLine(line.kind, line.value, self._eol)
        self.lines.insert(position, line)

    def _delete(self, position: int) -> None:
        removed = self.lines.pop(position)
        if removed.eol == "" and position == len(self.lines) and self.lines:
            last = self.lines[-1]
            self.lines[-1] = SdpLine(last.kind, last.value, "")


class MediaSection(Section):
    """One ``m=`` line and the lines that follow it up to the next ``m=``."""

    _BEFORE_CONNECTION = frozenset("mi")

    def _media_match(self) -> re.Match[str]:
        match = _MEDIA_RE.match(self.lines[0].value)
        if match is None:  # parse() checked it; edits keep it valid
            raise MalformedSdp("media line became invalid")
        return match

    @property
    def media(self) -> str:
        """``audio``, ``video``, ``application``, ..."""
        return self._media_match()["media"]

    @property
    def port(self) -> int:
        return int(self._media_match()["port"])

    @property
    def port_count(self) -> int | None:
        count = self._media_match()["count"]
        return int(count) if count is not None else None

    @property
    def proto(self) -> str:
        """Transport protocol, e.g. ``RTP/SAVP``."""
        return self._media_match()["proto"]

    @property
    def formats(self) -> list[str]:
        return self._media_match()["formats"].split()

    @property
    def is_secure_rtp(self) -> bool:
        """True for SRTP profiles (RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP...), in any letter case."""
        return not {"SAVP", "SAVPF"}.isdisjoint(self.proto_parts)

    @property
    def proto_parts(self) -> tuple[str, ...]:
        """The proto's ``/``-separated tokens in upper case.

        Compared without regard to case: peers (pjmedia in Asterisk among them) read
        ``rtp/avp`` as ``RTP/AVP``, so a case-sensitive check would let a clear stream
        past the focus (issue 12, "case smuggling").
        """
        return tuple(part.upper() for part in self.proto.split("/"))

    @property
    def is_rtp(self) -> bool:
        """An RTP stream of any profile (``RTP`` among the proto's tokens, any case)."""
        return "RTP" in self.proto_parts

    def set_port(self, port: int) -> None:
        """Change only the port number of the ``m=`` line."""
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        match = self._media_match()
        line = self.lines[0]
        value = line.value[: match.start("port")] + str(port) + line.value[match.end("port") :]
        self.lines[0] = SdpLine("m", value, line.eol)

    def set_proto(self, proto: str) -> None:
        """Change only the transport protocol token of the ``m=`` line."""
        if not _TOKEN_RE.match(proto.replace("/", "")):
            raise ValueError(f"invalid proto {proto!r}")
        match = self._media_match()
        line = self.lines[0]
        value = line.value[: match.start("proto")] + proto + line.value[match.end("proto") :]
        self.lines[0] = SdpLine("m", value, line.eol)

    def __repr__(self) -> str:
        return f"<MediaSection {self.media} {self.port} {self.proto}, {len(self.lines)} lines>"


def _parse_connection(value: str) -> Connection:
    match = _CONNECTION_RE.match(value)
    if match is None:
        raise MalformedSdp("connection line is not '<nettype> <addrtype> <address>'")
    return Connection(match["nettype"], match["addrtype"], match["address"])


def _split_lines(text: str) -> tuple[list[tuple[int, SdpLine]], str]:
    """Split *text* into numbered lines, keeping endings; return them and the trailer."""
    pieces = text.split("\n")
    raw: list[tuple[str, str]] = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        if last:
            if piece == "":
                break
            content, eol = piece, ""
        elif piece.endswith("\r"):
            content, eol = piece[:-1], "\r\n"
        else:
            content, eol = piece, "\n"
        raw.append((content, eol))

    trailer = ""
    while raw and raw[-1][0] == "" and raw[-1][1] != "":
        trailer = raw.pop()[1] + trailer

    lines: list[tuple[int, SdpLine]] = []
    for number, (content, eol) in enumerate(raw, start=1):
        if content == "":
            raise MalformedSdp("empty line inside the description", number)
        if "\r" in content:
            raise MalformedSdp("bare CR inside a line", number, content)
        if "\0" in content:
            raise MalformedSdp("NUL byte inside a line", number, content)
        if len(content) < 2 or content[1] != "=" or content[0] not in _TYPE_LETTERS:
            raise MalformedSdp("line is not of the form <type>=<value>", number, content)
        lines.append((number, SdpLine(content[0], content[2:], eol)))
    return lines, trailer


class SessionDescription:
    """A parsed SDP body; ``str()`` gives back the exact text it was parsed from."""

    def __init__(self, session: Section, media: list[MediaSection], trailer: str = "") -> None:
        self.session = session
        self.media = media
        self.trailer = trailer

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse an SDP body.

        Raises :class:`MessageTooLarge` over :data:`MAX_SDP_BYTES` or
        :data:`MAX_SDP_LINES` and :class:`MalformedSdp` for anything else wrong.
        """
        if isinstance(text, bytes | bytearray):
            if len(text) > MAX_SDP_BYTES:
                raise MessageTooLarge(f"SDP body of {len(text)} bytes exceeds {MAX_SDP_BYTES}")
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedSdp(f"SDP body is not UTF-8 (byte {exc.start})") from None
        else:
            if len(text) > MAX_SDP_BYTES:
                raise MessageTooLarge(f"SDP body of {len(text)} characters exceeds limit")
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise MalformedSdp(
                    f"SDP text has an unencodable character at {exc.start}"
                ) from None
            if size > MAX_SDP_BYTES:
                raise MessageTooLarge(f"SDP body of {size} bytes exceeds {MAX_SDP_BYTES}")
        if text.count("\n") > MAX_SDP_LINES:
            raise MessageTooLarge(f"SDP body has more than {MAX_SDP_LINES} lines")

        numbered, trailer = _split_lines(text)
        if not numbered:
            raise MalformedSdp("empty SDP body")
        eol = numbered[0][1].eol

        # RFC 8866 §5: v=, o=, s= come first and in this order.
        for (number, line), kind in zip(numbered, "vos", strict=False):
            if line.kind != kind:
                raise MalformedSdp(f"expected an {kind}= line", number, str(line).rstrip())
        if len(numbered) < 3:
            raise MalformedSdp("SDP body ends before its v=, o= and s= lines")
        if numbered[0][1].value != "0":
            raise MalformedSdp("unsupported SDP version (only v=0 exists)", 1)
        if _ORIGIN_RE.match(numbered[1][1].value) is None:
            raise MalformedSdp("malformed origin", 2, str(numbered[1][1]).rstrip())

        session_lines: list[SdpLine] = []
        media: list[MediaSection] = []
        current = session_lines
        for number, line in numbered:
            if line.kind == "m":
                if _MEDIA_RE.match(line.value) is None:
                    raise MalformedSdp("malformed media line", number, str(line).rstrip())
                current = [line]
                media.append(MediaSection(current, eol))
                continue
            if line.kind == "c" and _CONNECTION_RE.match(line.value) is None:
                raise MalformedSdp("malformed connection line", number, str(line).rstrip())
            current.append(line)
        if not any(line.kind == "t" for line in session_lines):
            raise MalformedSdp("no t= line at session level")
        return cls(Section(session_lines, eol), media, trailer)

    @property
    def origin(self) -> Origin:
        match = _ORIGIN_RE.match(self.session.lines[1].value)
        if match is None:
            raise MalformedSdp("origin line became invalid")
        return Origin(
            match["username"],
            match["session_id"],
            int(match["version"]),
            match["nettype"],
            match["addrtype"],
            match["address"],
        )

    def lines(self) -> Iterator[SdpLine]:
        """Every line, session level first, in body order."""
        yield from self.session.lines
        for section in self.media:
            yield from section.lines

    def copy(self) -> SessionDescription:
        """An independent copy (lines are immutable, so copying the lists suffices)."""
        return SessionDescription(
            Section(list(self.session.lines), self.session._eol),
            [MediaSection(list(m.lines), m._eol) for m in self.media],
            self.trailer,
        )

    def __str__(self) -> str:
        return "".join(map(str, self.lines())) + self.trailer

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionDescription):
            return NotImplemented
        return str(self) == str(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        media = ", ".join(f"{m.media} {m.port} {m.proto}" for m in self.media)
        return f"<SessionDescription [{media}]>"
