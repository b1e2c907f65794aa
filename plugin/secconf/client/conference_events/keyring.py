"""The event-package keys a member holds, by key identifier (docs/event-protection.md).

In KMS mode each subscription has a KEK of its own, derived from the TRANSFER_INIT its
SUBSCRIBE carried (:func:`secconf.core.cms.exchange_event_key`); the watch installs it
here, and the NOTIFY reader looks keys up by the KEK identifier a body names
(``0x02 || CSB ID``).  An identifier the member holds no key for finds nothing, and
the body is refused (493, ``UnknownKeyId``).
"""

from __future__ import annotations

from collections import OrderedDict

from secconf.core.cms import EventKey, parse_event_key_id

__all__ = ["EventKeyring"]


class EventKeyring:
    """The newest *keep* event keys, by identifier.

    One per subscription the member holds (a watch installs the key of its own
    exchange); bounded so that a long-running agent that subscribed many times keeps
    only the recent ones.  Key material never leaves through ``repr`` (EventKey hides
    its KEK).
    """

    def __init__(self, keep: int = 8) -> None:
        if keep < 1:
            raise ValueError("an event keyring keeps at least one key")
        self._keep = keep
        self._keys: OrderedDict[bytes, EventKey] = OrderedDict()  # oldest first

    def __repr__(self) -> str:
        return f"EventKeyring(keys={len(self._keys)})"

    def __len__(self) -> int:
        return len(self._keys)

    def install(self, key: EventKey) -> None:
        """Hold *key* (the newest); the oldest beyond *keep* is dropped."""
        if parse_event_key_id(key.key_id) is None:
            raise ValueError("not an event key identifier of this derivation")
        self._keys.pop(key.key_id, None)
        self._keys[key.key_id] = key
        while len(self._keys) > self._keep:
            self._keys.popitem(last=False)

    def drop(self, key_id: bytes) -> None:
        """Forget the key named *key_id* (its subscription ended)."""
        self._keys.pop(key_id, None)

    def kek_for(self, key_id: bytes) -> bytes | None:
        """The KEK named by *key_id*, or ``None``: the lookup ``open_protected`` takes."""
        key = self._keys.get(key_id)
        return None if key is None else key.kek
