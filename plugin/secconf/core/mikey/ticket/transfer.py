"""Ticket Transfer (RFC 6043 §4.2.2): TRANSFER_INIT from the Initiator, TRANSFER_RESP from the Responder.

The Initiator sends its ticket (:func:`build_transfer_init`) and checks the
answer (:func:`process_transfer_resp`).  The Responder reads the TRANSFER_INIT
(:class:`TransferInit`), has the ticket resolved by the KMS (:mod:`.resolve`)
and answers with the keys it learnt (:func:`build_transfer_resp`).  Both sides
derive the SRTP master keys of each crypto session (§5.1.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ...errors import AuthenticationFailed, MalformedMikey, MikeyError, MikeyErrorNo, TicketRejected
from ..constants import DataType, IdRole, IdType, MacAlg, RandRole, TicketType
from ..keys import (
    Direction,
    ForkKeyLabel,
    SrtpMasterKey,
    append_verification,
    build_initiator_data,
    build_kemac,
    fork_key,
    initiator_data_auth_key,
    ticket_srtp_master_key,
    verify,
)
from ..message import Message
from ..payloads import (
    CommonHeader,
    GenericIdEntry,
    GenericIdMap,
    IdentityWithRole,
    Kemac,
    KeyData,
    Payload,
    RandWithRole,
    SecurityPolicy,
    SpiValidity,
    Ticket,
    TicketFlags,
    Verification,
)
from ..srtp import DEFAULT_SRTP_SUITE, policy_for_suite, policy_key_lengths, suite_for_policy
from .common import (
    RandomBytes,
    check_fresh,
    draw_random,
    find_identity,
    find_rand,
    find_timestamp,
    fork_traffic_key,
    identity_payload,
    identity_text,
    new_csb_id,
    ntp_timestamp,
    open_message_kemac,
    parse_message,
    replay_token,
)
from .policy import PolicyView
from .profile import DEFAULT_SKEW, MAC, PRF, RAND_BYTES, check_profile_flags, message_keys
from .request import IssuedTicket

if TYPE_CHECKING:
    # The Responder answers with what the KMS resolved; resolve.py reads TransferInit
    # (RFC 6043 §4.2.3), so a runtime import here would be circular.
    from .resolve import ResolvedTicket


# -- The Initiator's side (RFC 6043 §4.2.2.1, §4.2.2.4) ----------------------------------------


@dataclass(frozen=True, slots=True)
class PendingTransfer:
    """A TRANSFER_INIT on its way; keep it to check the TRANSFER_RESP."""

    data: bytes = field(repr=False)
    csb_id: int
    randri: bytes = field(repr=False)
    initiator: str
    responder: str
    issued: IssuedTicket = field(repr=False)


def build_transfer_init(
    issued: IssuedTicket,
    *,
    initiator: str,
    responder: str,
    sessions: Sequence[GenericIdEntry],
    policies: Sequence[SecurityPolicy] = (),
    now: float,
    random_bytes: RandomBytes,
    csb_id: int | None = None,
    randri: bytes | None = None,
) -> PendingTransfer:
    """TRANSFER_INIT = HDR, T, RANDRi, IDRi, IDRr, {SP}, TICKET, V (RFC 6043 §4.2.2.1).

    *sessions* are the crypto sessions (GENERIC-ID map entries, RFC 6043
    §6.1.1).  With key forking the TICKET gets Initiator Data ``Vi, Vr``.
    *csb_id* and *randri* are drawn from *random_bytes* unless given: a group
    epoch fixes them so that every recipient derives the same TEK
    (:mod:`secconf.core.mikey.group`).
    """
    if csb_id is None:
        csb_id = new_csb_id(random_bytes)
    if randri is None:
        randri = draw_random(random_bytes, RAND_BYTES)
    elif len(randri) != RAND_BYTES:
        raise ValueError(f"RANDRi must be {RAND_BYTES} bytes")
    flags = issued.ticket.flags
    # RFC 6043 §4.2.2.1: V flag = F flag; GENERIC-ID map.
    header = CommonHeader(DataType.TRANSFER_INIT, csb_id, GenericIdMap(tuple(sessions)),
                          TicketFlags.F in flags, PRF)  # fmt: skip
    ticket = replace(issued.ticket, initiator_data=b"")
    body = Message(
        header,
        (
            ntp_timestamp(now),
            RandWithRole(RandRole.INITIATOR, randri),
            identity_payload(IdRole.INITIATOR, initiator),
            identity_payload(IdRole.RESPONDER, responder),
            *policies,
            ticket,
        ),
    )
    keys = message_keys(issued.mpki, csb_id, Direction.INITIAL, randri, None)
    suffix = initiator.encode() + responder.encode()
    message = append_verification(body, MAC, keys.auth_key, suffix, excise_initiator_data=True)
    if TicketFlags.I in flags:
        if issued.mpkr is None:
            raise ValueError("a forking ticket needs MPKr")
        # RFC 6043 §6.10: Initiator Data = Vi (copy of this V), Vr keyed from MPKr.
        vi = message.payloads[-1]
        if not isinstance(vi, Verification):  # pragma: no cover - built just above
            raise MalformedMikey("V")
        auth = initiator_data_auth_key(issued.mpkr, MAC, issued.ticket.prf_func)
        with_data = replace(ticket, initiator_data=build_initiator_data(vi, auth))
        payloads = tuple(with_data if p is ticket else p for p in message.payloads)
        message = Message(message.header, payloads)
    return PendingTransfer(bytes(message), csb_id, randri, initiator, responder, issued)


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What the Initiator learns from a verified TRANSFER_RESP."""

    responder: str
    srtp_keys: dict[int, SrtpMasterKey] = field(repr=False)
    sessions: tuple[GenericIdEntry, ...]
    delivered_keys: tuple[KeyData, ...] = field(repr=False)
    #: The security policy each crypto session (CS ID) runs under, as the response chose it.
    policies: dict[int, SecurityPolicy] = field(default_factory=dict)
    #: The answering identity is no recipient named in the ticket (e.g. a member of a
    #: group the ticket names): accepted because the KMS forked the keys for it.
    kms_vouched: bool = False
    #: The traffic-generating keys as the Responder holds them (forked, RFC 6043 §5.1.1,
    #: when the ticket's I flag is set): what further keys of the exchange derive from.
    traffic_keys: tuple[KeyData, ...] = field(default=(), repr=False)


#: Checks a policy the Responder generated; raises (ERR 9/10) to refuse it (RFC 6043 §4.2.2.4).
PolicyCheck = Callable[[SecurityPolicy], object]


def process_transfer_resp(
    pending: PendingTransfer,
    data: bytes,
    *,
    now: float,
    skew: float = DEFAULT_SKEW,
    accept_policy: PolicyCheck = suite_for_policy,
) -> TransferResult:
    """Verify a TRANSFER_RESP; derive forked keys and SRTP keys (RFC 6043 §4.2.2.4, §5.1).

    Each crypto session must name exactly one policy (§6.1.1), from the
    response's SP payloads or the TRANSFER_INIT's.  A policy the Responder
    generated (one the Initiator did not send) must pass *accept_policy*
    (default: an SRTP suite secconf's media runs, else ERR 10 "Invalid SPpar");
    the SRTP master key and salt then have the lengths it asks for, so a
    Responder's AES-CM-256 policy gives a 256-bit key, never a silent 128-bit one.

    The answering identity (IDRr) must be a recipient named in the ticket, or,
    with key forking, any identity: RFC 6043 §5.5 lets it differ (a member of
    a group the ticket names), and the MAC under MPKr' forked with that IDRr
    proves the KMS resolved the ticket for it (§4.2.3.5).  Without forking
    every recipient knows MPKi, so an unnamed identity is refused.
    """
    message = parse_message(data, DataType.TRANSFER_RESP)
    if message.header.csb_id != pending.csb_id:
        raise AuthenticationFailed("TRANSFER_RESP answers another transfer")
    ticket = pending.issued.ticket
    flags = ticket.flags
    randrr = find_rand(message, RandRole.RESPONDER, "RANDRr") if TicketFlags.G in flags else None
    responder_payload = message.find(IdentityWithRole, IdRole.RESPONDER)
    responder = identity_text(responder_payload) if responder_payload else pending.responder
    traffic = pending.issued.traffic_keys
    mpk = pending.issued.mpki
    if TicketFlags.I in flags:
        if responder_payload is None or pending.issued.mpkr is None:
            raise MalformedMikey("a forked TRANSFER_RESP needs IDRr and RANDRkms")
        randrkms = find_rand(message, RandRole.KMS, "RANDRkms")
        # RFC 6043 §5.1.1: MPKr' and TGK' from the modifier (IDRr data, RANDRkms).
        mpk = fork_key(pending.issued.mpkr, ForkKeyLabel.MPKR, responder_payload.data, randrkms,
                       ticket.prf_func)  # fmt: skip
        traffic = tuple(fork_traffic_key(key, responder_payload.data, randrkms, ticket.prf_func)
                        for key in traffic)  # fmt: skip
    keys = message_keys(mpk, pending.csb_id, Direction.RESPONSE, pending.randri, randrr)
    verify(message, keys.auth_key, pending.data)
    check_fresh(find_timestamp(message), now, skew)
    kms_vouched = responder not in pending.issued.policy.recipients
    if kms_vouched and TicketFlags.I not in flags:
        raise TicketRejected("the answering responder is not among the ticket's recipients")
    delivered: tuple[KeyData, ...] = ()
    if message.find(Kemac) is not None:
        if TicketFlags.M not in flags:
            raise MikeyError("responder keys are forbidden by the ticket (M = 0)",
                             MikeyErrorNo.INVALID_TPPAR)  # fmt: skip
        delivered = open_message_kemac(message, keys)
    sessions = _sessions(message)
    policies = _response_policies(pending, message, sessions, accept_policy)
    srtp = _srtp_keys(traffic, sessions, pending.randri, randrr, flags, policies)
    return TransferResult(
        responder, srtp, sessions, delivered, policies, kms_vouched, tuple(traffic)
    )


def _response_policies(
    pending: PendingTransfer,
    message: Message,
    sessions: Sequence[GenericIdEntry],
    accept_policy: PolicyCheck,
) -> dict[int, SecurityPolicy]:
    """The policy of each crypto session of a TRANSFER_RESP (RFC 6043 §6.1.1, §4.2.2.4)."""
    offered = {sp.policy_no: sp for sp in Message.parse(pending.data).find_all(SecurityPolicy)}
    answered = {sp.policy_no: sp for sp in message.find_all(SecurityPolicy)}
    chosen: dict[int, SecurityPolicy] = {}
    for entry in sessions:
        # §6.1.1: "In response messages, #P SHALL always be exactly 1."
        if len(entry.policies) != 1:
            raise MikeyError(f"crypto session {entry.cs_id} names {len(entry.policies)} "
                             "policies; a response names exactly one", MikeyErrorNo.INVALID_SP)  # fmt: skip
        number = entry.policies[0]
        # §6.1.1: "the policy_no may refer to a SP payload in the initial message".
        policy = answered.get(number, offered.get(number))
        if policy is None:
            raise MikeyError(f"crypto session {entry.cs_id} names policy {number}, "
                             "which no SP payload defines", MikeyErrorNo.INVALID_SP)  # fmt: skip
        if policy != offered.get(number):
            # RFC 6043 §4.2.2.4 (RFC 3830 §4.2.2): check Responder-generated policies.
            accept_policy(policy)
        if policy.prot_type != entry.prot_type:
            raise MikeyError("policy and crypto session name different protocols",
                             MikeyErrorNo.INVALID_SP)  # fmt: skip
        chosen[entry.cs_id] = policy
    return chosen


# -- Both sides: the crypto sessions and their SRTP keys (§6.1.1, §5.1.3) ----------------------


def _sessions(message: Message) -> tuple[GenericIdEntry, ...]:
    cs_map = message.header.cs_id_map
    if not isinstance(cs_map, GenericIdMap):
        raise MalformedMikey("Transfer messages use the GENERIC-ID map (RFC 6043 §6.1)")
    return cs_map.entries


def _srtp_keys(
    traffic: Sequence[KeyData],
    sessions: Sequence[GenericIdEntry],
    randri: bytes,
    randrr: bytes | None,
    flags: TicketFlags,
    policies: dict[int, SecurityPolicy],
) -> dict[int, SrtpMasterKey]:
    # RFC 6043 §5.1.3: TEK per CS from the first TGK/GTGK; RANDRi iff H, RANDRr iff G;
    # RFC 3830 §4.1.3: as long as the crypto session's policy asks.
    tgk = traffic[0]
    use_ri = randri if TicketFlags.H in flags else None
    use_rr = randrr if TicketFlags.G in flags else None
    keys: dict[int, SrtpMasterKey] = {}
    for entry in sessions:
        key_bytes, salt_bytes = policy_key_lengths(policies[entry.cs_id])
        keys[entry.cs_id] = ticket_srtp_master_key(
            tgk, entry.cs_id, use_ri, use_rr, PRF, 8 * key_bytes, 8 * salt_bytes
        )
    return keys


# -- The Responder's side (RFC 6043 §4.2.2.2, §4.2.2.3) ----------------------------------------


@dataclass(frozen=True, slots=True)
class TransferInit:
    """A TRANSFER_INIT as a Responder reads it before the ticket is resolved."""

    data: bytes = field(repr=False)
    message: Message = field(repr=False)
    ticket: Ticket = field(repr=False)
    policy: PolicyView
    initiator: str
    responder: str | None
    randri: bytes = field(repr=False)

    @classmethod
    def read(cls, data: bytes) -> TransferInit:
        """Parse and check structure (no key known yet, so nothing is authenticated)."""
        message = parse_message(data, DataType.TRANSFER_INIT)
        find_timestamp(message)
        _sessions(message)
        ticket = message.find(Ticket)
        if ticket is None:
            raise MalformedMikey("TRANSFER_INIT lacks a TICKET")
        initiator = find_identity(message, IdRole.INITIATOR)
        if initiator is None:
            raise MikeyError("TRANSFER_INIT lacks IDRi (secconf profile)", MikeyErrorNo.INVALID_ID)
        policy = PolicyView.of(ticket.policy_payloads, ticket.flags)
        randri = find_rand(message, RandRole.INITIATOR, "RANDRi")
        responder = find_identity(message, IdRole.RESPONDER)
        return cls(bytes(data), message, ticket, policy, initiator, responder, randri)

    def early_check(self, own_identity: str, *, now: float, skew: float = DEFAULT_SKEW) -> None:
        """Reject without asking the KMS what can be seen now (RFC 6043 §4.2.2.2)."""
        check_fresh(find_timestamp(self.message), now, skew)
        if self.ticket.ticket_type != TicketType.MIKEY_BASE_TICKET:
            raise TicketRejected("unknown ticket type")
        check_profile_flags(self.ticket.flags)
        if not self.policy.covers(now):
            raise TicketRejected("ticket is not valid now")
        if own_identity not in self.policy.recipients:
            raise TicketRejected("this responder is not among the ticket's recipients")
        if self.policy.initiator != self.initiator:
            raise TicketRejected("TRANSFER_INIT is not from the ticket's initiator")

    @property
    def replay_token(self) -> bytes:
        """Must be new to the responder's replay cache (RFC 6043 §12.4)."""
        return replay_token("TRANSFER_INIT", self.message, self.initiator, self.randri)

    @property
    def sessions(self) -> tuple[GenericIdEntry, ...]:
        return _sessions(self.message)

    @property
    def security_policies(self) -> tuple[SecurityPolicy, ...]:
        return tuple(self.message.find_all(SecurityPolicy))


def build_transfer_resp(
    transfer: TransferInit,
    resolved: ResolvedTicket,
    *,
    responder: str,
    sessions: Sequence[GenericIdEntry],
    now: float,
    random_bytes: RandomBytes,
    responder_keys: Sequence[KeyData] = (),
    policies: Sequence[SecurityPolicy] = (),
) -> tuple[bytes, dict[int, SrtpMasterKey]]:
    """TRANSFER_RESP = HDR, T, RANDRr, IDRr, [RANDRkms], {SP}, [KEMAC], V (RFC 6043 §4.2.2.3).

    *sessions* is the updated crypto-session map (the Responder's SSRCs
    added).  *responder_keys* (e.g. the conference's group key) go in a KEMAC,
    which the ticket must allow (M flag).  *policies* are SP payloads the
    Responder generates (numbers distinct from the Initiator's).  Returns the
    message and the SRTP master keys per CS ID.

    The map goes out as §6.1.1 asks of a response, whatever the caller passed:
    each crypto session names exactly one policy and carries an SPI
    (:func:`_response_map`).
    """
    flags = transfer.ticket.flags
    if responder_keys and TicketFlags.M not in flags:
        raise ValueError("the ticket forbids responder keys (M = 0)")
    sessions, sent_policies, chosen = _response_map(
        transfer, sessions, policies, resolved.traffic_keys, responder_keys
    )
    header = CommonHeader(DataType.TRANSFER_RESP, transfer.message.header.csb_id,
                          GenericIdMap(sessions), False, PRF)  # fmt: skip
    timestamp = ntp_timestamp(now)
    randrr = draw_random(random_bytes, RAND_BYTES) if TicketFlags.G in flags else None
    payloads: list[Payload] = [timestamp]
    if randrr is not None:
        payloads.append(RandWithRole(RandRole.RESPONDER, randrr))
    # §4.2.2.3: echo IDRr and RANDRkms from the RESOLVE_RESP.
    if resolved.responder_id_data is not None:
        payloads.append(IdentityWithRole(IdRole.RESPONDER, IdType.URI, resolved.responder_id_data))
    else:
        payloads.append(identity_payload(IdRole.RESPONDER, responder))
    if resolved.randrkms is not None:
        payloads.append(RandWithRole(RandRole.KMS, resolved.randrkms))
    payloads.extend(sent_policies)
    mpk = resolved.mpkr if TicketFlags.I in flags and resolved.mpkr else resolved.mpki
    keys = message_keys(mpk, header.csb_id, Direction.RESPONSE, transfer.randri, randrr)
    if responder_keys:
        payloads.append(build_kemac(responder_keys, keys, header.csb_id, timestamp.as_64_bits(),
                                    mac_alg=MacAlg.NULL))  # fmt: skip
    message = append_verification(Message(header, tuple(payloads)), MAC, keys.auth_key,
                                  transfer.data)  # fmt: skip
    srtp = _srtp_keys(resolved.traffic_keys, sessions, transfer.randri, randrr, flags, chosen)
    return bytes(message), srtp


def _response_map(
    transfer: TransferInit,
    sessions: Sequence[GenericIdEntry],
    policies: Sequence[SecurityPolicy],
    traffic_keys: Sequence[KeyData],
    responder_keys: Sequence[KeyData],
) -> tuple[tuple[GenericIdEntry, ...], tuple[SecurityPolicy, ...], dict[int, SecurityPolicy]]:
    """The crypto sessions of a response, the SP payloads to send and each session's policy.

    RFC 6043 §6.1.1 (and §4.2.2.3): "In response messages, #P SHALL always be
    exactly 1" and the SPI, which "MAY be omitted in the initial message",
    "MUST be provided in the response message".  So, per session:

    * policy: the first of its numbers that an SP payload (the Initiator's or
      *policies*) defines; with none, the first of *policies*, else the
      Initiator's first SP, else a new SP stating RFC 3830's defaults
      (AES-CM-128, HMAC-SHA-1-80), sent in the response;
    * SPI: kept if given; else the SPI of the key the session is keyed with:
      for a session the Responder added while delivering keys, the first
      delivered key (the conference group key), otherwise the first traffic
      key of the ticket (its TEK comes from it, §5.1.3).
    """
    offered = {sp.policy_no: sp for sp in transfer.security_policies}
    own = {sp.policy_no: sp for sp in policies}
    if offered.keys() & own.keys():
        raise ValueError("the Responder's SP numbers must differ from the Initiator's")
    sent = list(policies)

    def default_policy() -> int:
        if own:
            return next(iter(own))
        if offered:
            return next(iter(offered))
        number = next(n for n in range(256) if n not in offered)
        own[number] = policy_for_suite(number, DEFAULT_SRTP_SUITE)
        sent.append(own[number])
        return number

    initial = {entry.cs_id for entry in transfer.sessions}
    out: list[GenericIdEntry] = []
    chosen: dict[int, SecurityPolicy] = {}
    for entry in sessions:
        known = [n for n in entry.policies if n in own or n in offered]
        number = known[0] if known else default_policy()
        keyed_by = responder_keys if responder_keys and entry.cs_id not in initial else traffic_keys
        spi = entry.spi or _first_spi(keyed_by)
        out.append(replace(entry, policies=(number,), spi=spi))
        chosen[entry.cs_id] = own.get(number) or offered[number]
    return tuple(out), tuple(sent), chosen


def _first_spi(keys: Sequence[KeyData]) -> bytes:
    for key in keys:
        if isinstance(key.validity, SpiValidity) and key.validity.spi:
            return key.validity.spi
    # secconf's KMS puts an SPI on every key (§6.2.1); another KMS may not.
    raise MikeyError("no key carries an SPI to name in the response (RFC 6043 §6.1.1)")
