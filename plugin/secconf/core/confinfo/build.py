"""Writing conference-info documents: full state, partial state, deletion (RFC 4575 §4, §5).

The focus's side.  :func:`full_document` writes the whole state,
:func:`partial_document` only what changed between two states (RFC 4575 §4.4),
:func:`deleted_document` the end of the conference (§4.6: ``state="deleted"``).
Each takes the document ``version``: it is scoped to one subscription (§5.2), so
the caller keeps one counter per subscriber and passes ``previous + 1``.

Partial documents follow RFC 4575 §4.4-§4.6 with the smallest unit the
subscriber's algorithm can apply:

* ``<conference-description>`` and ``<conference-state>`` carry no ``state``
  attribute: they are sent whole when anything in them changed (§4.6 step 3.2);
* ``<users state="partial">`` lists only the users that changed: a new user in
  full (``state="full"``), a gone user as ``<user entity=... state="deleted"/>``,
  a changed user as ``state="partial"`` holding its changed ``display-text`` and
  endpoints (new: full, gone: deleted, changed: partial);
* a changed endpoint (``state="partial"``) holds only its changed atomic children
  and changed or new ``<media>`` (a medium is replaced whole: it has no ``state``);
* a partial element cannot *remove* a child that has no ``state`` attribute (a
  ``display-text`` gone, a medium ended): the enclosing user or endpoint is then
  sent in full, and a removed ``<conference-state>`` makes the whole notification
  a full document (still ``version`` = previous + 1, which §4.6 accepts).

Elements are written in the order of the RFC 4575 §6 schema's sequences; every
document this module writes is validated against that schema and ours in
tests/unit/test_confinfo_documents.py and test_confinfo_properties.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar
from xml.etree.ElementTree import Element

from ..errors import MalformedConferenceInfo
from .model import (
    CONFERENCE_INFO_NS,
    SECCONF_INFO_NS,
    UNSIGNED_INT_MAX,
    ConferenceDescription,
    ConferenceInfo,
    ConferenceState,
    Endpoint,
    Execution,
    Media,
    UriEntry,
    User,
)
from .timestamps import format_datetime

__all__ = [
    "conference_element",
    "deleted_document",
    "full_document",
    "partial_document",
    "serialize",
]

_NS: Final = "{" + CONFERENCE_INFO_NS + "}"
_SC: Final = "{" + SECCONF_INFO_NS + "}"
#: The prefix of our extension's elements in documents we write (any prefix would do).
_SC_PREFIX: Final = "sc"

T = TypeVar("T")
#: One child of a partial-capable element: (its key among its siblings, model value, element).
_Child = tuple[str, object, Element]


def _element(tag: str, text: str | None = None, **attributes: str | None) -> Element:
    element = Element(tag, {name: value for name, value in attributes.items() if value})
    element.text = text
    return element


def _check_version(version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int):
        raise MalformedConferenceInfo("version must be an integer")
    if not 0 <= version <= UNSIGNED_INT_MAX:
        # RFC 4575 §5.2: a 32-bit counter.  At its end the subscription must start afresh.
        raise MalformedConferenceInfo("version must fit an xs:unsignedInt")
    return str(version)


# -- model -> elements ------------------------------------------------------------------


def _execution_element(tag: str, execution: Execution) -> Element:
    element = _element(_NS + tag)
    if execution.when is not None:
        element.append(_element(_NS + "when", format_datetime(execution.when)))
    if execution.reason is not None:
        element.append(_element(_NS + "reason", execution.reason))
    if execution.by is not None:
        element.append(_element(_NS + "by", execution.by))
    return element


def _uris_element(tag: str, entries: Sequence[UriEntry]) -> Element:
    element = _element(_NS + tag)
    for entry in entries:
        item = _element(_NS + "entry")
        item.append(_element(_NS + "uri", entry.uri))
        if entry.display_text is not None:
            item.append(_element(_NS + "display-text", entry.display_text))
        if entry.purpose is not None:
            item.append(_element(_NS + "purpose", entry.purpose))
        element.append(item)
    return element


def _description_element(description: ConferenceDescription) -> Element:
    element = _element(_NS + "conference-description")
    if description.display_text is not None:
        element.append(_element(_NS + "display-text", description.display_text))
    if description.subject is not None:
        element.append(_element(_NS + "subject", description.subject))
    # uris-type needs at least one <entry>: an empty list is left out.
    if description.conf_uris:
        element.append(_uris_element("conf-uris", description.conf_uris))
    if description.service_uris:
        element.append(_uris_element("service-uris", description.service_uris))
    if description.maximum_user_count is not None:
        count = str(description.maximum_user_count)
        element.append(_element(_NS + "maximum-user-count", count))
    return element


def _boolean(value: bool) -> str:
    return "true" if value else "false"


def _state_element(state: ConferenceState) -> Element:
    element = _element(_NS + "conference-state")
    if state.user_count is not None:
        element.append(_element(_NS + "user-count", str(state.user_count)))
    if state.active is not None:
        element.append(_element(_NS + "active", _boolean(state.active)))
    if state.locked is not None:
        element.append(_element(_NS + "locked", _boolean(state.locked)))
    if state.keying is not None:  # the schema's trailing xs:any ##other
        keying = _element(_SC + "keying")
        keying.append(_element(_SC + "mode", state.keying.mode.value))
        keying.append(_element(_SC + "epoch", str(state.keying.epoch)))
        if state.keying.last_rekey is not None:
            last_rekey = format_datetime(state.keying.last_rekey)
            keying.append(_element(_SC + "last-rekey", last_rekey))
        element.append(keying)
    return element


def _media_element(media: Media) -> Element:
    element = _element(_NS + "media", id=media.id)
    for tag, value in (
        ("display-text", media.display_text),
        ("type", media.type),
        ("label", media.label),
        ("src-id", None if media.src_id is None else str(media.src_id)),
        ("status", media.status),
    ):
        if value is not None:
            element.append(_element(_NS + tag, str(value)))
    return element


def _endpoint_children(endpoint: Endpoint) -> list[_Child]:
    """The endpoint's children in the order of the schema's ``endpoint-type``."""
    children: list[_Child] = []
    for tag, value in (
        ("display-text", endpoint.display_text),
        ("referred", endpoint.referred),
        ("status", endpoint.status),
        ("joining-method", endpoint.joining_method),
        ("joining-info", endpoint.joining_info),
        ("disconnection-method", endpoint.disconnection_method),
        ("disconnection-info", endpoint.disconnection_info),
    ):
        if isinstance(value, Execution):
            children.append((tag, value, _execution_element(tag, value)))
        elif value is not None:
            children.append((tag, value, _element(_NS + tag, str(value))))
    for media in endpoint.media:
        children.append(("media " + media.id, media, _media_element(media)))
    if endpoint.keying_mode is not None:  # the schema's trailing xs:any ##other
        mode = endpoint.keying_mode
        children.append(("sc:keying-mode", mode, _element(_SC + "keying-mode", mode.value)))
    return children


def _endpoint_element(endpoint: Endpoint, state: str | None = None) -> Element:
    element = _element(_NS + "endpoint", entity=endpoint.entity, state=state)
    element.extend(child for _, _, child in _endpoint_children(endpoint))
    return element


def _user_element(user: User, state: str | None = None) -> Element:
    element = _element(_NS + "user", entity=user.entity, state=state)
    if user.display_text is not None:
        element.append(_element(_NS + "display-text", user.display_text))
    element.extend(_endpoint_element(endpoint) for endpoint in user.endpoints)
    return element


def conference_element(
    info: ConferenceInfo, *, version: int | None = None, state: str = "full"
) -> Element:
    """The ``<conference-info>`` element of a full document (RFC 4575 §5.2).

    A full document MUST hold ``<conference-description>`` and ``<users>`` (§5.2), so
    both are written even when empty.
    """
    root = _element(
        _NS + "conference-info",
        entity=info.entity,
        state=state,
        version=None if version is None else _check_version(version),
    )
    root.append(_description_element(info.description))
    if info.state is not None:
        root.append(_state_element(info.state))
    users = _element(_NS + "users")
    users.extend(_user_element(user) for user in info.users)
    root.append(users)
    return root


# -- differences -> partial elements ----------------------------------------------------


def _changed_children(before: list[_Child], after: list[_Child]) -> list[Element] | None:
    """The children of *after* that are new or differ from *before*, in schema order.

    ``None`` when a child of *before* is gone: RFC 4575 §4.6 step 3.2 removes only
    elements that carry ``state="deleted"``, which atomic children cannot.
    """
    old = {key: value for key, value, _ in before}
    if old.keys() - {key for key, _, _ in after}:
        return None
    return [element for key, value, element in after if old.get(key) != value]


def _endpoint_update(before: Endpoint, after: Endpoint) -> Element | None:
    if before == after:
        return None
    changed = _changed_children(_endpoint_children(before), _endpoint_children(after))
    if changed is None:
        return _endpoint_element(after, "full")
    element = _element(_NS + "endpoint", entity=after.entity, state="partial")
    element.extend(changed)
    return element


def _keyed_updates(
    before: Sequence[T],
    after: Sequence[T],
    tag: str,
    key: Callable[[T], str],
    whole: Callable[[T, str], Element],
    update: Callable[[T, T], Element | None],
) -> list[Element]:
    """RFC 4575 §4.6 step 3.1 seen from the sender: rows added, deleted or updated, by key."""
    old = {key(item): item for item in before}
    new = {key(item): item for item in after}
    elements: list[Element] = []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            elements.append(_element(_NS + tag, entity=name, state="deleted"))
        elif name not in old:
            elements.append(whole(new[name], "full"))
        else:
            changed = update(old[name], new[name])
            if changed is not None:
                elements.append(changed)
    return elements


def _user_update(before: User, after: User) -> Element | None:
    if before == after:
        return None
    if after.display_text is None and before.display_text is not None:
        return _user_element(after, "full")
    element = _element(_NS + "user", entity=after.entity, state="partial")
    if after.display_text != before.display_text:
        element.append(_element(_NS + "display-text", after.display_text))
    element.extend(
        _keyed_updates(
            before.endpoints,
            after.endpoints,
            "endpoint",
            lambda endpoint: endpoint.entity,
            _endpoint_element,
            _endpoint_update,
        )
    )
    return element


# -- documents --------------------------------------------------------------------------


def full_document(info: ConferenceInfo, version: int) -> bytes:
    """A full-state ``application/conference-info+xml`` body (RFC 4575 §4.6 "full")."""
    return serialize(conference_element(info, version=version))


def partial_document(
    previous: ConferenceInfo, current: ConferenceInfo, version: int
) -> bytes | None:
    """The notification taking a subscriber from *previous* to *current*, or ``None`` if equal.

    A ``state="partial"`` document with only what changed (module docstring), or a
    full document where a partial one cannot say it (``<conference-state>`` removed).
    *version* is the subscription's previous version plus one (RFC 4575 §5.2).
    """
    if previous.entity != current.entity:
        raise MalformedConferenceInfo("a partial document cannot change the conference entity")
    if previous == current:
        return None
    if current.state is None and previous.state is not None:
        return full_document(current, version)
    root = _element(
        _NS + "conference-info",
        entity=current.entity,
        state="partial",
        version=_check_version(version),
    )
    if current.description != previous.description:
        root.append(_description_element(current.description))
    if current.state is not None and current.state != previous.state:
        root.append(_state_element(current.state))
    users = _keyed_updates(
        previous.users, current.users, "user", lambda user: user.entity, _user_element, _user_update
    )
    if users:
        container = _element(_NS + "users", state="partial")
        container.extend(users)
        root.append(container)
    return serialize(root)


def deleted_document(entity: str, version: int) -> bytes:
    """The conference has ceased to exist (RFC 4575 §4.6: ``state="deleted"``)."""
    ConferenceInfo(entity)  # checks the entity as every model value is checked
    root = _element(
        _NS + "conference-info", entity=entity, state="deleted", version=_check_version(version)
    )
    return serialize(root)


# -- serialisation ----------------------------------------------------------------------

# XML 1.0 §2.11 turns CR and CR LF into LF, §3.3.3 white space in attributes into spaces:
# written as character references they survive a round trip.
_TEXT_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES: Final = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)


def _name(tag: str) -> str:
    if tag.startswith(_NS):
        return tag[len(_NS) :]
    if tag.startswith(_SC):
        return _SC_PREFIX + ":" + tag[len(_SC) :]
    raise MalformedConferenceInfo("only conference-info and secconf elements are written")


def _write(element: Element, out: list[str], declarations: str = "") -> None:
    name = _name(element.tag)
    out.append("<" + name + declarations)
    for attribute, value in element.attrib.items():
        out.append(f' {attribute}="{value.translate(_ATTRIBUTE_ESCAPES)}"')
    if element.text is None and not len(element):
        out.append("/>")
        return
    out.append(">")
    if element.text is not None:
        out.append(element.text.translate(_TEXT_ESCAPES))
    for child in element:
        _write(child, out)
    out.append("</" + name + ">")


def serialize(root: Element) -> bytes:
    """A document as UTF-8 bytes (RFC 4575 §4.1): our namespace the default one, ours ``sc:``.

    Written by hand rather than with ``ElementTree.tostring`` so that the prefixes are
    fixed without touching ElementTree's process-wide prefix registry.  The depth is
    that of our own documents (at most 5 below the root), hence the plain recursion.
    """
    declarations = f' xmlns="{CONFERENCE_INFO_NS}"'
    if any(element.tag.startswith(_SC) for element in root.iter()):
        declarations += f' xmlns:{_SC_PREFIX}="{SECCONF_INFO_NS}"'
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _write(root, out, declarations)
    return "".join(out).encode("utf-8")
