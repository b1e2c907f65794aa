"""MIKEY payloads as frozen dataclasses (RFC 3830 §6, RFC 6043 §6 and Appendix A.3).

Each payload knows how to write and read its *body*: everything after its own
Next payload byte.  The byte itself is written by whoever chains the payloads
(:class:`~secconf.core.mikey.message.Message`, :func:`encode_payload_chain`)
from the order of the payloads, so it is never stored.  The SIGN payload has
no Next payload field and is always last (RFC 3830 §6.5).

Fields whose value decides the length of another field (TS type, MAC alg,
hash func, DH group, key data type, KV type) must be values we know; every
other code point is kept as a plain ``int`` and round-trips unchanged.
Key bytes are kept out of ``repr()``.

This codec is one module over the ~800-line rule (issue 13 allows it for
codecs), one class per RFC 3830/6043 payload: an RFC 6043 payload is the
twin of an RFC 3830 one and shares its field encoders (T and TR, RAND and
RANDR, ID and IDR), and TP and TICKET nest payload chains whose decoder
dispatches over every payload class (:data:`TOP_LEVEL_PAYLOADS`), so a split
by RFC or by payload family would cut those ties into import cycles.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from typing import ClassVar, Self

from ..errors import MalformedMikey, MikeyErrorNo, UnsupportedMikey
from ._wire import PayloadBudget, Reader, check_length, check_uint
from .constants import (
    DH_VALUE_LENGTHS,
    HASH_LENGTHS,
    MAC_LENGTHS,
    MIKEY_VERSION,
    SALTED_KEY_TYPES,
    TS_LENGTHS,
    CsIdMapType,
    KeyDataType,
    KeyValidityType,
    PayloadType,
    ProtType,
    TsType,
)

__all__ = [
    "CertHash",
    "Certificate",
    "CommonHeader",
    "CsIdMap",
    "DhData",
    "EmptyMap",
    "EnvelopeData",
    "ErrorPayload",
    "GeneralExtension",
    "GenericIdEntry",
    "GenericIdMap",
    "Identity",
    "IdentityWithRole",
    "IntervalValidity",
    "Kemac",
    "KeyData",
    "KeyValidity",
    "Payload",
    "PolicyParam",
    "Rand",
    "RandWithRole",
    "SecurityPolicy",
    "Signature",
    "SpiValidity",
    "SrtpIdEntry",
    "SrtpIdMap",
    "SrtpSessionData",
    "Ticket",
    "TicketFlags",
    "TicketHeader",
    "TicketPolicy",
    "Timestamp",
    "TimestampWithRole",
    "Verification",
    "decode_initiator_data",
    "decode_key_data_list",
    "decode_payload_chain",
    "encode_key_data_list",
    "encode_payload_chain",
    "mac_length",
    "ntp_from_unix",
]

_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (RFC 4330 §3)


def mac_length(mac_alg: int) -> int:
    """Bytes of MAC for *mac_alg* (RFC 3830 Table 6.2.b, RFC 6043 Table 6.6)."""
    try:
        return MAC_LENGTHS[mac_alg]
    except KeyError:
        raise UnsupportedMikey(
            f"MAC algorithm {mac_alg} is not supported", MikeyErrorNo.INVALID_MAC
        ) from None


def _ts_length(ts_type: int) -> int:
    try:
        return TS_LENGTHS[ts_type]
    except KeyError:
        raise UnsupportedMikey(
            f"timestamp type {ts_type} is not supported", MikeyErrorNo.INVALID_TS
        ) from None


def ntp_from_unix(unix_seconds: float) -> int:
    """A 64-bit NTP timestamp (RFC 4330 §3) for *unix_seconds* (the caller's clock).

    Times from 2036-02-07 on wrap into era 1 as RFC 4330 §3 describes.
    """
    ntp = unix_seconds + _NTP_UNIX_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


class Payload(abc.ABC):
    """One MIKEY payload; subclasses set ``payload_type`` (RFC 3830 Table 6.1.b)."""

    __slots__ = ()

    payload_type: ClassVar[int]
    #: ``False`` only for SIGN, which has no Next payload field (RFC 3830 §6.5).
    has_next_field: ClassVar[bool] = True

    def encode(self, next_payload: int) -> bytes:
        """The payload on the wire, with *next_payload* in its Next payload field."""
        check_uint(next_payload, 8, "next payload")
        return bytes([next_payload]) + self.encode_body()

    @abc.abstractmethod
    def encode_body(self) -> bytes:
        """Everything after the Next payload byte."""

    @classmethod
    @abc.abstractmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        """Read the body (the Next payload byte has been read already)."""


# -- T / TR (RFC 3830 §6.6, RFC 6043 §6.3, §6.4) --------------------------------


def _encode_ts(ts_type: int, value: int) -> bytes:
    check_uint(ts_type, 8, "TS type")
    length = _ts_length(ts_type)
    check_uint(value, 8 * length, "TS value")
    return bytes([ts_type]) + value.to_bytes(length, "big")


def _ts_as_64_bits(ts_type: int, value: int) -> bytes:
    # RFC 3830 §6.6: COUNTER is left-padded with zeros to 64 bits; RFC 6043 §6.3:
    # NTP-UTC-32 becomes an NTP-UTC timestamp with a zero fraction.
    if ts_type == TsType.NTP_UTC_32:
        return (value << 32).to_bytes(8, "big")
    return value.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class Timestamp(Payload):
    """T payload: *value* is the TS value as an unsigned integer (4 or 8 bytes by type)."""

    payload_type: ClassVar[int] = PayloadType.T
    ts_type: int
    value: int

    def __post_init__(self) -> None:
        _encode_ts(self.ts_type, self.value)

    @property
    def value_bytes(self) -> bytes:
        """The TS value field exactly as sent."""
        return self.value.to_bytes(_ts_length(self.ts_type), "big")

    def as_64_bits(self) -> bytes:
        """The 64-bit form used in the KEMAC IV and PRFs (RFC 3830 §4.2.3, §6.6; RFC 6043 §6.3)."""
        return _ts_as_64_bits(self.ts_type, self.value)

    def encode_body(self) -> bytes:
        return _encode_ts(self.ts_type, self.value)

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        ts_type = reader.u8("T type")
        value = int.from_bytes(reader.take(_ts_length(ts_type), "T value"), "big")
        return cls(ts_type, value)


@dataclass(frozen=True, slots=True)
class TimestampWithRole(Payload):
    """TR payload: a timestamp with a role such as start of validity (RFC 6043 §6.4)."""

    payload_type: ClassVar[int] = PayloadType.TR
    role: int
    ts_type: int
    value: int

    def __post_init__(self) -> None:
        check_uint(self.role, 8, "TS role")
        _encode_ts(self.ts_type, self.value)

    def as_64_bits(self) -> bytes:
        """See :meth:`Timestamp.as_64_bits`."""
        return _ts_as_64_bits(self.ts_type, self.value)

    def encode_body(self) -> bytes:
        return bytes([self.role]) + _encode_ts(self.ts_type, self.value)

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        role = reader.u8("TR role")
        ts_type = reader.u8("TR type")
        value = int.from_bytes(reader.take(_ts_length(ts_type), "TR value"), "big")
        return cls(role, ts_type, value)


# -- RAND / RANDR (RFC 3830 §6.11, RFC 6043 §6.8) ---------------------------------


@dataclass(frozen=True, slots=True)
class Rand(Payload):
    """RAND payload (length SHOULD be at least 16 bytes; not enforced by the codec)."""

    payload_type: ClassVar[int] = PayloadType.RAND
    rand: bytes

    def __post_init__(self) -> None:
        check_length(self.rand, 8, "RAND")

    def encode_body(self) -> bytes:
        return bytes([len(self.rand)]) + self.rand

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        return cls(reader.take(reader.u8("RAND len"), "RAND"))


@dataclass(frozen=True, slots=True)
class RandWithRole(Payload):
    """RANDR payload: a RAND and who generated it (RFC 6043 §6.8)."""

    payload_type: ClassVar[int] = PayloadType.RANDR
    role: int
    rand: bytes

    def __post_init__(self) -> None:
        check_uint(self.role, 8, "RAND role")
        check_length(self.rand, 8, "RANDR")

    def encode_body(self) -> bytes:
        return bytes([self.role, len(self.rand)]) + self.rand

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        role = reader.u8("RANDR role")
        return cls(role, reader.take(reader.u8("RANDR len"), "RANDR"))


# -- ID / CERT / IDR (RFC 3830 §6.7, RFC 6043 §6.5, §6.6) ----------------------------


@dataclass(frozen=True, slots=True)
class Identity(Payload):
    """ID payload: *data* is the identity (e.g. an NAI or URI, or a PSK name)."""

    payload_type: ClassVar[int] = PayloadType.ID
    id_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_uint(self.id_type, 8, "ID type")
        check_length(self.data, 16, "ID data")

    def encode_body(self) -> bytes:
        return bytes([self.id_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        id_type = reader.u8("ID type")
        return cls(id_type, reader.take(reader.u16("ID len"), "ID data"))


@dataclass(frozen=True, slots=True)
class Certificate(Payload):
    """CERT payload: one certificate of a chain, kept as bytes (DER or a URL)."""

    payload_type: ClassVar[int] = PayloadType.CERT
    cert_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_uint(self.cert_type, 8, "Cert type")
        check_length(self.data, 16, "certificate")

    def encode_body(self) -> bytes:
        return bytes([self.cert_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        cert_type = reader.u8("Cert type")
        return cls(cert_type, reader.take(reader.u16("Cert len"), "certificate"))


@dataclass(frozen=True, slots=True)
class IdentityWithRole(Payload):
    """IDR payload: an identity and its role (RFC 6043 §6.6; MIKEY-TICKET uses only IDR)."""

    payload_type: ClassVar[int] = PayloadType.IDR
    role: int
    id_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_uint(self.role, 8, "ID role")
        check_uint(self.id_type, 8, "ID type")
        check_length(self.data, 16, "IDR data")

    def encode_body(self) -> bytes:
        head = bytes([self.role, self.id_type]) + len(self.data).to_bytes(2, "big")
        return head + self.data

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        role = reader.u8("IDR role")
        id_type = reader.u8("IDR type")
        return cls(role, id_type, reader.take(reader.u16("IDR len"), "IDR data"))


# -- CHASH / V / ERR / GENERAL EXT ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertHash(Payload):
    """CHASH payload (RFC 3830 §6.8, RFC 6043 §6.7): hash length implied by *hash_func*."""

    payload_type: ClassVar[int] = PayloadType.CHASH
    hash_func: int
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != _hash_length(self.hash_func):
            raise MalformedMikey(f"CHASH digest length does not match hash func {self.hash_func}")

    def encode_body(self) -> bytes:
        return bytes([self.hash_func]) + self.digest

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        hash_func = reader.u8("CHASH hash func")
        return cls(hash_func, reader.take(_hash_length(hash_func), "CHASH hash"))


def _hash_length(hash_func: int) -> int:
    try:
        return HASH_LENGTHS[hash_func]
    except KeyError:
        raise UnsupportedMikey(
            f"hash function {hash_func} is not supported", MikeyErrorNo.INVALID_HA
        ) from None


@dataclass(frozen=True, slots=True)
class Verification(Payload):
    """V payload (RFC 3830 §6.9): a MAC whose length is implied by *auth_alg*."""

    payload_type: ClassVar[int] = PayloadType.V
    auth_alg: int
    mac: bytes

    def __post_init__(self) -> None:
        if len(self.mac) != mac_length(self.auth_alg):
            raise MalformedMikey(f"V MAC length does not match auth alg {self.auth_alg}")

    def encode_body(self) -> bytes:
        return bytes([self.auth_alg]) + self.mac

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        auth_alg = reader.u8("V auth alg")
        return cls(auth_alg, reader.take(mac_length(auth_alg), "V MAC"))


@dataclass(frozen=True, slots=True)
class ErrorPayload(Payload):
    """ERR payload (RFC 3830 §6.12): *error_no* from :class:`MikeyErrorNo`."""

    payload_type: ClassVar[int] = PayloadType.ERR
    error_no: int
    reserved: int = 0

    def __post_init__(self) -> None:
        check_uint(self.error_no, 8, "Error no")
        check_uint(self.reserved, 16, "ERR reserved")

    def encode_body(self) -> bytes:
        return bytes([self.error_no]) + self.reserved.to_bytes(2, "big")

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        return cls(reader.u8("Error no"), reader.u16("ERR reserved"))


@dataclass(frozen=True, slots=True)
class GeneralExtension(Payload):
    """General Extension payload (RFC 3830 §6.15): *ext_type* and opaque *data*."""

    payload_type: ClassVar[int] = PayloadType.GENERAL_EXT
    ext_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_uint(self.ext_type, 8, "General Extension type")
        check_length(self.data, 16, "General Extension data")

    def encode_body(self) -> bytes:
        return bytes([self.ext_type]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        ext_type = reader.u8("General Extension type")
        return cls(ext_type, reader.take(reader.u16("General Extension length"), "extension data"))


# -- SP (RFC 3830 §6.10) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyParam:
    """One Type/Length/Value policy parameter (RFC 3830 §6.10); see :class:`SrtpParam`."""

    param_type: int
    value: bytes

    def __post_init__(self) -> None:
        check_uint(self.param_type, 8, "policy param type")
        check_length(self.value, 8, "policy param value")

    @classmethod
    def of_int(cls, param_type: int, value: int, length: int = 1) -> PolicyParam:
        """A parameter whose value is an unsigned integer in *length* bytes."""
        check_uint(value, 8 * length, f"policy param {param_type}")
        return cls(param_type, value.to_bytes(length, "big"))

    @property
    def int_value(self) -> int:
        """The value read as a big-endian unsigned integer."""
        return int.from_bytes(self.value, "big")

    def encode(self) -> bytes:
        """Type, Length, Value."""
        return bytes([self.param_type, len(self.value)]) + self.value


@dataclass(frozen=True, slots=True)
class SecurityPolicy(Payload):
    """SP payload: *params* in wire order (absent parameters mean the protocol's default)."""

    payload_type: ClassVar[int] = PayloadType.SP
    policy_no: int
    prot_type: int = ProtType.SRTP
    params: tuple[PolicyParam, ...] = ()

    def __post_init__(self) -> None:
        check_uint(self.policy_no, 8, "Policy no")
        check_uint(self.prot_type, 8, "Prot type")
        if sum(2 + len(param.value) for param in self.params) >= 1 << 16:
            raise MalformedMikey("SP policy parameters exceed 65535 bytes")

    def get(self, param_type: int) -> PolicyParam | None:
        """The first parameter of *param_type*, or ``None`` (then the default applies)."""
        return next((param for param in self.params if param.param_type == param_type), None)

    def encode_body(self) -> bytes:
        params = b"".join(param.encode() for param in self.params)
        return bytes([self.policy_no, self.prot_type]) + len(params).to_bytes(2, "big") + params

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        policy_no = reader.u8("Policy no")
        prot_type = reader.u8("Prot type")
        inner = Reader(reader.take(reader.u16("Policy param length"), "policy params"))
        params = []
        while inner.remaining:
            param_type = inner.u8("policy param type")
            params.append(PolicyParam(param_type, inner.take(inner.u8("param length"), "param")))
        return cls(policy_no, prot_type, tuple(params))


# -- KEMAC (RFC 3830 §6.2, RFC 6043 §6.2) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Kemac(Payload):
    """KEMAC payload; *encr_data* is kept as sent (see :mod:`secconf.core.mikey.keys`).

    With the NULL algorithm *encr_data* is plaintext key material, so it is
    kept out of ``repr()`` in every case.
    """

    payload_type: ClassVar[int] = PayloadType.KEMAC
    encr_alg: int
    encr_data: bytes = field(repr=False)
    mac_alg: int
    mac: bytes

    def __post_init__(self) -> None:
        check_uint(self.encr_alg, 8, "Encr alg")
        check_length(self.encr_data, 16, "Encr data")
        if len(self.mac) != mac_length(self.mac_alg):
            raise MalformedMikey(f"KEMAC MAC length does not match MAC alg {self.mac_alg}")

    def encode_body(self) -> bytes:
        head = bytes([self.encr_alg]) + len(self.encr_data).to_bytes(2, "big")
        return head + self.encr_data + bytes([self.mac_alg]) + self.mac

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        encr_alg = reader.u8("Encr alg")
        encr_data = reader.take(reader.u16("Encr data len"), "Encr data")
        mac_alg = reader.u8("MAC alg")
        return cls(encr_alg, encr_data, mac_alg, reader.take(mac_length(mac_alg), "KEMAC MAC"))


# -- Key validity and key data (RFC 3830 §6.13, §6.14, RFC 6043 §6.2.1) ------------------


@dataclass(frozen=True, slots=True)
class SpiValidity:
    """KV = SPI: the key belongs to this SPI (for SRTP, the MKI) (RFC 3830 §6.14)."""

    kv_type: ClassVar[int] = KeyValidityType.SPI
    spi: bytes

    def __post_init__(self) -> None:
        check_length(self.spi, 8, "SPI")

    def encode(self) -> bytes:
        """SPI Length, SPI."""
        return bytes([len(self.spi)]) + self.spi


@dataclass(frozen=True, slots=True)
class IntervalValidity:
    """KV = Interval: valid from/to values (for SRTP, 6-byte packet indexes) (RFC 3830 §6.14)."""

    kv_type: ClassVar[int] = KeyValidityType.INTERVAL
    valid_from: bytes
    valid_to: bytes

    def __post_init__(self) -> None:
        check_length(self.valid_from, 8, "Valid From")
        check_length(self.valid_to, 8, "Valid To")

    def encode(self) -> bytes:
        """VF Length, Valid From, VT Length, Valid To."""
        return (
            bytes([len(self.valid_from)])
            + self.valid_from
            + bytes([len(self.valid_to)])
            + self.valid_to
        )


KeyValidity = SpiValidity | IntervalValidity


def _kv_type(validity: KeyValidity | None) -> int:
    return KeyValidityType.NULL if validity is None else validity.kv_type


def _decode_validity(kv_type: int, reader: Reader) -> KeyValidity | None:
    if kv_type == KeyValidityType.NULL:
        return None
    if kv_type == KeyValidityType.SPI:
        return SpiValidity(reader.take(reader.u8("SPI Length"), "SPI"))
    if kv_type == KeyValidityType.INTERVAL:
        valid_from = reader.take(reader.u8("VF Length"), "Valid From")
        return IntervalValidity(valid_from, reader.take(reader.u8("VT Length"), "Valid To"))
    raise UnsupportedMikey(f"key validity type {kv_type} is not supported")


@dataclass(frozen=True, slots=True)
class KeyData:
    """Key data sub-payload (type 20), found only inside a KEMAC's plaintext.

    *salt* is present exactly for the +SALT key types; MIKEY-TICKET wants an
    SPI on every key (RFC 6043 §6.2.1), which is the caller's rule to apply.
    """

    key_type: int
    key: bytes = field(repr=False)
    salt: bytes | None = field(default=None, repr=False)
    validity: KeyValidity | None = None

    def __post_init__(self) -> None:
        check_uint(self.key_type, 4, "key data type")
        if self.key_type > KeyDataType.MPK:
            raise UnsupportedMikey(f"key data type {self.key_type} is not supported")
        check_length(self.key, 16, "key data")
        if (self.salt is not None) != (self.key_type in SALTED_KEY_TYPES):
            raise MalformedMikey(f"key data type {self.key_type} and salt presence disagree")
        if self.salt is not None:
            check_length(self.salt, 16, "salt data")

    def encode(self, next_payload: int) -> bytes:
        """The sub-payload; *next_payload* is 20 when another key data follows, else 0."""
        head = bytes([next_payload, self.key_type << 4 | _kv_type(self.validity)])
        out = head + len(self.key).to_bytes(2, "big") + self.key
        if self.salt is not None:
            out += len(self.salt).to_bytes(2, "big") + self.salt
        if self.validity is not None:
            out += self.validity.encode()
        return out

    @classmethod
    def decode(cls, reader: Reader) -> tuple[KeyData, int]:
        """Read one sub-payload; returns it and its Next payload value."""
        next_payload = reader.u8("key data next payload")
        type_kv = reader.u8("key data type/KV")
        key_type, kv_type = type_kv >> 4, type_kv & 0x0F
        if key_type > KeyDataType.MPK:
            raise UnsupportedMikey(f"key data type {key_type} is not supported")
        key = reader.take(reader.u16("Key data len"), "key data")
        salt = None
        if key_type in SALTED_KEY_TYPES:
            salt = reader.take(reader.u16("Salt len"), "salt data")
        return cls(key_type, key, salt, _decode_validity(kv_type, reader)), next_payload


def encode_key_data_list(keys: Sequence[KeyData], leading_id: Identity | None = None) -> bytes:
    """The KEMAC plaintext: key data sub-payloads chained by Next payload (RFC 3830 §6.2).

    In the public-key method the Initiator's ID payload comes first (RFC 3830
    §6.2); pass it as *leading_id*.
    """
    out = b""
    if leading_id is not None:
        out += leading_id.encode(PayloadType.KEY_DATA if keys else PayloadType.LAST)
    for index, key in enumerate(keys):
        last = index == len(keys) - 1
        out += key.encode(PayloadType.LAST if last else PayloadType.KEY_DATA)
    return out


def decode_key_data_list(
    plaintext: bytes, leading_id: bool = False, budget: PayloadBudget | None = None
) -> tuple[Identity | None, tuple[KeyData, ...]]:
    """Parse a KEMAC plaintext into its (optional leading ID payload and) key data list.

    An empty plaintext is an update without keys (RFC 3830 §6.2).
    """
    budget = budget or PayloadBudget()
    reader = Reader(plaintext)
    identity: Identity | None = None
    keys: list[KeyData] = []
    next_type: int = PayloadType.KEY_DATA if plaintext else PayloadType.LAST
    if leading_id:
        if not plaintext:
            raise MalformedMikey("KEMAC plaintext lacks the Initiator's ID payload")
        # RFC 3830 §6.2: the ID payload comes first, its Next payload naming key data.
        next_type = reader.u8("ID next payload")
        budget.spend()
        identity = Identity.decode_body(reader, budget)
    while next_type != PayloadType.LAST:
        if next_type != PayloadType.KEY_DATA:
            raise MalformedMikey(f"payload type {next_type} inside KEMAC key data")
        budget.spend()
        key, next_type = KeyData.decode(reader)
        keys.append(key)
    reader.expect_end("the last key data sub-payload")
    return identity, tuple(keys)


# -- PKE / DH / SIGN (RFC 3830 §6.3, §6.4, §6.5) ---------------------------------------


@dataclass(frozen=True, slots=True)
class EnvelopeData(Payload):
    """PKE payload: the envelope key under the Responder's public key; *cache* is C (0-3)."""

    payload_type: ClassVar[int] = PayloadType.PKE
    cache: int
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_uint(self.cache, 2, "PKE C")
        check_length(self.data, 14, "PKE data")

    def encode_body(self) -> bytes:
        return (self.cache << 14 | len(self.data)).to_bytes(2, "big") + self.data

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        word = reader.u16("PKE C/Data len")
        return cls(word >> 14, reader.take(word & 0x3FFF, "PKE data"))


@dataclass(frozen=True, slots=True)
class DhData(Payload):
    """DH payload: a public DH value (length implied by the group) and optional key validity."""

    payload_type: ClassVar[int] = PayloadType.DH
    group: int
    value: bytes
    validity: KeyValidity | None = None
    reserved: int = 0

    def __post_init__(self) -> None:
        if len(self.value) != _dh_length(self.group):
            raise MalformedMikey(f"DH value length does not match DH group {self.group}")
        check_uint(self.reserved, 4, "DH reserved")

    def encode_body(self) -> bytes:
        out = (
            bytes([self.group]) + self.value + bytes([self.reserved << 4 | _kv_type(self.validity)])
        )
        return out + (self.validity.encode() if self.validity is not None else b"")

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        group = reader.u8("DH group")
        value = reader.take(_dh_length(group), "DH value")
        reserved_kv = reader.u8("DH Reserv/KV")
        validity = _decode_validity(reserved_kv & 0x0F, reader)
        return cls(group, value, validity, reserved_kv >> 4)


def _dh_length(group: int) -> int:
    try:
        return DH_VALUE_LENGTHS[group]
    except KeyError:
        raise UnsupportedMikey(
            f"DH group {group} is not supported", MikeyErrorNo.INVALID_DH
        ) from None


@dataclass(frozen=True, slots=True)
class Signature(Payload):
    """SIGN payload: no Next payload field, always the last payload (RFC 3830 §6.5)."""

    payload_type: ClassVar[int] = PayloadType.SIGN
    has_next_field: ClassVar[bool] = False
    sign_type: int
    signature: bytes

    def __post_init__(self) -> None:
        check_uint(self.sign_type, 4, "S type")
        check_length(self.signature, 12, "signature")

    def encode(self, next_payload: int) -> bytes:
        if next_payload != PayloadType.LAST:
            raise MalformedMikey("SIGN must be the last payload")
        return self.encode_body()

    def encode_body(self) -> bytes:
        return (self.sign_type << 12 | len(self.signature)).to_bytes(2, "big") + self.signature

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        word = reader.u16("S type/Signature len")
        return cls(word >> 12, reader.take(word & 0x0FFF, "signature"))


# -- TP / TICKET (RFC 6043 §6.10) and THDR (RFC 6043 Appendix A.3) ------------------------


class TicketFlags(IntFlag):
    """The D..O flags of a Ticket Policy (RFC 6043 §6.10), D the most significant."""

    NONE = 0
    D = 1 << 11  # ticket generated by the KMS
    E = 1 << 10  # Resolve exchange mandatory
    F = 1 << 9  # TRANSFER_RESP shall be sent
    G = 1 << 8  # Responder shall generate RANDRr
    H = 1 << 7  # RANDRi used in TGK/GTGK key derivation
    I = 1 << 6  # key forking  # noqa: E741 - the RFC's name
    J = 1 << 5  # ticket may be reused
    K = 1 << 4  # KMS changed the desired policy
    L = 1 << 3  # Initiator may supply session keys
    M = 1 << 2  # Responder may supply session keys
    N = 1 << 1  # a plain RFC 6043 Initiator can use the ticket
    O = 1 << 0  # a plain RFC 6043 Responder can process it  # noqa: E741


def flag_violations(flags: TicketFlags) -> list[str]:
    """The RFC 6043 §6.10 flag dependencies that *flags* break (empty when consistent).

    ``F = 1 when I = 1 and a TGK is in the ticket`` needs the ticket contents
    and is left to the caller.
    """
    rules = [
        ("not D implies L", TicketFlags.D not in flags and TicketFlags.L not in flags),
        ("G implies F", TicketFlags.G in flags and TicketFlags.F not in flags),
        ("not G implies H", TicketFlags.G not in flags and TicketFlags.H not in flags),
        ("not H implies G", TicketFlags.H not in flags and TicketFlags.G not in flags),
        ("I implies E", TicketFlags.I in flags and TicketFlags.E not in flags),
        ("K implies D", TicketFlags.K in flags and TicketFlags.D not in flags),
        ("M implies F", TicketFlags.M in flags and TicketFlags.F not in flags),
    ]
    return [rule for rule, broken in rules if broken]


def _check_policy_fields(
    ticket_type: int, subtype: int, version: int, prf_func: int, flags: int, reserved: int
) -> None:
    check_uint(ticket_type, 16, "Ticket Type")
    check_uint(subtype, 8, "ticket Subtype")
    check_uint(version, 8, "ticket Version")
    check_uint(prf_func, 7, "ticket PRF Func")
    check_uint(int(flags), 12, "ticket flags")
    check_uint(reserved, 5, "ticket Res")


def _encode_policy(
    ticket_type: int,
    subtype: int,
    version: int,
    prf_func: int,
    flags: int,
    reserved: int,
    policy_payloads: tuple[Payload, ...],
) -> bytes:
    # RFC 6043 §6.10: Version(8) | PRF Func(7) | D..O(12) | Res(5) after the Subtype.
    word = version << 24 | prf_func << 17 | int(flags) << 5 | reserved
    tp_data = encode_payload_chain(policy_payloads)
    check_length(tp_data, 16, "TP Data")
    head = ticket_type.to_bytes(2, "big") + bytes([subtype]) + word.to_bytes(4, "big")
    return head + len(tp_data).to_bytes(2, "big") + tp_data


def _decode_policy(
    reader: Reader, budget: PayloadBudget
) -> tuple[int, int, int, int, TicketFlags, int, tuple[Payload, ...]]:
    ticket_type = reader.u16("Ticket Type")
    subtype = reader.u8("ticket Subtype")
    word = reader.u32("ticket Version/PRF/flags")
    tp_data = reader.take(reader.u16("TP Data length"), "TP Data")
    payloads = decode_payload_chain(tp_data, budget)
    flags = TicketFlags((word >> 5) & 0x0FFF)
    return ticket_type, subtype, word >> 24, (word >> 17) & 0x7F, flags, word & 0x1F, payloads


@dataclass(frozen=True, slots=True)
class TicketPolicy(Payload):
    """TP payload: the desired Ticket Policy (RFC 6043 §6.10).

    *policy_payloads* is the TP Data: ``[IDRkms], [IDRi], [TRs], [TRe], [TRr],
    [KEMAC], {IDRapp}, (IDRr)``.
    """

    payload_type: ClassVar[int] = PayloadType.TP
    ticket_type: int
    subtype: int
    version: int
    prf_func: int
    flags: TicketFlags
    policy_payloads: tuple[Payload, ...] = ()
    reserved: int = 0

    def __post_init__(self) -> None:
        _check_policy_fields(
            self.ticket_type, self.subtype, self.version, self.prf_func, self.flags, self.reserved
        )

    def encode_body(self) -> bytes:
        return _encode_policy(
            self.ticket_type,
            self.subtype,
            self.version,
            self.prf_func,
            self.flags,
            self.reserved,
            self.policy_payloads,
        )

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        ticket_type, subtype, version, prf, flags, reserved, payloads = _decode_policy(
            reader, budget
        )
        return cls(ticket_type, subtype, version, prf, flags, payloads, reserved)


@dataclass(frozen=True, slots=True)
class Ticket(Payload):
    """TICKET payload: the granted policy, Ticket Data and Initiator Data (RFC 6043 §6.10).

    *ticket_data* stays opaque (its format is the Ticket Type's; for type 1 see
    :class:`~secconf.core.mikey.message.BaseTicketData`).  *initiator_data* is
    empty unless key forking is used; :meth:`initiator_payloads` reads it.
    """

    payload_type: ClassVar[int] = PayloadType.TICKET
    ticket_type: int
    subtype: int
    version: int
    prf_func: int
    flags: TicketFlags
    policy_payloads: tuple[Payload, ...] = ()
    ticket_data: bytes = field(default=b"", repr=False)
    initiator_data: bytes = field(default=b"", repr=False)
    reserved: int = 0

    def __post_init__(self) -> None:
        _check_policy_fields(
            self.ticket_type, self.subtype, self.version, self.prf_func, self.flags, self.reserved
        )
        check_length(self.ticket_data, 16, "Ticket Data")
        check_length(self.initiator_data, 16, "Initiator Data")

    @property
    def policy(self) -> TicketPolicy:
        """The granted Ticket Policy as a TP payload."""
        return TicketPolicy(
            self.ticket_type,
            self.subtype,
            self.version,
            self.prf_func,
            self.flags,
            self.policy_payloads,
            self.reserved,
        )

    def initiator_payloads(self) -> tuple[Payload, ...]:
        """Initiator Data as payloads: ``Vi, Vr`` when key forking is used."""
        return decode_initiator_data(self.initiator_data)

    def policy_and_ticket_data(self) -> bytes:
        """The body up to the end of Ticket Data (no Initiator Data length or data)."""
        body = _encode_policy(
            self.ticket_type,
            self.subtype,
            self.version,
            self.prf_func,
            self.flags,
            self.reserved,
            self.policy_payloads,
        )
        return body + len(self.ticket_data).to_bytes(2, "big") + self.ticket_data

    def encode_body(self) -> bytes:
        initiator = len(self.initiator_data).to_bytes(2, "big") + self.initiator_data
        return self.policy_and_ticket_data() + initiator

    @classmethod
    def decode_body(cls, reader: Reader, budget: PayloadBudget) -> Self:
        ticket_type, subtype, version, prf, flags, reserved, payloads = _decode_policy(
            reader, budget
        )
        ticket_data = reader.take(reader.u16("Ticket Data length"), "Ticket Data")
        initiator_data = reader.take(reader.u16("Initiator Data length"), "Initiator Data")
        if initiator_data:
            decode_initiator_data(initiator_data, budget)  # must frame, even if unread
        return cls(
            ticket_type,
            subtype,
            version,
            prf,
            flags,
            payloads,
            ticket_data,
            initiator_data,
            reserved,
        )


@dataclass(frozen=True, slots=True)
class TicketHeader:
    """THDR, first payload of MIKEY base-ticket Ticket Data (RFC 6043 App. A.3).

    It has no payload type code of its own, so it never appears in a chain.
    """

    data: bytes = b""

    def __post_init__(self) -> None:
        check_length(self.data, 16, "THDR Data")

    def encode(self, next_payload: int) -> bytes:
        """Next Payload, THDR Data length, THDR Data."""
        return bytes([next_payload]) + len(self.data).to_bytes(2, "big") + self.data

    @classmethod
    def decode(cls, reader: Reader) -> tuple[TicketHeader, int]:
        """Read a THDR; returns it and its Next Payload value."""
        next_payload = reader.u8("THDR next payload")
        return cls(reader.take(reader.u16("THDR Data length"), "THDR Data")), next_payload


# -- Common header and CS ID maps (RFC 3830 §6.1, RFC 4563 §5, RFC 6043 §6.1) --------------


@dataclass(frozen=True, slots=True)
class SrtpIdEntry:
    """One crypto session of an SRTP-ID map; its CS ID is its 1-based position."""

    policy_no: int
    ssrc: int
    roc: int = 0

    def __post_init__(self) -> None:
        check_uint(self.policy_no, 8, "Policy_no")
        check_uint(self.ssrc, 32, "SSRC")
        check_uint(self.roc, 32, "ROC")


@dataclass(frozen=True, slots=True)
class SrtpIdMap:
    """CS ID map type 0 (RFC 3830 §6.1.1): 9 bytes per crypto session."""

    map_type: ClassVar[int] = CsIdMapType.SRTP_ID
    entries: tuple[SrtpIdEntry, ...] = ()

    @property
    def cs_count(self) -> int:
        """#CS."""
        return len(self.entries)

    def encode(self) -> bytes:
        """The CS ID map info."""
        return b"".join(
            bytes([entry.policy_no]) + entry.ssrc.to_bytes(4, "big") + entry.roc.to_bytes(4, "big")
            for entry in self.entries
        )

    @classmethod
    def decode(cls, reader: Reader, cs_count: int) -> SrtpIdMap:
        """Read *cs_count* entries."""
        entries = tuple(
            SrtpIdEntry(reader.u8("Policy_no"), reader.u32("SSRC"), reader.u32("ROC"))
            for _ in range(cs_count)
        )
        return cls(entries)


@dataclass(frozen=True, slots=True)
class EmptyMap:
    """CS ID map type 1 (RFC 4563 §5): no map info; policy is conveyed outside MIKEY.

    *cs_count* is kept as sent (MIKEY-TICKET Request/Resolve use 0).
    """

    map_type: ClassVar[int] = CsIdMapType.EMPTY
    cs_count: int = 0

    def __post_init__(self) -> None:
        check_uint(self.cs_count, 8, "#CS")

    def encode(self) -> bytes:
        """No map info."""
        return b""


@dataclass(frozen=True, slots=True)
class SrtpSessionData:
    """GENERIC-ID Session Data for SRTP (RFC 6043 §6.1.1): SSRC [ROC SEQ]."""

    ssrc: int
    roc: int | None = None
    seq: int | None = None

    def __post_init__(self) -> None:
        check_uint(self.ssrc, 32, "SSRC")
        if (self.roc is None) != (self.seq is None):
            raise MalformedMikey("SRTP session data has ROC and SEQ together or neither")
        if self.roc is not None and self.seq is not None:
            check_uint(self.roc, 32, "ROC")
            check_uint(self.seq, 16, "SEQ")

    def encode(self) -> bytes:
        """SSRC (4 bytes) and, when present, ROC (4) and SEQ (2)."""
        out = self.ssrc.to_bytes(4, "big")
        if self.roc is not None and self.seq is not None:
            out += self.roc.to_bytes(4, "big") + self.seq.to_bytes(2, "big")
        return out


@dataclass(frozen=True, slots=True)
class GenericIdEntry:
    """One crypto session of a GENERIC-ID map (RFC 6043 §6.1.1).

    *s_flag* is the S bit (for SRTP: ROC and SEQ are in *session_data*).
    """

    cs_id: int
    prot_type: int = ProtType.SRTP
    policies: tuple[int, ...] = ()
    session_data: bytes = b""
    spi: bytes = b""
    s_flag: bool = False

    def __post_init__(self) -> None:
        check_uint(self.cs_id, 8, "CS ID")
        check_uint(self.prot_type, 8, "Prot type")
        check_uint(len(self.policies), 7, "#P")
        for policy_no in self.policies:
            check_uint(policy_no, 8, "Policy_no")
        check_length(self.session_data, 16, "Session Data")
        check_length(self.spi, 8, "SPI")

    @classmethod
    def for_srtp(
        cls, cs_id: int, policies: Iterable[int], session: SrtpSessionData | None, spi: bytes = b""
    ) -> GenericIdEntry:
        """An SRTP crypto session; *session* ``None`` leaves Session Data empty (offers)."""
        data = b"" if session is None else session.encode()
        s_flag = session is not None and session.roc is not None
        return cls(cs_id, ProtType.SRTP, tuple(policies), data, spi, s_flag)

    def srtp_session(self) -> SrtpSessionData | None:
        """Session Data read as SRTP (``None`` when empty)."""
        if not self.session_data:
            return None
        reader = Reader(self.session_data)
        ssrc = reader.u32("SSRC")
        roc = seq = None
        if self.s_flag:
            roc, seq = reader.u32("ROC"), reader.u16("SEQ")
        reader.expect_end("SRTP session data")
        return SrtpSessionData(ssrc, roc, seq)

    def encode(self) -> bytes:
        """One map block."""
        head = bytes([self.cs_id, self.prot_type, self.s_flag << 7 | len(self.policies)])
        data = len(self.session_data).to_bytes(2, "big") + self.session_data
        return head + bytes(self.policies) + data + bytes([len(self.spi)]) + self.spi

    @classmethod
    def decode(cls, reader: Reader) -> GenericIdEntry:
        """Read one map block."""
        cs_id = reader.u8("CS ID")
        prot_type = reader.u8("Prot type")
        s_count = reader.u8("S/#P")
        policies = tuple(reader.take(s_count & 0x7F, "Ps"))
        session_data = reader.take(reader.u16("Session Data Length"), "Session Data")
        spi = reader.take(reader.u8("SPI Length"), "SPI")
        return cls(cs_id, prot_type, policies, session_data, spi, bool(s_count & 0x80))


@dataclass(frozen=True, slots=True)
class GenericIdMap:
    """CS ID map type 2 (RFC 6043 §6.1.1), which MIKEY-TICKET Transfer exchanges use."""

    map_type: ClassVar[int] = CsIdMapType.GENERIC_ID
    entries: tuple[GenericIdEntry, ...] = ()

    @property
    def cs_count(self) -> int:
        """#CS."""
        return len(self.entries)

    def encode(self) -> bytes:
        """The CS ID map info."""
        return b"".join(entry.encode() for entry in self.entries)

    @classmethod
    def decode(cls, reader: Reader, cs_count: int) -> GenericIdMap:
        """Read *cs_count* entries."""
        return cls(tuple(GenericIdEntry.decode(reader) for _ in range(cs_count)))


CsIdMap = SrtpIdMap | EmptyMap | GenericIdMap


@dataclass(frozen=True, slots=True)
class CommonHeader:
    """HDR (RFC 3830 §6.1, RFC 6043 §6.1); #CS and map type come from *cs_id_map*.

    *response_expected* is the V flag (MIKEY-TICKET receivers ignore it,
    RFC 6043 §6.1); *prf_func* names the PRF for key derivation.
    """

    data_type: int
    csb_id: int
    cs_id_map: CsIdMap = field(default_factory=EmptyMap)
    response_expected: bool = False
    prf_func: int = 0
    version: int = MIKEY_VERSION

    def __post_init__(self) -> None:
        check_uint(self.data_type, 8, "data type")
        check_uint(self.csb_id, 32, "CSB ID")
        check_uint(self.prf_func, 7, "PRF func")
        check_uint(self.cs_id_map.cs_count, 8, "#CS")
        if self.version != MIKEY_VERSION:
            raise UnsupportedMikey(f"MIKEY version {self.version} is not supported")

    def encode(self, next_payload: int) -> bytes:
        """The HDR with *next_payload* naming the first payload."""
        check_uint(next_payload, 8, "next payload")
        head = bytes(
            [
                self.version,
                self.data_type,
                next_payload,
                self.response_expected << 7 | self.prf_func,
            ]
        )
        counts = bytes([self.cs_id_map.cs_count, self.cs_id_map.map_type])
        return head + self.csb_id.to_bytes(4, "big") + counts + self.cs_id_map.encode()

    @classmethod
    def decode(cls, reader: Reader) -> tuple[CommonHeader, int]:
        """Read an HDR; returns it and the type of the first payload."""
        version = reader.u8("version")
        if version != MIKEY_VERSION:
            raise UnsupportedMikey(f"MIKEY version {version} is not supported")
        data_type = reader.u8("data type")
        next_payload = reader.u8("next payload")
        v_prf = reader.u8("V/PRF func")
        csb_id = reader.u32("CSB ID")
        cs_count = reader.u8("#CS")
        map_type = reader.u8("CS ID map type")
        cs_id_map: CsIdMap
        if map_type == CsIdMapType.SRTP_ID:
            cs_id_map = SrtpIdMap.decode(reader, cs_count)
        elif map_type == CsIdMapType.EMPTY:
            cs_id_map = EmptyMap(cs_count)
        elif map_type == CsIdMapType.GENERIC_ID:
            cs_id_map = GenericIdMap.decode(reader, cs_count)
        else:
            raise UnsupportedMikey(f"CS ID map type {map_type} is not supported")
        header = cls(data_type, csb_id, cs_id_map, bool(v_prf & 0x80), v_prf & 0x7F, version)
        return header, next_payload


# -- Payload chains --------------------------------------------------------------------

#: Payloads allowed directly in a message.
TOP_LEVEL_PAYLOADS: Mapping[int, type[Payload]] = {
    cls.payload_type: cls
    for cls in (
        Kemac,
        EnvelopeData,
        DhData,
        Signature,
        Timestamp,
        Identity,
        Certificate,
        CertHash,
        Verification,
        SecurityPolicy,
        Rand,
        ErrorPayload,
        TimestampWithRole,
        IdentityWithRole,
        RandWithRole,
        TicketPolicy,
        Ticket,
        GeneralExtension,
    )
}

#: Payloads allowed inside TP Data, Initiator Data and Ticket Data: no TP, TICKET
#: or SIGN, so nesting stops at one level whatever the input.
NESTED_PAYLOADS: Mapping[int, type[Payload]] = {
    code: cls
    for code, cls in TOP_LEVEL_PAYLOADS.items()
    if code not in (PayloadType.TP, PayloadType.TICKET, PayloadType.SIGN)
}


def decode_chain(
    reader: Reader,
    next_type: int,
    budget: PayloadBudget,
    allowed: Mapping[int, type[Payload]] = NESTED_PAYLOADS,
) -> tuple[Payload, ...]:
    """Read payloads starting with type *next_type* until Last payload; nothing may follow."""
    payloads: list[Payload] = []
    while next_type != PayloadType.LAST:
        payload_class = allowed.get(next_type)
        if payload_class is None:
            if next_type == PayloadType.KEY_DATA:
                raise MalformedMikey("key data sub-payload outside a KEMAC")
            if next_type in TOP_LEVEL_PAYLOADS:
                raise MalformedMikey(f"payload type {next_type} is not allowed here")
            raise UnsupportedMikey(f"payload type {next_type} is not supported")
        budget.spend()
        next_type = reader.u8("next payload") if payload_class.has_next_field else PayloadType.LAST
        payloads.append(payload_class.decode_body(reader, budget))
    reader.expect_end("the last payload")
    return tuple(payloads)


def encode_chain(payloads: Sequence[Payload]) -> bytes:
    """The payloads with each Next payload field naming the payload after it."""
    out = []
    for index, payload in enumerate(payloads):
        following = payloads[index + 1].payload_type if index + 1 < len(payloads) else 0
        out.append(payload.encode(following))
    return b"".join(out)


def encode_payload_chain(payloads: Sequence[Payload]) -> bytes:
    """TP Data / Initiator Data form: first payload's type, then the chain (RFC 6043 §6.10).

    No payloads encode as no bytes at all.
    """
    if not payloads:
        return b""
    return bytes([payloads[0].payload_type]) + encode_chain(payloads)


def decode_payload_chain(data: bytes, budget: PayloadBudget | None = None) -> tuple[Payload, ...]:
    """Inverse of :func:`encode_payload_chain` (nested payload types only)."""
    if not data:
        return ()
    reader = Reader(data)
    first = reader.u8("first payload")
    if first == PayloadType.LAST:
        raise MalformedMikey("payload list names no first payload")
    return decode_chain(reader, first, budget or PayloadBudget())


def decode_initiator_data(data: bytes, budget: PayloadBudget | None = None) -> tuple[Payload, ...]:
    """Initiator Data ``First Payload, Vi, Vr`` (RFC 6043 §6.10), Vi chained or copied literally.

    §6.10 says Vi "SHALL be identical to the V payload in the TRANSFER_INIT
    message"; that V is the last payload of its message, so a literal copy
    carries Next payload 0 (Last payload) although Vr follows.  secconf writes
    Next payload 9 (V), as the chain rule of RFC 3830 §6.1 asks and as other
    implementations do, and reads both (docs/mikey-decisions.md #23): a first V
    whose Next payload is 0 with bytes left after it is read as followed by a V.
    """
    if not data:
        return ()
    budget = budget or PayloadBudget()
    reader = Reader(data)
    first = reader.u8("first payload")
    if first == PayloadType.LAST:
        raise MalformedMikey("payload list names no first payload")
    payloads: list[Payload] = []
    next_type = first
    while True:
        if next_type == PayloadType.LAST:
            literal_vi = (
                reader.remaining > 0
                and len(payloads) == 1
                and isinstance(payloads[0], Verification)
            )
            if not literal_vi:
                break
            next_type = PayloadType.V
        payload_class = NESTED_PAYLOADS.get(next_type)
        if payload_class is None:
            raise MalformedMikey(f"payload type {next_type} is not allowed in Initiator Data")
        budget.spend()
        next_type = reader.u8("next payload") if payload_class.has_next_field else PayloadType.LAST
        payloads.append(payload_class.decode_body(reader, budget))
    reader.expect_end("the last payload")
    return tuple(payloads)
