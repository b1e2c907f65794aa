"""TicketStore against a real Redis: records, revocation markers, expiry with the ticket."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from secconf.store.errors import CorruptRecord, InvalidRecord, TicketExists, UnknownTicket
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
