"""MIKEY code points (RFC 3830 §6, RFC 4563, RFC 4738, RFC 4771, RFC 6043 §6, RFC 7714 §14.3).

Every field in the payload dataclasses is a plain ``int`` so that a value we
have no name for still round-trips; these enums give the names we know.
"""

from __future__ import annotations

from enum import IntEnum

from ..errors import MikeyErrorNo

__all__ = [
    "CertType",
    "CsIdMapType",
    "DataType",
    "DhGroup",
    "EncrAlg",
    "GeneralExtType",
    "HashFunc",
    "IdRole",
    "IdType",
    "KeyDataType",
    "KeyValidityType",
    "MacAlg",
    "MikeyErrorNo",
    "PayloadType",
    "PrfFunc",
    "ProtType",
    "RandRole",
    "SignType",
    "SrtpAuthAlg",
    "SrtpEncrAlg",
    "SrtpParam",
    "SrtpPrf",
    "TicketType",
    "TsRole",
    "TsType",
]

#: MIKEY version this codec speaks (RFC 3830 §6.1).
MIKEY_VERSION = 1


class DataType(IntEnum):
    """HDR data type (RFC 3830 Table 6.1.a, RFC 4650, RFC 4738 §3.9.1, RFC 6043 Table 6.1)."""

    PSK_INIT = 0
    PSK_RESP = 1
    PK_INIT = 2
    PK_RESP = 3
    DH_INIT = 4
    DH_RESP = 5
    ERROR = 6
    DHHMAC_INIT = 7
    DHHMAC_RESP = 8
    RSA_R_INIT = 9
    RSA_R_RESP = 10
    REQUEST_INIT_PSK = 11
    REQUEST_INIT_PK = 12
    REQUEST_RESP = 13
    TRANSFER_INIT = 14
    TRANSFER_RESP = 15
    RESOLVE_INIT_PSK = 16
    RESOLVE_INIT_PK = 17
    RESOLVE_RESP = 18


class PayloadType(IntEnum):
    """Next payload codes (RFC 3830 Table 6.1.b, RFC 6043 Table 6.2)."""

    LAST = 0
    KEMAC = 1
    PKE = 2
    DH = 3
    SIGN = 4
    T = 5
    ID = 6
    CERT = 7
    CHASH = 8
    V = 9
    SP = 10
    RAND = 11
    ERR = 12
    TR = 13
    IDR = 14
    RANDR = 15
    TP = 16
    TICKET = 17
    KEY_DATA = 20
    GENERAL_EXT = 21


class PrfFunc(IntEnum):
    """HDR / Ticket Policy PRF func (RFC 3830 Table 6.1.c, RFC 6043 Table 6.3)."""

    MIKEY_1 = 0
    PRF_HMAC_SHA_256 = 1


class CsIdMapType(IntEnum):
    """CS ID map type (RFC 3830 Table 6.1.d, RFC 4563 §5, RFC 6043 Table 6.4)."""

    SRTP_ID = 0
    EMPTY = 1
    GENERIC_ID = 2


class EncrAlg(IntEnum):
    """KEMAC encryption algorithm (RFC 3830 Table 6.2.a, RFC 6043 Table 6.5)."""

    NULL = 0
    AES_CM_128 = 1
    AES_KW_128 = 2
    AES_CM_256 = 3


class MacAlg(IntEnum):
    """KEMAC MAC / V auth algorithm (RFC 3830 Table 6.2.b, RFC 6043 Table 6.6)."""

    NULL = 0
    HMAC_SHA_1_160 = 1
    HMAC_SHA_256_256 = 2


#: MAC length in bytes per MAC alg (the field carries no length of its own).
MAC_LENGTHS: dict[int, int] = {
    MacAlg.NULL: 0,
    MacAlg.HMAC_SHA_1_160: 20,
    MacAlg.HMAC_SHA_256_256: 32,
}


class TsType(IntEnum):
    """Timestamp type (RFC 3830 Table 6.6, RFC 6043 Table 6.8)."""

    NTP_UTC = 0
    NTP = 1
    COUNTER = 2
    NTP_UTC_32 = 3


#: TS value length in bytes per TS type.
TS_LENGTHS: dict[int, int] = {
    TsType.NTP_UTC: 8,
    TsType.NTP: 8,
    TsType.COUNTER: 4,
    TsType.NTP_UTC_32: 4,
}


class TsRole(IntEnum):
    """TR payload role (RFC 6043 Table 6.9)."""

    TIME_OF_ISSUE = 1
    START_OF_VALIDITY = 2
    END_OF_VALIDITY = 3
    REKEYING_INTERVAL = 4


class IdType(IntEnum):
    """ID type (RFC 3830 Table 6.7.a, RFC 6043 Table 6.10)."""

    NAI = 0
    URI = 1
    BYTE_STRING = 2


class CertType(IntEnum):
    """CERT type (RFC 3830 Table 6.7.b)."""

    X509V3 = 0
    X509V3_URL = 1
    X509V3_SIGN = 2
    X509V3_ENCR = 3


class IdRole(IntEnum):
    """IDR payload role (RFC 6043 Table 6.11)."""

    INITIATOR = 1
    RESPONDER = 2
    KMS = 3
    PRE_SHARED_KEY = 4
    APPLICATION = 5


class RandRole(IntEnum):
    """RANDR payload role (RFC 6043 Table 6.13)."""

    INITIATOR = 1
    RESPONDER = 2
    KMS = 3


class HashFunc(IntEnum):
    """CHASH hash function (RFC 3830 Table 6.8, RFC 6043 Table 6.12)."""

    SHA_1 = 0
    MD5 = 1
    SHA_256 = 2


#: Hash length in bytes per hash function.
HASH_LENGTHS: dict[int, int] = {HashFunc.SHA_1: 20, HashFunc.MD5: 16, HashFunc.SHA_256: 32}


class DhGroup(IntEnum):
    """DH group (RFC 3830 Table 6.4)."""

    OAKLEY_5 = 0
    OAKLEY_1 = 1
    OAKLEY_2 = 2


#: DH value length in bytes per group.
DH_VALUE_LENGTHS: dict[int, int] = {
    DhGroup.OAKLEY_5: 192,
    DhGroup.OAKLEY_1: 96,
    DhGroup.OAKLEY_2: 128,
}


class SignType(IntEnum):
    """SIGN S type (RFC 3830 Table 6.5)."""

    RSA_PKCS1_V1_5 = 0
    RSA_PSS = 1


class ProtType(IntEnum):
    """SP / GENERIC-ID security protocol (RFC 3830 Table 6.10)."""

    SRTP = 0


class SrtpParam(IntEnum):
    """SRTP policy parameter types (RFC 3830 Table 6.10.1.a, RFC 4771 §4, RFC 7714 §14.3)."""

    ENCR_ALG = 0
    SESSION_ENCR_KEY_LENGTH = 1
    AUTH_ALG = 2
    SESSION_AUTH_KEY_LENGTH = 3
    SESSION_SALT_KEY_LENGTH = 4
    SRTP_PRF = 5
    KEY_DERIVATION_RATE = 6  # value encoding unspecified: kept as raw bytes
    SRTP_ENCRYPTION = 7
    SRTCP_ENCRYPTION = 8
    FEC_ORDER = 9
    SRTP_AUTHENTICATION = 10
    AUTH_TAG_LENGTH = 11
    SRTP_PREFIX_LENGTH = 12
    ROC_TRANSMISSION_RATE = 13
    SRTP_AUTH_ALG = 14
    SRTCP_AUTH_ALG = 15
    SRTP_SESSION_AUTH_KEY_LENGTH = 16
    SRTCP_SESSION_AUTH_KEY_LENGTH = 17
    SRTP_AUTH_TAG_LENGTH = 18
    SRTCP_AUTH_TAG_LENGTH = 19
    AEAD_AUTH_TAG_LENGTH = 20


class SrtpEncrAlg(IntEnum):
    """SRTP encryption algorithm values (RFC 3830 Table 6.10.1.b, RFC 7714 §14.3)."""

    NULL = 0
    AES_CM = 1
    AES_F8 = 2
    AES_GCM = 6


class SrtpAuthAlg(IntEnum):
    """SRTP authentication algorithm values (RFC 3830 Table 6.10.1.c, RFC 4771 §6)."""

    NULL = 0
    HMAC_SHA_1 = 1
    RCC_M1 = 2
    RCC_M2 = 3
    RCC_M3 = 4


class SrtpPrf(IntEnum):
    """SRTP PRF values (RFC 3830 Table 6.10.1.d)."""

    AES_CM = 0


class KeyDataType(IntEnum):
    """Key data sub-payload type (RFC 3830 Table 6.13.a, RFC 6043 Table 6.7)."""

    TGK = 0
    TGK_SALT = 1
    TEK = 2
    TEK_SALT = 3
    GTGK = 4
    GTGK_SALT = 5
    MPK = 6


#: Key data types whose sub-payload carries a salt (RFC 3830 §6.13, RFC 6043 §6.2.1).
SALTED_KEY_TYPES = frozenset({KeyDataType.TGK_SALT, KeyDataType.TEK_SALT, KeyDataType.GTGK_SALT})


class KeyValidityType(IntEnum):
    """KV type of key data and DH payloads (RFC 3830 Table 6.13.b)."""

    NULL = 0
    SPI = 1
    INTERVAL = 2


class GeneralExtType(IntEnum):
    """General Extension type (RFC 3830 Table 6.15, RFC 4563 §4, RFC 4738 §3.9.3, RFC 5410)."""

    VENDOR_ID = 0
    SDP_IDS = 1
    TESLA_I_KEY = 2
    KEY_ID = 3
    CSB_ID = 4
    OMA_BCAST = 5


class TicketType(IntEnum):
    """TP / TICKET ticket type (RFC 6043 Table 6.15)."""

    MIKEY_BASE_TICKET = 1
    THREEGPP_BASE_TICKET = 2
