"""The MIKEY base ticket (RFC 6043 Appendix A): the KMS seals it, and opens it again to resolve.

Only the KMS holds the Ticket Protection Key (mode 1, §4.1.1): it builds the
Ticket Data when it issues a ticket (:func:`.request.issue_ticket`) and
authenticates and decrypts it when a Responder asks to resolve it
(:func:`open_ticket`, then :mod:`.resolve`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...errors import AuthenticationFailed, MikeyError, TicketRejected
from ..constants import IdRole, IdType, KeyDataType, MacAlg, TicketType
from ..keys import (
    BASE_TICKET_CSB_ID,
    base_ticket_keys,
    build_kemac,
    derive_mpk_pair,
    open_kemac,
    protect_base_ticket,
    verify_base_ticket,
)
from ..message import BaseTicketData
from ..payloads import (
    IdentityWithRole,
    Kemac,
    KeyData,
    Rand,
    Ticket,
    TicketHeader,
    TicketPolicy,
    Timestamp,
    Verification,
)
from .common import RandomBytes, draw_random, key_spi, ntp_timestamp
from .policy import PolicyView
from .profile import (
    BASE_TICKET_SUBTYPE,
    BASE_TICKET_VERSION,
    ENCR,
    MAC,
    PRF,
    RAND_BYTES,
    check_profile_flags,
)


def build_base_ticket(
    policy: TicketPolicy,
    mpk: bytes,
    traffic: Sequence[KeyData],
    tpk_id: bytes,
    tpk: bytes,
    ticket_id: bytes,
    now: float,
    random_bytes: RandomBytes,
) -> Ticket:
    """The TICKET for *policy* holding *mpk* and *traffic*, sealed under the TPK."""
    # RFC 6043 App. A.1: Ticket Data = THDR, T, RAND, KEMAC, [IDRpsk], V.
    rand = draw_random(random_bytes, RAND_BYTES)
    issued = ntp_timestamp(now)
    keys = base_ticket_keys(tpk, rand, ENCR, MAC, policy.prf_func)
    content = [KeyData(KeyDataType.MPK, mpk, None, key_spi(0)), *traffic]
    kemac = build_kemac(content, keys, BASE_TICKET_CSB_ID, issued.as_64_bits(), mac_alg=MacAlg.NULL)
    ticket_data = BaseTicketData(
        TicketHeader(ticket_id),
        (
            issued,
            Rand(rand),
            kemac,
            IdentityWithRole(IdRole.PRE_SHARED_KEY, IdType.BYTE_STRING, tpk_id),
            Verification(MAC, bytes(32)),
        ),
    )
    unsigned = Ticket(
        policy.ticket_type,
        policy.subtype,
        policy.version,
        policy.prf_func,
        policy.flags,
        policy.policy_payloads,
        bytes(ticket_data),
    )
    return protect_base_ticket(unsigned, keys.auth_key)


def ticket_rand(ticket: Ticket) -> bytes:
    """The RAND of a base ticket's Ticket Data: MPKi and MPKr derive from it (App. A.2.2)."""
    found = BaseTicketData.parse(ticket.ticket_data).find(Rand)
    if found is None:
        raise TicketRejected("base ticket lacks its RAND")
    return found.rand


@dataclass(frozen=True, slots=True)
class OpenedTicket:
    """A base ticket the KMS has authenticated and decrypted."""

    ticket_id: bytes
    policy: PolicyView
    mpk: bytes = field(repr=False)
    traffic_keys: tuple[KeyData, ...] = field(repr=False)
    rand: bytes = field(repr=False)
    prf_func: int

    def mpk_pair(self) -> tuple[bytes, bytes]:
        """(MPKi, MPKr) (RFC 6043 App. A.2.2)."""
        return derive_mpk_pair(self.mpk, self.rand, self.prf_func)


def ticket_tpk_id(ticket: Ticket) -> bytes | None:
    """The IDRpsk value naming the TPK a base ticket was issued under, if readable."""
    try:
        found = BaseTicketData.parse(ticket.ticket_data).find(IdentityWithRole)
    except MikeyError:
        return None
    return None if found is None else found.data


def open_ticket(ticket: Ticket, tpk_for: Callable[[bytes], bytes | None]) -> OpenedTicket:
    """Authenticate and decrypt a MIKEY base ticket (RFC 6043 App. A).

    *tpk_for* maps the IDRpsk value in the Ticket Data to the TPK, or ``None``.
    Every failure is ERR "Invalid TICKET" (14).
    """
    if (ticket.ticket_type, ticket.subtype, ticket.version) != (
        TicketType.MIKEY_BASE_TICKET, BASE_TICKET_SUBTYPE, BASE_TICKET_VERSION,
    ):  # fmt: skip
        raise TicketRejected("not a MIKEY base ticket this KMS issues")
    if ticket.prf_func != PRF:
        raise TicketRejected("ticket PRF is not PRF-HMAC-SHA-256")
    check_profile_flags(ticket.flags)
    try:
        data = BaseTicketData.parse(ticket.ticket_data)
    except MikeyError:
        raise TicketRejected("Ticket Data does not parse") from None
    tpk_id = data.find(IdentityWithRole)
    tpk = tpk_for(tpk_id.data) if tpk_id is not None else None
    if tpk is None:
        raise TicketRejected("ticket was not issued under a known TPK")
    rand = ticket_rand(ticket)
    keys = base_ticket_keys(tpk, rand, ENCR, MAC, ticket.prf_func)
    try:
        verify_base_ticket(ticket, keys.auth_key)
    except AuthenticationFailed:
        raise TicketRejected("ticket MAC does not verify") from None
    kemac = data.find(Kemac)
    issued = data.find(Timestamp)
    if kemac is None or issued is None:
        raise TicketRejected("Ticket Data lacks KEMAC or T")
    _, content = open_kemac(kemac, keys, BASE_TICKET_CSB_ID, issued.as_64_bits())
    mpks = [key for key in content if key.key_type == KeyDataType.MPK]
    traffic = tuple(key for key in content if key.key_type != KeyDataType.MPK)
    if len(mpks) != 1 or not traffic:
        raise TicketRejected("ticket KEMAC does not hold one MPK and traffic keys")
    policy = PolicyView.of(ticket.policy_payloads, ticket.flags)
    return OpenedTicket(data.header.data, policy, mpks[0].key, traffic, rand, ticket.prf_func)
