"""The Ticket Policy (RFC 6043 §6.10): what an Initiator asks for, and the fields secconf reads.

:class:`DesiredPolicy` is the Initiator's wish, :func:`policy_payloads` writes
TP Data in the §6.10 order and :class:`PolicyView` reads it back (from a TP or
a TICKET).  The KMS's decision on a request is :func:`.request.grant_policy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ...errors import MikeyError, MikeyErrorNo
from ..constants import EncrAlg, IdRole, KeyDataType, MacAlg, TsRole, TsType
from ..keys import MessageKeys, build_kemac, open_kemac
from ..payloads import IdentityWithRole, Kemac, KeyData, Payload, TicketFlags, TimestampWithRole
from .common import identity_payload, identity_text, key_spi, ntp_value, timestamp_seconds
from .profile import KEY_BYTES, MAX_RECIPIENTS, PROFILE_FLAGS, REQUIRED_FLAGS

#: A TP's KEMAC only describes the requested keys: NULL encryption, NULL MAC (§6.10).
_NULL_KEYS = MessageKeys(EncrAlg.NULL, MacAlg.NULL, b"", b"", b"")


@dataclass(frozen=True, slots=True)
class DesiredPolicy:
    """What an Initiator asks the KMS for (RFC 6043 §6.10 TP)."""

    recipients: tuple[str, ...]
    valid_until: float
    valid_from: float | None = None
    forking: bool = True
    responder_keys: bool = False
    reusable: bool = False
    traffic_keys: tuple[int, ...] = (KeyDataType.TGK,)
    #: G flag: a Responder RAND enters the traffic keys.  Off only for GTGK tickets
    #: (group keys, RFC 6043 §5.1.3): the KMS sets it again for any other ticket.
    responder_rand: bool = True

    def flags(self) -> TicketFlags:
        flags = PROFILE_FLAGS if self.responder_rand else REQUIRED_FLAGS
        if self.forking:
            flags |= TicketFlags.I
        if self.reusable:
            flags |= TicketFlags.J
        if self.responder_keys:
            flags |= TicketFlags.M
        return flags


@dataclass(frozen=True, slots=True)
class PolicyView:
    """The fields of a Ticket Policy secconf acts on."""

    flags: TicketFlags
    kms: str | None
    initiator: str | None
    valid_from: float | None
    valid_until: float | None
    recipients: tuple[str, ...]
    traffic_keys: tuple[int, ...]
    #: TRr: at most this many seconds between rekeyings (RFC 6043 §6.10), or None.
    rekey_interval: int | None = None
    #: TRr as sent: NTP-UTC-32, the type §6.10 asks for (a KMS converting sets K).
    rekey_interval_exact: bool = True
    #: IDRapp payloads: the authorized application IDs; none means every one (§6.10).
    applications: tuple[IdentityWithRole, ...] = ()
    #: The requested keys as the TP's KEMAC describes them (zero-filled key data).
    requested_keys: tuple[KeyData, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, payloads: Sequence[Payload], flags: TicketFlags) -> PolicyView:
        """Read TP Data: ``[IDRkms], [IDRi], [TRs], [TRe], [TRr], [KEMAC], {IDRapp}, (IDRr)``."""
        kms = initiator = None
        valid_from = valid_until = None
        rekey_interval: int | None = None
        rekey_exact = True
        recipients: list[str] = []
        applications: list[IdentityWithRole] = []
        requested: tuple[KeyData, ...] = ()
        for payload in payloads:
            if isinstance(payload, IdentityWithRole):
                if payload.role == IdRole.KMS:
                    kms = identity_text(payload)
                elif payload.role == IdRole.INITIATOR:
                    initiator = identity_text(payload)
                elif payload.role == IdRole.RESPONDER:
                    recipients.append(identity_text(payload))
                elif payload.role == IdRole.APPLICATION:
                    applications.append(payload)  # implementation specific: kept as sent
            elif isinstance(payload, TimestampWithRole):
                if payload.role == TsRole.START_OF_VALIDITY:
                    valid_from = timestamp_seconds(payload)
                elif payload.role == TsRole.END_OF_VALIDITY:
                    valid_until = timestamp_seconds(payload)
                elif payload.role == TsRole.REKEYING_INTERVAL:
                    rekey_interval, rekey_exact = _rekey_interval(payload)
            elif isinstance(payload, Kemac):
                # In a TP the KEMAC only describes requested keys: NULL/NULL, zero-filled.
                if payload.encr_alg != EncrAlg.NULL or payload.mac_alg != MacAlg.NULL:
                    raise MikeyError(
                        "TP KEMAC must use NULL algorithms", MikeyErrorNo.INVALID_TPPAR
                    )
                _, requested = open_kemac(payload, _NULL_KEYS, 0, bytes(8))
        if len(recipients) > MAX_RECIPIENTS:
            raise MikeyError(f"more than {MAX_RECIPIENTS} recipients", MikeyErrorNo.INVALID_TPPAR)
        traffic = tuple(key.key_type for key in requested)
        return cls(flags, kms, initiator, valid_from, valid_until, tuple(recipients), traffic,
                   rekey_interval, rekey_exact, tuple(applications), requested)  # fmt: skip

    def covers(self, now: float) -> bool:
        """True while *now* is inside the validity period."""
        after_start = self.valid_from is None or now >= self.valid_from
        return after_start and (self.valid_until is None or now <= self.valid_until)


def _rekey_interval(payload: TimestampWithRole) -> tuple[int, bool]:
    """TRr in seconds: "the integer part of the timestamp" (RFC 6043 §6.10), and whether NTP-UTC-32."""
    if payload.ts_type == TsType.NTP_UTC_32:
        return payload.value, True
    if payload.ts_type in (TsType.NTP_UTC, TsType.NTP):
        return payload.value >> 32, False
    raise MikeyError("TRr must be an NTP-UTC-32 interval", MikeyErrorNo.INVALID_TPPAR)


def policy_payloads(
    *,
    kms: str,
    initiator: str,
    valid_from: float | None,
    valid_until: float,
    recipients: Sequence[str],
    traffic_keys: Sequence[int] = (),
    rekey_interval: int | None = None,
    applications: Sequence[IdentityWithRole] = (),
) -> tuple[Payload, ...]:
    """TP Data, in the RFC 6043 §6.10 order: [IDRkms], [IDRi], [TRs], [TRe], [TRr], [KEMAC], {IDRapp}, (IDRr)."""
    payloads: list[Payload] = [
        identity_payload(IdRole.KMS, kms),
        identity_payload(IdRole.INITIATOR, initiator),
    ]
    if valid_from is not None:
        payloads.append(
            TimestampWithRole(TsRole.START_OF_VALIDITY, TsType.NTP_UTC, ntp_value(valid_from))
        )
    payloads.append(
        TimestampWithRole(TsRole.END_OF_VALIDITY, TsType.NTP_UTC, ntp_value(valid_until))
    )
    if rekey_interval is not None:
        payloads.append(
            TimestampWithRole(TsRole.REKEYING_INTERVAL, TsType.NTP_UTC_32, rekey_interval)
        )
    if traffic_keys:
        described = [
            KeyData(t, bytes(KEY_BYTES), None, key_spi(i + 1)) for i, t in enumerate(traffic_keys)
        ]
        payloads.append(build_kemac(described, _NULL_KEYS, 0, bytes(8), mac_alg=MacAlg.NULL))
    payloads.extend(applications)
    payloads.extend(identity_payload(IdRole.RESPONDER, recipient) for recipient in recipients)
    return tuple(payloads)
