"""Group key epochs from the KMS: a GTGK ticket held by the focus (RFC 6043 §5.1, sans-IO).

DESIGN.md §1: "group keys come from the KMS on request of the conference
system".  For a new key epoch the focus (a KMS user) asks for a ticket whose
desired policy requests one **GTGK**, with the conference's current members as
recipients (:func:`group_ticket_policy`).  The epoch's SRTP master key and salt
are the TEK and salt that every recipient derives from that GTGK:

* GTGKs are never forked (RFC 6043 §5.1.1), so every recipient resolves the
  same GTGK;
* the ticket has G = 0, so no Responder RAND enters the derivation, and H = 1,
  so the focus's RANDRi does (RFC 6043 §5.1.3, §6.10);
* the CSB ID in the label is 0xFFFFFFFF for ticket traffic keys (RFC 6043
  §5.1.3), and the CS ID is the epoch's fixed :data:`GROUP_CS_ID`
  (RFC 3830 §4.1.3 label ``0x2AD01C64 || CS ID || CSB ID || RAND``, salt
  constant ``0x39A2C14B``, §4.1.4).

So the focus fixes, per epoch, one CSB ID and one RANDRi, and every TRANSFER_INIT
it sends for that epoch (:func:`build_group_transfer_init`) reuses them.  All
SRTP streams of the conference (the participant's SSRCs and the edge's) are
entries of the one crypto session :data:`GROUP_CS_ID` in the GENERIC-ID map
(RFC 6043 §6.1.1); one key over many streams is safe because SSRCs are unique
within a conference (R4, RFC 3711 §3.3.1).  Each entry's SPI is the epoch
number (4 bytes, big-endian), like the KV/SPI of the TEK+SALT a focus delivers
on a join.

What a later TRANSFER_INIT of the epoch needs is a :class:`GroupEpochTicket`;
:meth:`GroupEpochTicket.to_bytes` is what the focus stores, wrapped under the
KEK (never in clear).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import MalformedMikey, MikeyErrorNo, TicketRejected, UnsupportedMikey
from ._wire import PayloadBudget, Reader
from .constants import KeyDataType, PrfFunc
from .keys import SrtpMasterKey, ticket_srtp_master_key
from .payloads import (
    GenericIdEntry,
    KeyData,
    SecurityPolicy,
    SrtpSessionData,
    Ticket,
    TicketFlags,
)
from .ticket import (
    DesiredPolicy,
    IssuedTicket,
    PendingTransfer,
    PolicyView,
    RandomBytes,
    ResolvedTicket,
    TransferInit,
    build_transfer_init,
)
from .ticket.profile import RAND_BYTES

__all__ = [
    "GROUP_CS_ID",
    "GroupEpochTicket",
    "build_group_transfer_init",
    "epoch_of_sessions",
    "group_key_of_transfer",
    "group_ticket_policy",
    "new_group_epoch",
]

#: The one crypto session of a group epoch (every stream of the conference is in it).
GROUP_CS_ID = 1
_FORMAT_VERSION = 1
_KEY_BYTES = 32
_PRF = PrfFunc.PRF_HMAC_SHA_256


def group_ticket_policy(recipients: Sequence[str], *, valid_until: float) -> DesiredPolicy:
    """The desired policy of a group-key ticket: one GTGK, G = 0, key forking on.

    Forking stays on for the MPKs (a recipient then cannot pass a TRANSFER_RESP
    off as another's, RFC 6043 §5.1.1); GTGKs are not forked.  No responder
    keys (M = 0): the key comes from the ticket, not from the responder.
    """
    return DesiredPolicy(
        recipients=tuple(recipients),
        valid_until=valid_until,
        traffic_keys=(KeyDataType.GTGK,),
        responder_rand=False,
    )


def _check_group_ticket(flags: TicketFlags, traffic: Sequence[KeyData]) -> KeyData:
    if len(traffic) != 1 or traffic[0].key_type != KeyDataType.GTGK:
        raise UnsupportedMikey(
            "a group epoch needs a ticket with exactly one GTGK", MikeyErrorNo.INVALID_TPPAR
        )
    if TicketFlags.G in flags or TicketFlags.H not in flags:
        # RFC 6043 §5.1.3: with G a Responder RAND would make the TEK per recipient.
        raise UnsupportedMikey(
            "a group-key ticket must have G = 0 and H = 1", MikeyErrorNo.INVALID_TPPAR
        )
    return traffic[0]


@dataclass(frozen=True, slots=True)
class GroupEpochTicket:
    """One KMS-sourced key epoch as the focus keeps it (wrapped at rest)."""

    epoch: int
    ticket: Ticket = field(repr=False)
    mpki: bytes = field(repr=False)
    mpkr: bytes | None = field(repr=False)
    gtgk: bytes = field(repr=False)
    csb_id: int
    randri: bytes = field(repr=False)
    cs_id: int = GROUP_CS_ID

    def __post_init__(self) -> None:
        if not 1 <= self.epoch <= 0xFFFFFFFF:
            raise ValueError("epoch must be 1..2**32-1")
        if not 0 <= self.csb_id <= 0xFFFFFFFF or not 0 <= self.cs_id <= 0xFF:
            raise ValueError("CSB ID is 32 bits, CS ID 8 bits")
        if len(self.randri) != RAND_BYTES or len(self.gtgk) != _KEY_BYTES:
            raise ValueError("RANDRi and GTGK must be 32 bytes")
        if len(self.mpki) != _KEY_BYTES or (self.mpkr is not None and len(self.mpkr) != _KEY_BYTES):
            raise ValueError("MPKs must be 32 bytes")

    @property
    def gtgk_key_data(self) -> KeyData:
        return KeyData(KeyDataType.GTGK, self.gtgk)

    @property
    def recipients(self) -> tuple[str, ...]:
        return PolicyView.of(self.ticket.policy_payloads, self.ticket.flags).recipients

    @property
    def valid_until(self) -> float | None:
        """End of the ticket's validity (its policy's TRe), if it names one."""
        return PolicyView.of(self.ticket.policy_payloads, self.ticket.flags).valid_until

    def issued(self) -> IssuedTicket:
        """The ticket as its requester holds it (for :func:`build_transfer_init`)."""
        policy = PolicyView.of(self.ticket.policy_payloads, self.ticket.flags)
        return IssuedTicket(self.ticket, policy, self.mpki, self.mpkr, (self.gtgk_key_data,))

    def srtp_master_key(self, key_bits: int = 128, salt_bits: int = 112) -> SrtpMasterKey:
        """The epoch's SRTP master key and salt: the TEK every recipient derives (§5.1.3)."""
        return ticket_srtp_master_key(
            self.gtgk_key_data, self.cs_id, self.randri, None, _PRF, key_bits, salt_bits
        )

    def to_bytes(self) -> bytes:
        """Version, epoch, CSB ID, CS ID, RANDRi, MPKi, [MPKr], GTGK, TICKET payload."""
        flags = 1 if self.mpkr is not None else 0
        return b"".join(
            (
                bytes([_FORMAT_VERSION, flags]),
                self.epoch.to_bytes(4, "big"),
                self.csb_id.to_bytes(4, "big"),
                bytes([self.cs_id]),
                self.randri,
                self.mpki,
                self.mpkr or b"",
                self.gtgk,
                self.ticket.encode_body(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupEpochTicket:
        """Inverse of :meth:`to_bytes`; raises ``MalformedMikey`` for anything else."""
        head = 2 + 4 + 4 + 1
        if len(data) < head + RAND_BYTES + 2 * _KEY_BYTES or data[0] != _FORMAT_VERSION:
            raise MalformedMikey("not a stored group epoch")
        if data[1] not in (0, 1):
            raise MalformedMikey("stored group epoch: bad flags")
        epoch = int.from_bytes(data[2:6], "big")
        csb_id = int.from_bytes(data[6:10], "big")
        cs_id = data[10]
        at = head
        randri = data[at : at + RAND_BYTES]
        at += RAND_BYTES
        mpki = data[at : at + _KEY_BYTES]
        at += _KEY_BYTES
        mpkr = None
        if data[1]:
            mpkr = data[at : at + _KEY_BYTES]
            at += _KEY_BYTES
        gtgk = data[at : at + _KEY_BYTES]
        at += _KEY_BYTES
        if len(gtgk) != _KEY_BYTES or (mpkr is not None and len(mpkr) != _KEY_BYTES):
            raise MalformedMikey("stored group epoch truncated")
        reader = Reader(data[at:])
        ticket = Ticket.decode_body(reader, PayloadBudget())
        reader.expect_end("stored group epoch")
        try:
            return cls(epoch, ticket, mpki, mpkr, gtgk, csb_id, randri, cs_id)
        except ValueError:
            raise MalformedMikey("stored group epoch out of range") from None


def new_group_epoch(
    issued: IssuedTicket, epoch: int, random_bytes: RandomBytes
) -> GroupEpochTicket:
    """Fix an epoch's CSB ID and RANDRi for a GTGK ticket the focus was issued.

    Raises ``UnsupportedMikey`` unless the ticket holds exactly one GTGK with
    G = 0 and H = 1 (a KMS that set G again would make the TEK differ per
    recipient).
    """
    gtgk = _check_group_ticket(issued.ticket.flags, issued.traffic_keys)
    csb_id = int.from_bytes(random_bytes(4), "big")
    randri = random_bytes(RAND_BYTES)
    if len(randri) != RAND_BYTES:
        raise ValueError("random source returned too few bytes")
    return GroupEpochTicket(epoch, issued.ticket, issued.mpki, issued.mpkr, gtgk.key, csb_id,
                            randri)  # fmt: skip


def build_group_transfer_init(
    epoch: GroupEpochTicket,
    *,
    initiator: str,
    responder: str,
    ssrcs: Sequence[int],
    policies: Sequence[SecurityPolicy] = (),
    now: float,
    random_bytes: RandomBytes,
) -> PendingTransfer:
    """A TRANSFER_INIT from the focus carrying *epoch* to *responder* (RFC 6043 §4.2.2.1).

    The epoch's CSB ID and RANDRi, one GENERIC-ID entry per SSRC (all in crypto
    session :data:`GROUP_CS_ID`, SPI = the epoch number, RFC 6043 §6.1.1), IDRi
    = *initiator* (the focus), IDRr = *responder*.  *responder* must be one of
    the ticket's recipients (``TicketRejected`` otherwise: it could not resolve
    the ticket; a departed member is never one).  Keep the returned
    ``PendingTransfer`` to verify the TRANSFER_RESP with
    :func:`~secconf.core.mikey.ticket.process_transfer_resp`.
    """
    if responder not in epoch.recipients:
        raise TicketRejected("the responder is not a recipient of this epoch's ticket")
    if not ssrcs:
        raise ValueError("a group TRANSFER_INIT names at least one SSRC")
    spi = epoch.epoch.to_bytes(4, "big")
    policy_numbers = [policies[0].policy_no] if policies else []
    sessions = [
        GenericIdEntry.for_srtp(epoch.cs_id, policy_numbers, SrtpSessionData(ssrc, 0, 0), spi)
        for ssrc in dict.fromkeys(ssrcs)
    ]
    return build_transfer_init(
        epoch.issued(),
        initiator=initiator,
        responder=responder,
        sessions=sessions,
        policies=policies,
        now=now,
        random_bytes=random_bytes,
        csb_id=epoch.csb_id,
        randri=epoch.randri,
    )


def epoch_of_sessions(sessions: Sequence[GenericIdEntry]) -> tuple[int, int]:
    """(CS ID, epoch) of a group TRANSFER_INIT's map: one CS ID, SPI = 4-byte epoch."""
    if not sessions:
        raise MalformedMikey("a group TRANSFER_INIT names no crypto session")
    cs_ids = {entry.cs_id for entry in sessions}
    spis = {entry.spi for entry in sessions}
    if len(cs_ids) != 1 or len(spis) != 1:
        raise UnsupportedMikey("a group epoch is one crypto session with one SPI")
    spi = next(iter(spis))
    if len(spi) != 4 or int.from_bytes(spi, "big") == 0:
        raise MalformedMikey("a group epoch's SPI is its 4-byte epoch number")
    return next(iter(cs_ids)), int.from_bytes(spi, "big")


def group_key_of_transfer(
    transfer: TransferInit, resolved: ResolvedTicket, key_bits: int = 128, salt_bits: int = 112
) -> tuple[SrtpMasterKey, int]:
    """The participant's side: the epoch's group key and number from a resolved TRANSFER_INIT.

    Checks the ticket is a group-key ticket (one GTGK, G = 0, H = 1) and the map
    is one crypto session; the TEK is derived exactly as the focus did
    (:meth:`GroupEpochTicket.srtp_master_key`).
    """
    gtgk = _check_group_ticket(transfer.ticket.flags, resolved.traffic_keys)
    cs_id, epoch = epoch_of_sessions(transfer.sessions)
    key = ticket_srtp_master_key(gtgk, cs_id, transfer.randri, None, _PRF, key_bits, salt_bits)
    return key, epoch
