"""The agent's conference pieces without servers: reading the group key a focus delivers."""

from __future__ import annotations

import pytest

from secconf.client.agent import group_key_of
from secconf.core.errors import MikeyError
from secconf.core.mikey import KeyData, KeyDataType, SpiValidity


def test_group_key_is_the_tek_salt_with_its_epoch() -> None:
    tgk = KeyData(KeyDataType.TGK, bytes(32), None, SpiValidity(b"\x00"))
    tek = KeyData(KeyDataType.TEK_SALT, b"k" * 16, b"s" * 14, SpiValidity((7).to_bytes(4, "big")))
    assert group_key_of((tgk, tek)) == (b"k" * 16, b"s" * 14, 7)


def test_no_group_key_is_refused() -> None:
    tgk = KeyData(KeyDataType.TGK, bytes(32), None, SpiValidity(b"\x00"))
    with pytest.raises(MikeyError):
        group_key_of((tgk,))
    with pytest.raises(MikeyError):
        group_key_of(())
