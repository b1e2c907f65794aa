"""Whole MIKEY messages: parse, build, and the byte ranges MACs and signatures cover.

``Message.parse(data)`` and ``bytes(message)`` round-trip byte for byte: every
field is kept, and the Next payload fields are rewritten from the payload
order, which is exactly what they encode (RFC 3830 §6.1).  Cryptography is in
:mod:`secconf.core.mikey.keys`; this module only says which bytes are covered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import MalformedMikey, MikeyTooLarge
from ._wire import MAX_MESSAGE_SIZE, MAX_PAYLOADS, PayloadBudget, Reader
from .payloads import (
    NESTED_PAYLOADS,
    TOP_LEVEL_PAYLOADS,
    CommonHeader,
    Kemac,
    Payload,
    Signature,
    Ticket,
    TicketHeader,
    Verification,
    decode_chain,
    encode_chain,
)

__all__ = ["BaseTicketData", "Message"]

P = TypeVar("P", bound=Payload)


def _mac_field_length(payloads: tuple[Payload, ...], what: str) -> int:
    last = payloads[-1] if payloads else None
    if isinstance(last, Kemac | Verification):
        return len(last.mac)
    if isinstance(last, Signature):
        return len(last.signature)
    raise MalformedMikey(f"{what} does not end in a KEMAC, V or SIGN payload")


def _with_mac_field(payloads: tuple[Payload, ...], mac: bytes, what: str) -> tuple[Payload, ...]:
    if len(mac) != _mac_field_length(payloads, what):
        raise MalformedMikey(f"MAC/signature length does not fit the last payload of {what}")
    last = payloads[-1]
    replaced: Payload
    if isinstance(last, Signature):
        replaced = dataclasses.replace(last, signature=mac)
    else:
        replaced = dataclasses.replace(last, mac=mac)  # type: ignore[type-var]
    return (*payloads[:-1], replaced)


@dataclass(frozen=True, slots=True)
class Message:
    """A MIKEY message: the common header and the payloads after it, in order."""

    header: CommonHeader
    payloads: tuple[Payload, ...] = ()

    def __post_init__(self) -> None:
        if len(self.payloads) > MAX_PAYLOADS:
            raise MikeyTooLarge(f"more than {MAX_PAYLOADS} payloads in one MIKEY message")
        for payload in self.payloads[:-1]:
            if not payload.has_next_field:
                raise MalformedMikey("SIGN must be the last payload (RFC 3830 §6.5)")

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Parse one MIKEY message; anything malformed raises a :class:`MikeyError`.

        Refused: more than 64 KiB or 64 payloads, lengths running past the end,
        unknown payload types, bytes after the last payload.
        """
        data = bytes(data)
        if len(data) > MAX_MESSAGE_SIZE:
            raise MikeyTooLarge(f"MIKEY message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
        reader = Reader(data)
        header, first = CommonHeader.decode(reader)
        payloads = decode_chain(reader, first, PayloadBudget(), TOP_LEVEL_PAYLOADS)
        return cls(header, payloads)

    def __bytes__(self) -> bytes:
        return b"".join(self._encoded_parts(excise_initiator_data=False))

    def _encoded_parts(self, excise_initiator_data: bool) -> Iterator[bytes]:
        first = self.payloads[0].payload_type if self.payloads else 0
        yield self.header.encode(first)
        size = 0
        for index, payload in enumerate(self.payloads):
            following = (
                self.payloads[index + 1].payload_type if index + 1 < len(self.payloads) else 0
            )
            if excise_initiator_data and isinstance(payload, Ticket):
                part = bytes([following]) + payload.policy_and_ticket_data()
            else:
                part = payload.encode(following)
            size += len(part)
            if size > MAX_MESSAGE_SIZE:
                raise MikeyTooLarge(f"MIKEY message would exceed {MAX_MESSAGE_SIZE} bytes")
            yield part

    @property
    def data_type(self) -> int:
        """HDR data type (see :class:`~secconf.core.mikey.constants.DataType`)."""
        return self.header.data_type

    def find(self, payload_class: type[P], role: int | None = None) -> P | None:
        """The first payload of *payload_class* (and *role*, for TR/IDR/RANDR), or ``None``."""
        return next(iter(self.find_all(payload_class, role)), None)

    def find_all(self, payload_class: type[P], role: int | None = None) -> list[P]:
        """Every payload of *payload_class* (and *role*, when given), in order."""
        return [
            payload
            for payload in self.payloads
            if isinstance(payload, payload_class)
            and (role is None or getattr(payload, "role", None) == role)
        ]

    def appended(self, *payloads: Payload) -> Message:
        """A copy with *payloads* added at the end."""
        return Message(self.header, (*self.payloads, *payloads))

    # -- what a MAC or signature covers ------------------------------------------------

    @property
    def mac_field_length(self) -> int:
        """Bytes of MAC/signature in the last payload (KEMAC, V or SIGN)."""
        return _mac_field_length(self.payloads, "the message")

    def bytes_without_mac(self, excise_initiator_data: bool = False) -> bytes:
        """The message except its MAC/signature field (RFC 3830 §5.2, RFC 6043 §5.5).

        This includes the last payload's own header bytes (Next payload, MAC alg).
        *excise_initiator_data* also cuts the TICKET payload's Initiator Data
        length and Initiator Data out, as a TRANSFER_INIT MAC requires
        (RFC 6043 §5.5).
        """
        encoded = b"".join(self._encoded_parts(excise_initiator_data))
        return encoded[: len(encoded) - self.mac_field_length]

    def with_mac(self, mac: bytes) -> Message:
        """A copy with the last payload's MAC/signature field set to *mac*."""
        return Message(self.header, _with_mac_field(self.payloads, mac, "the message"))


@dataclass(frozen=True, slots=True)
class BaseTicketData:
    """Ticket Data of the MIKEY base ticket, Ticket Type 1 (RFC 6043 Appendix A).

    ``THDR, T, RAND, KEMAC, [IDRpsk], V``: a THDR first, then chained payloads.
    """

    header: TicketHeader
    payloads: tuple[Payload, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> BaseTicketData:
        """Parse Ticket Data taken from a TICKET payload."""
        reader = Reader(bytes(data))
        header, first = TicketHeader.decode(reader)
        return cls(header, decode_chain(reader, first, PayloadBudget(), NESTED_PAYLOADS))

    def __bytes__(self) -> bytes:
        first = self.payloads[0].payload_type if self.payloads else 0
        return self.header.encode(first) + encode_chain(self.payloads)

    def find(self, payload_class: type[P]) -> P | None:
        """The first payload of *payload_class*, or ``None``."""
        return next((p for p in self.payloads if isinstance(p, payload_class)), None)

    def with_mac(self, mac: bytes) -> BaseTicketData:
        """A copy with the closing V payload's MAC set to *mac*."""
        return BaseTicketData(self.header, _with_mac_field(self.payloads, mac, "Ticket Data"))
