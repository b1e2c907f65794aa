"""TicketStore against a real Redis: records, revocation markers, expiry with the ticket."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
import redis.asyncio

from secconf.store.errors import (
    CorruptRecord,
    InvalidRecord,
    TicketExists,
    TicketLimitReached,
    UnknownTicket,
)
from secconf.store.tickets import TicketRecord, TicketStore
from tests.store.aio import client, run

TICKET_ID = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
OTHER_ID = bytes.fromhex("00112233")
NOW = time.time()


def _record(
    *, expires_in: float = 3600.0, conference_id: str | None = "conf-42@focus.example.com"
) -> TicketRecord:
    now = time.time()  # at use, not at import: the suite may run long before this test
    return TicketRecord(
        initiator="sip:alice@example.com",
        recipients=["sip:factory@focus.example.com", "sip:bob@example.com"],
        issued_at=now,
        expires_at=now + expires_in,
        conference_id=conference_id,
    )


def test_record_and_get_round_trip(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle)
            assert await tickets.get(TICKET_ID) is None
            record = _record()
            await tickets.record(TICKET_ID, record)
            assert await tickets.get(TICKET_ID) == record
            assert record.recipients == ("sip:factory@focus.example.com", "sip:bob@example.com")
            bare = _record(conference_id=None)
            await tickets.record(OTHER_ID, bare)
            assert await tickets.get(OTHER_ID) == bare
            raw = await handle.hgetall(tickets.key(TICKET_ID))
            assert json.loads(raw[b"recipients"]) == list(record.recipients)
            assert b"conference" not in await handle.hgetall(tickets.key(OTHER_ID))

    run(scenario)


def test_duplicate_ticket_id_refused(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle)
            first = _record()
            await tickets.record(TICKET_ID, first)
            with pytest.raises(TicketExists) as caught:
                await tickets.record(TICKET_ID, _record(conference_id=None))
            assert caught.value.status_code == 409
            assert await tickets.get(TICKET_ID) == first

    run(scenario)


def test_keys_expire_at_expires_at_plus_margin(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, margin_seconds=120)
            record = _record(expires_in=600)
            await tickets.record(TICKET_ID, record)
            await tickets.revoke(TICKET_ID)
            expected = math.ceil((record.expires_at + 120) * 1000)
            assert await handle.pexpiretime(tickets.key(TICKET_ID)) == expected
            assert await handle.pexpiretime(tickets.revoked_key(TICKET_ID)) == expected

    run(scenario)


def test_revoke_and_is_revoked(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, clock=lambda: 1234.5)
            await tickets.record(TICKET_ID, _record())
            await tickets.record(OTHER_ID, _record())
            assert await tickets.is_revoked(TICKET_ID) is False
            await tickets.revoke(TICKET_ID)
            assert await tickets.is_revoked(TICKET_ID) is True
            assert await tickets.is_revoked(OTHER_ID) is False
            assert await handle.get(tickets.revoked_key(TICKET_ID)) == b"1234.5"
            await TicketStore(handle, clock=lambda: 9999.0).revoke(TICKET_ID)  # keeps the first
            assert await handle.get(tickets.revoked_key(TICKET_ID)) == b"1234.5"
            assert await tickets.get(TICKET_ID) is not None  # the record stays for audit

    run(scenario)


def test_revoke_without_record(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, margin_seconds=10)
            with pytest.raises(UnknownTicket) as caught:
                await tickets.revoke(TICKET_ID)
            assert caught.value.status_code == 404
            assert await handle.dbsize() == 0
            now = time.time()
            await tickets.revoke(TICKET_ID, expires_at=now + 50)
            assert await tickets.is_revoked(TICKET_ID) is True
            assert await handle.pexpiretime(tickets.revoked_key(TICKET_ID)) == math.ceil(
                (now + 60) * 1000
            )
            assert await tickets.get(TICKET_ID) is None

    run(scenario)


def test_marker_outlives_a_deleted_record_and_both_expire(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, margin_seconds=0.1)
            now = time.time()
            short = TicketRecord("sip:a@x", ["sip:b@x"], issued_at=now - 10, expires_at=now + 0.2)
            await tickets.record(TICKET_ID, short)
            await tickets.revoke(TICKET_ID)
            await handle.delete(tickets.key(TICKET_ID))  # e.g. an audit clean-up
            assert await tickets.get(TICKET_ID) is None
            assert await tickets.is_revoked(TICKET_ID) is True
            await tickets.record(OTHER_ID, short)
            await asyncio.sleep(0.45)
            assert await tickets.is_revoked(TICKET_ID) is False
            assert await tickets.get(OTHER_ID) is None
            assert await handle.dbsize() == 0

    run(scenario)


def test_already_expired_ticket_is_not_kept(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, margin_seconds=0)
            old = TicketRecord("sip:a@x", ["sip:b@x"], issued_at=NOW - 100, expires_at=NOW - 50)
            await tickets.record(TICKET_ID, old)
            assert await tickets.get(TICKET_ID) is None
            assert await handle.dbsize() == 0

    run(scenario)


def test_no_secret_fields_stored(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle)
            await tickets.record(TICKET_ID, _record())
            fields = set(await handle.hgetall(tickets.key(TICKET_ID)))
            assert fields == {
                b"initiator",
                b"recipients",
                b"issued_at",
                b"expires_at",
                b"conference",
                b"expiry_ms",
            }

    run(scenario)


def test_corrupt_record_is_reported(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle)
            await tickets.record(TICKET_ID, _record())
            await handle.hset(tickets.key(TICKET_ID), "recipients", "not json")
            with pytest.raises(CorruptRecord):
                await tickets.get(TICKET_ID)
            await handle.hset(tickets.key(TICKET_ID), "recipients", "[]")
            with pytest.raises(CorruptRecord):
                await tickets.get(TICKET_ID)

    run(scenario)


@pytest.mark.parametrize(
    "changes",
    [
        {"initiator": ""},
        {"initiator": "sip:a\nb"},
        {"recipients": []},
        {"recipients": "sip:bob@example.com"},
        {"recipients": ["sip:ok@x", ""]},
        {"issued_at": float("nan")},
        {"expires_at": NOW},
        {"expires_at": NOW - 1},
        {"expires_at": True},
        {"conference_id": ""},
    ],
)
def test_ticket_record_validates(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "initiator": "sip:alice@example.com",
        "recipients": ["sip:bob@example.com"],
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "conference_id": None,
    }
    fields.update(changes)
    with pytest.raises(InvalidRecord):
        TicketRecord(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("ticket_id", [b"", bytes(257), "a1b2"])
def test_ticket_id_validated(redis_url: str, ticket_id: object) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle)
            with pytest.raises(InvalidRecord, match="ticket id"):
                await tickets.record(ticket_id, _record())  # type: ignore[arg-type]
            with pytest.raises(InvalidRecord, match="ticket id"):
                await tickets.is_revoked(ticket_id)  # type: ignore[arg-type]
            assert await handle.dbsize() == 0

    run(scenario)


def test_bad_margin_refused() -> None:
    for margin in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="margin"):
            TicketStore(None, margin_seconds=margin)  # type: ignore[arg-type]


# -- the bound on live records per initiator (docs/kms.md "Tickets per user") ------------

ALICE, BOB = "sip:alice@example.com", "sip:bob@example.com"


def _by(initiator: str, *, expires_in: float = 3600.0) -> TicketRecord:
    now = time.time()
    return TicketRecord(initiator, [BOB, ALICE], issued_at=now, expires_at=now + expires_in)


def _ids(count: int, tag: int = 0) -> list[bytes]:
    return [bytes([tag, n]) * 8 for n in range(count)]


async def _snapshot(handle: redis.asyncio.Redis) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key: its DUMP and its expiry time (ms), so a changed TTL counts as a change too."""
    return {
        key: (await handle.dump(key), await handle.pexpiretime(key))
        async for key in handle.scan_iter(count=100)
    }


def test_records_per_initiator_are_bounded_and_a_refusal_writes_nothing(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=3, margin_seconds=60)
            records = {ticket_id: _by(ALICE) for ticket_id in _ids(3)}
            for ticket_id, record in records.items():
                await tickets.record(ticket_id, record)
            assert await tickets.live_count(ALICE) == 3
            before = await _snapshot(handle)
            with pytest.raises(TicketLimitReached) as caught:
                await tickets.record(b"\xee" * 16, _by(ALICE))
            assert (caught.value.status_code, caught.value.error_no) == (403, 12)
            assert "alice" in caught.value.message
            assert "3 live tickets" in caught.value.message
            assert await _snapshot(handle) == before
            assert await tickets.get(b"\xee" * 16) is None
            # Another initiator has places of its own; a recipient's are not used up.
            for ticket_id in _ids(3, tag=1):
                await tickets.record(ticket_id, _by(BOB))
            assert await tickets.live_count(BOB) == 3
            # The index: every id, scored with its record's expiry, expiring with the last.
            index = dict(await handle.zrange(tickets.index_key(ALICE), 0, -1, withscores=True))
            expiries = {
                ticket_id.hex().encode(): math.ceil((record.expires_at + 60) * 1000)
                for ticket_id, record in records.items()
            }
            assert index == expiries
            assert await handle.pexpiretime(tickets.index_key(ALICE)) == max(expiries.values())
            for ticket_id in records:
                assert (
                    await handle.pexpiretime(tickets.key(ticket_id))
                    == expiries[ticket_id.hex().encode()]
                )

    run(scenario)


def test_places_come_back_when_the_records_expire(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=2, margin_seconds=0.1)
            first, second, third, later = _ids(4)
            await tickets.record(first, _by(ALICE, expires_in=0.3))
            await tickets.record(second, _by(ALICE, expires_in=0.3))
            with pytest.raises(TicketLimitReached):
                await tickets.record(third, _by(ALICE, expires_in=0.3))
            await asyncio.sleep(0.6)
            assert await tickets.get(first) is None  # Redis dropped the records...
            assert await tickets.live_count(ALICE) == 0  # ...and their places count no more
            await tickets.record(later, _by(ALICE))
            index = await handle.zrange(tickets.index_key(ALICE), 0, -1)
            assert index == [later.hex().encode()]  # the expired entries were pruned
            assert await tickets.live_count(ALICE) == 1

    run(scenario)


def test_the_index_goes_with_its_last_record(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, margin_seconds=0.1)
            long, short = _ids(2)
            longer = _by(ALICE, expires_in=0.5)
            await tickets.record(long, longer)
            await tickets.record(short, _by(ALICE, expires_in=0.2))
            expiry = math.ceil((longer.expires_at + 0.1) * 1000)
            assert await handle.pexpiretime(tickets.index_key(ALICE)) == expiry
            await asyncio.sleep(0.9)
            assert await handle.dbsize() == 0

    run(scenario)


def test_a_revoked_ticket_keeps_its_place_until_it_expires(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=1)
            first, second = _ids(2)
            await tickets.record(first, _by(ALICE))
            await tickets.revoke(first)
            assert await tickets.get(first) is not None  # the record stays for audit...
            with pytest.raises(TicketLimitReached):  # ...and so does its place
                await tickets.record(second, _by(ALICE))

    run(scenario)


def test_a_limit_per_call_overrides_the_default(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=1)
            first, second, third = _ids(3)
            await tickets.record(first, _by(ALICE), limit=2)
            await tickets.record(second, _by(ALICE), limit=2)
            with pytest.raises(TicketLimitReached):
                await tickets.record(third, _by(ALICE), limit=2)
            with pytest.raises(TicketLimitReached):
                await tickets.record(third, _by(ALICE))
            assert await tickets.live_count(ALICE) == 2

    run(scenario)


def test_concurrent_records_never_exceed_the_limit(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=5)
            outcomes = await asyncio.gather(
                *(tickets.record(ticket_id, _by(ALICE)) for ticket_id in _ids(40)),
                return_exceptions=True,
            )
            refused = [o for o in outcomes if isinstance(o, TicketLimitReached)]
            assert (outcomes.count(None), len(refused)) == (5, 35)
            recorded = [key async for key in handle.scan_iter(match="secconf:ticket:*")]
            assert len(recorded) == 5
            assert await handle.zcard(tickets.index_key(ALICE)) == 5

    run(scenario)


def test_a_duplicate_id_leaves_the_index_as_it_was(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=2)
            await tickets.record(TICKET_ID, _by(ALICE))
            before = await _snapshot(handle)
            for initiator in (ALICE, BOB):  # the same initiator again, or someone else
                with pytest.raises(TicketExists):
                    await tickets.record(TICKET_ID, _by(initiator))
                assert await _snapshot(handle) == before
            assert await tickets.live_count(ALICE) == 1
            assert await tickets.live_count(BOB) == 0

    run(scenario)


def test_discard_takes_back_a_record_and_its_place(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            tickets = TicketStore(handle, max_per_user=2)
            await tickets.record(OTHER_ID, _by(ALICE, expires_in=60))
            before = await _snapshot(handle)
            await tickets.record(TICKET_ID, _by(ALICE))  # a later expiry: the index's TTL moves
            await tickets.discard(TICKET_ID, ALICE)
            assert await _snapshot(handle) == before  # ...and moves back
            await tickets.discard(OTHER_ID, ALICE)
            assert await tickets.get(TICKET_ID) is None
            assert await handle.dbsize() == 0
            await tickets.record(OTHER_ID, _by(ALICE))  # the places are free again
            await tickets.record(TICKET_ID, _by(ALICE))

    run(scenario)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "3"])
def test_bad_limit_refused(redis_url: str, limit: object) -> None:
    with pytest.raises(ValueError, match="max_per_user"):
        TicketStore(None, max_per_user=limit)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with client(redis_url) as handle:
            with pytest.raises(ValueError, match="limit"):
                await TicketStore(handle).record(TICKET_ID, _by(ALICE), limit=limit)  # type: ignore[arg-type]
            assert await handle.dbsize() == 0

    run(scenario)
