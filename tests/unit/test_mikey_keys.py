"""RFC 6043 key family, label layouts and MAC coverage (no published vectors: structure checks)."""

from __future__ import annotations

import dataclasses

import pytest

from secconf.core.errors import AuthenticationFailed, MalformedMikey, UnsupportedMikey
from secconf.core.mikey import (
    BaseTicketData,
    CommonHeader,
    DataType,
    EmptyMap,
    GenericIdEntry,
    GenericIdMap,
    IdentityWithRole,
    IdRole,
    Kemac,
    KeyData,
    KeyDataType,
    MacAlg,
    Message,
    PrfFunc,
    Rand,
    RandRole,
    RandWithRole,
    SpiValidity,
    Ticket,
    TicketFlags,
    TicketHeader,
    Timestamp,
    TsType,
    Verification,
    prf,
)
from secconf.core.mikey import keys as mk

RANDRI = bytes(range(16))
RANDRR = bytes(range(100, 116))
SHA256 = PrfFunc.PRF_HMAC_SHA_256


def test_ticket_labels_follow_the_rfc_layouts() -> None:
    # RFC 6043 §5.1.2
    assert mk.ticket_message_label(
        0x150533E1, 0xAABBCCDD, mk.Direction.RESPONSE, b"\x01", None
    ) == (bytes.fromhex("150533e1 ff aabbccdd 02 01 01 00"))
    # §5.1.3: CSB ID replaced by 0xFFFFFFFF, then 0x03
    assert mk.ticket_tgk_label(0x2AD01C64, 7, None, b"\x09\x08") == bytes.fromhex(
        "2ad01c64 07 ffffffff 03 00 02 0908"
    )
    # §5.1.1: 16-bit ID length, 8-bit RANDRkms length
    assert mk.fork_label(mk.ForkKeyLabel.TGK, b"bob", b"\x77") == bytes.fromhex(
        "1512b54a ff ffffffff 00 0003 626f62 01 77"
    )
    assert mk.initiator_data_label(0x2D22AC75) == bytes.fromhex("2d22ac75 ff ffffffff 04")
    assert mk.tpk_label(0x29B88916, b"\x01\x02") == bytes.fromhex("29b88916 ff ffffffff 05 02 0102")
    assert mk.mpk_label(mk.MpkLabel.MPKI, b"\x03") == bytes.fromhex("220e99a2 ff ffffffff 06 01 03")


def test_at_least_one_rand_is_required() -> None:
    with pytest.raises(MalformedMikey):
        mk.ticket_tgk_label(0x2AD01C64, 1, None, None)


def test_mpk_pair_and_forking() -> None:
    mpk = bytes(range(32))
    mpki, mpkr = mk.derive_mpk_pair(mpk, RANDRI, SHA256)
    assert len(mpki) == len(mpkr) == 32
    assert mpki != mpkr
    assert mpki == prf(mpk, mk.mpk_label(mk.MpkLabel.MPKI, RANDRI), 256, SHA256)
    forked = mk.fork_key(mpkr, mk.ForkKeyLabel.MPKR, b"sip:bob@example.com", RANDRR, SHA256)
    assert len(forked) == 32
    other = mk.fork_key(mpkr, mk.ForkKeyLabel.MPKR, b"sip:carol@example.com", RANDRR, SHA256)
    assert forked != other  # a different responder gets a different MPKr'


def test_ticket_traffic_keys_do_not_depend_on_the_csb() -> None:
    gtgk = KeyData(KeyDataType.GTGK, bytes(range(16)), None, SpiValidity(b"\x01"))
    master = mk.ticket_srtp_master_key(gtgk, 1, RANDRI, None, PrfFunc.MIKEY_1)
    assert master.key == prf(gtgk.key, mk.ticket_tgk_label(0x2AD01C64, 1, RANDRI, None), 128)
    assert master.salt == prf(gtgk.key, mk.ticket_tgk_label(0x39A2C14B, 1, RANDRI, None), 112)
    tek = KeyData(KeyDataType.TEK, b"\x42" * 16)
    assert mk.ticket_srtp_master_key(tek, 1, RANDRI, None, 0).key == b"\x42" * 16
    with pytest.raises(MalformedMikey):
        mk.ticket_srtp_master_key(KeyData(KeyDataType.MPK, b"k"), 1, RANDRI, None, 0)


def test_message_keys_sizes_per_algorithm() -> None:
    keys = mk.ticket_message_keys(
        b"\x01" * 32, 5, mk.Direction.INITIAL, RANDRI, None, 3, MacAlg.HMAC_SHA_256_256, SHA256
    )
    assert (len(keys.encr_key), len(keys.auth_key), len(keys.salt_key)) == (32, 32, 14)
    assert "encr_key" not in repr(keys)
    assert keys.auth_key.hex() not in repr(keys)
    null = mk.rfc3830_message_keys(b"\x01" * 16, 1, RANDRI, 0, 0)
    assert (null.encr_key, null.auth_key, null.salt_key) == (b"", b"", b"")
    with pytest.raises(UnsupportedMikey) as caught:
        mk.rfc3830_message_keys(b"\x01" * 16, 1, RANDRI, 2)  # AES-KW-128
    assert caught.value.error_no == 4
    with pytest.raises(UnsupportedMikey) as caught:
        prf(b"k", b"l", 8, 5)
    assert caught.value.error_no == 2


def test_prf_output_bits_and_inkey_split() -> None:
    assert prf(b"k", b"label", 12)[1] & 0x0F == 0
    assert prf(b"k", b"label", 12)[:1] == prf(b"k", b"label", 8)
    # A 32-byte inkey is one full block (the minisip `len % 32` pitfall, digest §2.1).
    assert prf(bytes(32), b"l", 160) == mk.compute_mac(
        1, bytes(32), mk.compute_mac(1, bytes(32), b"l") + b"l"
    )
    with pytest.raises(MalformedMikey):
        prf(b"", b"l", 8)


def _transfer_init(mpki: bytes) -> tuple[Message, mk.MessageKeys]:
    keys = mk.ticket_message_keys(
        mpki, 0x01020304, mk.Direction.INITIAL, RANDRI, None, 1, MacAlg.HMAC_SHA_1_160, 0
    )
    ticket = Ticket(1, 1, 1, 0, TicketFlags.D | TicketFlags.E | TicketFlags.F | TicketFlags.I,
                    (IdentityWithRole(IdRole.RESPONDER, 1, b"sip:conf@example.com"),),
                    b"opaque ticket data", b"")  # fmt: skip
    header = CommonHeader(
        DataType.TRANSFER_INIT, 0x01020304, GenericIdMap((GenericIdEntry.for_srtp(1, [0], None),))
    )
    message = Message(
        header,
        (
            Timestamp(TsType.NTP_UTC, 0xC8E350EA00000000),
            RandWithRole(RandRole.INITIATOR, RANDRI),
            IdentityWithRole(IdRole.INITIATOR, 1, b"sip:alice@example.com"),
            ticket,
        ),
    )
    return message, keys


def test_transfer_init_mac_excludes_initiator_data() -> None:
    message, keys = _transfer_init(b"\x11" * 16)
    suffix = b"sip:alice@example.com" + b"sip:conf@example.com"  # Identity_i || Identity_r
    signed = mk.append_verification(message, 1, keys.auth_key, suffix, excise_initiator_data=True)
    mk.verify(signed, keys.auth_key, suffix, excise_initiator_data=True)
    # The Initiator then puts Vi (this very V) and Vr into the TICKET: the MAC still holds.
    vi = signed.payloads[-1]
    assert isinstance(vi, Verification)
    mpkr_auth = mk.initiator_data_auth_key(b"\x22" * 16, 1, 0)
    initiator_data = mk.build_initiator_data(vi, mpkr_auth)
    ticket = signed.find(Ticket)
    assert ticket is not None
    with_data = Message(
        signed.header,
        tuple(
            dataclasses.replace(p, initiator_data=initiator_data) if p is ticket else p
            for p in signed.payloads
        ),
    )
    mk.verify(with_data, keys.auth_key, suffix, excise_initiator_data=True)
    assert mk.verify_initiator_data(initiator_data, mpkr_auth) == vi
    with pytest.raises(AuthenticationFailed):
        mk.verify_initiator_data(initiator_data, mk.initiator_data_auth_key(b"\x23" * 16, 1, 0))
    with pytest.raises(AuthenticationFailed):
        mk.verify(with_data, keys.auth_key, suffix)  # without excision it does not verify
    with pytest.raises(AuthenticationFailed):
        mk.verify(with_data, keys.auth_key, b"sip:mallory@example.com" + b"sip:conf@example.com")


def test_response_mac_covers_the_whole_initial_message() -> None:
    request, keys = _transfer_init(b"\x11" * 16)
    request = mk.append_verification(request, 1, keys.auth_key, b"ab", excise_initiator_data=True)
    response_keys = mk.ticket_message_keys(
        b"\x11" * 16, 0x01020304, mk.Direction.RESPONSE, RANDRI, None, 1, 1, 0
    )
    assert response_keys.auth_key != keys.auth_key
    header = CommonHeader(DataType.TRANSFER_RESP, 0x01020304, EmptyMap())
    response = mk.append_verification(
        Message(header, (Timestamp(0, 1),)), 1, response_keys.auth_key, bytes(request)
    )
    mk.verify(response, response_keys.auth_key, bytes(request))
    other = mk.append_verification(request, 1, keys.auth_key, b"zz")
    with pytest.raises(AuthenticationFailed):
        mk.verify(response, response_keys.auth_key, bytes(other))


def test_base_ticket_protection_and_kemac_iv() -> None:
    tpk = b"\x33" * 16
    rand = b"\x44" * 16
    keys = mk.base_ticket_keys(tpk, rand, 1, 1, PrfFunc.MIKEY_1)
    timestamp = Timestamp(TsType.NTP_UTC, 7)
    carried = [
        KeyData(KeyDataType.MPK, b"\x55" * 16, None, SpiValidity(b"\x01")),
        KeyData(KeyDataType.TGK, b"\x66" * 16, None, SpiValidity(b"\x02")),
    ]
    kemac = mk.build_kemac(carried, keys, mk.BASE_TICKET_CSB_ID, timestamp.as_64_bits(), mac_alg=0)
    assert kemac.mac_alg == 0
    assert kemac.mac == b""
    data = BaseTicketData(
        TicketHeader(), (timestamp, Rand(rand), kemac, Verification(1, bytes(20)))
    )
    ticket = mk.protect_base_ticket(
        Ticket(1, 1, 1, 0, TicketFlags.D, (), bytes(data)), keys.auth_key
    )
    mk.verify_base_ticket(ticket, keys.auth_key)
    # The Initiator Data is not covered (it is added after the KMS made the ticket).
    mk.verify_base_ticket(
        dataclasses.replace(ticket, initiator_data=b"\x09\x00\x00"), keys.auth_key
    )
    # The Ticket Policy is covered.
    with pytest.raises(AuthenticationFailed):
        mk.verify_base_ticket(
            dataclasses.replace(ticket, flags=TicketFlags.D | TicketFlags.J), keys.auth_key
        )
    opened = BaseTicketData.parse(ticket.ticket_data).find(Kemac)
    assert opened is not None
    assert mk.open_kemac(opened, keys, mk.BASE_TICKET_CSB_ID, timestamp.as_64_bits()) == (
        None,
        tuple(carried),
    )


def test_pk_kemac_mac_input_zeroes_next_payload() -> None:
    kemac = Kemac(1, b"\x01\x02", 1, b"\xaa" * 20)
    assert mk.pk_kemac_mac_input(kemac) == bytes.fromhex("00 01 0002 0102 01")


def test_protect_refuses_messages_without_a_mac_payload() -> None:
    message = Message(CommonHeader(0, 1), (Timestamp(0, 0),))
    with pytest.raises(MalformedMikey):
        mk.protect(message, b"k")
    with pytest.raises(UnsupportedMikey):
        mk.compute_mac(9, b"k", b"data")


def test_kemac_with_wrong_algorithm_for_the_keys() -> None:
    keys = mk.rfc3830_message_keys(b"\x01" * 16, 1, RANDRI)
    with pytest.raises(UnsupportedMikey):
        mk.open_kemac(Kemac(3, b"", 1, bytes(20)), keys, 1, bytes(8))
