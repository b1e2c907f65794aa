"""The six MIKEY-TICKET messages end to end in memory, and every refusal they owe.

Initiator (alice), Responder (the conference factory) and KMS each run only
the public API of secconf.core.mikey.ticket; the bytes between them are the
wire messages.
"""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import (
    AuthenticationFailed,
    InvalidTimestamp,
    MalformedMikey,
    MikeyError,
    MikeyErrorNo,
    TicketRejected,
    UnsupportedMikey,
)
from secconf.core.mikey import (
    GenericIdEntry,
    KeyData,
    KeyDataType,
    Message,
    SpiValidity,
    SrtpSessionData,
    TicketFlags,
)
from secconf.core.mikey import ticket as mt
from tests.conftest import DATA
from tests.fixtures.mikey_world import (
    ALICE,
    BOB,
    FACTORY,
    KMS,
    MALLORY,
    NOW,
    PSKS,
    CountingRandom,
    Kms,
    _desired,
    _issue,
    _respond,
    _transfer,
)


@pytest.mark.parametrize("forking", [True, False], ids=["forking", "no-forking"])
def test_full_exchange_gives_both_sides_the_same_srtp_keys(forking: bool) -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(forking=forking))
    assert issued.policy.initiator == ALICE
    assert issued.policy.recipients == (FACTORY, BOB)
    assert (issued.mpkr is not None) is forking
    pending = _transfer(issued)
    answer = _respond(kms, pending.data)
    result = mt.process_transfer_resp(pending, answer.data, now=NOW)
    assert result.responder == FACTORY
    assert set(result.srtp_keys) == {1, 2}
    for cs_id in (1, 2):
        assert result.srtp_keys[cs_id].key == answer.keys[cs_id].key
        assert result.srtp_keys[cs_id].salt == answer.keys[cs_id].salt
        assert len(answer.keys[cs_id].key) == 16
        assert len(answer.keys[cs_id].salt) == 14
    assert answer.keys[1].key != answer.keys[2].key  # R4: one key stream per direction


def test_forking_gives_each_responder_different_keys() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms)
    to_factory, to_bob = _transfer(issued, FACTORY), _transfer(issued, BOB)
    factory = _respond(kms, to_factory.data, FACTORY)
    bob = _respond(kms, to_bob.data, BOB)
    assert factory.resolved.traffic_keys[0].key != bob.resolved.traffic_keys[0].key
    assert factory.resolved.mpkr != bob.resolved.mpkr
    assert mt.process_transfer_resp(to_bob, bob.data, now=NOW).srtp_keys[1] == bob.keys[1]


def test_responder_keys_travel_in_transfer_resp_when_the_ticket_allows_it() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(responder_keys=True))
    group_key = KeyData(KeyDataType.GTGK, bytes(range(32)), None, SpiValidity(b"\x07"))
    pending = _transfer(issued)
    answer = _respond(kms, pending.data, responder_keys=(group_key,))
    result = mt.process_transfer_resp(pending, answer.data, now=NOW)
    assert result.delivered_keys == (group_key,)
    # RFC 6043 §6.1.1: neither session had an SPI; the echoed one gets the ticket's TGK
    # SPI, the one the Responder added while delivering keys that of the delivered key.
    assert [entry.spi for entry in result.sessions] == [b"\x01", b"\x07"]
    assert [entry.policies for entry in result.sessions] == [(0,), (0,)]
    other_kms = Kms(CountingRandom(b"kms-2"))
    plain_ticket = _transfer(_issue(other_kms)).data
    with pytest.raises(ValueError, match="M = 0"):
        _respond(other_kms, plain_ticket, responder_keys=(group_key,))


def test_granted_policy_is_clamped_and_marked_changed() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(valid_until=NOW + 10 * 24 * 3600))
    assert issued.policy.valid_until == pytest.approx(NOW + 3600, abs=1e-6)
    assert TicketFlags.K in issued.ticket.flags


# -- refusals -----------------------------------------------------------------------


def test_request_with_wrong_psk_is_refused() -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[BOB], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    kms = Kms(CountingRandom())
    with pytest.raises(AuthenticationFailed) as caught:
        kms.request(pending.data)
    assert caught.value.error_no == MikeyErrorNo.AUTH_FAILURE
    assert caught.value.status_code == 403
    assert kms.seen == set()  # nothing remembered for a message that did not verify


def test_replayed_request_is_refused() -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    kms = Kms(CountingRandom())
    kms.request(pending.data)
    with pytest.raises(MikeyError, match="replayed"):
        kms.request(pending.data)


@pytest.mark.parametrize("offset", [-61.0, 61.0])
def test_stale_or_future_timestamps_are_refused(offset: float) -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW + offset,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    with pytest.raises(InvalidTimestamp) as caught:
        Kms(CountingRandom()).request(pending.data)
    assert caught.value.error_no == MikeyErrorNo.INVALID_TS


def test_request_for_another_kms_is_refused() -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms="sip:other-kms.example.com", psk=PSKS[ALICE], desired=_desired(),
        now=NOW, random_bytes=CountingRandom(),
    )  # fmt: skip
    with pytest.raises(MikeyError, match="another KMS") as caught:
        Kms(CountingRandom()).request(pending.data)
    assert caught.value.error_no == MikeyErrorNo.INVALID_ID


def test_ticket_resolved_by_a_non_recipient_is_refused() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms)
    pending = _transfer(issued, MALLORY)
    transfer = mt.TransferInit.read(pending.data)
    # Mallory's own early check already says no; she asks the KMS anyway.
    with pytest.raises(TicketRejected):
        transfer.early_check(MALLORY, now=NOW)
    resolve = mt.build_resolve_init(
        transfer, responder=MALLORY, kms=KMS, psk=PSKS[MALLORY], now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    with pytest.raises(TicketRejected, match="not among the ticket's recipients") as caught:
        kms.resolve(resolve.data)
    assert caught.value.error_no == MikeyErrorNo.INVALID_TICKET
    assert caught.value.status_code == 403


def test_expired_ticket_is_refused_at_resolve() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(valid_until=NOW + 30))
    pending = _transfer(issued)
    transfer = mt.TransferInit.read(pending.data)
    later = NOW + 45
    resolve = mt.build_resolve_init(
        transfer, responder=FACTORY, kms=KMS, psk=PSKS[FACTORY], now=later,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    with pytest.raises(TicketRejected, match="expired"):
        kms.resolve(resolve.data, later)
    with pytest.raises(TicketRejected, match="not valid now"):
        transfer.early_check(FACTORY, now=later)


def test_revoked_user_cannot_resolve() -> None:
    kms = Kms(CountingRandom(b"kms"), revoked_users=frozenset({FACTORY}))
    issued = _issue(kms)
    with pytest.raises(AuthenticationFailed):
        _respond(kms, _transfer(issued).data)


def test_ticket_under_an_unknown_tpk_or_forged_is_refused() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms)
    with pytest.raises(TicketRejected, match="known TPK"):
        mt.open_ticket(issued.ticket, lambda key_id: None)
    with pytest.raises(TicketRejected, match="MAC"):
        mt.open_ticket(issued.ticket, lambda key_id: bytes(32))


def test_transfer_from_someone_else_with_a_stolen_ticket_is_refused() -> None:
    # Bob is a recipient, so after resolving he knows MPKi; with forking he still
    # cannot pose as Alice towards the factory (RFC 6043 §12.2).
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms)
    bob_view = _respond(kms, _transfer(issued, BOB).data, BOB)
    forged_issue = dataclasses.replace(issued, mpki=bob_view.resolved.mpki, mpkr=bytes(32))
    forged = _transfer(forged_issue, FACTORY)
    with pytest.raises(TicketRejected, match="Initiator Data"):
        _respond(kms, forged.data)


def test_public_key_variants_are_refused_as_invalid_data_type() -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    as_pk = pending.data[:1] + bytes([12]) + pending.data[2:]
    with pytest.raises(UnsupportedMikey) as caught:
        mt.RequestInit.read(as_pk)
    assert caught.value.error_no == MikeyErrorNo.INVALID_DT


@pytest.mark.parametrize("size", [0, 1, 7, 70_000])
def test_truncated_or_oversized_messages_are_refused(size: int) -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    data = (pending.data * 1000)[:size] if size > len(pending.data) else pending.data[:size]
    with pytest.raises(MikeyError):
        mt.RequestInit.read(data)


def test_error_message_round_trip() -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    error = mt.build_error(pending.data, [MikeyErrorNo.INVALID_TICKET], now=NOW)
    assert mt.read_error(error) == (MikeyErrorNo.INVALID_TICKET,)
    assert Message.parse(error).header.csb_id == pending.csb_id
    assert mt.read_error(mt.build_error(b"\x00garbage", [12], now=NOW)) == (12,)


def test_reprs_hold_no_key_material() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms)
    pending = _transfer(issued)
    answer = _respond(kms, pending.data)
    shown = repr(issued) + repr(pending) + repr(answer.resolved) + repr(answer.keys)
    for secret in (issued.mpki, answer.keys[1].key, answer.keys[1].salt, PSKS[ALICE]):
        assert secret.hex() not in shown
        assert repr(secret) not in shown


# -- every single-bit flip of a valid TRANSFER_INIT is rejected ---------------------

_KMS_FOR_FLIPS = Kms(CountingRandom(b"kms-flips"))
_ISSUED_FOR_FLIPS = _issue(_KMS_FOR_FLIPS)
_VALID_TRANSFER = _transfer(_ISSUED_FOR_FLIPS).data


@given(st.integers(0, len(_VALID_TRANSFER) * 8 - 1))
def test_every_bit_flip_of_a_transfer_init_is_rejected(bit: int) -> None:
    flipped = bytearray(_VALID_TRANSFER)
    flipped[bit // 8] ^= 1 << (bit % 8)
    kms = Kms(CountingRandom(b"kms-flips-run"))
    with pytest.raises((MikeyError, MalformedMikey)):
        _respond(kms, bytes(flipped))


def test_the_unflipped_transfer_init_is_accepted() -> None:
    # The control for the property above: the same path accepts the original.
    answer = _respond(Kms(CountingRandom(b"kms-flips-run")), _VALID_TRANSFER)
    assert set(answer.keys) == {1, 2}


def test_exhaustively_every_bit_flip_of_a_transfer_init_is_rejected() -> None:
    # The property above samples; this walks all of them (RFC 6043 gives the
    # Responder no way to accept a modified TRANSFER_INIT once resolved).
    accepted = []
    for bit in range(len(_VALID_TRANSFER) * 8):
        flipped = bytearray(_VALID_TRANSFER)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            _respond(Kms(CountingRandom(b"kms-flips-run")), bytes(flipped))
        except MikeyError:
            continue
        accepted.append(bit)
    assert accepted == []


def test_group_keys_are_the_same_for_every_recipient_and_never_forked() -> None:
    # The conference system asks for a GTGK for its members (RFC 6043 §5.1.1:
    # GTGKs are not forked), so every member who resolves derives the same keys.
    kms = Kms(CountingRandom(b"kms-group"))
    issued = _issue(kms, _desired(traffic_keys=(KeyDataType.GTGK,)))
    assert [key.key_type for key in issued.traffic_keys] == [KeyDataType.GTGK]
    to_factory, to_bob = _transfer(issued, FACTORY), _transfer(issued, BOB)
    factory = _respond(kms, to_factory.data, FACTORY)
    bob = _respond(kms, to_bob.data, BOB)
    assert factory.resolved.traffic_keys == bob.resolved.traffic_keys == issued.traffic_keys
    assert factory.resolved.mpkr != bob.resolved.mpkr  # the MPKs are still per responder


def test_requested_key_types_outside_the_profile_are_refused() -> None:
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE],
        desired=_desired(traffic_keys=(KeyDataType.TEK,)), now=NOW,
        random_bytes=CountingRandom(),
    )  # fmt: skip
    with pytest.raises(MikeyError, match="TGK/GTGK") as caught:
        Kms(CountingRandom()).request(pending.data)
    assert caught.value.error_no == MikeyErrorNo.INVALID_TPPAR


# -- regression vectors: the whole exchange, byte for byte -------------------------

_VECTORS = tomllib.loads((DATA / "vectors" / "mikey-ticket-exchange.toml").read_text())


def _vector(name: str) -> bytes:
    return bytes.fromhex("".join(_VECTORS[name].split()))


def test_the_exchange_reproduces_the_recorded_vectors() -> None:
    kms = Kms(CountingRandom(b"kms-vectors"))
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(b"alice-vectors"),
    )  # fmt: skip
    assert pending.data == _vector("request_init")
    response = kms.request(pending.data)
    assert response == _vector("request_resp")
    issued = mt.process_request_resp(pending, response, psk=PSKS[ALICE], now=NOW)
    transfer = _transfer(issued)
    assert transfer.data == _vector("transfer_init")
    incoming = mt.TransferInit.read(transfer.data)
    factory_random = CountingRandom(b"factory-vectors")
    resolve = mt.build_resolve_init(
        incoming, responder=FACTORY, kms=KMS, psk=PSKS[FACTORY], now=NOW,
        random_bytes=factory_random,
    )  # fmt: skip
    assert resolve.data == _vector("resolve_init")
    resolved_data = kms.resolve(resolve.data)
    assert resolved_data == _vector("resolve_resp")
    resolved = mt.process_resolve_resp(resolve, resolved_data, incoming, psk=PSKS[FACTORY], now=NOW)
    sessions = [
        *incoming.sessions,
        GenericIdEntry.for_srtp(2, [0], SrtpSessionData(0x22222222, 0, 0)),
    ]
    answer, keys = mt.build_transfer_resp(
        incoming, resolved, responder=FACTORY, sessions=sessions, now=NOW,
        random_bytes=factory_random,
    )  # fmt: skip
    assert answer == _vector("transfer_resp")
    for cs_id in (1, 2):
        assert keys[cs_id].key.hex() == _VECTORS[f"srtp_cs{cs_id}_key"]
        assert keys[cs_id].salt.hex() == _VECTORS[f"srtp_cs{cs_id}_salt"]
    result = mt.process_transfer_resp(transfer, answer, now=NOW)
    assert result.srtp_keys == keys


@pytest.mark.parametrize(
    "name",
    [
        "request_init",
        "request_resp",
        "transfer_init",
        "resolve_init",
        "resolve_resp",
        "transfer_resp",
    ],
)
def test_recorded_messages_round_trip_through_the_codec(name: str) -> None:
    assert bytes(Message.parse(_vector(name))) == _vector(name)
