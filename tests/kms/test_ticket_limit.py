"""The KMS's bound on live tickets per user, in process against a real Redis (issue 12, item 9).

The service as ``secconf kms serve`` builds it (KmsService.create), fed REQUEST_INIT
messages made by the core the project's client uses; the real process over HTTP is
tests/security/test_kms_ticket_cap.py.  Also the ``[tickets]`` table of the KMS config.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
import redis.asyncio

from secconf.core.errors import MikeyErrorNo, ReplayedMessage
from secconf.core.mikey import ticket as mt
from secconf.kms.config import KmsConfigError, load_config
from secconf.kms.service import KmsService
from secconf.store import DEFAULT_MARGIN_SECONDS, DEFAULT_MAX_PER_USER, TicketLimitReached
from secconf.store.keywrap import KeyWrapper
from tests.store.aio import client, run

KMS_ID = "sip:kms.limit.invalid"
ALICE, BOB, FOCUS = "sip:alice@limit.invalid", "sip:bob@limit.invalid", "sip:focus@limit.invalid"
PSKS = {identity: secrets.token_bytes(32) for identity in (ALICE, BOB, FOCUS)}
WRAPPER = KeyWrapper(bytes(range(32)), "limit-kek")


def _request(initiator: str, *, lifetime: float = 600.0) -> bytes:
    desired = mt.DesiredPolicy(recipients=(BOB,), valid_until=time.time() + lifetime)
    return mt.build_request_init(
        initiator=initiator, kms=KMS_ID, psk=PSKS[initiator], desired=desired,
        now=time.time(), random_bytes=secrets.token_bytes,
    ).data  # fmt: skip


async def _service(handle: redis.asyncio.Redis, **limits: object) -> KmsService:
    service = KmsService.create(handle, WRAPPER, identity=KMS_ID, **limits)  # type: ignore[arg-type]
    for identity, psk in PSKS.items():
        await service.users.add(identity, psk)
    await service.tpks.current()  # the TPK is made on first use: before any snapshot
    return service


async def _snapshot(handle: redis.asyncio.Redis) -> dict[bytes, tuple[bytes | None, int]]:
    return {
        key: (await handle.dump(key), await handle.pexpiretime(key))
        async for key in handle.scan_iter(count=100)
    }


def test_a_request_over_the_limit_is_refused_and_writes_nothing(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            service = await _service(handle, max_tickets_per_user=2)
            for _ in range(2):
                await service.handle_request(_request(ALICE))
            before = await _snapshot(handle)
            with pytest.raises(TicketLimitReached) as caught:
                await service.handle_request(_request(ALICE))
            assert caught.value.error_no == MikeyErrorNo.UNSPECIFIED
            assert caught.value.status_code == 403
            # Not even the replay token of the refused message: a refusal writes nothing.
            assert await _snapshot(handle) == before
            await service.handle_request(_request(BOB))  # Bob has places of his own

    run(scenario)


def test_an_identity_with_a_limit_of_its_own(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            service = await _service(
                handle, max_tickets_per_user=1, max_tickets_per_identity={FOCUS: 3}
            )
            for _ in range(3):
                await service.handle_request(_request(FOCUS))
            with pytest.raises(TicketLimitReached):
                await service.handle_request(_request(FOCUS))
            await service.handle_request(_request(ALICE))
            with pytest.raises(TicketLimitReached):
                await service.handle_request(_request(ALICE))
            assert await service.tickets.live_count(FOCUS) == 3

    run(scenario)


def test_a_replay_takes_no_place(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            service = await _service(handle, max_tickets_per_user=10)
            message = _request(ALICE)
            await service.handle_request(message)
            await service.handle_request(_request(ALICE))
            before = await _snapshot(handle)
            with pytest.raises(ReplayedMessage):  # caught by the read, before any write
                await service.handle_request(message)
            assert await _snapshot(handle) == before
            # A copy that passed that read while the first was in flight: its ticket is
            # recorded, the replay cache refuses it, and the record goes again (its place too).
            seen = service.replay.seen

            async def not_yet(token: bytes) -> bool:
                await seen(token)
                return False

            monkeypatch.setattr(service.replay, "seen", not_yet)
            with pytest.raises(ReplayedMessage):
                await service.handle_request(message)
            assert await _snapshot(handle) == before
            # Copies in flight together, all past the read: one ticket, one record.
            racing = _request(ALICE)
            outcomes = await asyncio.gather(
                *(service.handle_request(racing) for _ in range(4)), return_exceptions=True
            )
            assert sum(isinstance(o, bytes) for o in outcomes) == 1
            assert all(isinstance(o, bytes | ReplayedMessage) for o in outcomes)
            assert await service.tickets.live_count(ALICE) == 3
            recorded = [key async for key in handle.scan_iter(match="secconf:ticket:*")]
            assert len(recorded) == 3

    run(scenario)


def test_places_come_back_after_the_tickets_expire(redis_url: str) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            service = await _service(handle, max_tickets_per_user=1, ticket_record_margin=0.2)
            await service.handle_request(_request(ALICE, lifetime=0.5))
            with pytest.raises(TicketLimitReached):
                await service.handle_request(_request(ALICE))
            await asyncio.sleep(1.0)
            await service.handle_request(_request(ALICE))

    run(scenario)


# -- configuration ---------------------------------------------------------------------

BASE = '[kms]\nidentity = "sip:kms.x"\nkek_file = "kek"\n[redis]\nurl = "redis://x"\n'


def test_tickets_table_defaults_and_values(tmp_path: Path) -> None:
    path = tmp_path / "kms.toml"
    path.write_text(BASE)
    config = load_config(path)
    assert config.max_tickets_per_user == DEFAULT_MAX_PER_USER == 256
    assert config.ticket_record_margin == DEFAULT_MARGIN_SECONDS
    assert config.ticket_limit(ALICE) == 256
    path.write_text(
        BASE + "[tickets]\nmax_per_user = 8\nrecord_margin = 30\n"
        f'[tickets.max_per_identity]\n"{FOCUS}" = 5000\n'
    )
    config = load_config(path)
    assert (config.max_tickets_per_user, config.ticket_record_margin) == (8, 30.0)
    assert (config.ticket_limit(ALICE), config.ticket_limit(FOCUS)) == (8, 5000)


def test_the_shipped_config_loads_with_the_defaults() -> None:
    config = load_config(Path(__file__).parents[2] / "config" / "kms.toml")
    assert config.max_tickets_per_user == DEFAULT_MAX_PER_USER
    assert config.ticket_record_margin == DEFAULT_MARGIN_SECONDS
    assert config.max_tickets_per_identity == {}


@pytest.mark.parametrize(
    "table",
    [
        "max_per_user = 0",
        "max_per_user = -3",
        "max_per_user = 2.5",
        'max_per_user = "8"',
        "max_per_user = true",
        "record_margin = -1",
        "record_margin = nan",
        "max_per_users = 8",
        "max_per_identity = 5",
        '[tickets.max_per_identity]\n"sip:x" = 0',
        '[tickets.max_per_identity]\n"" = 5',
    ],
)
def test_bad_tickets_settings_refused(tmp_path: Path, table: str) -> None:
    path = tmp_path / "kms.toml"
    if not table.startswith("[tickets."):
        table = "[tickets]\n" + table
    path.write_text(BASE + table + "\n")
    with pytest.raises(KmsConfigError, match=r"tickets|record_margin"):
        load_config(path)
