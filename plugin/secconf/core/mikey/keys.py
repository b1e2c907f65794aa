"""MIKEY key schedule, KEMAC encryption and MACs (RFC 3830 §4, RFC 6043 §5, §6, App. A).

Label builders follow the RFC text field by field; every derivation runs
:func:`~secconf.core.mikey.prf.prf`.  Key bytes live in dataclass fields with
``repr=False`` and never appear in exception messages.

What each MAC covers (RFC 3830 §5.2, §6.2, §6.9; RFC 6043 §5.5, §6.10, App. A.1):

==================  ==========================================================
PSK I_MESSAGE       whole message up to the KEMAC MAC (``Message.bytes_without_mac``)
PK I_MESSAGE KEMAC  the KEMAC alone, Next payload set to 0 (:func:`pk_kemac_mac_input`)
R_MESSAGE V         message || Identity_i || Identity_r || TS value (:func:`rfc3830_verification_suffix`)
MIKEY-TICKET init   message || two identities; TRANSFER_INIT without Initiator Data
MIKEY-TICKET resp   message || the whole initial message, MAC included
Error               the Error message alone
base ticket V       TICKET body minus Next payload, Initiator Data (length) and MAC
Initiator Data Vr   Initiator Data minus Vr's MAC, key from unforked MPKr
==================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import AuthenticationFailed, MalformedMikey, MikeyErrorNo, UnsupportedMikey
from .constants import EncrAlg, MacAlg, PrfFunc
from .message import BaseTicketData, Message
from .payloads import (
    Identity,
    Kemac,
    KeyData,
    Signature,
    Ticket,
    Timestamp,
    Verification,
    decode_initiator_data,
    decode_key_data_list,
    encode_key_data_list,
    encode_payload_chain,
    mac_length,
)
from .prf import prf

__all__ = [
    "BASE_TICKET_CSB_ID",
    "Direction",
    "ForkKeyLabel",
    "MessageKeyLabel",
    "MessageKeys",
    "MpkLabel",
    "SrtpMasterKey",
    "TgkKeyLabel",
    "aes_cm",
    "append_verification",
    "base_ticket_keys",
    "base_ticket_mac_input",
    "build_initiator_data",
    "build_kemac",
    "compute_mac",
    "derive_mpk_pair",
    "fork_key",
    "fork_label",
    "initiator_data_auth_key",
    "initiator_data_label",
    "kemac_iv",
    "mpk_label",
    "open_kemac",
    "pk_kemac_mac_input",
    "protect",
    "protect_base_ticket",
    "rfc3830_message_keys",
    "rfc3830_message_label",
    "rfc3830_srtp_master_key",
    "rfc3830_tgk_label",
    "rfc3830_verification_suffix",
    "ticket_message_keys",
    "ticket_message_label",
    "ticket_srtp_master_key",
    "ticket_tgk_label",
    "tpk_label",
    "verify",
    "verify_base_ticket",
    "verify_initiator_data",
    "verify_mac",
]


# -- Label constants: consecutive nine-digit chunks of e (RFC 3830 §4.1.3) ----------------


class TgkKeyLabel(IntEnum):
    """Keys derived from a TGK / TGK' / GTGK (RFC 3830 Table 4.1.3)."""

    TEK = 0x2AD01C64  # 718281828
    AUTH = 0x1B5C7973  # 459045235
    ENCR = 0x15798CEF  # 360287471
    SALT = 0x39A2C14B  # 966967627


class MessageKeyLabel(IntEnum):
    """Keys protecting MIKEY messages, from a PSK / envelope key / MPK / TPK (RFC 3830 Table 4.1.4)."""

    ENCR = 0x150533E1  # 352662497
    AUTH = 0x2D22AC75  # 757247093
    SALT = 0x29B88916  # 699959574


class ForkKeyLabel(IntEnum):
    """Forked keys (RFC 6043 Table 5.1)."""

    MPKR = 0x2B288856  # 724076630, gives MPKr'
    TGK = 0x1512B54A  # 353547594, gives TGK'


class MpkLabel(IntEnum):
    """MPKi / MPKr from the base ticket's MPK (RFC 6043 Table A.1)."""

    MPKI = 0x220E99A2  # 571382178
    MPKR = 0x1F4D675B  # 525166427


class Direction(IntEnum):
    """Which message of an RFC 6043 exchange a key protects (RFC 6043 §5.1.2)."""

    INITIAL = 0x01
    RESPONSE = 0x02


#: CSB ID used in the KEMAC IV inside a MIKEY base ticket (RFC 6043 App. A.1).
BASE_TICKET_CSB_ID = 0xFFFFFFFF


def _u(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _len8(data: bytes, what: str) -> bytes:
    if len(data) > 0xFF:
        raise MalformedMikey(f"{what} longer than 255 bytes")
    return bytes([len(data)]) + data


# -- Labels ------------------------------------------------------------------------------


def rfc3830_tgk_label(constant: int, cs_id: int, csb_id: int, rand: bytes) -> bytes:
    """RFC 3830 §4.1.3: constant || cs_id || csb_id || RAND."""
    return _u(constant, 4) + _u(cs_id, 1) + _u(csb_id, 4) + rand


def rfc3830_message_label(constant: int, csb_id: int, rand: bytes) -> bytes:
    """RFC 3830 §4.1.4: constant || 0xFF || csb_id || RAND."""
    return _u(constant, 4) + b"\xff" + _u(csb_id, 4) + rand


def _rand_pair(randri: bytes | None, randrr: bytes | None) -> bytes:
    # RFC 6043 §5.1.2/§5.1.3: length (8 bits) || RAND for each, length 0 when omitted;
    # at least one must be used.  Only RAND length and RAND enter, never whole payloads.
    if not randri and not randrr:
        raise MalformedMikey("neither RANDRi nor RANDRr is available for the key derivation")
    return _len8(randri or b"", "RANDRi") + _len8(randrr or b"", "RANDRr")


def ticket_message_label(
    constant: int, csb_id: int, direction: Direction, randri: bytes | None, randrr: bytes | None
) -> bytes:
    """RFC 6043 §5.1.2: constant || 0xFF || CSB ID || 0x01/0x02 || len RANDRi || RANDRi || len RANDRr || RANDRr."""
    head = _u(constant, 4) + b"\xff" + _u(csb_id, 4) + _u(direction, 1)
    return head + _rand_pair(randri, randrr)


def ticket_tgk_label(
    constant: int, cs_id: int, randri: bytes | None, randrr: bytes | None
) -> bytes:
    """RFC 6043 §5.1.3: constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || RANDRi || len RANDRr || RANDRr.

    RANDRi goes in iff the policy's H flag is set, RANDRr iff G: pass ``None`` otherwise.
    """
    return _u(constant, 4) + _u(cs_id, 1) + b"\xff\xff\xff\xff\x03" + _rand_pair(randri, randrr)


def fork_label(constant: int, id_data: bytes, randrkms: bytes) -> bytes:
    """RFC 6043 §5.1.1: constant || 0xFF || 0xFFFFFFFF || 0x00 || len ID (16) || ID Data || len RANDRkms (8) || RANDRkms."""
    if len(id_data) > 0xFFFF:
        raise MalformedMikey("IDRr data longer than 65535 bytes")
    head = _u(constant, 4) + b"\xff\xff\xff\xff\xff\x00"
    return head + _u(len(id_data), 2) + id_data + _len8(randrkms, "RANDRkms")


def initiator_data_label(constant: int) -> bytes:
    """RFC 6043 §6.10 (Vr key): constant || 0xFF || 0xFFFFFFFF || 0x04."""
    return _u(constant, 4) + b"\xff\xff\xff\xff\xff\x04"


def tpk_label(constant: int, rand: bytes) -> bytes:
    """RFC 6043 App. A.2.1: constant || 0xFF || 0xFFFFFFFF || 0x05 || len RAND || RAND."""
    return _u(constant, 4) + b"\xff\xff\xff\xff\xff\x05" + _len8(rand, "RAND")


def mpk_label(constant: int, rand: bytes) -> bytes:
    """RFC 6043 App. A.2.2: constant || 0xFF || 0xFFFFFFFF || 0x06 || len RAND || RAND."""
    return _u(constant, 4) + b"\xff\xff\xff\xff\xff\x06" + _len8(rand, "RAND")


# -- Message protection keys (RFC 3830 §4.1.4, §4.2.3, §4.2.4; RFC 6043 §5.1.2, §6.2) ------

_ENCR_KEY_BYTES: dict[int, int] = {EncrAlg.NULL: 0, EncrAlg.AES_CM_128: 16, EncrAlg.AES_CM_256: 32}
# RFC 3830 §4.2.3: a 112-bit salt for AES-CM (RFC 6043 §6.2: the same for AES-CM-256).
_SALT_KEY_BYTES: dict[int, int] = {EncrAlg.NULL: 0, EncrAlg.AES_CM_128: 14, EncrAlg.AES_CM_256: 14}


def _encr_sizes(encr_alg: int) -> tuple[int, int]:
    if encr_alg not in _ENCR_KEY_BYTES:
        # AES-KW-128 (optional in RFC 3830 §4.2.3) is not implemented: see docs/mikey-decisions.md.
        raise UnsupportedMikey(
            f"KEMAC encryption algorithm {encr_alg} is not supported", MikeyErrorNo.INVALID_EA
        )
    return _ENCR_KEY_BYTES[encr_alg], _SALT_KEY_BYTES[encr_alg]


@dataclass(frozen=True, slots=True)
class MessageKeys:
    """encr_key, auth_key and salt_key protecting one MIKEY message (RFC 3830 §4.1.4).

    auth_key is as long as the hash output (RFC 3830 §4.2.4: 160 bits for
    HMAC-SHA-1; RFC 6043 §6.2: 256 bits for HMAC-SHA-256-256).
    """

    encr_alg: int
    mac_alg: int
    encr_key: bytes = field(repr=False)
    auth_key: bytes = field(repr=False)
    salt_key: bytes = field(repr=False)

    @classmethod
    def derive(
        cls,
        inkey: bytes,
        label_for: Callable[[int], bytes],
        prf_func: int,
        encr_alg: int,
        mac_alg: int,
    ) -> MessageKeys:
        """Run the PRF once per key; *label_for* maps a :class:`MessageKeyLabel` to a label."""
        encr_bytes, salt_bytes = _encr_sizes(encr_alg)
        auth_bytes = mac_length(mac_alg)

        def derive_one(constant: MessageKeyLabel, length: int) -> bytes:
            return prf(inkey, label_for(constant), 8 * length, prf_func) if length else b""

        return cls(
            encr_alg,
            mac_alg,
            derive_one(MessageKeyLabel.ENCR, encr_bytes),
            derive_one(MessageKeyLabel.AUTH, auth_bytes),
            derive_one(MessageKeyLabel.SALT, salt_bytes),
        )


def rfc3830_message_keys(
    inkey: bytes,
    csb_id: int,
    rand: bytes,
    encr_alg: int = EncrAlg.AES_CM_128,
    mac_alg: int = MacAlg.HMAC_SHA_1_160,
    prf_func: int = PrfFunc.MIKEY_1,
) -> MessageKeys:
    """Keys from a PSK or envelope key for an RFC 3830 exchange (§4.1.4)."""
    return MessageKeys.derive(
        inkey, lambda c: rfc3830_message_label(c, csb_id, rand), prf_func, encr_alg, mac_alg
    )


def ticket_message_keys(
    inkey: bytes,
    csb_id: int,
    direction: Direction,
    randri: bytes | None,
    randrr: bytes | None,
    encr_alg: int,
    mac_alg: int,
    prf_func: int,
) -> MessageKeys:
    """Keys from a PSK / envelope key / MPKi / MPKr' for an RFC 6043 message (§5.1.2).

    Request: RANDRi only; Resolve: RANDRr only; Transfer: RANDRi, plus RANDRr in
    the response iff G = 1.  *prf_func* is the HDR's (docs/mikey-decisions.md).
    """
    return MessageKeys.derive(
        inkey,
        lambda c: ticket_message_label(c, csb_id, direction, randri, randrr),
        prf_func,
        encr_alg,
        mac_alg,
    )


def base_ticket_keys(
    tpk: bytes, rand: bytes, encr_alg: int, mac_alg: int, prf_func: int
) -> MessageKeys:
    """Keys protecting MIKEY base-ticket Ticket Data, from the TPK (RFC 6043 App. A.2.1).

    *prf_func* is the Ticket Policy's PRF Func.
    """
    return MessageKeys.derive(tpk, lambda c: tpk_label(c, rand), prf_func, encr_alg, mac_alg)


def initiator_data_auth_key(mpkr: bytes, mac_alg: int, prf_func: int) -> bytes:
    """auth_key for the Vr of Initiator Data, from the unforked MPKr (RFC 6043 §6.10)."""
    label = initiator_data_label(MessageKeyLabel.AUTH)
    return prf(mpkr, label, 8 * mac_length(mac_alg), prf_func)


# -- Traffic keys and the RFC 6043 key family -------------------------------------------


@dataclass(frozen=True, slots=True)
class SrtpMasterKey:
    """SRTP master key and salt for one crypto session (digest §2.6)."""

    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)


def _srtp_master_key(
    key_data: KeyData,
    label_for: Callable[[int], bytes],
    key_bits: int,
    salt_bits: int,
    prf_func: int,
) -> SrtpMasterKey:
    if key_data.key_type in (2, 3):  # TEK, TEK+SALT: the key is sent directly (RFC 3830 §6.13)
        key = key_data.key
    elif key_data.key_type in (0, 1, 4, 5):  # TGK(+SALT), GTGK(+SALT): derive the TEK
        key = prf(key_data.key, label_for(TgkKeyLabel.TEK), key_bits, prf_func)
    else:
        raise MalformedMikey(f"key data type {key_data.key_type} is not a traffic key")
    # RFC 3830 §4.1.3, RFC 6043 §5.1.3: a salt sent in the key data is used as is;
    # only without one is a salt derived with 0x39A2C14B.
    if key_data.salt is not None:
        salt = key_data.salt
    else:
        salt = prf(key_data.key, label_for(TgkKeyLabel.SALT), salt_bits, prf_func)
    return SrtpMasterKey(key, salt)


def rfc3830_srtp_master_key(
    key_data: KeyData,
    cs_id: int,
    csb_id: int,
    rand: bytes,
    key_bits: int = 128,
    salt_bits: int = 112,
    prf_func: int = PrfFunc.MIKEY_1,
) -> SrtpMasterKey:
    """TEK and salt for crypto session *cs_id* from a TGK/TEK (RFC 3830 §4.1.3).

    *rand* is the RAND of the initial exchange (updates keep it); key and salt
    lengths come from SP types 1 and 4 (defaults 128 and 112 bits).
    """
    return _srtp_master_key(
        key_data, lambda c: rfc3830_tgk_label(c, cs_id, csb_id, rand), key_bits, salt_bits, prf_func
    )


def ticket_srtp_master_key(
    key_data: KeyData,
    cs_id: int,
    randri: bytes | None,
    randrr: bytes | None,
    prf_func: int,
    key_bits: int = 128,
    salt_bits: int = 112,
) -> SrtpMasterKey:
    """TEK and salt from a TGK, TGK' or GTGK in a Ticket Transfer (RFC 6043 §5.1.3).

    The CSB ID is replaced by 0xFFFFFFFF so group keys agree across CSBs;
    pass *randri* iff H = 1 and *randrr* iff G = 1; *prf_func* is the HDR's.
    """
    return _srtp_master_key(
        key_data,
        lambda c: ticket_tgk_label(c, cs_id, randri, randrr),
        key_bits,
        salt_bits,
        prf_func,
    )


def fork_key(
    inkey: bytes, constant: ForkKeyLabel, id_data: bytes, randrkms: bytes, prf_func: int
) -> bytes:
    """MPKr' (from MPKr) or TGK' (from a TGK) for one responder (RFC 6043 §5.1.1).

    *id_data* is the IDRr data from RESOLVE_RESP / TRANSFER_RESP; the output is as
    long as *inkey*; *prf_func* is the Ticket Policy's.
    """
    return prf(inkey, fork_label(constant, id_data, randrkms), 8 * len(inkey), prf_func)


def derive_mpk_pair(mpk: bytes, rand: bytes, prf_func: int) -> tuple[bytes, bytes]:
    """(MPKi, MPKr) from the base ticket's MPK and RAND (RFC 6043 App. A.2.2)."""
    bits = 8 * len(mpk)
    return (
        prf(mpk, mpk_label(MpkLabel.MPKI, rand), bits, prf_func),
        prf(mpk, mpk_label(MpkLabel.MPKR, rand), bits, prf_func),
    )


# -- KEMAC encryption (RFC 3830 §4.2.3, RFC 6043 §6.2) ---------------------------------------


def kemac_iv(salt_key: bytes, csb_id: int, timestamp: bytes) -> bytes:
    """IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000 (RFC 3830 §4.2.3).

    *salt_key* is the 112-bit salt; *timestamp* the Initiator's T in its 64-bit
    form (:meth:`Timestamp.as_64_bits`); inside a base ticket *csb_id* is
    :data:`BASE_TICKET_CSB_ID` (RFC 6043 App. A.1).
    """
    if len(salt_key) != 14 or len(timestamp) != 8:
        raise MalformedMikey("AES-CM IV needs a 112-bit salt and a 64-bit timestamp")
    mixed = int.from_bytes(salt_key, "big") ^ (csb_id << 64 | int.from_bytes(timestamp, "big"))
    return mixed.to_bytes(14, "big") + b"\x00\x00"


def aes_cm(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES in counter mode as SRTP uses it (RFC 3711 §4.1.1): encrypts and decrypts."""
    # The counter is the whole 128-bit block, incremented big-endian: exactly CTR mode.
    context = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return context.update(data) + context.finalize()


def _crypt_key_data(
    keys: MessageKeys, encr_alg: int, csb_id: int, timestamp: bytes, data: bytes
) -> bytes:
    if encr_alg != keys.encr_alg:
        raise UnsupportedMikey(
            f"KEMAC uses encryption algorithm {encr_alg}, keys were derived for {keys.encr_alg}",
            MikeyErrorNo.INVALID_EA,
        )
    _encr_sizes(encr_alg)
    if encr_alg == EncrAlg.NULL:
        return data
    return aes_cm(keys.encr_key, kemac_iv(keys.salt_key, csb_id, timestamp), data)


def build_kemac(
    key_data: Sequence[KeyData],
    keys: MessageKeys,
    csb_id: int,
    timestamp: bytes,
    leading_id: Identity | None = None,
    mac_alg: int | None = None,
) -> Kemac:
    """A KEMAC carrying *key_data* encrypted under *keys* (RFC 3830 §6.2, §4.2.3).

    The MAC is left zero-filled: :func:`protect` fills it once the message is
    complete (PSK mode).  *mac_alg* defaults to the keys' MAC alg; MIKEY-TICKET
    KEMACs pass ``MacAlg.NULL`` (the V payload carries the MAC, RFC 6043 §4.2).
    """
    plaintext = encode_key_data_list(key_data, leading_id)
    encrypted = _crypt_key_data(keys, keys.encr_alg, csb_id, timestamp, plaintext)
    alg = keys.mac_alg if mac_alg is None else mac_alg
    return Kemac(keys.encr_alg, encrypted, alg, bytes(mac_length(alg)))


def open_kemac(
    kemac: Kemac, keys: MessageKeys, csb_id: int, timestamp: bytes, leading_id: bool = False
) -> tuple[Identity | None, tuple[KeyData, ...]]:
    """Decrypt and parse a KEMAC's key data (verify the MAC first, with :func:`verify`)."""
    plaintext = _crypt_key_data(keys, kemac.encr_alg, csb_id, timestamp, kemac.encr_data)
    return decode_key_data_list(plaintext, leading_id)


# -- MACs (RFC 3830 §4.2.4, §5.2; RFC 6043 §5.5, §6.2) --------------------------------------

_MAC_HASHES: dict[int, str] = {MacAlg.HMAC_SHA_1_160: "sha1", MacAlg.HMAC_SHA_256_256: "sha256"}


def compute_mac(mac_alg: int, auth_key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-1-160 or HMAC-SHA-256-256 of *data*; the NULL MAC is empty."""
    if mac_alg == MacAlg.NULL:
        return b""
    if mac_alg not in _MAC_HASHES:
        raise UnsupportedMikey(
            f"MAC algorithm {mac_alg} is not supported", MikeyErrorNo.INVALID_MAC
        )
    return hmac.new(auth_key, data, _MAC_HASHES[mac_alg]).digest()


def verify_mac(mac_alg: int, auth_key: bytes, data: bytes, mac: bytes) -> None:
    """Raise :class:`AuthenticationFailed` unless *mac* is right (constant-time compare).

    A NULL MAC verifies nothing: refuse it unless lower layers protect the message.
    """
    if not hmac.compare_digest(compute_mac(mac_alg, auth_key, data), mac):
        raise AuthenticationFailed("MIKEY MAC does not verify")


def _last_mac_alg(message: Message) -> int:
    last = message.payloads[-1] if message.payloads else None
    if isinstance(last, Kemac):
        return last.mac_alg
    if isinstance(last, Verification):
        return last.auth_alg
    if isinstance(last, Signature):
        raise MalformedMikey("a SIGN payload is signed by the caller, not MAC'd")
    raise MalformedMikey("the message does not end in a KEMAC or V payload")


def protect(
    message: Message, auth_key: bytes, suffix: bytes = b"", excise_initiator_data: bool = False
) -> Message:
    """Fill the MAC of the last payload (KEMAC or V) over the message prefix || *suffix*.

    *suffix* is what follows the message in the MAC input: identities and TS
    value for RFC 3830 V (:func:`rfc3830_verification_suffix`), the identities
    for RFC 6043 initial messages, the initial message for responses (RFC 6043
    §5.5).  Set *excise_initiator_data* for a TRANSFER_INIT.
    """
    mac_input = message.bytes_without_mac(excise_initiator_data) + suffix
    return message.with_mac(compute_mac(_last_mac_alg(message), auth_key, mac_input))


def verify(
    message: Message, auth_key: bytes, suffix: bytes = b"", excise_initiator_data: bool = False
) -> None:
    """Check the MAC of the last payload as :func:`protect` computes it."""
    last = message.payloads[-1] if message.payloads else None
    mac_alg = _last_mac_alg(message)
    mac = last.mac if isinstance(last, Kemac | Verification) else b""
    verify_mac(mac_alg, auth_key, message.bytes_without_mac(excise_initiator_data) + suffix, mac)


def append_verification(
    message: Message,
    mac_alg: int,
    auth_key: bytes,
    suffix: bytes = b"",
    excise_initiator_data: bool = False,
) -> Message:
    """Append a V payload (Next payload Last) and compute its MAC (RFC 3830 §5.2)."""
    unsigned = message.appended(Verification(mac_alg, bytes(mac_length(mac_alg))))
    return protect(unsigned, auth_key, suffix, excise_initiator_data)


def rfc3830_verification_suffix(
    identity_i: bytes, identity_r: bytes, timestamp: Timestamp
) -> bytes:
    """Identity_i || Identity_r || Timestamp for an RFC 3830 V MAC (§5.2, §6.9).

    Identities are ID data values (empty when not used: docs/mikey-decisions.md);
    the timestamp is the T payload's TS value as sent.
    """
    return identity_i + identity_r + timestamp.value_bytes


def pk_kemac_mac_input(kemac: Kemac) -> bytes:
    """Public-key method: the KEMAC with Next payload 0, minus its MAC (RFC 3830 §5.2, §6.2)."""
    encoded = kemac.encode(0)
    return encoded[: len(encoded) - len(kemac.mac)]


# -- Base ticket and Initiator Data (RFC 6043 App. A.1, §6.10) ------------------------------


def base_ticket_mac_input(ticket: Ticket) -> bytes:
    """The TICKET payload minus Next payload, Initiator Data (length) and the V MAC (App. A.1)."""
    ticket_data = BaseTicketData.parse(ticket.ticket_data)
    last = ticket_data.payloads[-1] if ticket_data.payloads else None
    if not isinstance(last, Verification):
        raise MalformedMikey("base ticket Ticket Data does not end in a V payload")
    covered = ticket.policy_and_ticket_data()
    return covered[: len(covered) - len(last.mac)]


def protect_base_ticket(ticket: Ticket, auth_key: bytes) -> Ticket:
    """Fill the V MAC closing *ticket*'s base-ticket Ticket Data (auth_key from the TPK)."""
    ticket_data = BaseTicketData.parse(ticket.ticket_data)
    last = ticket_data.payloads[-1] if ticket_data.payloads else None
    if not isinstance(last, Verification):
        raise MalformedMikey("base ticket Ticket Data does not end in a V payload")
    mac = compute_mac(last.auth_alg, auth_key, base_ticket_mac_input(ticket))
    return dataclasses.replace(ticket, ticket_data=bytes(ticket_data.with_mac(mac)))


def verify_base_ticket(ticket: Ticket, auth_key: bytes) -> None:
    """Check the base ticket's V MAC; raises :class:`AuthenticationFailed`."""
    ticket_data = BaseTicketData.parse(ticket.ticket_data)
    last = ticket_data.payloads[-1] if ticket_data.payloads else None
    if not isinstance(last, Verification):
        raise MalformedMikey("base ticket Ticket Data does not end in a V payload")
    verify_mac(last.auth_alg, auth_key, base_ticket_mac_input(ticket), last.mac)


def build_initiator_data(vi: Verification, auth_key: bytes) -> bytes:
    """Initiator Data = Vi, Vr, Vr's MAC keyed from the unforked MPKr (RFC 6043 §6.10)."""
    unsigned = encode_payload_chain((vi, Verification(vi.auth_alg, bytes(len(vi.mac)))))
    covered = unsigned[: len(unsigned) - len(vi.mac)]
    return covered + compute_mac(vi.auth_alg, auth_key, covered)


def verify_initiator_data(initiator_data: bytes, auth_key: bytes) -> Verification:
    """Check Vr and return Vi, to be compared with the TRANSFER_INIT's V (RFC 6043 §4.2.3.4)."""
    payloads = decode_initiator_data(initiator_data)  # Vi chained or copied literally
    verifications = [p for p in payloads if isinstance(p, Verification)]
    if len(verifications) < 2 or payloads[-1] is not verifications[-1]:
        raise MalformedMikey("Initiator Data does not hold Vi and Vr")
    vi, vr = verifications[0], verifications[-1]
    if vr.auth_alg != vi.auth_alg:
        raise MalformedMikey("Vr does not use the authentication algorithm of Vi")
    covered = initiator_data[: len(initiator_data) - len(vr.mac)]
    verify_mac(vr.auth_alg, auth_key, covered, vr.mac)
    return vi
