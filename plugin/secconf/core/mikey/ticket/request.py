"""Ticket Request (RFC 6043 §4.2.1): REQUEST_INIT_PSK from a KMS user, REQUEST_RESP from the KMS.

The Initiator builds the REQUEST_INIT (:func:`build_request_init`) and checks
the answer (:func:`process_request_resp`); the KMS reads the request
(:class:`RequestInit`), decides the Ticket Policy it grants
(:func:`grant_policy`) and issues the ticket (:func:`issue_ticket`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ...errors import AuthenticationFailed, MalformedMikey, MikeyError, MikeyErrorNo, TicketRejected
from ..constants import DataType, IdRole, KeyDataType, MacAlg, RandRole, TicketType
from ..keys import Direction, append_verification, build_kemac, derive_mpk_pair, verify
from ..message import BaseTicketData, Message
from ..payloads import (
    CommonHeader,
    EmptyMap,
    KeyData,
    RandWithRole,
    SpiValidity,
    Ticket,
    TicketFlags,
    TicketPolicy,
)
from .base_ticket import build_base_ticket, ticket_rand
from .common import (
    RandomBytes,
    check_fresh,
    draw_random,
    find_timestamp,
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
from .policy import DesiredPolicy, PolicyView, policy_payloads
from .profile import (
    BASE_TICKET_SUBTYPE,
    BASE_TICKET_VERSION,
    DEFAULT_SKEW,
    KEY_BYTES,
    MAC,
    MAX_RECIPIENTS,
    MAX_TRAFFIC_KEYS,
    MIN_PSK_BYTES,
    OPTIONAL_FLAGS,
    PRF,
    PROFILE_FLAGS,
    RAND_BYTES,
    TRAFFIC_KEY_TYPES,
    check_profile_flags,
    message_keys,
)

# -- The Initiator asks (RFC 6043 §4.2.1.1-2) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A REQUEST_INIT_PSK on its way; keep it to check the REQUEST_RESP."""

    data: bytes = field(repr=False)
    csb_id: int
    randri: bytes = field(repr=False)
    initiator: str
    kms: str
    desired: DesiredPolicy


def build_request_init(
    *,
    initiator: str,
    kms: str,
    psk: bytes,
    desired: DesiredPolicy,
    now: float,
    random_bytes: RandomBytes,
) -> PendingRequest:
    """REQUEST_INIT_PSK = HDR, T, RANDRi, IDRi, IDRkms, TP, V (RFC 6043 §4.2.1.1-2)."""
    if len(psk) < MIN_PSK_BYTES:
        raise ValueError(f"PSK must be at least {MIN_PSK_BYTES} bytes")
    if not desired.recipients or len(desired.recipients) > MAX_RECIPIENTS:
        raise ValueError(f"a ticket needs 1..{MAX_RECIPIENTS} recipients")
    csb_id = new_csb_id(random_bytes)
    randri = draw_random(random_bytes, RAND_BYTES)
    # RFC 6043 §4.2.1.1: V flag 1, #CS 0, Empty map.
    header = CommonHeader(DataType.REQUEST_INIT_PSK, csb_id, EmptyMap(), True, PRF)
    policy = TicketPolicy(
        TicketType.MIKEY_BASE_TICKET,
        BASE_TICKET_SUBTYPE,
        BASE_TICKET_VERSION,
        PRF,
        desired.flags(),
        policy_payloads(
            kms=kms,
            initiator=initiator,
            valid_from=desired.valid_from,
            valid_until=desired.valid_until,
            recipients=desired.recipients,
            traffic_keys=desired.traffic_keys,
        ),
    )
    body = Message(
        header,
        (
            ntp_timestamp(now),
            RandWithRole(RandRole.INITIATOR, randri),
            identity_payload(IdRole.INITIATOR, initiator),
            identity_payload(IdRole.KMS, kms),
            policy,
        ),
    )
    keys = message_keys(psk, csb_id, Direction.INITIAL, randri, None)
    # RFC 6043 §5.5: MAC over REQUEST_INIT || Identity_i || Identity_kms.
    suffix = initiator.encode() + kms.encode()
    message = append_verification(body, MAC, keys.auth_key, suffix)
    return PendingRequest(bytes(message), csb_id, randri, initiator, kms, desired)


# -- The KMS grants and issues (RFC 6043 §4.2.1.4-5) -------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestInit:
    """A REQUEST_INIT_PSK as the KMS reads it: identities known, nothing verified yet."""

    data: bytes = field(repr=False)
    message: Message = field(repr=False)
    initiator: str
    kms: str | None
    randri: bytes = field(repr=False)
    policy: TicketPolicy

    @classmethod
    def read(cls, data: bytes) -> RequestInit:
        """Parse and check the structure; the KMS then looks up the initiator's PSK."""
        message, initiator, kms, randri = read_sent_to_kms(
            data, DataType.REQUEST_INIT_PSK, IdRole.INITIATOR, RandRole.INITIATOR
        )
        policy = message.find(TicketPolicy)
        if policy is None:
            raise MalformedMikey("REQUEST_INIT lacks a TP payload")
        return cls(bytes(data), message, initiator, kms, randri, policy)

    def verify(
        self, psk: bytes, *, kms_identity: str, now: float, skew: float = DEFAULT_SKEW
    ) -> None:
        """Check the MAC under *psk*, the addressed KMS and the timestamp (RFC 6043 §4.2.1.4)."""
        keys = message_keys(psk, self.message.header.csb_id, Direction.INITIAL, self.randri, None)
        verify_sent_to_kms(self.message, keys, self.initiator, self.kms, kms_identity, now, skew)

    @property
    def replay_token(self) -> bytes:
        """Must be new to the replay cache before the KMS answers (RFC 6043 §12.4)."""
        return replay_token("REQUEST_INIT", self.message, self.initiator, self.randri)


@dataclass(frozen=True, slots=True)
class GrantSettings:
    """The KMS's policy limits."""

    max_lifetime: float = 24 * 3600.0
    max_recipients: int = MAX_RECIPIENTS


@dataclass(frozen=True, slots=True)
class GrantedPolicy:
    """The Ticket Policy the KMS grants and the traffic keys it will put in the ticket."""

    policy: TicketPolicy
    traffic_keys: tuple[int, ...]
    #: Length in bytes of each traffic key (empty: all KEY_BYTES).
    traffic_key_bytes: tuple[int, ...] = ()
    #: SPI of each traffic key (empty: numbered from 1, the MPK being 0).
    traffic_key_spis: tuple[bytes, ...] = ()
    #: What the KMS changed from the desired policy or KEMAC (K is set iff not empty).
    changes: tuple[str, ...] = ()


#: Traffic key lengths the KMS grants as requested (128 and 256 bits); others become 256.
GRANTED_KEY_BYTES = frozenset({16, KEY_BYTES})


def grant_policy(request: RequestInit, settings: GrantSettings, now: float) -> GrantedPolicy:
    """The Ticket Policy the KMS grants for a verified request (RFC 6043 §4.2.1.5).

    The Initiator named in the policy is always the authenticated requester;
    validity is clamped to ``settings.max_lifetime``; flags outside the profile
    are set or cleared; duplicate recipients are dropped.  TRr and the IDRapp
    payloads are granted as asked (dropping IDRapp would authorize every
    application), requested traffic keys of 128 or 256 bits get that length.
    Every change to the desired Ticket Policy or KEMAC sets K and is named in
    :attr:`GrantedPolicy.changes` (§6.10: K says "the KMS changed the desired
    Ticket Policy or the desired KEMAC").  The desired policy's KEMAC only
    describes the requested keys; the granted policy never carries one (§6.10),
    which by itself is no change.
    """
    desired = request.policy
    if desired.ticket_type != TicketType.MIKEY_BASE_TICKET:
        raise MikeyError("only the MIKEY base ticket is issued", MikeyErrorNo.INVALID_TPPAR)
    view = PolicyView.of(desired.policy_payloads, desired.flags)
    if not view.recipients:
        raise MikeyError("the ticket policy names no recipient", MikeyErrorNo.INVALID_TPPAR)
    if len(view.recipients) > settings.max_recipients:
        raise MikeyError("too many recipients", MikeyErrorNo.INVALID_TPPAR)
    traffic = view.traffic_keys or (KeyDataType.TGK,)  # §4.2.1.5: default a single TGK
    if len(traffic) > MAX_TRAFFIC_KEYS or not set(traffic) <= TRAFFIC_KEY_TYPES:
        raise MikeyError("requested keys must be 1..4 TGK/GTGK", MikeyErrorNo.INVALID_TPPAR)
    key_bytes, spis, kemac_changed = _granted_keys(view.requested_keys, len(traffic))
    latest = now + settings.max_lifetime
    valid_until = min(view.valid_until if view.valid_until is not None else latest, latest)
    valid_from = view.valid_from
    if valid_until <= now or (valid_from is not None and valid_from >= valid_until):
        raise MikeyError("the requested validity period is empty", MikeyErrorNo.INVALID_TPPAR)
    recipients = tuple(dict.fromkeys(view.recipients))
    flags = PROFILE_FLAGS | (desired.flags & OPTIONAL_FLAGS)
    if TicketFlags.G not in desired.flags and set(traffic) == {KeyDataType.GTGK}:
        # A group-key ticket without Responder RAND (RFC 6043 §5.1.3): every recipient
        # derives the same TEK from the GTGK (never forked, §5.1.1).
        flags &= ~TicketFlags.G
    kms = view.kms or request.kms or ""
    changes = tuple(
        name
        for name, changed in (
            ("flags", flags != (desired.flags & ~TicketFlags.K)),
            ("IDRkms", view.kms != kms),
            ("IDRi", view.initiator != request.initiator),
            ("TRe", view.valid_until != valid_until),
            ("TRr", not view.rekey_interval_exact),
            ("KEMAC", kemac_changed),
            ("IDRr", recipients != view.recipients),
        )
        if changed
    )
    if changes:
        flags |= TicketFlags.K
    payloads = policy_payloads(
        kms=kms,
        initiator=request.initiator,
        valid_from=valid_from,
        valid_until=valid_until,
        recipients=recipients,
        rekey_interval=view.rekey_interval,
        applications=view.applications,
    )
    policy = TicketPolicy(TicketType.MIKEY_BASE_TICKET, BASE_TICKET_SUBTYPE,
                          BASE_TICKET_VERSION, PRF, flags, payloads)  # fmt: skip
    return GrantedPolicy(policy, tuple(traffic), key_bytes, spis, changes)


def _granted_keys(
    requested: Sequence[KeyData], count: int
) -> tuple[tuple[int, ...], tuple[bytes, ...], bool]:
    """Each traffic key's length and SPI, and whether they differ from the desired KEMAC (§6.10).

    A requested length of 128 or 256 bits and a requested SPI are granted;
    no SPI requested gets the KMS's own (index from 1).  Another length, a
    salt (the KMS issues none) or an interval validity (every key carries an
    SPI, §6.2.1) is changed, which the caller marks with K.
    """
    if not requested:
        return (KEY_BYTES,) * count, tuple(key_spi(i + 1).spi for i in range(count)), False
    lengths: list[int] = []
    spis: list[bytes] = []
    changed = False
    for index, key in enumerate(requested):
        length = len(key.key) if len(key.key) in GRANTED_KEY_BYTES else KEY_BYTES
        if isinstance(key.validity, SpiValidity) and key.validity.spi:
            spi = key.validity.spi
        else:
            spi = key_spi(index + 1).spi
            changed |= key.validity is not None
        changed |= length != len(key.key) or key.salt is not None
        lengths.append(length)
        spis.append(spi)
    return tuple(lengths), tuple(spis), changed


def issue_ticket(
    request: RequestInit,
    granted: GrantedPolicy,
    *,
    psk: bytes,
    kms_identity: str,
    tpk_id: bytes,
    tpk: bytes,
    ticket_id: bytes,
    now: float,
    random_bytes: RandomBytes,
) -> bytes:
    """REQUEST_RESP = HDR, T, IDRkms, TICKET, KEMAC, V (RFC 6043 §4.2.1.5).

    Draws the MPK, the base-ticket RAND and the traffic keys from
    *random_bytes*; *ticket_id* goes into the THDR so the KMS can revoke it.
    """
    policy = granted.policy
    forking = TicketFlags.I in policy.flags
    mpk = draw_random(random_bytes, KEY_BYTES)
    count = len(granted.traffic_keys)
    lengths = granted.traffic_key_bytes or (KEY_BYTES,) * count
    spis = granted.traffic_key_spis or tuple(key_spi(index + 1).spi for index in range(count))
    traffic = tuple(
        KeyData(key_type, draw_random(random_bytes, length), None, SpiValidity(spi))
        for key_type, length, spi in zip(granted.traffic_keys, lengths, spis, strict=True)
    )
    ticket = build_base_ticket(policy, mpk, traffic, tpk_id, tpk, ticket_id, now, random_bytes)
    rand = ticket_rand(ticket)
    mpki, mpkr = derive_mpk_pair(mpk, rand, policy.prf_func)

    csb_id = request.message.header.csb_id
    # RFC 6043 §4.2.1.5: version, PRF, CSB ID, #CS and map copied; V = 0; fresh T.
    header = CommonHeader(DataType.REQUEST_RESP, csb_id, request.message.header.cs_id_map,
                          False, PRF)  # fmt: skip
    timestamp = ntp_timestamp(now)
    keys = message_keys(psk, csb_id, Direction.RESPONSE, request.randri, None)
    carried = [KeyData(KeyDataType.MPK, mpki, None, key_spi(0))]
    if forking:
        carried.append(KeyData(KeyDataType.MPK, mpkr, None, key_spi(0)))
    carried.extend(traffic)
    # KEMAC = E(encr_key, MPKi || [MPKr] || {TEK|TGK|GTGK}), NULL MAC: V protects it.
    kemac = build_kemac(carried, keys, csb_id, timestamp.as_64_bits(), mac_alg=MacAlg.NULL)
    body = Message(header, (timestamp, identity_payload(IdRole.KMS, kms_identity), ticket, kemac))
    # RFC 6043 §5.5: MAC over REQUEST_RESP || REQUEST_INIT.
    return bytes(append_verification(body, MAC, keys.auth_key, request.data))


# -- The Initiator receives (RFC 6043 §4.2.1.6) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedTicket:
    """What an Initiator holds after a successful Ticket Request."""

    ticket: Ticket = field(repr=False)
    policy: PolicyView
    mpki: bytes = field(repr=False)
    mpkr: bytes | None = field(repr=False)
    traffic_keys: tuple[KeyData, ...] = field(repr=False)

    @property
    def ticket_id(self) -> bytes:
        return BaseTicketData.parse(self.ticket.ticket_data).header.data


def process_request_resp(
    pending: PendingRequest, data: bytes, *, psk: bytes, now: float, skew: float = DEFAULT_SKEW
) -> IssuedTicket:
    """Verify a REQUEST_RESP and extract ticket and keys (RFC 6043 §4.2.1.6)."""
    message = parse_message(data, DataType.REQUEST_RESP)
    if message.header.csb_id != pending.csb_id:
        raise AuthenticationFailed("REQUEST_RESP answers another request")
    keys = message_keys(psk, pending.csb_id, Direction.RESPONSE, pending.randri, None)
    verify(message, keys.auth_key, pending.data)
    check_fresh(find_timestamp(message), now, skew)
    ticket = message.find(Ticket)
    if ticket is None:
        raise MalformedMikey("REQUEST_RESP lacks a TICKET")
    check_profile_flags(ticket.flags)
    policy = PolicyView.of(ticket.policy_payloads, ticket.flags)
    # §4.2.1.6: the Initiator checks the granted policy is acceptable.
    if policy.initiator != pending.initiator:
        raise TicketRejected("granted ticket names another initiator")
    if set(policy.recipients) != set(pending.desired.recipients):
        raise TicketRejected("granted ticket does not name the requested recipients")
    forking = TicketFlags.I in ticket.flags
    mpki, mpkr, traffic = split_kemac_keys(open_message_kemac(message, keys), forking)
    return IssuedTicket(ticket, policy, mpki, mpkr, traffic)
