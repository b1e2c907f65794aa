"""Reading conference-info documents from the network, defensively (RFC 4575 §4, §5).

The participant's side.  A NOTIFY body is untrusted input, even once its CMS
envelope has verified (a member's client could be faulty), so:

* its size is checked before any parsing (:class:`~.errors.ConferenceInfoTooLarge`, 413);
* it must be UTF-8 (RFC 4575 §4.1): bytes that do not decode, or an XML
  declaration naming another encoding, are refused;
* it is parsed by defusedxml's expat parser with every DTD refused
  (``forbid_dtd``), so no entity can be declared: neither entity expansion
  ("billion laughs", which stdlib ElementTree alone would expand) nor external
  entities (XXE) nor external DTDs are possible (:class:`~.errors.UnsafeXml`);
* nesting depth and element count are capped *while* parsing, by the tree
  builder, so a deep or wide document is refused before it is built whole;
* the root must be ``conference-info`` in the RFC 4575 namespace, with an
  ``entity`` and a ``version`` (§4.3 makes it mandatory; the schema does not);
* every ``state`` attribute must be ``full``, ``partial`` or ``deleted``, and a
  ``full`` element may hold only ``full`` descendants (§4.4);
* modelled values must have their schema type (numbers, booleans, enumerations,
  ``dateTime``), single elements must be single, keys unique
  (:class:`~.errors.MalformedConferenceInfo`).

Elements we do not model (host-info, sidebars, roles, call-info, extensions of
other namespaces...) are read past, as the schema's ``xs:any ... lax`` allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final, TypeVar
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml.common import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from ..errors import ConferenceInfoTooLarge, MalformedConferenceInfo, UnsafeXml
from .model import (
    CONFERENCE_INFO_NS,
    SECCONF_INFO_NS,
    UNSIGNED_INT_MAX,
    ConferenceDescription,
    ConferenceInfo,
    ConferenceState,
    DisconnectionMethod,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Keying,
    Media,
    MediaStatus,
    OfferMode,
    UriEntry,
    User,
)
from .timestamps import parse_datetime

__all__ = [
    "DEFAULT_LIMITS",
    "Document",
    "DocumentState",
    "ParseLimits",
    "element_state",
    "info_from_element",
    "read_document",
]

_NS: Final = "{" + CONFERENCE_INFO_NS + "}"
_SC: Final = "{" + SECCONF_INFO_NS + "}"
#: XML 1.0 §2.3 white space: what the schema's ``collapse`` facet strips (not Unicode's).
_XML_SPACE: Final = " \t\r\n"
_XML_DECL_ENCODING_RE: Final = re.compile(r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_UNSIGNED_RE: Final = re.compile(r"\+?[0-9]{1,20}")
_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False}

E = TypeVar("E", bound=Enum)


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on one document.  The defaults hold a 500-member roster with room to spare."""

    #: A full document of 50 members with one endpoint and medium each is about 30 KB.
    max_bytes: int = 256 * 1024
    #: Our documents nest 5 deep below the root; RFC 4575 sidebars-by-val reach 8.
    max_depth: int = 16
    max_elements: int = 20_000


DEFAULT_LIMITS: Final = ParseLimits()


class DocumentState(StrEnum):
    """The root's ``state`` attribute (RFC 4575 §4.4, §5.2)."""

    FULL = "full"
    PARTIAL = "partial"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Document:
    """A document that parsed and passed the checks above; not yet applied to any state."""

    entity: str
    version: int
    state: DocumentState
    root: Element = field(repr=False, compare=False)


class _BoundedTreeBuilder:
    """An ElementTree builder that refuses a document as soon as it is too deep or too big."""

    def __init__(self, limits: ParseLimits) -> None:
        self._builder = TreeBuilder()
        self._limits = limits
        self._depth = 0
        self._elements = 0

    def start(self, tag: str, attributes: dict[str, str]) -> Element:
        self._depth += 1
        self._elements += 1
        if self._depth > self._limits.max_depth:
            raise ConferenceInfoTooLarge(f"document nested deeper than {self._limits.max_depth}")
        if self._elements > self._limits.max_elements:
            raise ConferenceInfoTooLarge(f"document over {self._limits.max_elements} elements")
        return self._builder.start(tag, attributes)

    def end(self, tag: str) -> Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> Element:
        return self._builder.close()


def _parse_xml(body: bytes, limits: ParseLimits) -> Element:
    if len(body) > limits.max_bytes:
        raise ConferenceInfoTooLarge(f"document over {limits.max_bytes} bytes")
    data = body[3:] if body.startswith(b"\xef\xbb\xbf") else body
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedConferenceInfo("document is not UTF-8") from None
    declared = _XML_DECL_ENCODING_RE.match(text)
    if declared is not None and declared.group(1).lower() not in ("utf-8", "us-ascii"):
        raise MalformedConferenceInfo("document must be UTF-8 (RFC 4575 §4.1)")
    parser = DefusedXMLParser(
        target=_BoundedTreeBuilder(limits),
        encoding="utf-8",
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(data)
        root: Element = parser.close()
    except DefusedXmlException:
        raise UnsafeXml("DTDs, entity declarations and external references are refused") from None
    except ParseError as exc:
        line = exc.position[0] if exc.position else "?"
        raise MalformedConferenceInfo(f"document is not well-formed XML (line {line})") from None
    return root


def _collapse(text: str | None) -> str:
    return (text or "").strip(_XML_SPACE)


def _unsigned(text: str | None, what: str) -> int:
    value = _collapse(text)
    if not _UNSIGNED_RE.fullmatch(value) or int(value) > UNSIGNED_INT_MAX:
        raise MalformedConferenceInfo(f"{what} is not an xs:unsignedInt")
    return int(value)


#: RFC 4575 §4.4: the elements that may be partial (or deleted); ``entry`` is the one of
#: ``<sidebars-by-val>`` (a conference-type) and of ``<sidebars-by-ref>``, the only
#: ``entry`` parents that can be partial themselves.
_PARTIAL_CAPABLE: Final = frozenset(
    _NS + name
    for name in (
        "conference-info", "users", "user", "endpoint", "sidebars-by-val", "sidebars-by-ref", "entry",
    )
)  # fmt: skip


def element_state(element: Element) -> DocumentState:
    """The ``state`` of an element of a document (RFC 4575 §4.4), ``full`` by default.

    Only RFC 4575 elements have one: an attribute named ``state`` on another
    namespace's element is that extension's business.  ``partial`` and ``deleted``
    are refused on elements §4.4 does not list.
    """
    value = element.get("state")
    if value is None or not element.tag.startswith(_NS):
        return DocumentState.FULL
    try:
        state = DocumentState(_collapse(value))
    except ValueError:
        raise MalformedConferenceInfo(
            f"state={value[:20]!r} is not full, partial or deleted"
        ) from None
    if state is not DocumentState.FULL and element.tag not in _PARTIAL_CAPABLE:
        raise MalformedConferenceInfo(f"<{_local(element.tag)}> cannot be {state} (RFC 4575 §4.4)")
    return state


def _check_states(root: Element) -> None:
    """RFC 4575 §4.4: a ``full`` element holds only ``full`` ones; ``deleted`` ones are ignored."""
    stack: list[tuple[Element, DocumentState]] = [(root, element_state(root))]
    while stack:
        element, state = stack.pop()
        if state is DocumentState.DELETED:
            continue  # "Any information provided for child elements ... MUST be ignored"
        for child in element:
            child_state = element_state(child)
            if state is DocumentState.FULL and child_state is not DocumentState.FULL:
                raise MalformedConferenceInfo(
                    f"<{_local(child.tag)}> is {child_state} inside a full element"
                )
            stack.append((child, child_state))


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def read_document(body: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> Document:
    """Parse and check an ``application/conference-info+xml`` body (module docstring).

    Only the document itself is checked here; :func:`info_from_element` (a full
    document) or :func:`secconf.core.confinfo.view.receive` (any) read its content.
    """
    root = _parse_xml(body, limits)
    if root.tag != _NS + "conference-info":
        namespace, _, local = (
            root.tag[1:].rpartition("}") if root.tag[:1] == "{" else ("", "", root.tag)
        )
        raise MalformedConferenceInfo(
            f"root element <{local[:40]}> in namespace {namespace[:60]!r} is not "
            f"RFC 4575 conference-info ({CONFERENCE_INFO_NS})"
        )
    entity = root.get("entity")
    if entity is None:
        raise MalformedConferenceInfo("<conference-info> without an entity")
    version = root.get("version")
    if version is None:
        raise MalformedConferenceInfo("<conference-info> without a version (RFC 4575 §4.3)")
    _check_states(root)
    return Document(
        entity=_collapse(entity),
        version=_unsigned(version, "version"),
        state=element_state(root),
        root=root,
    )


# -- elements -> model ------------------------------------------------------------------


def _only(parent: Element, tag: str) -> Element | None:
    found = parent.findall(tag)
    if len(found) > 1:
        raise MalformedConferenceInfo(f"<{_local(tag)}> appears twice in <{_local(parent.tag)}>")
    return found[0] if found else None


def _text(parent: Element, tag: str) -> str | None:
    element = _only(parent, tag)
    if element is None:
        return None
    if len(element):
        raise MalformedConferenceInfo(f"<{_local(tag)}> must hold text only")
    return element.text or ""


def _uri(parent: Element, tag: str) -> str | None:
    text = _text(parent, tag)
    return None if text is None else _collapse(text)


def _enum(parent: Element, tag: str, kind: type[E]) -> E | None:
    text = _text(parent, tag)
    if text is None:
        return None
    try:
        return kind(_collapse(text))
    except ValueError:
        raise MalformedConferenceInfo(
            f"<{_local(tag)}> has a value RFC 4575 does not define"
        ) from None


def _number(parent: Element, tag: str) -> int | None:
    text = _text(parent, tag)
    return None if text is None else _unsigned(text, f"<{_local(tag)}>")


def _boolean(parent: Element, tag: str) -> bool | None:
    text = _text(parent, tag)
    if text is None:
        return None
    value = _BOOLEANS.get(_collapse(text))
    if value is None:
        raise MalformedConferenceInfo(f"<{_local(tag)}> is not an xs:boolean")
    return value


def _instant(parent: Element, tag: str) -> int | None:
    text = _text(parent, tag)
    return None if text is None else parse_datetime(text)


def _execution(parent: Element, tag: str) -> Execution | None:
    element = _only(parent, _NS + tag)
    if element is None:
        return None
    return Execution(
        when=_instant(element, _NS + "when"),
        reason=_text(element, _NS + "reason"),
        by=_uri(element, _NS + "by"),
    )


def _uri_entries(parent: Element, tag: str) -> tuple[UriEntry, ...]:
    container = _only(parent, _NS + tag)
    if container is None:
        return ()
    entries = []
    for entry in container.findall(_NS + "entry"):
        uri = _uri(entry, _NS + "uri")
        if uri is None:
            raise MalformedConferenceInfo(f"<{tag}> entry without a <uri>")
        entries.append(
            UriEntry(uri, _text(entry, _NS + "display-text"), _text(entry, _NS + "purpose"))
        )
    return tuple(entries)


def _description(root: Element) -> ConferenceDescription:
    element = _only(root, _NS + "conference-description")
    if element is None:
        return ConferenceDescription()  # RFC 4575 §5.2 wants it; an absent one is empty
    return ConferenceDescription(
        display_text=_text(element, _NS + "display-text"),
        subject=_text(element, _NS + "subject"),
        conf_uris=_uri_entries(element, "conf-uris"),
        service_uris=_uri_entries(element, "service-uris"),
        maximum_user_count=_number(element, _NS + "maximum-user-count"),
    )


def _keying(parent: Element) -> Keying | None:
    element = _only(parent, _SC + "keying")
    if element is None:
        return None
    mode = _enum(element, _SC + "mode", OfferMode)
    epoch = _number(element, _SC + "epoch")
    if mode is None or epoch is None:
        raise MalformedConferenceInfo("<sc:keying> needs <sc:mode> and <sc:epoch>")
    return Keying(mode, epoch, _instant(element, _SC + "last-rekey"))


def _conference_state(root: Element) -> ConferenceState | None:
    element = _only(root, _NS + "conference-state")
    if element is None:
        return None
    return ConferenceState(
        user_count=_number(element, _NS + "user-count"),
        active=_boolean(element, _NS + "active"),
        locked=_boolean(element, _NS + "locked"),
        keying=_keying(element),
    )


def _media(element: Element) -> Media:
    media_id = element.get("id")
    if media_id is None:
        raise MalformedConferenceInfo("<media> without an id")
    return Media(
        id=media_id,
        type=_text(element, _NS + "type"),
        status=_enum(element, _NS + "status", MediaStatus),
        src_id=_number(element, _NS + "src-id"),
        label=_text(element, _NS + "label"),
        display_text=_text(element, _NS + "display-text"),
    )


def _endpoint(element: Element) -> Endpoint:
    entity = element.get("entity")
    if entity is None:
        raise MalformedConferenceInfo("<endpoint> without an entity")
    return Endpoint(
        entity=entity,
        status=_enum(element, _NS + "status", EndpointStatus),
        joining_method=_enum(element, _NS + "joining-method", JoiningMethod),
        joining_info=_execution(element, "joining-info"),
        disconnection_method=_enum(element, _NS + "disconnection-method", DisconnectionMethod),
        disconnection_info=_execution(element, "disconnection-info"),
        media=tuple(_media(media) for media in element.findall(_NS + "media")),
        display_text=_text(element, _NS + "display-text"),
        referred=_execution(element, "referred"),
        keying_mode=_enum(element, _SC + "keying-mode", OfferMode),
    )


def _user(element: Element) -> User:
    entity = element.get("entity")
    if entity is None:
        raise MalformedConferenceInfo("<user> without an entity")
    return User(
        entity=_collapse(entity),
        display_text=_text(element, _NS + "display-text"),
        endpoints=tuple(_endpoint(endpoint) for endpoint in element.findall(_NS + "endpoint")),
    )


def info_from_element(root: Element) -> ConferenceInfo:
    """The model of a full-state ``<conference-info>`` element (what :func:`read_document` gave).

    Raises :class:`~.errors.MalformedConferenceInfo` for values that break the
    schema types or our model's rules (duplicate users, endpoints or media).
    """
    users = _only(root, _NS + "users")
    return ConferenceInfo(
        entity=_collapse(root.get("entity")),
        description=_description(root),
        state=_conference_state(root),
        users=() if users is None else tuple(_user(user) for user in users.findall(_NS + "user")),
    )
