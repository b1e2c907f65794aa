"""UserStore against a real Redis: every operation, atomic add, nothing in clear at rest."""

from __future__ import annotations

import asyncio
import base64

import pytest
import redis.asyncio

from secconf.core.errors import Forbidden, SecconfError
from secconf.store.errors import (
    InvalidRecord,
    KeyUnwrapError,
    RevokedUser,
    UnknownUser,
    UserExists,
)
from secconf.store.keywrap import KeyWrapper
from secconf.store.redis import connect
from secconf.store.users import UserInfo, UserStore, psk_context
from tests.store.aio import client, dump_everything, run
from tests.store.conftest import KEK, OTHER_KEK

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
ALICE_PSK = bytes.fromhex("8f1c0a2e4b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f901a2b3c4d5e6f7081")
BOB_PSK = b"correct horse battery staple!!"  # ASCII: would show up verbatim if stored in clear


class Clock:
    """A settable clock for created/revoked_at."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_add_psk_list_revoke_remove(redis_url: str, wrapper: KeyWrapper) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper, clock=clock)
            assert await users.list() == []
            await users.add(ALICE, ALICE_PSK)
            clock.now += 10
            await users.add(BOB, BOB_PSK)
            assert await users.psk(ALICE) == ALICE_PSK
            assert await users.psk(BOB) == BOB_PSK
            assert await users.list() == [
                UserInfo(ALICE, 1_700_000_000.0, revoked=False),
                UserInfo(BOB, 1_700_000_010.0, revoked=False),
            ]

            clock.now += 5
            await users.revoke(ALICE)
            with pytest.raises(RevokedUser, match="revoked") as revoked:
                await users.psk(ALICE)
            clock.now += 5
            await users.revoke(ALICE)  # again: keeps the first time
            assert (await users.list())[0] == UserInfo(
                ALICE, 1_700_000_000.0, revoked=True, revoked_at=1_700_000_015.0
            )

            await users.remove(ALICE)
            with pytest.raises(UnknownUser, match="unknown user") as unknown:
                await users.psk(ALICE)
            assert [user.identity for user in await users.list()] == [BOB]
            assert await handle.exists(users.key(ALICE)) == 0

            for error in (revoked.value, unknown.value):
                assert isinstance(error, Forbidden)
                assert error.status_code == 403
            # The same answer for both, so a peer cannot probe which identities exist.
            assert (revoked.value.status_code, revoked.value.reason) == (
                unknown.value.status_code,
                unknown.value.reason,
            )

    run(scenario)


def test_unknown_identities(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            for call in (users.psk, users.revoke, users.remove):
                with pytest.raises(UnknownUser):
                    await call(ALICE)
                # Strings that could never be identities are simply unknown (no ValueError).
                for bogus in ("", "x" * 257, "sip:a\nb", "sip:\x00"):
                    with pytest.raises(UnknownUser):
                        await call(bogus)
            assert await handle.dbsize() == 0

    run(scenario)


def test_duplicates_refused_unless_replace(redis_url: str, wrapper: KeyWrapper) -> None:
    clock = Clock()
    new_psk = bytes(range(100, 132))

    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper, clock=clock)
            await users.add(ALICE, ALICE_PSK)
            await users.revoke(ALICE)
            with pytest.raises(UserExists, match="already exists") as caught:
                await users.add(ALICE, new_psk)
            assert caught.value.status_code == 409
            with pytest.raises(RevokedUser):
                await users.psk(ALICE)  # the refused add changed nothing
            clock.now += 60
            await users.add(ALICE, new_psk, replace=True)  # a fresh record
            assert await users.psk(ALICE) == new_psk
            assert await users.list() == [UserInfo(ALICE, clock.now, revoked=False)]
            # replace also works for an identity that did not exist
            await users.add(BOB, BOB_PSK, replace=True)
            assert await users.psk(BOB) == BOB_PSK

    run(scenario)


@pytest.mark.parametrize(
    ("identity", "psk", "message"),
    [
        ("", ALICE_PSK, "identity"),
        ("x" * 257, ALICE_PSK, "identity"),
        ("sip:alice@example.com\r\n", ALICE_PSK, "identity"),
        ("sip:\x7falice", ALICE_PSK, "identity"),
        (b"sip:alice@example.com", ALICE_PSK, "identity"),
        (ALICE, b"short", "16 to 1024 bytes"),
        (ALICE, bytes(15), "16 to 1024 bytes"),
        (ALICE, bytes(1025), "16 to 1024 bytes"),
        (ALICE, ALICE_PSK.hex(), "must be bytes"),
    ],
    ids=["empty", "too-long", "crlf", "del", "bytes-id", "short", "15", "1025", "str-psk"],
)
def test_add_validates_before_writing(
    redis_url: str, wrapper: KeyWrapper, identity: object, psk: object, message: str
) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            with pytest.raises(InvalidRecord, match=message) as caught:
                await users.add(identity, psk)  # type: ignore[arg-type]
            assert caught.value.status_code == 400
            assert isinstance(caught.value, ValueError)
            assert await handle.dbsize() == 0

    run(scenario)


def test_limits_are_inclusive(redis_url: str, wrapper: KeyWrapper) -> None:
    longest = "sip:" + "a" * 252
    unicode_id = "sip:zoë@exämple.com"

    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            await users.add(longest, bytes(16))
            await users.add(unicode_id, bytes(1024))
            await users.add("sip:*?[glob]@example.com", bytes(16))  # no pattern matching anywhere
            assert await users.psk(longest) == bytes(16)
            assert await users.psk(unicode_id) == bytes(1024)
            assert {u.identity for u in await users.list()} == {
                longest,
                unicode_id,
                "sip:*?[glob]@example.com",
            }

    run(scenario)


def test_concurrent_adds_exactly_one_wins(redis_url: str, wrapper: KeyWrapper) -> None:
    contenders = 8
    rounds = 25

    async def scenario() -> None:
        handles = [await _open(redis_url) for _ in range(contenders)]
        try:
            stores = [UserStore(handle, wrapper) for handle in handles]
            for round_ in range(rounds):
                identity = f"sip:race{round_}@example.com"
                psks = [bytes([index]) * 32 for index in range(contenders)]
                results = await asyncio.gather(
                    *(store.add(identity, psk) for store, psk in zip(stores, psks, strict=True)),
                    return_exceptions=True,
                )
                winners = [index for index, result in enumerate(results) if result is None]
                assert len(winners) == 1, results
                assert all(
                    isinstance(result, UserExists)
                    for index, result in enumerate(results)
                    if index != winners[0]
                )
                assert await stores[0].psk(identity) == psks[winners[0]]
            assert len(await stores[0].list()) == rounds
        finally:
            for handle in handles:
                await handle.aclose()

    run(scenario)


async def _open(url: str) -> redis.asyncio.Redis:
    handle = connect(url, timeout=2.0)
    await handle.ping()  # one connection per client, established before the race
    return handle


def test_no_key_material_in_redis_in_clear(redis_url: str, wrapper: KeyWrapper) -> None:
    psks = {ALICE: ALICE_PSK, BOB: BOB_PSK, "sip:carol@example.com": bytes(range(40, 80))}

    async def scenario() -> list[bytes]:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            for identity, psk in psks.items():
                await users.add(identity, psk)
            await users.revoke(BOB)
            await users.add(ALICE, ALICE_PSK, replace=True)
            return await dump_everything(handle)

    everything = run(scenario)
    assert len(everything) > 10  # the dump did see the records
    forbidden: list[bytes] = []
    for psk in [*psks.values(), KEK]:
        forbidden += [
            psk,
            psk.hex().encode(),
            psk.hex().upper().encode(),
            base64.b64encode(psk),
            base64.b64encode(psk).rstrip(b"="),
            base64.urlsafe_b64encode(psk).rstrip(b"="),
        ]
    for value in everything:
        for needle in forbidden:
            assert needle not in value, "key material found in Redis"


def test_blob_moved_to_another_identity_does_not_open(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            await users.add(ALICE, ALICE_PSK)
            await users.add(BOB, BOB_PSK)
            alice_blob = await handle.hget(users.key(ALICE), "psk")
            await handle.hset(users.key(BOB), "psk", alice_blob)  # an attacker with Redis access
            with pytest.raises(KeyUnwrapError) as caught:
                await users.psk(BOB)
            assert caught.value.status_code == 500
            assert ALICE_PSK.hex() not in str(caught.value)
            # The blob still opens where it belongs.
            assert wrapper.unwrap(alice_blob, psk_context(ALICE)) == ALICE_PSK

    run(scenario)


def test_wrong_kek_fails(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            await UserStore(handle, wrapper).add(ALICE, ALICE_PSK)
            for other in (KeyWrapper(OTHER_KEK, "test-kek-1"), KeyWrapper(KEK, "test-kek-2")):
                with pytest.raises(KeyUnwrapError):
                    await UserStore(handle, other).psk(ALICE)

    run(scenario)


def test_prefixes_are_separate_namespaces(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            one, two = UserStore(handle, wrapper, "a"), UserStore(handle, wrapper, "b")
            await one.add(ALICE, ALICE_PSK)
            with pytest.raises(UnknownUser):
                await two.psk(ALICE)
            assert await two.list() == []
            assert sorted(await handle.keys()) == [
                b"a:{users}",
                b"a:{users}:user:" + ALICE.encode(),
            ]

    run(scenario)


def test_corrupt_or_tampered_revocation_flag_fails_closed(
    redis_url: str, wrapper: KeyWrapper
) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            await users.add(ALICE, ALICE_PSK)
            await handle.hdel(users.key(ALICE), "revoked")
            with pytest.raises(RevokedUser):
                await users.psk(ALICE)
            await handle.hset(users.key(ALICE), "revoked", "maybe")
            with pytest.raises(RevokedUser):
                await users.psk(ALICE)

    run(scenario)


def test_repr_and_errors_carry_no_key(redis_url: str, wrapper: KeyWrapper) -> None:
    async def scenario() -> None:
        async with client(redis_url) as handle:
            users = UserStore(handle, wrapper)
            assert (
                repr(users)
                == "UserStore(prefix='secconf', wrapper=KeyWrapper(kek_id='test-kek-1'))"
            )
            await users.add(ALICE, ALICE_PSK)
            with pytest.raises(SecconfError) as caught:
                await users.add(ALICE, ALICE_PSK)
            assert ALICE_PSK.hex() not in str(caught.value)
            assert ALICE in str(caught.value)

    run(scenario)


def test_bad_prefix_refused(wrapper: KeyWrapper) -> None:
    for prefix in ("", "has space", "x" * 65, "é"):
        with pytest.raises(ValueError, match="prefix"):
            UserStore(None, wrapper, prefix)  # type: ignore[arg-type]
