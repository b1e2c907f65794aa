"""What every MIKEY-TICKET exchange shares: randomness, timestamps, identities, message checks.

Each helper is one step several exchanges take the same way (building an IDR,
checking a T against the clock, parsing a message of the expected type under
the profile, the replay token of an initial message, the KEMAC of a response,
key forking); the exchanges (:mod:`.request`, :mod:`.transfer`,
:mod:`.resolve`) call them and cite the RFC step each one serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from ...errors import InvalidTimestamp, MalformedMikey, MikeyError, MikeyErrorNo, UnsupportedMikey
from ..constants import DataType, IdRole, IdType, KeyDataType, MacAlg, RandRole, TsType
from ..keys import ForkKeyLabel, MessageKeys, fork_key, open_kemac, verify
from ..message import Message
from ..payloads import (
    IdentityWithRole,
    Kemac,
    KeyData,
    RandWithRole,
    SpiValidity,
    Timestamp,
    TimestampWithRole,
    Verification,
)
from .profile import ENCR, MAC, MAX_IDENTITY_BYTES, PRF, TRAFFIC_KEY_TYPES

#: The caller's source of randomness (``secrets.token_bytes`` in production).
RandomBytes = Callable[[int], bytes]

_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (RFC 5905)


# -- Randomness ------------------------------------------------------------------------------


def draw_random(random_bytes: RandomBytes, count: int) -> bytes:
    """*count* bytes from *random_bytes*, refusing a source that returns anything else."""
    value = random_bytes(count)
    if not isinstance(value, bytes) or len(value) != count:
        raise ValueError(f"random_bytes must return {count} bytes")
    return value


def new_csb_id(random_bytes: RandomBytes) -> int:
    """A random CSB ID for a new initial message (RFC 3830 §6.1)."""
    return int.from_bytes(draw_random(random_bytes, 4), "big")


# -- Timestamps (RFC 3830 §6.6, §5.4) ---------------------------------------------------------


def ntp_timestamp(now: float) -> Timestamp:
    """A T payload of type NTP-UTC for Unix time *now* (RFC 3830 §6.6)."""
    return Timestamp(TsType.NTP_UTC, ntp_value(now))


def ntp_value(now: float) -> int:
    """The 64-bit NTP-UTC value of Unix time *now*."""
    return int((now + _NTP_UNIX_OFFSET) * (1 << 32)) & ((1 << 64) - 1)


def timestamp_seconds(timestamp: Timestamp | TimestampWithRole) -> float:
    """Unix seconds of an NTP-UTC, NTP or NTP-UTC-32 timestamp; COUNTER has no time."""
    if timestamp.ts_type in (TsType.NTP_UTC, TsType.NTP):
        return timestamp.value / (1 << 32) - _NTP_UNIX_OFFSET
    if timestamp.ts_type == TsType.NTP_UTC_32:
        return float(timestamp.value - _NTP_UNIX_OFFSET)
    raise InvalidTimestamp("a COUNTER timestamp carries no time (secconf profile: NTP-UTC)")


def check_fresh(timestamp: Timestamp, now: float, skew: float) -> None:
    """RFC 3830 §5.4: a message outside the allowed clock skew is refused."""
    if abs(timestamp_seconds(timestamp) - now) > skew:
        raise InvalidTimestamp("MIKEY timestamp is outside the allowed clock skew")


# -- Identities (RFC 6043 §6.6: IDR payloads, URIs in the profile) ----------------------------


def identity_payload(role: IdRole, uri: str) -> IdentityWithRole:
    """The IDR payload naming *uri* in *role*."""
    data = uri.encode("utf-8")
    if not data or len(data) > MAX_IDENTITY_BYTES:
        raise MikeyError(f"identity must be 1..{MAX_IDENTITY_BYTES} bytes", MikeyErrorNo.INVALID_ID)
    return IdentityWithRole(role, IdType.URI, data)


def identity_text(payload: IdentityWithRole) -> str:
    """The URI an IDR payload names; anything else is ERR "Invalid ID"."""
    if payload.id_type != IdType.URI or not 0 < len(payload.data) <= MAX_IDENTITY_BYTES:
        raise MikeyError("identities must be URIs (secconf profile)", MikeyErrorNo.INVALID_ID)
    try:
        return payload.data.decode("utf-8")
    except UnicodeDecodeError:
        raise MikeyError("identity is not UTF-8", MikeyErrorNo.INVALID_ID) from None


def find_identity(message: Message, role: IdRole) -> str | None:
    """The URI of the message's IDR payload in *role*, if it has one."""
    found = message.find(IdentityWithRole, role)
    return None if found is None else identity_text(found)


# -- Reading a message under the profile ------------------------------------------------------


def parse_message(data: bytes, data_type: DataType) -> Message:
    """Parse a message that must be of *data_type*, use the profile's PRF and end in its V."""
    message = Message.parse(data)
    if message.data_type != data_type:
        if message.data_type in (DataType.REQUEST_INIT_PK, DataType.RESOLVE_INIT_PK):
            raise UnsupportedMikey(
                "public-key MIKEY-TICKET messages are not supported (secconf profile)",
                MikeyErrorNo.INVALID_DT,
            )
        raise MikeyError(
            f"expected MIKEY data type {data_type.name}, got {message.data_type}",
            MikeyErrorNo.INVALID_DT,
        )
    if message.header.prf_func != PRF:
        raise UnsupportedMikey("HDR PRF is not PRF-HMAC-SHA-256", MikeyErrorNo.INVALID_PRF)
    last = message.payloads[-1] if message.payloads else None
    if not isinstance(last, Verification):
        raise MalformedMikey(f"{data_type.name} does not end in a V payload")
    if last.auth_alg != MAC:
        raise UnsupportedMikey("V is not HMAC-SHA-256-256", MikeyErrorNo.INVALID_MAC)
    return message


def find_timestamp(message: Message) -> Timestamp:
    """The message's T payload, which every MIKEY-TICKET message carries (RFC 6043 §4.2)."""
    found = message.find(Timestamp)
    if found is None:
        raise MalformedMikey(f"{DataType(message.data_type).name} lacks a T payload")
    return found


def find_rand(message: Message, role: RandRole, what: str) -> bytes:
    """The RAND value of the message's RANDR payload in *role* (*what* names it in errors)."""
    found = message.find(RandWithRole, role)
    if found is None:
        raise MalformedMikey(f"{DataType(message.data_type).name} lacks {what}")
    if len(found.rand) < 16:  # RFC 3830 §6.11: at least 128 bits
        raise MalformedMikey(f"{what} is shorter than 128 bits")
    return found.rand


def replay_token(kind: str, message: Message, identity: str, rand: bytes) -> bytes:
    """What a replay cache remembers of an initial message: kind, sender, T and RAND."""
    timestamp = find_timestamp(message)
    material = b"\0".join((kind.encode(), identity.encode(), timestamp.value_bytes, rand))
    return hashlib.sha256(material).digest()


# -- Messages the KMS receives (REQUEST_INIT_PSK, RESOLVE_INIT_PSK) ---------------------------


def read_sent_to_kms(
    data: bytes, data_type: DataType, sender_role: IdRole, rand_role: RandRole
) -> tuple[Message, str, str | None, bytes]:
    """Common part of REQUEST_INIT and RESOLVE_INIT: (message, sender, KMS named, RAND)."""
    message = parse_message(data, data_type)
    find_timestamp(message)
    sender = find_identity(message, sender_role)
    if sender is None:
        raise MikeyError(f"{data_type.name} lacks the sender's IDR (secconf profile)",
                         MikeyErrorNo.INVALID_ID)  # fmt: skip
    rand = find_rand(message, rand_role, "the sender's RANDR")
    return message, sender, find_identity(message, IdRole.KMS), rand


def verify_sent_to_kms(
    message: Message,
    keys: MessageKeys,
    sender: str,
    kms_named: str | None,
    kms_identity: str,
    now: float,
    skew: float,
) -> None:
    """MAC over message || Identity_sender || Identity_kms (RFC 6043 §5.5), KMS named, T."""
    if kms_named is not None and kms_named != kms_identity:
        raise MikeyError("message is addressed to another KMS", MikeyErrorNo.INVALID_ID)
    verify(message, keys.auth_key, sender.encode() + kms_identity.encode())
    check_fresh(find_timestamp(message), now, skew)


# -- Keys carried in messages (RFC 6043 §5.1, §6.2) -------------------------------------------


def key_spi(index: int) -> SpiValidity:
    """The SPI of the *index*-th key of a ticket; RFC 6043 §6.2.1: every key carries an SPI."""
    return SpiValidity(bytes([index]))


def open_message_kemac(message: Message, keys: MessageKeys) -> tuple[KeyData, ...]:
    """The keys in a REQUEST_RESP's or RESOLVE_RESP's KEMAC (AES-CM-256, NULL MAC: V covers it)."""
    kemac = message.find(Kemac)
    if kemac is None:
        raise MalformedMikey(f"{DataType(message.data_type).name} lacks a KEMAC")
    if kemac.mac_alg != MacAlg.NULL or kemac.encr_alg != ENCR:
        raise UnsupportedMikey("KEMAC must be AES-CM-256 with NULL MAC", MikeyErrorNo.INVALID_EA)
    timestamp = find_timestamp(message).as_64_bits()
    _, key_data = open_kemac(kemac, keys, message.header.csb_id, timestamp)
    return key_data


def split_kemac_keys(keys: Sequence[KeyData], forking: bool) -> tuple[bytes, bytes | None,
                                                                      tuple[KeyData, ...]]:  # fmt: skip
    """(MPKi, MPKr or None, traffic keys) of a KEMAC = MPKi || [MPKr] || {TGK|GTGK}."""
    mpks = [key for key in keys if key.key_type == KeyDataType.MPK]
    traffic = tuple(key for key in keys if key.key_type != KeyDataType.MPK)
    if len(mpks) != (2 if forking else 1) or not traffic:
        raise MalformedMikey("KEMAC does not hold MPKi, [MPKr] and traffic keys as expected")
    if any(key.key_type not in TRAFFIC_KEY_TYPES for key in traffic):
        # Same refusal as a request for such keys (docs/mikey-ticket.md "Traffic keys").
        raise UnsupportedMikey("unexpected traffic key type in KEMAC", MikeyErrorNo.INVALID_TPPAR)
    return mpks[0].key, (mpks[1].key if forking else None), traffic


def fork_traffic_key(key: KeyData, id_data: bytes, randrkms: bytes, prf_func: int) -> KeyData:
    """*key* forked for one Responder; RFC 6043 §5.1.1: TGKs are forked, GTGKs and TEKs never."""
    if key.key_type not in (KeyDataType.TGK, KeyDataType.TGK_SALT):
        return key
    return replace(key, key=fork_key(key.key, ForkKeyLabel.TGK, id_data, randrkms, prf_func))
