"""Ticket Resolve (RFC 6043 §4.2.3): RESOLVE_INIT_PSK from the Responder, RESOLVE_RESP from the KMS.

The Responder, holding a TRANSFER_INIT, asks the KMS for the ticket's keys
(:func:`build_resolve_init`) and checks the answer, then the TRANSFER_INIT
under MPKi (:func:`process_resolve_resp`).  The KMS reads the request
(:class:`ResolveInit`), opens the ticket (:func:`.base_ticket.open_ticket`),
checks the Responder may have it (:func:`authorize_resolution`) and answers
with the keys, forked for that Responder when the ticket asks (§5.1.1,
:func:`build_resolve_resp`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from ...errors import AuthenticationFailed, MalformedMikey, TicketRejected
from ..constants import DataType, IdRole, KeyDataType, MacAlg, RandRole
from ..keys import (
    Direction,
    ForkKeyLabel,
    append_verification,
    build_kemac,
    fork_key,
    initiator_data_auth_key,
    verify,
    verify_initiator_data,
)
from ..message import Message
from ..payloads import (
    CommonHeader,
    EmptyMap,
    IdentityWithRole,
    KeyData,
    Payload,
    RandWithRole,
    Ticket,
    TicketFlags,
    Verification,
)
from .base_ticket import OpenedTicket
from .common import (
    RandomBytes,
    check_fresh,
    draw_random,
    find_rand,
    find_timestamp,
    fork_traffic_key,
    identity_payload,
    key_spi,
    new_csb_id,
    ntp_timestamp,
    open_message_kemac,
    parse_message,
    read_sent_to_kms,
    replay_token,
    split_kemac_keys,
    verify_sent_to_kms,
)
from .profile import DEFAULT_SKEW, MAC, PRF, RAND_BYTES, message_keys
from .transfer import TransferInit

# -- The Responder asks (RFC 6043 §4.2.3.1-2) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingResolve:
    """A RESOLVE_INIT_PSK on its way; keep it to check the RESOLVE_RESP."""

    data: bytes = field(repr=False)
    csb_id: int
    randrr: bytes = field(repr=False)
    responder: str
    kms: str


def build_resolve_init(
    transfer: TransferInit,
    *,
    responder: str,
    kms: str,
    psk: bytes,
    now: float,
    random_bytes: RandomBytes,
) -> PendingResolve:
    """RESOLVE_INIT_PSK = HDR, T, RANDRr, IDRr, IDRkms, TICKET, V (RFC 6043 §4.2.3.1-2)."""
    csb_id = new_csb_id(random_bytes)
    randrr = draw_random(random_bytes, RAND_BYTES)
    header = CommonHeader(DataType.RESOLVE_INIT_PSK, csb_id, EmptyMap(), True, PRF)
    body = Message(
        header,
        (
            ntp_timestamp(now),
            RandWithRole(RandRole.RESPONDER, randrr),
            identity_payload(IdRole.RESPONDER, responder),
            identity_payload(IdRole.KMS, kms),
            transfer.ticket,  # as received, Initiator Data included
        ),
    )
    keys = message_keys(psk, csb_id, Direction.INITIAL, None, randrr)
    message = append_verification(body, MAC, keys.auth_key, responder.encode() + kms.encode())
    return PendingResolve(bytes(message), csb_id, randrr, responder, kms)


# -- The KMS resolves (RFC 6043 §4.2.3.3-5) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolveInit:
    """A RESOLVE_INIT_PSK as the KMS reads it: identities known, nothing verified yet."""

    data: bytes = field(repr=False)
    message: Message = field(repr=False)
    responder: str
    kms: str | None
    randrr: bytes = field(repr=False)
    ticket: Ticket = field(repr=False)

    @classmethod
    def read(cls, data: bytes) -> ResolveInit:
        """Parse and check the structure; the KMS then looks up the responder's PSK."""
        message, responder, kms, randrr = read_sent_to_kms(
            data, DataType.RESOLVE_INIT_PSK, IdRole.RESPONDER, RandRole.RESPONDER
        )
        ticket = message.find(Ticket)
        if ticket is None:
            raise MalformedMikey("RESOLVE_INIT lacks a TICKET")
        return cls(bytes(data), message, responder, kms, randrr, ticket)

    def verify(
        self, psk: bytes, *, kms_identity: str, now: float, skew: float = DEFAULT_SKEW
    ) -> None:
        """Check the MAC under the responder's PSK, the KMS named and the timestamp."""
        keys = message_keys(psk, self.message.header.csb_id, Direction.INITIAL, None, self.randrr)
        verify_sent_to_kms(self.message, keys, self.responder, self.kms, kms_identity, now, skew)

    @property
    def replay_token(self) -> bytes:
        return replay_token("RESOLVE_INIT", self.message, self.responder, self.randrr)


def authorize_resolution(resolve: ResolveInit, opened: OpenedTicket, *, now: float) -> None:
    """The KMS's checks before answering (RFC 6043 §4.2.3.4): validity, recipient, Vr."""
    if not opened.policy.covers(now):
        raise TicketRejected("ticket has expired or is not valid yet")
    if resolve.responder not in opened.policy.recipients:
        raise TicketRejected("the resolving party is not among the ticket's recipients")
    if TicketFlags.I in opened.policy.flags:
        _, mpkr = opened.mpk_pair()
        if not resolve.ticket.initiator_data:
            raise TicketRejected("a forking ticket arrived without Initiator Data")
        try:
            verify_initiator_data(
                resolve.ticket.initiator_data, initiator_data_auth_key(mpkr, MAC, opened.prf_func)
            )
        except (AuthenticationFailed, MalformedMikey):
            raise TicketRejected("Initiator Data does not verify") from None


def build_resolve_resp(
    resolve: ResolveInit,
    opened: OpenedTicket,
    *,
    psk: bytes,
    kms_identity: str,
    now: float,
    random_bytes: RandomBytes,
) -> bytes:
    """RESOLVE_RESP = HDR, T, IDRkms, KEMAC, [IDRr], [RANDRkms], V (RFC 6043 §4.2.3.5)."""
    csb_id = resolve.message.header.csb_id
    header = CommonHeader(DataType.RESOLVE_RESP, csb_id, resolve.message.header.cs_id_map,
                          False, PRF)  # fmt: skip
    timestamp = ntp_timestamp(now)
    keys = message_keys(psk, csb_id, Direction.RESPONSE, None, resolve.randrr)
    mpki, mpkr = opened.mpk_pair()
    carried = [KeyData(KeyDataType.MPK, mpki, None, key_spi(0))]
    traffic = opened.traffic_keys
    modifier: tuple[Payload, ...] = ()
    if TicketFlags.I in opened.policy.flags:
        # RFC 6043 §5.1.1: fork MPKr and TGKs for this responder; the modifier is
        # (IDRr, RANDRkms), IDRr being the identity authorized in the ticket.
        randrkms = draw_random(random_bytes, RAND_BYTES)
        id_data = resolve.responder.encode()
        carried.append(KeyData(KeyDataType.MPK, fork_key(mpkr, ForkKeyLabel.MPKR, id_data,
                                                         randrkms, opened.prf_func),
                               None, key_spi(0)))  # fmt: skip
        traffic = tuple(
            fork_traffic_key(key, id_data, randrkms, opened.prf_func) for key in traffic
        )
        modifier = (
            identity_payload(IdRole.RESPONDER, resolve.responder),
            RandWithRole(RandRole.KMS, randrkms),
        )
    carried.extend(traffic)
    kemac = build_kemac(carried, keys, csb_id, timestamp.as_64_bits(), mac_alg=MacAlg.NULL)
    body = Message(
        header, (timestamp, identity_payload(IdRole.KMS, kms_identity), kemac, *modifier)
    )
    return bytes(append_verification(body, MAC, keys.auth_key, resolve.data))


# -- The Responder receives (RFC 6043 §4.2.3.6) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedTicket:
    """What the Responder learns from a verified RESOLVE_RESP."""

    mpki: bytes = field(repr=False)
    mpkr: bytes | None = field(repr=False)  # MPKr' when forking
    traffic_keys: tuple[KeyData, ...] = field(repr=False)
    responder_id_data: bytes | None
    randrkms: bytes | None = field(repr=False)


def process_resolve_resp(
    pending: PendingResolve,
    data: bytes,
    transfer: TransferInit,
    *,
    psk: bytes,
    now: float,
    skew: float = DEFAULT_SKEW,
) -> ResolvedTicket:
    """Verify a RESOLVE_RESP, then the pending TRANSFER_INIT with MPKi (RFC 6043 §4.2.3.6).

    With key forking also checks that the TRANSFER_INIT's V equals the Vi the
    ticket requester put in the Initiator Data.
    """
    message = parse_message(data, DataType.RESOLVE_RESP)
    if message.header.csb_id != pending.csb_id:
        raise AuthenticationFailed("RESOLVE_RESP answers another resolve")
    keys = message_keys(psk, pending.csb_id, Direction.RESPONSE, None, pending.randrr)
    verify(message, keys.auth_key, pending.data)
    check_fresh(find_timestamp(message), now, skew)
    forking = TicketFlags.I in transfer.ticket.flags
    mpki, mpkr, traffic = split_kemac_keys(open_message_kemac(message, keys), forking)
    id_data = randrkms = None
    if forking:
        modifier = message.find(IdentityWithRole, IdRole.RESPONDER)
        if modifier is None:
            raise MalformedMikey("forked RESOLVE_RESP lacks IDRr")
        id_data = modifier.data
        randrkms = find_rand(message, RandRole.KMS, "RANDRkms")

    transfer_keys = message_keys(mpki, transfer.message.header.csb_id, Direction.INITIAL,
                              transfer.randri, None)  # fmt: skip
    responder = transfer.responder if transfer.responder is not None else pending.responder
    verify(transfer.message, transfer_keys.auth_key,
           transfer.initiator.encode() + responder.encode(), excise_initiator_data=True)  # fmt: skip
    if forking:
        vi = next(
            (p for p in transfer.ticket.initiator_payloads() if isinstance(p, Verification)), None
        )
        v = transfer.message.payloads[-1]
        if vi is None or not isinstance(v, Verification) or not hmac.compare_digest(vi.mac, v.mac):
            raise AuthenticationFailed("TRANSFER_INIT was not built by the ticket's requester")
    return ResolvedTicket(mpki, mpkr, traffic, id_data, randrkms)
