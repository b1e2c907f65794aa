"""The event-package keys a member holds, by key identifier (docs/event-protection.md).

In KMS mode each epoch's group ticket defines the epoch's event KEK
(:func:`secconf.core.cms.event_key_of_transfer`); the member installs it here as it
installs the epoch's SRTP key, and the NOTIFY reader looks keys up by the KEK
identifier a body names (``0x01 || epoch || CSB ID``).  An identifier of an epoch the
member does not hold finds nothing, and the body is refused (493, ``UnknownKeyId``).
"""

from __future__ import annotations

from secconf.core.cms import EventKey, parse_event_key_id

__all__ = ["EventKeyring"]


class EventKeyring:
    """The current epoch's event key and the *keep* - 1 epochs before it, newest first.

    Why more than one: a rekey reaches the member as an INVITE (the new epoch's ticket)
    and the focus's NOTIFYs travel on their own dialog, so a NOTIFY protected just
    before the switch may arrive just after it.  Keys older than that are dropped: a
    member holds no more past keys than the overlap needs.  Key material never leaves
    through ``repr`` (EventKey hides its KEK).
    """

    def __init__(self, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("an event keyring keeps at least the current key")
        self._keep = keep
        self._keys: list[EventKey] = []  # newest epoch first

    def __repr__(self) -> str:
        return f"EventKeyring(epochs={self.epochs})"

    @property
    def epochs(self) -> list[int]:
        """The epochs held, newest first."""
        return [_epoch(key) for key in self._keys]

    @property
    def current_epoch(self) -> int | None:
        return _epoch(self._keys[0]) if self._keys else None

    def install(self, key: EventKey) -> None:
        """Hold *key*; the newest epoch is current.  An epoch older than all held is refused."""
        epoch = _epoch(key)
        held = [k for k in self._keys if k.key_id != key.key_id]
        if held and len(held) >= self._keep and epoch < _epoch(held[-1]):
            raise ValueError(f"event key of epoch {epoch} is older than every key held")
        held.append(key)
        held.sort(key=_epoch, reverse=True)
        self._keys = held[: self._keep]

    def kek_for(self, key_id: bytes) -> bytes | None:
        """The KEK named by *key_id*, or ``None``: the lookup ``open_protected`` takes."""
        for key in self._keys:
            if key.key_id == key_id:
                return key.kek
        return None


def _epoch(key: EventKey) -> int:
    parsed = parse_event_key_id(key.key_id)
    if parsed is None:
        raise ValueError("not an event key identifier of this derivation")
    return parsed[0]
