"""Build/parse of every MIKEY payload (RFC 3830 §6, RFC 6043 §6), limits and error mapping."""

from __future__ import annotations

import pytest

from secconf.core.errors import (
    MalformedMessage,
    MalformedMikey,
    MikeyError,
    MikeyErrorNo,
    MikeyTooLarge,
    UnsupportedMikey,
)
from secconf.core.mikey import (
    BaseTicketData,
    CertHash,
    Certificate,
    CommonHeader,
    DataType,
    DhData,
    EmptyMap,
    EnvelopeData,
    ErrorPayload,
    GeneralExtension,
    GenericIdEntry,
    GenericIdMap,
    Identity,
    IdentityWithRole,
    IdRole,
    IntervalValidity,
    Kemac,
    KeyData,
    KeyDataType,
    Message,
    Payload,
    PolicyParam,
    Rand,
    RandRole,
    RandWithRole,
    SecurityPolicy,
    Signature,
    SpiValidity,
    SrtpIdEntry,
    SrtpIdMap,
    SrtpParam,
    SrtpSessionData,
    Ticket,
    TicketFlags,
    TicketHeader,
    TicketPolicy,
    Timestamp,
    TimestampWithRole,
    TsRole,
    TsType,
    Verification,
)
from secconf.core.mikey._wire import MAX_MESSAGE_SIZE, PayloadBudget, Reader
from secconf.core.mikey.payloads import (
    decode_initiator_data,
    decode_key_data_list,
    decode_payload_chain,
    encode_key_data_list,
    encode_payload_chain,
    flag_violations,
    ntp_from_unix,
)

HDR = CommonHeader(DataType.PSK_INIT, 0x01020304)


def _body_round_trip(payload: Payload, body_hex: str) -> None:
    """*payload* encodes to next-payload byte 0 + *body_hex*, and decodes back."""
    encoded = payload.encode(0)
    expected = bytes.fromhex(body_hex)
    if payload.has_next_field:
        expected = b"\x00" + expected
    assert encoded.hex() == expected.hex()
    message = Message(HDR, (payload,))
    assert Message.parse(bytes(message)) == message


# -- one test per payload, with the wire bytes written out by hand from the RFC figures ---


def test_timestamp_types() -> None:
    _body_round_trip(Timestamp(TsType.NTP_UTC, 0x0102030405060708), "000102030405060708")
    _body_round_trip(Timestamp(TsType.NTP, 1), "010000000000000001")
    _body_round_trip(Timestamp(TsType.COUNTER, 7), "0200000007")
    _body_round_trip(Timestamp(TsType.NTP_UTC_32, 0xE0000000), "03e0000000")
    # RFC 3830 §6.6: COUNTER left-padded; RFC 6043 §6.3: NTP-UTC-32 gets a zero fraction.
    assert Timestamp(TsType.COUNTER, 7).as_64_bits().hex() == "0000000000000007"
    assert Timestamp(TsType.NTP_UTC_32, 0xE0000000).as_64_bits().hex() == "e000000000000000"
    assert Timestamp(TsType.COUNTER, 7).value_bytes == b"\x00\x00\x00\x07"


def test_timestamp_with_role() -> None:
    payload = TimestampWithRole(TsRole.END_OF_VALIDITY, TsType.NTP_UTC_32, 0xAABBCCDD)
    _body_round_trip(payload, "0303aabbccdd")
    assert payload.as_64_bits().hex() == "aabbccdd00000000"


def test_unknown_timestamp_type_is_invalid_ts() -> None:
    data = bytes(HDR.encode(5)) + bytes.fromhex("00 09 00000000")
    with pytest.raises(UnsupportedMikey) as caught:
        Message.parse(data)
    assert caught.value.error_no == MikeyErrorNo.INVALID_TS
    assert caught.value.status_code == 488


def test_ntp_from_unix() -> None:
    assert ntp_from_unix(0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == ((2_208_988_801 << 32) | 0x80000000)


def test_rand_and_randr() -> None:
    _body_round_trip(Rand(b"\xaa" * 16), "10" + "aa" * 16)
    _body_round_trip(RandWithRole(RandRole.KMS, b"\x01\x02"), "03020102")


def test_id_cert_idr() -> None:
    _body_round_trip(Identity(1, b"sip:a@b"), "010007" + b"sip:a@b".hex())
    _body_round_trip(Certificate(0, b"\x30\x00"), "0000023000")
    _body_round_trip(IdentityWithRole(IdRole.KMS, 2, b"k"), "030200016b")


def test_chash() -> None:
    _body_round_trip(CertHash(2, bytes(32)), "02" + "00" * 32)
    _body_round_trip(CertHash(1, bytes(16)), "01" + "00" * 16)
    with pytest.raises(UnsupportedMikey) as caught:
        Message.parse(HDR.encode(8) + b"\x00\x07")
    assert caught.value.error_no == MikeyErrorNo.INVALID_HA


def test_verification() -> None:
    _body_round_trip(Verification(0, b""), "00")
    _body_round_trip(Verification(2, bytes(32)), "02" + "00" * 32)
    with pytest.raises(MalformedMikey):
        Verification(1, bytes(19))
    with pytest.raises(UnsupportedMikey) as caught:
        Message.parse(HDR.encode(9) + b"\x00\x05")
    assert caught.value.error_no == MikeyErrorNo.INVALID_MAC


def test_security_policy_params() -> None:
    policy = SecurityPolicy(
        3,
        0,
        (
            PolicyParam.of_int(SrtpParam.ENCR_ALG, 1),
            PolicyParam.of_int(SrtpParam.SESSION_ENCR_KEY_LENGTH, 16),
            PolicyParam.of_int(SrtpParam.ROC_TRANSMISSION_RATE, 1, length=2),
        ),
    )
    _body_round_trip(policy, "0300" + "000a" + "000101" + "010110" + "0d020001")
    param = policy.get(SrtpParam.SESSION_ENCR_KEY_LENGTH)
    assert param is not None
    assert param.int_value == 16
    assert policy.get(SrtpParam.AUTH_TAG_LENGTH) is None


def test_security_policy_param_running_past_its_length() -> None:
    data = HDR.encode(10) + bytes.fromhex("00 01 00 0003 00 05 01")
    with pytest.raises(MalformedMikey, match="truncated"):
        Message.parse(data)


def test_error_payload() -> None:
    _body_round_trip(ErrorPayload(MikeyErrorNo.INVALID_TICKET), "0e0000")
    _body_round_trip(ErrorPayload(1, reserved=0xBEEF), "01beef")


def test_general_extension() -> None:
    _body_round_trip(GeneralExtension(1, b"mikey"), "010005" + b"mikey".hex())


def test_kemac_hides_encrypted_data_from_repr() -> None:
    kemac = Kemac(0, b"SECRETKEY", 0, b"")
    _body_round_trip(kemac, "000009" + b"SECRETKEY".hex() + "00")
    assert "SECRET" not in repr(kemac)


def test_pke() -> None:
    _body_round_trip(EnvelopeData(2, b"\x01\x02\x03"), "8003010203")
    with pytest.raises(MalformedMikey):
        EnvelopeData(4, b"")


def test_dh_with_key_validity() -> None:
    value = bytes(range(96))
    _body_round_trip(DhData(1, value), "01" + value.hex() + "00")
    _body_round_trip(DhData(1, value, SpiValidity(b"\x07")), "01" + value.hex() + "01" + "0107")
    with pytest.raises(UnsupportedMikey) as caught:
        Message.parse(HDR.encode(3) + b"\x00\x09")
    assert caught.value.error_no == MikeyErrorNo.INVALID_DH


def test_sign_has_no_next_payload_and_must_be_last() -> None:
    sign = Signature(1, b"\xab" * 3)
    assert sign.encode(0).hex() == "1003ababab"
    message = Message(HDR, (Timestamp(0, 0), sign))
    assert Message.parse(bytes(message)) == message
    with pytest.raises(MalformedMikey):
        Message(HDR, (sign, Timestamp(0, 0)))
    # Bytes after a SIGN are trailing garbage.
    with pytest.raises(MalformedMikey):
        Message.parse(bytes(message) + b"\x00")


def test_key_data_sub_payloads() -> None:
    keys = [
        KeyData(KeyDataType.TGK, b"\x11" * 16),
        KeyData(KeyDataType.TEK_SALT, b"\x22" * 16, b"\x33" * 14, SpiValidity(b"\x01\x02")),
        KeyData(KeyDataType.MPK, b"\x44" * 16, None, IntervalValidity(b"\x00" * 6, b"\xff" * 6)),
    ]
    plain = encode_key_data_list(keys)
    assert plain[:4].hex() == "14000010"  # next=key data, TGK / KV null, 16 bytes
    assert plain[20:24].hex() == "14310010"  # TEK+SALT, KV SPI
    assert decode_key_data_list(plain) == (None, tuple(keys))
    assert "22222222" not in repr(keys[1])
    assert "\\x22" not in repr(keys[1])


def test_key_data_with_leading_identity_for_pk_mode() -> None:
    identity = Identity(0, b"alice@example.com")
    keys = [KeyData(KeyDataType.TGK, b"\x11" * 16)]
    plain = encode_key_data_list(keys, identity)
    assert plain[0] == 20
    assert decode_key_data_list(plain, leading_id=True) == (identity, tuple(keys))
    assert decode_key_data_list(encode_key_data_list([], identity), True) == (identity, ())


def test_key_data_rules() -> None:
    with pytest.raises(MalformedMikey):
        KeyData(KeyDataType.TGK_SALT, b"k")  # a +SALT type needs a salt
    with pytest.raises(MalformedMikey):
        KeyData(KeyDataType.TGK, b"k", b"s")
    with pytest.raises(UnsupportedMikey):
        decode_key_data_list(bytes.fromhex("00 70 0000"))  # type 7 is not defined
    with pytest.raises(UnsupportedMikey):
        decode_key_data_list(bytes.fromhex("00 03 0000"))  # KV 3 is not defined
    with pytest.raises(MalformedMikey):
        decode_key_data_list(bytes.fromhex("00 00 0000 ff"))  # trailing byte
    with pytest.raises(MalformedMikey):
        decode_key_data_list(bytes.fromhex("05 00 0000"))  # a T payload inside KEMAC
    assert decode_key_data_list(b"") == (None, ())  # an update without keys


def test_key_data_outside_kemac_is_refused() -> None:
    with pytest.raises(MalformedMikey, match="outside a KEMAC"):
        Message.parse(HDR.encode(20) + bytes.fromhex("00 00 0000"))


# -- HDR and CS ID maps ---------------------------------------------------------------------


def test_header_with_srtp_id_map() -> None:
    header = CommonHeader(0, 0xCAFEBABE, SrtpIdMap((SrtpIdEntry(1, 2, 3), SrtpIdEntry(4, 5, 6))))
    encoded = header.encode(0)
    assert encoded.hex() == "01000000cafebabe0200" + "010000000200000003" + "040000000500000006"
    assert Message.parse(encoded) == Message(header)


def test_header_flags_and_prf() -> None:
    header = CommonHeader(14, 1, EmptyMap(), response_expected=True, prf_func=1)
    assert header.encode(0)[:4].hex() == "010e0081"
    assert Message.parse(header.encode(0)).header == header
    assert Message.parse(CommonHeader(11, 1, EmptyMap(3)).encode(0)).header.cs_id_map == EmptyMap(3)


def test_generic_id_map() -> None:
    entries = (
        GenericIdEntry.for_srtp(1, [1, 2], None),
        GenericIdEntry.for_srtp(2, [7], SrtpSessionData(0xDEADBEEF, 5, 0x1234), spi=b"\x09"),
        GenericIdEntry.for_srtp(3, [], SrtpSessionData(0x01020304)),
    )
    header = CommonHeader(DataType.TRANSFER_INIT, 9, GenericIdMap(entries))
    encoded = header.encode(0)
    assert encoded[10:].hex() == (
        "0100020102000000"
        + "020081070" + "00a" + "deadbeef000000051234" + "0109"
        + "0300000004010203040" + "0"
    )  # fmt: skip
    parsed = Message.parse(encoded).header
    assert parsed == header
    assert isinstance(parsed.cs_id_map, GenericIdMap)
    assert parsed.cs_id_map.entries[1].srtp_session() == SrtpSessionData(0xDEADBEEF, 5, 0x1234)
    assert parsed.cs_id_map.entries[0].srtp_session() is None


def test_header_refusals() -> None:
    with pytest.raises(UnsupportedMikey, match="version"):
        Message.parse(bytes.fromhex("02 00 00 00 00000000 00 01"))
    with pytest.raises(UnsupportedMikey, match="map type"):
        Message.parse(bytes.fromhex("01 00 00 00 00000000 00 07"))
    with pytest.raises(MalformedMikey, match="truncated"):
        Message.parse(bytes.fromhex("01 00 00 00 00000000 01 00 00"))
    with pytest.raises(MalformedMikey):
        Message.parse(b"")


# -- TP / TICKET / base ticket ---------------------------------------------------------------


def _policy_payloads() -> tuple[Payload, ...]:
    return (
        IdentityWithRole(IdRole.KMS, 1, b"sip:kms@example.com"),
        TimestampWithRole(TsRole.END_OF_VALIDITY, TsType.NTP_UTC_32, 0xE1000000),
        Kemac(0, encode_key_data_list([KeyData(KeyDataType.TGK, bytes(16))]), 0, b""),
        IdentityWithRole(IdRole.RESPONDER, 1, b"sip:conf@example.com"),
    )


FLAGS = TicketFlags.D | TicketFlags.E | TicketFlags.F | TicketFlags.H | TicketFlags.N


def test_ticket_policy_layout() -> None:
    policy = TicketPolicy(1, 1, 1, 1, FLAGS, _policy_payloads())
    encoded = policy.encode(0)
    # Ticket Type 1, Subtype 1, Version 1; PRF 1 and D in byte 1; E F H in byte 2; N in byte 3.
    assert encoded[:8].hex() == "0000010101" + "03" + "d0" + "40"
    message = Message(HDR, (policy,))
    assert Message.parse(bytes(message)) == message
    assert flag_violations(FLAGS) == []
    assert flag_violations(TicketFlags.K | TicketFlags.I) == [
        "not D implies L",
        "not G implies H",
        "not H implies G",
        "I implies E",
        "K implies D",
    ]


def test_tp_data_refuses_nested_tickets_and_empty_first_payload() -> None:
    inner = TicketPolicy(1, 1, 1, 0, FLAGS).encode(0)
    tp_data = bytes([16]) + inner
    data = HDR.encode(16) + TicketPolicy(1, 1, 1, 0, FLAGS).encode(0)[:8]
    data += len(tp_data).to_bytes(2, "big") + tp_data
    with pytest.raises(MalformedMikey, match="not allowed here"):
        Message.parse(data)
    with pytest.raises(MalformedMikey):
        decode_payload_chain(b"\x00")


def test_initiator_data_reads_vi_chained_or_copied_literally() -> None:
    # RFC 6043 §6.10: Vi "SHALL be identical to the V payload in the TRANSFER_INIT",
    # whose Next payload is 0 (last payload); secconf writes 9 and reads both
    # (docs/mikey-decisions.md #23).
    vi, vr = Verification(1, b"\x01" * 20), Verification(1, b"\x02" * 20)
    chained = encode_payload_chain((vi, vr))
    literal = chained[:1] + b"\x00" + chained[2:]
    assert chained[1] == 9
    assert decode_initiator_data(chained) == decode_initiator_data(literal) == (vi, vr)
    with pytest.raises(MalformedMikey):
        decode_payload_chain(literal)  # the plain chain rule cannot read it
    # Only a first V may be followed that way: anything else after Last payload is refused.
    rand = Rand(b"\x05" * 16).encode(0)
    with pytest.raises(MalformedMikey):
        decode_initiator_data(bytes([11]) + rand + vr.encode(0))
    with pytest.raises(MalformedMikey):
        decode_initiator_data(literal + b"\x00")


def _base_ticket_data() -> BaseTicketData:
    return BaseTicketData(
        TicketHeader(b"impl"),
        (
            Timestamp(TsType.NTP_UTC, 1),
            Rand(b"\x05" * 16),
            Kemac(1, b"\x99" * 20, 0, b""),
            IdentityWithRole(IdRole.PRE_SHARED_KEY, 2, b"tpk-1"),
            Verification(1, bytes(20)),
        ),
    )


def test_ticket_with_base_ticket_data_and_initiator_data() -> None:
    ticket_data = _base_ticket_data()
    assert bytes(ticket_data)[:7].hex() == "050004" + b"impl".hex()
    assert BaseTicketData.parse(bytes(ticket_data)) == ticket_data
    initiator = encode_payload_chain((Verification(1, b"\x01" * 20), Verification(1, b"\x02" * 20)))
    ticket = Ticket(
        1, 1, 1, 0, FLAGS | TicketFlags.I, _policy_payloads(), bytes(ticket_data), initiator
    )
    message = Message(HDR, (Timestamp(0, 0), ticket))
    parsed = Message.parse(bytes(message))
    assert parsed == message
    parsed_ticket = parsed.find(Ticket)
    assert parsed_ticket is not None
    assert parsed_ticket.initiator_payloads() == (
        Verification(1, b"\x01" * 20),
        Verification(1, b"\x02" * 20),
    )
    assert parsed_ticket.policy == TicketPolicy(
        1, 1, 1, 0, FLAGS | TicketFlags.I, _policy_payloads()
    )
    assert len(initiator) == 1 + 2 * 22
    assert parsed_ticket.encode(0).endswith(b"\x00\x2d" + initiator)


def test_ticket_without_initiator_data_still_has_its_length_field() -> None:
    ticket = Ticket(1, 1, 1, 0, FLAGS, (), b"\x01")
    assert ticket.encode(0).hex().endswith("0000" + "0001" + "01" + "0000")


# -- message-level rules ------------------------------------------------------------------------


def test_next_payload_fields_come_from_the_order() -> None:
    message = Message(HDR, (Timestamp(0, 0), Rand(b"r"), Verification(0, b"")))
    data = bytes(message)
    assert data[2] == 5  # HDR names T
    assert data[10] == 11  # T names RAND
    assert data[20] == 9  # RAND names V
    assert data[23] == 0  # V is last


def test_find_by_role() -> None:
    message = Message(
        HDR, (RandWithRole(RandRole.INITIATOR, b"i"), RandWithRole(RandRole.RESPONDER, b"r"))
    )
    assert message.find(RandWithRole, RandRole.RESPONDER) == RandWithRole(2, b"r")
    assert message.find(RandWithRole, RandRole.KMS) is None
    assert len(message.find_all(RandWithRole)) == 2


def test_trailing_garbage_and_unknown_payloads_are_refused() -> None:
    data = bytes(Message(HDR, (Rand(b"x"),)))
    with pytest.raises(MalformedMikey, match="unexpected bytes"):
        Message.parse(data + b"\x00")
    with pytest.raises(UnsupportedMikey, match="payload type 26"):
        Message.parse(HDR.encode(26) + b"\x00")


def test_size_and_count_limits() -> None:
    with pytest.raises(MikeyTooLarge) as caught:
        Message.parse(bytes(MAX_MESSAGE_SIZE + 1))
    assert caught.value.status_code == 413
    many = Message(HDR, tuple(Rand(b"") for _ in range(64)))
    assert Message.parse(bytes(many)) == many
    with pytest.raises(MikeyTooLarge):
        Message(HDR, tuple(Rand(b"") for _ in range(65)))
    with pytest.raises(MikeyTooLarge):
        Message.parse(bytes(many)[:-2] + bytes([11, 0, 0]))  # a 65th RAND
    big = tuple(GeneralExtension(0, bytes(60000)) for _ in range(2))
    with pytest.raises(MikeyTooLarge):
        bytes(Message(HDR, big))


def test_payload_budget_counts_nested_payloads() -> None:
    budget = PayloadBudget(2)
    budget.spend()
    budget.spend()
    with pytest.raises(MikeyTooLarge):
        budget.spend()


def test_reader_reports_truncation_as_malformed() -> None:
    reader = Reader(b"\x01")
    with pytest.raises(MalformedMikey):
        reader.u16("field")


def test_error_classes() -> None:
    error = MalformedMikey("bad")
    assert isinstance(error, MikeyError)
    assert isinstance(error, MalformedMessage)
    assert (error.status_code, error.error_no) == (400, MikeyErrorNo.UNSPECIFIED)
    assert UnsupportedMikey("x", MikeyErrorNo.INVALID_EA).error_no == 4
