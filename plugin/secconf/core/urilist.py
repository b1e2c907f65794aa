"""RFC 5366 URI lists on conference creation: multipart bodies and resource lists, sans IO.

A creator may INVITE the conference factory with a ``multipart/mixed`` body
(RFC 2046 §5.1, RFC 5621) holding the SDP offer and an
``application/resource-lists+xml`` part (RFC 4826 §3, RFC 5366 §3/§4) that
names who may join::

    --b1
    Content-Type: application/sdp

    v=0 ...
    --b1
    Content-Type: application/resource-lists+xml
    Content-Disposition: recipient-list

    <?xml version="1.0" encoding="UTF-8"?>
    <resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
      <list><entry uri="sip:bob@example.com"/></list>
    </resource-lists>
    --b1--

:func:`split_offer` returns the SDP part (what the focus rewrites and relays,
as a plain ``application/sdp`` body) and the list's URIs, each normalised
like every other identity (:func:`~secconf.core.focus.normalize_identity`).

The XML comes from the network, so it is parsed defensively: its size is
capped before any parsing (413), it must be UTF-8, and any markup declaration
(``<!DOCTYPE``, ``<!ENTITY``, ``<!ELEMENT``, ``<!ATTLIST``) is refused before
the parser sees it (400): no entity can be defined, so neither entity
expansion ("billion laughs") nor external entities are possible.  The expat
parser is additionally set never to read parameter entities and to refuse a
DOCTYPE, an entity declaration or an external entity reference should one get
through.  Depth, element count and entry count are capped too.

Refusals: :class:`~.errors.MalformedMessage` (400: broken multipart, broken
XML, not a resource list, ``<external>``/``<entry-ref>`` which would need
dereferencing, a URI that is not a SIP URI with a user),
:class:`~.errors.MessageTooLarge` (413: list too large, too many entries or
parts), :class:`~.errors.NotAcceptable` (488: no SDP part, a part of another
type, a disposition other than expected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from xml.parsers import expat

from .errors import MalformedMessage, MessageTooLarge, NotAcceptable
from .focus import normalize_identity

__all__ = [
    "MAX_LIST_BYTES",
    "MAX_LIST_ENTRIES",
    "RESOURCE_LISTS_NS",
    "RESOURCE_LISTS_TYPE",
    "BodyPart",
    "SplitOffer",
    "media_type",
    "parse_resource_lists",
    "split_multipart",
    "split_offer",
]

RESOURCE_LISTS_NS: Final = "urn:ietf:params:xml:ns:resource-lists"
RESOURCE_LISTS_TYPE: Final = "application/resource-lists+xml"
SDP_TYPE: Final = "application/sdp"
#: Defaults; the focus passes its configured values.
MAX_LIST_BYTES: Final = 8192
MAX_LIST_ENTRIES: Final = 64
MAX_PARTS: Final = 4
MAX_PART_HEADERS: Final = 16
MAX_DEPTH: Final = 8
#: RFC 2046 §5.1.1: bchars, 1..70 of them, not ending in a space.
_BOUNDARY_RE: Final = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_TOKEN_RE: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_XML_DECL_ENCODING_RE: Final = re.compile(r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
#: Any markup declaration except comments and CDATA sections (XML 1.0 §2.8).
_DECLARATION_RE: Final = re.compile(r"<!(?!--|\[CDATA\[)")


def _parameters(text: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; name=value; name="quoted"`` -> (lower-cased value, params with lower-cased names)."""
    head, _, rest = text.partition(";")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = re.match(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*(;|$)', rest[position:])
        if match is None:
            raise MalformedMessage("malformed header parameters")
        name, value = match.group(1).lower(), match.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if name in params:
            raise MalformedMessage(f"parameter {name} repeated")
        params[name] = value
        position += match.end()
    return head.strip().lower(), params


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """A Content-Type header value: its ``type/subtype`` (lower case) and parameters."""
    if not content_type:
        return "", {}
    kind, params = _parameters(content_type)
    if kind.count("/") != 1 or not all(_TOKEN_RE.match(p) for p in kind.split("/")):
        raise MalformedMessage("malformed Content-Type")
    return kind, params


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One body part of a multipart body (RFC 2046 §5.1): headers (lower-case names) and body."""

    headers: dict[str, str]
    body: bytes = field(repr=False)

    @property
    def content_type(self) -> str:
        # RFC 2046 §5.1.1: a part without Content-Type is text/plain.
        return media_type(self.headers.get("content-type") or "text/plain")[0]

    @property
    def disposition(self) -> str | None:
        value = self.headers.get("content-disposition")
        return None if value is None else _parameters(value)[0]


def _part_headers(block: bytes) -> dict[str, str]:
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMessage("body part headers are not ASCII") from None
    headers: dict[str, str] = {}
    lines: list[str] = []
    for line in text.split("\r\n") if text else []:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # RFC 5322 §2.2.3 unfolding
        else:
            lines.append(line)
    if len(lines) > MAX_PART_HEADERS:
        raise MessageTooLarge("too many body part headers")
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not _TOKEN_RE.match(name):
            raise MalformedMessage("malformed body part header")
        if name in headers:
            raise MalformedMessage(f"body part header {name} repeated")
        headers[name] = value.strip()
    encoding = headers.get("content-transfer-encoding", "binary").lower()
    if encoding not in ("7bit", "8bit", "binary"):
        raise MalformedMessage(f"Content-Transfer-Encoding {encoding[:20]} not supported")
    return headers


def split_multipart(body: bytes, boundary: str, *, max_parts: int = MAX_PARTS) -> list[BodyPart]:
    """The body parts of a multipart body (RFC 2046 §5.1.1), preamble and epilogue dropped.

    Each delimiter line is ``--boundary`` at the start of the body or after a
    CRLF (that CRLF belongs to the delimiter, not to the part before it),
    followed by optional linear white space and CRLF; the close delimiter has
    ``--`` after the boundary.  Raises :class:`MalformedMessage` (400) for a
    bad boundary, a missing close delimiter, a boundary string followed by
    anything else, or a part without the blank line after its headers;
    :class:`MessageTooLarge` (413) for more than *max_parts* parts.
    """
    if not _BOUNDARY_RE.match(boundary):
        raise MalformedMessage("multipart boundary missing or invalid")
    delimiter = b"\r\n--" + boundary.encode("ascii")
    data = b"\r\n" + body  # a delimiter at the very start follows an implied CRLF
    position = data.find(delimiter)
    if position < 0:
        raise MalformedMessage("multipart body without its boundary")
    parts: list[BodyPart] = []
    while True:
        position += len(delimiter)
        if data[position : position + 2] == b"--":
            return parts  # close delimiter; the epilogue is ignored
        line_end = data.find(b"\r\n", position)
        if line_end < 0 or data[position:line_end].strip(b" \t"):
            raise MalformedMessage("multipart boundary followed by other text")
        start = line_end + 2
        # From the boundary line's own CRLF: an empty part is "--b CRLF --b".
        end = data.find(delimiter, line_end)
        if end < 0:
            raise MalformedMessage("multipart body without its close delimiter")
        if len(parts) >= max_parts:
            raise MessageTooLarge(f"more than {max_parts} body parts")
        content = data[start:end] if end >= start else b""
        if content.startswith(b"\r\n"):
            headers_block, payload = b"", content[2:]
        else:
            headers_block, separator, payload = content.partition(b"\r\n\r\n")
            if not separator:
                if not content.endswith(b"\r\n"):
                    raise MalformedMessage("body part without a blank line after its headers")
                headers_block, payload = content[:-2], b""  # headers, then an empty body
        parts.append(BodyPart(_part_headers(headers_block), payload))
        position = end


class _ListCollector:
    """expat callbacks building the entry list of a resource-lists document, within limits."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.stack: list[str] = []
        self.elements = 0
        self.uris: list[str] = []

    def start(self, name: str, attributes: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(" ")
        self.elements += 1
        if self.elements > 4 * self.max_entries + 32:
            raise MessageTooLarge("resource list has too many elements")
        if len(self.stack) >= MAX_DEPTH:
            raise MalformedMessage("resource list nested too deeply")
        parent = self.stack[-1] if self.stack else None
        ours = namespace == RESOURCE_LISTS_NS
        if parent is None:
            if not (ours and local == "resource-lists"):
                raise MalformedMessage("body is not an RFC 4826 resource-lists document")
        elif ours and local in ("list", "entry", "external", "entry-ref"):
            if parent not in ("resource-lists", "list"):
                raise MalformedMessage(f"<{local}> outside a <list>")
            if parent == "resource-lists" and local != "list":
                raise MalformedMessage(f"<{local}> outside a <list>")
            if local in ("external", "entry-ref"):
                # RFC 4826 §3.2: these point elsewhere; the focus dereferences nothing.
                raise MalformedMessage(
                    f"<{local}> not supported in a URI list: literal entries only"
                )
            if local == "entry":
                self._entry(attributes)
        self.stack.append(local if ours else "")

    def _entry(self, attributes: dict[str, str]) -> None:
        uri = attributes.get("uri")
        if uri is None:
            raise MalformedMessage("<entry> without a uri attribute")
        if len(self.uris) >= self.max_entries:
            raise MessageTooLarge(f"URI list over {self.max_entries} entries")
        try:
            self.uris.append(normalize_identity(uri))
        except MalformedMessage:
            raise MalformedMessage("URI list entry is not a SIP URI with a user") from None

    def end(self, name: str) -> None:
        self.stack.pop()


def _refuse_declaration(*args: object) -> None:
    raise MalformedMessage("DTD and entity declarations are refused in a URI list")


def _refuse_external(
    context: str, base: str | None, system_id: str | None, public_id: str | None
) -> int:
    raise MalformedMessage("DTD and entity declarations are refused in a URI list")


def parse_resource_lists(
    xml: bytes, *, max_bytes: int = MAX_LIST_BYTES, max_entries: int = MAX_LIST_ENTRIES
) -> tuple[str, ...]:
    """The URIs of an ``application/resource-lists+xml`` document, normalised, without repeats.

    Every ``<entry uri=...>`` of every ``<list>`` (nested lists flattened,
    document order).  See the module docstring for the hardening and the errors.
    """
    if len(xml) > max_bytes:
        raise MessageTooLarge(f"URI list over {max_bytes} bytes")
    data = xml[3:] if xml.startswith(b"\xef\xbb\xbf") else xml
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("URI list is not UTF-8") from None
    declared = _XML_DECL_ENCODING_RE.match(text)
    if declared is not None and declared.group(1).lower() not in ("utf-8", "us-ascii"):
        raise MalformedMessage("URI list must be UTF-8")
    if _DECLARATION_RE.search(text):
        raise MalformedMessage("DTD and entity declarations are refused in a URI list")
    collector = _ListCollector(max_entries)
    parser = expat.ParserCreate("utf-8", " ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_declaration
    parser.EntityDeclHandler = _refuse_declaration
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    try:
        parser.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as exc:
        raise MalformedMessage(f"URI list is not well-formed XML (line {exc.lineno})") from None
    return tuple(dict.fromkeys(collector.uris))


@dataclass(frozen=True, slots=True)
class SplitOffer:
    """An INVITE body taken apart: the SDP offer and, if one came, the URI list."""

    sdp: bytes = field(repr=False)
    uris: tuple[str, ...] | None


def split_offer(
    content_type: str | None,
    body: bytes,
    *,
    max_bytes: int = MAX_LIST_BYTES,
    max_entries: int = MAX_LIST_ENTRIES,
) -> SplitOffer:
    """The SDP offer and the URI list (RFC 5366 §4) of an INVITE body.

    ``application/sdp``: the body itself, no list.  ``multipart/mixed``:
    exactly one ``application/sdp`` part (disposition absent or ``session``)
    and at most one ``application/resource-lists+xml`` part (disposition
    absent or ``recipient-list``, RFC 5363 §5); any other part is refused
    (488), as is any other body type.
    """
    kind, params = media_type(content_type)
    if kind == SDP_TYPE:
        return SplitOffer(body, None)
    if kind != "multipart/mixed":
        raise NotAcceptable("only application/sdp or multipart/mixed bodies are accepted")
    parts = split_multipart(body, params.get("boundary", ""))
    sdp: list[BodyPart] = []
    lists: list[BodyPart] = []
    for part in parts:
        part_type = part.content_type
        if part_type == SDP_TYPE:
            if part.disposition not in (None, "session"):
                raise NotAcceptable("the SDP part must have disposition session")
            sdp.append(part)
        elif part_type == RESOURCE_LISTS_TYPE:
            if part.disposition not in (None, "recipient-list"):
                raise NotAcceptable("the URI list part must have disposition recipient-list")
            charset = media_type(part.headers.get("content-type"))[1].get("charset", "utf-8")
            if charset.lower() not in ("utf-8", "us-ascii"):
                raise MalformedMessage("URI list must be UTF-8")
            lists.append(part)
        else:
            raise NotAcceptable(
                "multipart offers carry application/sdp and application/resource-lists+xml only"
            )
    if not sdp:
        raise NotAcceptable("multipart body without an SDP offer")
    if len(sdp) > 1 or len(lists) > 1:
        raise MalformedMessage("more than one SDP offer or URI list in the body")
    uris = (
        parse_resource_lists(lists[0].body, max_bytes=max_bytes, max_entries=max_entries)
        if lists
        else None
    )
    return SplitOffer(sdp[0].body, uris)
