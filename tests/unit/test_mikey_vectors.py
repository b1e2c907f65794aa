"""MIKEY known answers: digest §2.8 ([self] regression data) and RFC 4567 §5.1 messages."""

from __future__ import annotations

import base64
import tomllib
from fractions import Fraction

import pytest

from secconf.core.mikey import (
    CommonHeader,
    DataType,
    Identity,
    Kemac,
    KeyData,
    KeyDataType,
    Message,
    PayloadType,
    PrfFunc,
    Rand,
    SecurityPolicy,
    SrtpIdEntry,
    SrtpIdMap,
    Timestamp,
    TsType,
    Verification,
    prf,
)
from secconf.core.mikey import keys as mk
from secconf.core.mikey.payloads import decode_key_data_list, encode_key_data_list
from tests.conftest import DATA

KAT = tomllib.loads((DATA / "vectors" / "mikey-kat.toml").read_text())
RFC4567 = tomllib.loads((DATA / "vectors" / "mikey-rfc4567.toml").read_text())

INPUTS = KAT["inputs"]
PSK = bytes.fromhex(INPUTS["psk"])
TGK = bytes.fromhex(INPUTS["tgk"])
RAND = bytes.fromhex(INPUTS["rand"])
CSB_ID: int = INPUTS["csb_id"]
T64 = bytes.fromhex(INPUTS["timestamp"])


def _message_keys() -> mk.MessageKeys:
    return mk.rfc3830_message_keys(PSK, CSB_ID, RAND)


# -- digest §2.8 -----------------------------------------------------------------------


def test_message_key_label_and_keys() -> None:
    vector = KAT["message_keys"]
    label = mk.rfc3830_message_label(mk.MessageKeyLabel.ENCR, CSB_ID, RAND)
    assert label.hex() == vector["label_encr"]
    keys = _message_keys()
    assert keys.encr_key.hex() == vector["encr_key"]
    assert keys.auth_key.hex() == vector["auth_key"]
    assert keys.salt_key.hex() == vector["salt_key"]


def test_tgk_label_and_traffic_keys() -> None:
    vector = KAT["tgk_keys"]
    assert (
        mk.rfc3830_tgk_label(mk.TgkKeyLabel.TEK, 1, CSB_ID, RAND).hex() == vector["label_tek_cs1"]
    )
    tgk = KeyData(KeyDataType.TGK, TGK)
    cs1 = mk.rfc3830_srtp_master_key(tgk, 1, CSB_ID, RAND)
    assert cs1.key.hex() == vector["tek_cs1"]
    assert cs1.salt.hex() == vector["salt_cs1"]
    assert mk.rfc3830_srtp_master_key(tgk, 2, CSB_ID, RAND).key.hex() == vector["tek_cs2"]


def test_salt_sent_in_key_data_is_used_not_derived() -> None:
    # RFC 3830 §4.1.3: a salt in the key data sub-payload SHALL be used.
    salt = bytes(range(14))
    master = mk.rfc3830_srtp_master_key(KeyData(KeyDataType.TGK_SALT, TGK, salt), 1, CSB_ID, RAND)
    assert master.salt == salt
    assert master.key.hex() == KAT["tgk_keys"]["tek_cs1"]


def test_prf_mikey_1_with_two_inkey_blocks() -> None:
    vector = KAT["prf"]
    out = prf(
        bytes.fromhex(vector["mikey1_inkey"]),
        bytes.fromhex(vector["mikey1_label"]),
        vector["mikey1_out_bits"],
        PrfFunc.MIKEY_1,
    )
    assert out.hex() == vector["mikey1_out"]


def test_prf_hmac_sha_256() -> None:
    vector = KAT["prf"]
    out = prf(
        bytes.fromhex(vector["sha256_inkey"]),
        bytes.fromhex(vector["sha256_label"]),
        vector["sha256_out_bits"],
        PrfFunc.PRF_HMAC_SHA_256,
    )
    assert out.hex() == vector["sha256_out"]


def test_kemac_iv_and_encryption() -> None:
    vector = KAT["kemac"]
    keys = _message_keys()
    assert mk.kemac_iv(keys.salt_key, CSB_ID, T64).hex() == vector["iv"]
    plain = encode_key_data_list([KeyData(KeyDataType.TGK, TGK)])
    assert plain.hex() == vector["key_data_plain"]
    kemac = mk.build_kemac([KeyData(KeyDataType.TGK, TGK)], keys, CSB_ID, T64)
    assert kemac.encr_data.hex() == vector["key_data_encrypted"]
    assert decode_key_data_list(plain) == (None, (KeyData(KeyDataType.TGK, TGK),))


def test_psk_i_message_is_rebuilt_byte_for_byte() -> None:
    vector = KAT["psk_i_message"]
    keys = _message_keys()
    timestamp = Timestamp(TsType.NTP_UTC, int.from_bytes(T64, "big"))
    header = CommonHeader(
        DataType.PSK_INIT,
        CSB_ID,
        SrtpIdMap((SrtpIdEntry(0, 0x11223344, 0),)),
        response_expected=True,
    )
    kemac = mk.build_kemac([KeyData(KeyDataType.TGK, TGK)], keys, CSB_ID, timestamp.as_64_bits())
    unsigned = Message(header, (timestamp, Rand(RAND), SecurityPolicy(0), kemac))
    signed = mk.protect(unsigned, keys.auth_key)
    assert bytes(signed).hex() == vector["message"]
    assert len(unsigned.bytes_without_mac()) == 77
    assert signed.payloads[-1] == Kemac(1, kemac.encr_data, 1, bytes.fromhex(vector["mac"]))


def test_psk_i_message_verifies_and_opens() -> None:
    message = Message.parse(bytes.fromhex(KAT["psk_i_message"]["message"]))
    keys = _message_keys()
    mk.verify(message, keys.auth_key)
    timestamp = message.find(Timestamp)
    kemac = message.find(Kemac)
    assert timestamp is not None
    assert kemac is not None
    identity, key_data = mk.open_kemac(kemac, keys, message.header.csb_id, timestamp.as_64_bits())
    assert identity is None
    assert key_data == (KeyData(KeyDataType.TGK, TGK),)


def test_psk_r_message_v_mac_covers_the_timestamp_value() -> None:
    vector = KAT["psk_r_message"]
    keys = _message_keys()
    request = Message.parse(bytes.fromhex(KAT["psk_i_message"]["message"]))
    timestamp = request.find(Timestamp)
    assert timestamp is not None
    header = CommonHeader(DataType.PSK_RESP, CSB_ID, request.header.cs_id_map)
    suffix = mk.rfc3830_verification_suffix(b"", b"", timestamp)
    built = mk.append_verification(Message(header, (timestamp,)), 1, keys.auth_key, suffix)
    assert bytes(built).hex() == vector["message"]
    parsed = Message.parse(bytes.fromhex(vector["message"]))
    mk.verify(parsed, keys.auth_key, suffix)
    assert parsed.find(Verification) == Verification(1, bytes.fromhex(vector["mac"]))


def test_tampered_psk_i_message_fails_authentication() -> None:
    from secconf.core.errors import AuthenticationFailed

    data = bytearray(bytes.fromhex(KAT["psk_i_message"]["message"]))
    data[20] ^= 0x01  # inside the T payload
    with pytest.raises(AuthenticationFailed) as caught:
        mk.verify(Message.parse(bytes(data)), _message_keys().auth_key)
    assert caught.value.error_no == 0
    assert caught.value.status_code == 403


# -- label constants are chunks of e (RFC 3830 §4.1.3) -------------------------------------


def _e_digits(count: int) -> str:
    total = Fraction(0)
    term = Fraction(1)
    for k in range(1, 150):
        total += term
        term /= k
    scaled = total * 10 ** (count + 5)
    return str(scaled.numerator // scaled.denominator)[1 : count + 1]


def test_label_constants_are_consecutive_nine_digit_chunks_of_e() -> None:
    digits = _e_digits(9 * 11)
    chunks = [int(digits[i : i + 9]) for i in range(0, 99, 9)]
    constants = [
        mk.TgkKeyLabel.TEK,
        mk.TgkKeyLabel.AUTH,
        mk.TgkKeyLabel.ENCR,
        mk.MessageKeyLabel.ENCR,
        mk.MessageKeyLabel.AUTH,
        mk.MessageKeyLabel.SALT,
        mk.TgkKeyLabel.SALT,
        mk.ForkKeyLabel.MPKR,
        mk.ForkKeyLabel.TGK,
        mk.MpkLabel.MPKI,
        mk.MpkLabel.MPKR,
    ]
    assert [int(c) for c in constants] == chunks


# -- RFC 4567 §5.1 -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["i_message", "r_message"])
def test_rfc4567_messages_round_trip_exactly(name: str) -> None:
    vector = RFC4567[name]
    data = base64.b64decode(vector["base64"], validate=True)
    assert len(data) == vector["length"]
    message = Message.parse(data)
    assert bytes(message) == data
    assert message.header.csb_id == vector["csb_id"]
    assert message.header.response_expected


def test_rfc4567_i_message_fields() -> None:
    message = Message.parse(base64.b64decode(RFC4567["i_message"]["base64"]))
    assert message.data_type == DataType.PSK_INIT
    assert [p.payload_type for p in message.payloads] == [
        PayloadType.T,
        PayloadType.RAND,
        PayloadType.ID,
        PayloadType.SP,
        PayloadType.KEMAC,
    ]
    assert message.header.cs_id_map == SrtpIdMap((SrtpIdEntry(0, 0, 0),))
    assert message.find(Identity) == Identity(0, RFC4567["i_message"]["initiator"].encode())
    assert message.find(SecurityPolicy) == SecurityPolicy(0, 0, ())
    kemac = message.find(Kemac)
    assert kemac is not None
    assert (kemac.encr_alg, len(kemac.encr_data), kemac.mac_alg) == (1, 36, 1)
    assert message.find(Timestamp) == Timestamp(0, 0xC8E350EA00000000)
    assert len(message.bytes_without_mac()) == 132 - 20


def test_rfc4567_r_message_fields() -> None:
    message = Message.parse(base64.b64decode(RFC4567["r_message"]["base64"]))
    assert message.data_type == DataType.PSK_RESP
    assert message.find(Identity) == Identity(0, RFC4567["r_message"]["responder"].encode())
    assert message.find(Timestamp) == Timestamp(0, 0xC8E350EA00000000)  # echoes the I_MESSAGE
    verification = message.find(Verification)
    assert verification is not None
    assert verification.auth_alg == 1
