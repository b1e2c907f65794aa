"""The event-package key: a KEK for NOTIFY bodies from the member's own MIKEY-TICKET exchange.

TR 33.829 clause 5: "the TICKET/KEMAC used to define the keys for media protection
should include keys for protection of event packages"; issue 15 item 3: a key "from the
member's MIKEY-TICKET exchange with the focus (a key derived for this purpose, never the
SRTP key itself)".  In KMS mode a member's SUBSCRIBE carries a TRANSFER_INIT with its
ticket for the focus (docs/event-package.md); the traffic-generating key that ticket's
KEMAC carries (a TGK, forked for the focus if the ticket says so: the TGK' both the focus
and the member hold after the exchange) defines the subscription's KEK, derived as a TEK
is (RFC 6043 §5.1.3 label, the RFC 3830 §4.1.2 PRF) but with a constant of its own::

    KEK = PRF(TGK, 0x197A9E97 || 0x00 || 0xFFFFFFFF || 0x03 || len RANDRi || RANDRi || 0x00)

(256 bits; CS ID 0: the key belongs to the exchange, no crypto session; RANDRi always,
whatever the H flag: a fresh RANDRi per TRANSFER_INIT gives a fresh KEK per subscription
even under a reusable ticket; RANDRr never: the member can derive the KEK before the
answer arrives, so a NOTIFY that overtakes the SUBSCRIBE's 2xx is still read.)

0x197A9E97 = 427466391 is the twelfth nine-digit chunk of e, the first one after the
constants RFC 3830 (Tables 4.1.3, 4.1.4) and RFC 6043 (Tables 5.1, A.1) take, in their
own nothing-up-my-sleeve manner.  A different constant gives an independent PRF output:
the KEK is never an SRTP master key nor computable from one, and a holder of SRTP keys
(the media edge) learns nothing of it.

The KEK identifier names the exchange: ``0x02 || CSB ID (32 bits)``, the leading byte
numbering this derivation (``0x01`` was an epoch-wide group key, never deployed: see
docs/event-protection.md).  The CSB ID is the TRANSFER_INIT's, not secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MalformedMikey
from ..mikey.constants import KeyDataType, PrfFunc
from ..mikey.keys import ticket_tgk_label
from ..mikey.payloads import KeyData
from ..mikey.prf import prf
from ..mikey.ticket import ResolvedTicket, TransferInit

__all__ = [
    "EVENT_KEK_CONSTANT",
    "EVENT_KEY_ID_VERSION",
    "EventKey",
    "derive_event_kek",
    "event_key_id",
    "event_key_of_transfer",
    "exchange_event_key",
    "parse_event_key_id",
]

#: The twelfth nine-digit chunk of e (427466391): the event-package KEK's label constant.
EVENT_KEK_CONSTANT = 0x197A9E97
#: First byte of every key identifier this module makes (the per-exchange derivation).
EVENT_KEY_ID_VERSION = 0x02
_KEY_ID_BYTES = 5
#: CS ID in the label: the KEK belongs to the exchange, to none of its crypto sessions.
_EXCHANGE_CS_ID = 0
# RFC 6043 §6.1: the PRF of every TRANSFER exchange secconf makes (PRF-HMAC-SHA-256).
_EXCHANGE_PRF = PrfFunc.PRF_HMAC_SHA_256

# The key types that generate traffic keys (RFC 3830 Table 6.13.a, RFC 6043 §6.13): the
# KEK comes from these only, never from a TEK, which is the SRTP master key itself.
_GENERATING_KEYS = frozenset(
    {KeyDataType.TGK, KeyDataType.TGK_SALT, KeyDataType.GTGK, KeyDataType.GTGK_SALT}
)


@dataclass(frozen=True, slots=True)
class EventKey:
    """A KEK for protected NOTIFY bodies and the identifier that names it."""

    key_id: bytes
    kek: bytes = field(repr=False)


def event_key_id(csb_id: int) -> bytes:
    """``0x02 || CSB ID``: the KEK identifier of an exchange (RFC 5652 §6.2.3 keyIdentifier)."""
    if not 0 <= csb_id <= 0xFFFFFFFF:
        raise ValueError("a CSB ID is 32 bits")
    return bytes([EVENT_KEY_ID_VERSION]) + csb_id.to_bytes(4, "big")


def parse_event_key_id(key_id: bytes) -> int | None:
    """The CSB ID of a key identifier :func:`event_key_id` made, else None."""
    if len(key_id) != _KEY_ID_BYTES or key_id[0] != EVENT_KEY_ID_VERSION:
        return None
    return int.from_bytes(key_id[1:], "big")


def derive_event_kek(
    traffic_key: KeyData,
    *,
    cs_id: int,
    randri: bytes | None,
    randrr: bytes | None,
    prf_func: int,
    key_bytes: int = 32,
) -> bytes:
    """PRF(TGK, RFC 6043 §5.1.3 label with :data:`EVENT_KEK_CONSTANT`): the KEK's bytes.

    *key_bytes* is 16 or 32 (AES-128 or AES-256 key wrap and GCM,
    secconf.core.cms.envelope).  A TEK is refused: it is an SRTP key.
    """
    if traffic_key.key_type not in _GENERATING_KEYS:
        raise MalformedMikey(f"key data type {traffic_key.key_type} generates no event key")
    if key_bytes not in (16, 32):
        raise ValueError("an event KEK is 16 or 32 bytes")
    label = ticket_tgk_label(EVENT_KEK_CONSTANT, cs_id, randri, randrr)
    return prf(traffic_key.key, label, 8 * key_bytes, prf_func)


def exchange_event_key(
    traffic_key: KeyData, *, randri: bytes, csb_id: int, key_bytes: int = 32
) -> EventKey:
    """The KEK of one TRANSFER exchange: both sides call this with what they hold.

    *traffic_key* is the exchange's first traffic key as the Responder holds it
    (the ticket's TGK, or TGK' when the ticket forks keys, RFC 6043 §5.1.1);
    *randri* and *csb_id* are the TRANSFER_INIT's.
    """
    kek = derive_event_kek(
        traffic_key,
        cs_id=_EXCHANGE_CS_ID,
        randri=randri,
        randrr=None,
        prf_func=_EXCHANGE_PRF,
        key_bytes=key_bytes,
    )
    return EventKey(event_key_id(csb_id), kek)


def event_key_of_transfer(transfer: TransferInit, resolved: ResolvedTicket) -> EventKey:
    """The focus's side: the KEK of a member's TRANSFER_INIT it resolved at the KMS."""
    if not resolved.traffic_keys:
        raise MalformedMikey("the ticket carries no traffic-generating key")
    return exchange_event_key(
        resolved.traffic_keys[0],
        randri=transfer.randri,
        csb_id=transfer.message.header.csb_id,
    )
