"""SIP digest users against a real Redis: HA1 values wrapped, bound to identity and algorithm."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from secconf.core.digest import compute_ha1
from secconf.store.conferences import connect_blocking
from secconf.store.errors import InvalidRecord, KeyUnwrapError
from secconf.store.keywrap import KeyWrapper
from secconf.store.sip_users import SipUserStore

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect_blocking(redis_url, timeout=0.5)
    yield client
    client.close()


def test_add_read_and_nothing_in_clear(client: redis.Redis, wrapper: KeyWrapper) -> None:
    users = SipUserStore(client, wrapper, "sctest")
    users.add(ALICE, "alice", "example.com", "correct horse")
    for algorithm in ("SHA-256", "MD5"):
        expected = compute_ha1("alice", "example.com", "correct horse", algorithm)
        assert users.ha1(ALICE, algorithm, "example.com") == expected
        raw = client.hget(users.key(ALICE), algorithm)
        assert raw is not None
        assert expected.encode() not in raw
        assert b"correct horse" not in raw
    assert users.ha1(ALICE, "SHA-256", "other.realm") is None
    assert users.ha1(BOB, "SHA-256", "example.com") is None
    assert users.ha1(ALICE, "SHA-512", "example.com") is None
    # A blob copied to another user does not open.
    client.hset(
        users.key(BOB),
        mapping={"realm": "example.com", "MD5": client.hget(users.key(ALICE), "MD5")},
    )  # type: ignore[arg-type]
    with pytest.raises(KeyUnwrapError):
        users.ha1(BOB, "MD5", "example.com")
    with pytest.raises(InvalidRecord):
        users.add(BOB, "bob", "example.com", "short")
    assert users.remove(ALICE)
    assert users.ha1(ALICE, "MD5", "example.com") is None
