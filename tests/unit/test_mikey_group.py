"""Group key epochs from a GTGK ticket (secconf.core.mikey.group), the whole exchange in memory.

The focus asks the KMS (the in-memory KMS of tests/fixtures/mikey_world.py) for a GTGK
ticket with G = 0 naming the members; every member that resolves a TRANSFER_INIT
of the epoch derives the focus's SRTP master key; a non-recipient is refused by
the KMS; the stored form round-trips and refuses garbage.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import (
    AuthenticationFailed,
    MalformedMikey,
    MikeyErrorNo,
    TicketRejected,
    UnsupportedMikey,
)
from secconf.core.mikey import KeyDataType, TicketFlags
from secconf.core.mikey import group as mg
from secconf.core.mikey import ticket as mt
from tests.fixtures.mikey_world import (
    ALICE,
    BOB,
    FOCUS,
    KMS,
    MALLORY,
    NOW,
    PSKS,
    CountingRandom,
    Kms,
    _epoch,
    _group_issue,
    _resolve,
)


def test_the_kms_grants_a_gtgk_ticket_without_responder_rand() -> None:
    issued = _group_issue(Kms(CountingRandom(b"kms")))
    assert [key.key_type for key in issued.traffic_keys] == [KeyDataType.GTGK]
    assert TicketFlags.G not in issued.ticket.flags
    assert TicketFlags.H in issued.ticket.flags
    assert TicketFlags.I in issued.ticket.flags  # MPKs still forked per responder


def test_g_off_is_refused_for_a_tgk_ticket_the_kms_sets_it_again() -> None:
    kms = Kms(CountingRandom(b"kms"))
    desired = dataclasses.replace(
        mg.group_ticket_policy((ALICE,), valid_until=NOW + 600), traffic_keys=(KeyDataType.TGK,)
    )
    pending = mt.build_request_init(
        initiator=FOCUS, kms=KMS, psk=PSKS[FOCUS], desired=desired, now=NOW,
        random_bytes=CountingRandom(b"focus"),
    )  # fmt: skip
    issued = mt.process_request_resp(pending, kms.request(pending.data), psk=PSKS[FOCUS], now=NOW)
    assert TicketFlags.G in issued.ticket.flags
    assert TicketFlags.K in issued.ticket.flags
    with pytest.raises(UnsupportedMikey) as caught:
        mg.new_group_epoch(issued, 2, CountingRandom())
    assert caught.value.error_no == MikeyErrorNo.INVALID_TPPAR


def test_every_recipient_derives_the_focus_epoch_key_and_the_focus_verifies_them() -> None:
    kms = Kms(CountingRandom(b"kms"))
    epoch = _epoch(kms)
    expected = epoch.srtp_master_key()
    for member, ssrc in ((ALICE, 0x1111), (BOB, 0x2222)):
        pending = mg.build_group_transfer_init(
            epoch, initiator=FOCUS, responder=member, ssrcs=[ssrc, 0xED6E], now=NOW,
            random_bytes=CountingRandom(b"t"),
        )  # fmt: skip
        assert pending.csb_id == epoch.csb_id
        assert pending.randri == epoch.randri
        transfer, resolved = _resolve(kms, pending.data, member)
        assert transfer.initiator == FOCUS
        key, number = mg.group_key_of_transfer(transfer, resolved)
        assert (key.key, key.salt, number) == (expected.key, expected.salt, 2)
        data, srtp = mt.build_transfer_resp(
            transfer, resolved, responder=member, sessions=transfer.sessions, now=NOW,
            random_bytes=CountingRandom(member.encode()),
        )  # fmt: skip
        assert srtp[mg.GROUP_CS_ID].key == expected.key
        result = mt.process_transfer_resp(pending, data, now=NOW)
        assert result.responder == member
        assert result.srtp_keys[mg.GROUP_CS_ID].key == expected.key


def test_a_transfer_resp_from_another_member_does_not_verify() -> None:
    kms = Kms(CountingRandom(b"kms"))
    epoch = _epoch(kms)
    to_alice = mg.build_group_transfer_init(
        epoch, initiator=FOCUS, responder=ALICE, ssrcs=[1], now=NOW, random_bytes=CountingRandom()
    )
    transfer, resolved = _resolve(kms, to_alice.data, ALICE)
    data, _ = mt.build_transfer_resp(
        transfer, resolved, responder=ALICE, sessions=transfer.sessions, now=NOW,
        random_bytes=CountingRandom(b"a"),
    )  # fmt: skip
    flipped = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(AuthenticationFailed):
        mt.process_transfer_resp(to_alice, flipped, now=NOW)


def test_a_departed_member_is_no_recipient_and_the_kms_refuses_it() -> None:
    kms = Kms(CountingRandom(b"kms"))
    epoch = _epoch(kms)  # recipients: alice, bob; mallory left
    with pytest.raises(TicketRejected):
        mg.build_group_transfer_init(
            epoch, initiator=FOCUS, responder=MALLORY, ssrcs=[1], now=NOW,
            random_bytes=CountingRandom(),
        )  # fmt: skip
    to_bob = mg.build_group_transfer_init(
        epoch, initiator=FOCUS, responder=BOB, ssrcs=[1], now=NOW, random_bytes=CountingRandom()
    )
    transfer = mt.TransferInit.read(to_bob.data)
    pending = mt.build_resolve_init(
        transfer, responder=MALLORY, kms=KMS, psk=PSKS[MALLORY], now=NOW,
        random_bytes=CountingRandom(b"m"),
    )  # fmt: skip
    with pytest.raises(TicketRejected) as caught:
        kms.resolve(pending.data)
    assert caught.value.error_no == MikeyErrorNo.INVALID_TICKET


def test_a_tgk_ticket_is_no_group_epoch_at_the_participant() -> None:
    kms = Kms(CountingRandom(b"kms"))
    desired = mt.DesiredPolicy(recipients=(BOB,), valid_until=NOW + 600)
    pending = mt.build_request_init(
        initiator=FOCUS, kms=KMS, psk=PSKS[FOCUS], desired=desired, now=NOW,
        random_bytes=CountingRandom(b"f"),
    )  # fmt: skip
    issued = mt.process_request_resp(pending, kms.request(pending.data), psk=PSKS[FOCUS], now=NOW)
    spi = (2).to_bytes(4, "big")
    from secconf.core.mikey import GenericIdEntry, SrtpSessionData

    sessions = [GenericIdEntry.for_srtp(1, [], SrtpSessionData(5, 0, 0), spi)]
    transfer_data = mt.build_transfer_init(
        issued, initiator=FOCUS, responder=BOB, sessions=sessions, now=NOW,
        random_bytes=CountingRandom(),
    ).data  # fmt: skip
    transfer, resolved = _resolve(kms, transfer_data, BOB)
    with pytest.raises(UnsupportedMikey):
        mg.group_key_of_transfer(transfer, resolved)


def test_stored_epoch_round_trips_and_hides_keys() -> None:
    epoch = _epoch(Kms(CountingRandom(b"kms")), 7)
    again = mg.GroupEpochTicket.from_bytes(epoch.to_bytes())
    assert again == epoch
    assert again.srtp_master_key() == epoch.srtp_master_key()
    text = repr(epoch)
    for secret in (epoch.gtgk, epoch.mpki, epoch.randri):
        assert secret.hex() not in text
        assert repr(secret) not in text


_STORED = _epoch(Kms(CountingRandom(b"kms-stored"))).to_bytes()


@given(st.integers(0, len(_STORED) - 1))
def test_truncated_stored_epochs_are_refused(cut: int) -> None:
    with pytest.raises(MalformedMikey):
        mg.GroupEpochTicket.from_bytes(_STORED[:cut])


@given(st.binary(max_size=200))
def test_garbage_stored_epochs_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMikey):
        mg.GroupEpochTicket.from_bytes(data)


@pytest.mark.parametrize(
    "spis", [[b"\0\0\0\2", b"\0\0\0\3"], [b"\0\0\0\0"], [b"\2"]], ids=["two", "zero", "short"]
)
def test_group_maps_need_one_session_one_epoch(spis: list[bytes]) -> None:
    from secconf.core.mikey import GenericIdEntry, SrtpSessionData

    sessions = [GenericIdEntry.for_srtp(1, [], SrtpSessionData(i, 0, 0), s) for i, s in
                enumerate(spis)]  # fmt: skip
    with pytest.raises((MalformedMikey, UnsupportedMikey)):
        mg.epoch_of_sessions(sessions)


_KMS = Kms(CountingRandom(b"kms-property"))
_ISSUED = _group_issue(_KMS)


@given(
    epoch=st.integers(1, 2**32 - 1),
    seed=st.binary(min_size=1, max_size=16),
    ssrcs=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=6),
)
def test_the_participant_always_derives_the_focus_key(
    epoch: int, seed: bytes, ssrcs: list[int]
) -> None:
    # Any epoch number, CSB ID/RANDRi and SSRC set: the responder's derivation from the
    # TRANSFER_INIT (RFC 6043 §5.1.3) gives exactly the focus's epoch key.
    group_epoch = mg.new_group_epoch(_ISSUED, epoch, CountingRandom(seed))
    pending = mg.build_group_transfer_init(
        group_epoch, initiator=FOCUS, responder=BOB, ssrcs=ssrcs, now=NOW,
        random_bytes=CountingRandom(seed + b"t"),
    )  # fmt: skip
    transfer = mt.TransferInit.read(pending.data)
    resolved = mt.ResolvedTicket(_ISSUED.mpki, None, _ISSUED.traffic_keys, None, None)
    key, number = mg.group_key_of_transfer(transfer, resolved)
    assert number == epoch
    assert key == group_epoch.srtp_master_key()
    assert len(transfer.sessions) == len(set(ssrcs))
