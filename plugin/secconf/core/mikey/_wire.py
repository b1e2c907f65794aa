"""Bounds-checked reading of MIKEY bytes (all integers big-endian, RFC 3830 §6).

Every read checks the bytes left first, so truncated or lying length fields
raise :class:`MalformedMikey` and nothing else.
"""

from __future__ import annotations

from ..errors import MalformedMikey, MikeyTooLarge

__all__ = ["MAX_MESSAGE_SIZE", "MAX_PAYLOADS", "PayloadBudget", "Reader", "check_uint"]

#: Largest MIKEY message accepted or built: 64 KiB (a KEMAC alone must stay under
#: 2^16 bytes, RFC 3830 §6.13; the largest real messages are a few kB).
MAX_MESSAGE_SIZE = 64 * 1024

#: Most payloads accepted in one message, nested ones (TP Data, key data) included.
MAX_PAYLOADS = 64


class Reader:
    """A cursor over *data*; reads past the end raise :class:`MalformedMikey`."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self._pos

    @property
    def position(self) -> int:
        """Offset of the next byte to read."""
        return self._pos

    def take(self, count: int, what: str) -> bytes:
        """The next *count* bytes, which must all be there."""
        if count > self.remaining:
            raise MalformedMikey(f"{what} truncated: {count} bytes needed, {self.remaining} left")
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def u8(self, what: str) -> int:
        """One unsigned byte."""
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        """A 16-bit big-endian unsigned integer."""
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        """A 32-bit big-endian unsigned integer."""
        return int.from_bytes(self.take(4, what), "big")

    def expect_end(self, what: str) -> None:
        """Refuse anything left over (trailing garbage, RFC 3830 §6.1 chaining)."""
        if self.remaining:
            raise MalformedMikey(f"{self.remaining} unexpected bytes after {what}")


class PayloadBudget:
    """Counts payloads across one message, nested chains included (limit :data:`MAX_PAYLOADS`)."""

    __slots__ = ("_left",)

    def __init__(self, limit: int = MAX_PAYLOADS) -> None:
        self._left = limit

    def spend(self) -> None:
        """Account for one more payload; refuse the message past the limit."""
        self._left -= 1
        if self._left < 0:
            raise MikeyTooLarge(f"more than {MAX_PAYLOADS} payloads in one MIKEY message")


def check_uint(value: int, bits: int, what: str) -> None:
    """Refuse a field value that does not fit in *bits* unsigned bits."""
    if not 0 <= value < 1 << bits:
        raise MalformedMikey(f"{what} {value} does not fit in {bits} bits")


def check_length(data: bytes, bits: int, what: str) -> None:
    """Refuse a variable field longer than its *bits*-bit length field can say."""
    if len(data) >= 1 << bits:
        raise MalformedMikey(f"{what} is {len(data)} bytes, more than a {bits}-bit length allows")
