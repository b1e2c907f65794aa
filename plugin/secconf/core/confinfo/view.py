"""The subscriber's coherent state: RFC 4575 §4.6, one NOTIFY body at a time.

:func:`receive` takes the view held so far (``None`` before the first NOTIFY) and
a body, and says what to do (:class:`Verdict`):

* ``APPLIED``: a full document replaced the state, or a partial one with
  ``version`` = held + 1 was merged into it; ``Received.view`` is the new view;
* ``STALE``: ``version`` <= the held one: discarded unprocessed (§4.6);
* ``RESYNC``: a partial document more than one version ahead, or before any full
  one: the held state cannot be brought up to date, and §4.6 says the subscriber
  "MUST generate a subscription refresh request to trigger a full state
  notification" (a re-SUBSCRIBE; RFC 6665 §4.1.2.2).  The held view is kept;
* ``ENDED``: ``state="deleted"``: the conference has ceased to exist; the
  subscriber SHOULD un-SUBSCRIBE (Expires: 0).

A malformed or hostile body raises (:mod:`.parse`) and changes nothing: the
caller keeps its view.  A body for another conference (another ``entity``) is
refused as malformed.

The merge is the §4.6 algorithm on element trees, generic over the keys of §4.5:
the held model is written as a full ``<conference-info>`` element
(:func:`~.build.conference_element`), the partial document is applied to it, and
the result is read back as a full document would be
(:func:`~.parse.info_from_element`).  So "partial chain applied == fresh full
document" holds by construction for anything the model carries, and is tested
with random roster histories (tests/unit/test_confinfo_properties.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from xml.etree.ElementTree import Element

from ..errors import MalformedConferenceInfo
from .build import conference_element
from .model import CONFERENCE_INFO_NS, ConferenceInfo
from .parse import (
    DEFAULT_LIMITS,
    Document,
    DocumentState,
    ParseLimits,
    element_state,
    info_from_element,
    read_document,
)

__all__ = ["ConferenceView", "Received", "Verdict", "apply_document", "receive"]

_NS: Final = "{" + CONFERENCE_INFO_NS + "}"
_XML_SPACE: Final = " \t\r\n"


def _uri_key(attribute: str) -> Callable[[Element], str | None]:
    def key(element: Element) -> str | None:
        value = element.get(attribute)
        return None if value is None else value.strip(_XML_SPACE)

    return key


def _sidebar_uri(element: Element) -> str | None:
    uri = element.find(_NS + "uri")
    return None if uri is None else (uri.text or "").strip(_XML_SPACE)


#: RFC 4575 §4.5: the key of each element that can appear more than once under a parent
#: subject to partial notifications.  ``xs:anyURI`` keys are compared with their white
#: space collapsed, as the schema reads them; ``xs:string`` keys exactly.
_KEYS: Final[dict[tuple[str, str], Callable[[Element], str | None]]] = {
    (_NS + "users", _NS + "user"): _uri_key("entity"),
    (_NS + "user", _NS + "endpoint"): lambda element: element.get("entity"),
    (_NS + "endpoint", _NS + "media"): lambda element: element.get("id"),
    (_NS + "sidebars-by-val", _NS + "entry"): _uri_key("entity"),
    (_NS + "sidebars-by-ref", _NS + "entry"): _sidebar_uri,
}


class Verdict(StrEnum):
    """What a received document did to the held view (module docstring)."""

    APPLIED = "applied"
    STALE = "stale"
    RESYNC = "resync"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class ConferenceView:
    """What a subscriber holds: the coherent state and the version it is at (§4.6)."""

    version: int
    info: ConferenceInfo


@dataclass(frozen=True, slots=True)
class Received:
    """The outcome of one NOTIFY body: the verdict and the view to hold from now on."""

    verdict: Verdict
    #: ``None`` once the conference has ended (or if nothing was ever held).
    view: ConferenceView | None

    @property
    def needs_full_state(self) -> bool:
        """Refresh the subscription to get a full document (RFC 4575 §4.6)."""
        return self.verdict is Verdict.RESYNC


def _key_of(parent: Element, child: Element) -> str | None:
    """The §4.5 key of *child* under *parent*, or ``None`` when such children have none."""
    rule = _KEYS.get((parent.tag, child.tag))
    if rule is None:
        return None
    key = rule(child)
    if key is None:
        raise MalformedConferenceInfo(f"<{child.tag.rpartition('}')[2]}> without its key")
    return key


def _without_state(update: Element) -> Element:
    """A new row for a partial update of a key not held yet (§4.6 step 3.1.1)."""
    row = Element(update.tag, {name: value for name, value in update.items() if name != "state"})
    row.text = update.text
    _merge(row, update)
    return row


def _apply(local: Element, held: Element | None, update: Element) -> None:
    """§4.6 steps 1-3 for one child *update* of a partial element, *held* its local match."""
    state = element_state(update)
    if state is DocumentState.DELETED:
        if held is not None:
            local.remove(held)
        return
    if state is DocumentState.PARTIAL and held is not None:
        _merge(held, update)
        return
    replacement = update if state is DocumentState.FULL else _without_state(update)
    if held is None:
        local.append(replacement)
    else:
        local[list(local).index(held)] = replacement


def _merge(local: Element, update: Element) -> None:
    """Apply the children of the partial element *update* to its local copy *local*.

    Keyed children (§4.5) are matched by key; any other child stands for every
    local child of its name (our schema allows each of them once, an extension
    may repeat its own): a full one replaces them all, a deleted one removes them,
    a partial one merges into the single one held.
    """
    rows = {}
    for child in local:
        key = _key_of(local, child)
        if key is not None:
            rows[child.tag, key] = child
    seen_rows: set[tuple[str, str]] = set()
    seen_names: dict[str, DocumentState] = {}
    for child in list(update):
        key = _key_of(update, child)
        if key is not None:
            if (child.tag, key) in seen_rows:
                raise MalformedConferenceInfo("one key updated twice in a partial document")
            seen_rows.add((child.tag, key))
            _apply(local, rows.get((child.tag, key)), child)
            continue
        state = element_state(child)
        earlier = seen_names.get(child.tag)
        if earlier is not None and (earlier, state) != (DocumentState.FULL, DocumentState.FULL):
            # Only whole elements may repeat (an extension's list); a change must be single.
            raise MalformedConferenceInfo("a partial or deleted element appears twice")
        held = local.findall(child.tag)
        if state is DocumentState.FULL:
            if earlier is None:  # the first of its name replaces all held ones
                for element in held:
                    local.remove(element)
            local.append(child)
        elif len(held) > 1:
            raise MalformedConferenceInfo("a partial element matches more than one held one")
        else:
            _apply(local, held[0] if held else None, child)
        seen_names[child.tag] = state


def apply_document(held: ConferenceView | None, document: Document) -> Received:
    """RFC 4575 §4.6 for a document :func:`~.parse.read_document` accepted."""
    if held is not None and document.entity != held.info.entity:
        raise MalformedConferenceInfo("the document describes another conference")
    if held is not None and document.version <= held.version:
        return Received(Verdict.STALE, held)
    if document.state is DocumentState.DELETED:
        return Received(Verdict.ENDED, None)
    if document.state is DocumentState.FULL:
        info = info_from_element(document.root)
        return Received(Verdict.APPLIED, ConferenceView(document.version, info))
    if held is None or document.version != held.version + 1:
        return Received(Verdict.RESYNC, held)
    merged = conference_element(held.info)
    _merge(merged, document.root)
    return Received(Verdict.APPLIED, ConferenceView(document.version, info_from_element(merged)))


def receive(
    held: ConferenceView | None, body: bytes, *, limits: ParseLimits = DEFAULT_LIMITS
) -> Received:
    """Read one ``application/conference-info+xml`` NOTIFY body and apply it to *held*."""
    return apply_document(held, read_document(body, limits))
