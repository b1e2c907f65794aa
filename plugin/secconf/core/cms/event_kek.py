"""The event-package key: a KEK for NOTIFY bodies from the member's MIKEY-TICKET exchange.

TR 33.829 clause 5: "the TICKET/KEMAC used to define the keys for media protection
should include keys for protection of event packages".  The traffic-generating key
that the ticket's KEMAC carries for media (in KMS mode the epoch's GTGK,
secconf.core.mikey.group) defines the event key as well, derived exactly as the TEK
and the SRTP salt are (RFC 6043 §5.1.3, the RFC 3830 §4.1.2 PRF over the TGK), with a
constant of its own::

    KEK = PRF(GTGK, 0x197A9E97 || CS ID || 0xFFFFFFFF || 0x03 ||
                    len RANDRi || RANDRi || len RANDRr || RANDRr)      (256 bits by default)

0x197A9E97 = 427466391 is the twelfth nine-digit chunk of e, the first one after the
constants RFC 3830 (Tables 4.1.3, 4.1.4) and RFC 6043 (Tables 5.1, A.1) take, in their
own nothing-up-my-sleeve manner.  A different constant gives an independent PRF output:
the KEK is never the SRTP master key nor computable from it, and a holder of the SRTP
key (the media edge) learns nothing of it.  Like the TEK it follows the epoch: a rekey's
new GTGK gives a new KEK, which a departed member (no recipient of the new ticket) cannot
derive.

The KEK identifier names the exchange: ``0x01 || epoch (32 bits) || CSB ID (32 bits)``,
the leading byte numbering this derivation so that another (say from a per-member TGK)
can be told apart later.  The epoch is the SPI of the exchange's crypto session and the
CSB ID its header's; neither is secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MalformedMikey
from ..mikey.constants import KeyDataType, PrfFunc
from ..mikey.group import GroupEpochTicket, epoch_of_sessions, group_key_of_transfer
from ..mikey.keys import ticket_tgk_label
from ..mikey.payloads import KeyData
from ..mikey.prf import prf
from ..mikey.ticket import ResolvedTicket, TransferInit

__all__ = [
    "EVENT_KEK_CONSTANT",
    "EVENT_KEY_ID_VERSION",
    "EventKey",
    "event_key",
    "event_key_id",
    "event_key_of_transfer",
    "group_event_key",
    "parse_event_key_id",
]

#: The twelfth nine-digit chunk of e (427466391): the event-package KEK's label constant.
EVENT_KEK_CONSTANT = 0x197A9E97
#: First byte of every key identifier this module makes (this derivation, version 1).
EVENT_KEY_ID_VERSION = 0x01
_KEY_ID_BYTES = 9
# The PRF of every group-key exchange (secconf.core.mikey.group derives its TEK with it).
_GROUP_PRF = PrfFunc.PRF_HMAC_SHA_256

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


def event_key_id(epoch: int, csb_id: int) -> bytes:
    """``0x01 || epoch || CSB ID``: the KEK identifier of an exchange (RFC 5652 §6.2.3)."""
    if not 0 <= epoch <= 0xFFFFFFFF or not 0 <= csb_id <= 0xFFFFFFFF:
        raise ValueError("epoch and CSB ID are 32 bits")
    return bytes([EVENT_KEY_ID_VERSION]) + epoch.to_bytes(4, "big") + csb_id.to_bytes(4, "big")


def parse_event_key_id(key_id: bytes) -> tuple[int, int] | None:
    """(epoch, CSB ID) of a key identifier :func:`event_key_id` made, else None."""
    if len(key_id) != _KEY_ID_BYTES or key_id[0] != EVENT_KEY_ID_VERSION:
        return None
    return int.from_bytes(key_id[1:5], "big"), int.from_bytes(key_id[5:9], "big")


def event_key(
    traffic_key: KeyData,
    *,
    cs_id: int,
    randri: bytes | None,
    randrr: bytes | None,
    prf_func: int,
    epoch: int,
    csb_id: int,
    key_bytes: int = 32,
) -> EventKey:
    """The event KEK from a TGK / GTGK of a MIKEY-TICKET exchange (RFC 6043 §5.1.3 label).

    Pass *randri* iff the ticket's H flag is set and *randrr* iff G is (as for the TEK);
    *prf_func* is the HDR's.  *key_bytes* is 16 or 32 (AES-128 or AES-256 key wrap and
    GCM, secconf.core.cms.envelope).  A TEK is refused: it is the SRTP key.
    """
    if traffic_key.key_type not in _GENERATING_KEYS:
        raise MalformedMikey(f"key data type {traffic_key.key_type} generates no event key")
    if key_bytes not in (16, 32):
        raise ValueError("an event KEK is 16 or 32 bytes")
    label = ticket_tgk_label(EVENT_KEK_CONSTANT, cs_id, randri, randrr)
    kek = prf(traffic_key.key, label, 8 * key_bytes, prf_func)
    return EventKey(event_key_id(epoch, csb_id), kek)


def group_event_key(epoch: GroupEpochTicket, key_bytes: int = 32) -> EventKey:
    """The focus's side: the event KEK of a KMS-mode epoch (its GTGK, CS ID, RANDRi)."""
    return event_key(
        epoch.gtgk_key_data,
        cs_id=epoch.cs_id,
        randri=epoch.randri,
        randrr=None,  # group tickets have G = 0 (secconf.core.mikey.group)
        prf_func=_GROUP_PRF,
        epoch=epoch.epoch,
        csb_id=epoch.csb_id,
        key_bytes=key_bytes,
    )


def event_key_of_transfer(
    transfer: TransferInit, resolved: ResolvedTicket, key_bytes: int = 32
) -> EventKey:
    """The member's side: the event KEK of a group TRANSFER_INIT it resolved.

    :func:`~secconf.core.mikey.group.group_key_of_transfer` checks the ticket (one GTGK,
    G = 0, H = 1) and reads the epoch, as for the SRTP key; the result equals
    :func:`group_event_key` at the focus.
    """
    group_key_of_transfer(transfer, resolved)  # the checks; its SRTP key is not wanted here
    cs_id, epoch = epoch_of_sessions(transfer.sessions)
    return event_key(
        resolved.traffic_keys[0],
        cs_id=cs_id,
        randri=transfer.randri,
        randrr=None,
        prf_func=_GROUP_PRF,
        epoch=epoch,
        csb_id=transfer.message.header.csb_id,
        key_bytes=key_bytes,
    )
