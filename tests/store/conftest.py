"""Fixtures of the store tests: a KEK and its wrapper (the Redis server comes from tests/fixtures)."""

from __future__ import annotations

import pytest

from secconf.store.keywrap import KeyWrapper

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))


@pytest.fixture
def wrapper() -> KeyWrapper:
    return KeyWrapper(KEK, "test-kek-1")
