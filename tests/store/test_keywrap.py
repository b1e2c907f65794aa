"""Key wrapping at rest: AES-256-GCM, bound to its record and its KEK; the KEK file."""

from __future__ import annotations

import base64
import os
import pickle
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import SecconfError
from secconf.store.errors import KeyFileError, KeyUnwrapError
from secconf.store.keywrap import KeyWrapper, generate_key_file, load_key_file
from tests.store.conftest import KEK, OTHER_KEK

SECRET = b"0123456789abcdef-the-secret-psk"
CONTEXT = b"user-psk:sip:alice@example.com"


def test_round_trip_and_fresh_nonce_each_time(wrapper: KeyWrapper) -> None:
    first = wrapper.wrap(SECRET, CONTEXT)
    second = wrapper.wrap(SECRET, CONTEXT)
    assert first != second
    assert wrapper.unwrap(first, CONTEXT) == SECRET
    assert wrapper.unwrap(second, CONTEXT) == SECRET
    assert SECRET not in first


def test_format_is_versioned_and_names_the_kek(wrapper: KeyWrapper) -> None:
    blob = wrapper.wrap(SECRET, CONTEXT)
    kek_id = b"test-kek-1"
    assert blob[0] == 1
    assert blob[1] == len(kek_id)
    assert blob[2 : 2 + len(kek_id)] == kek_id
    # header, 96-bit nonce, ciphertext, 128-bit tag
    assert len(blob) == 2 + len(kek_id) + 12 + len(SECRET) + 16


def test_blob_for_another_record_does_not_open(wrapper: KeyWrapper) -> None:
    blob = wrapper.wrap(SECRET, CONTEXT)
    with pytest.raises(KeyUnwrapError, match="authentication failed"):
        wrapper.unwrap(blob, b"user-psk:sip:mallory@example.com")
    with pytest.raises(KeyUnwrapError):
        wrapper.unwrap(blob, b"")


def test_wrong_kek_fails_with_same_or_other_id(wrapper: KeyWrapper) -> None:
    blob = wrapper.wrap(SECRET, CONTEXT)
    with pytest.raises(KeyUnwrapError, match="authentication failed"):
        KeyWrapper(OTHER_KEK, "test-kek-1").unwrap(blob, CONTEXT)
    with pytest.raises(KeyUnwrapError, match="not wrapped under KEK 'test-kek-2'"):
        KeyWrapper(KEK, "test-kek-2").unwrap(blob, CONTEXT)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", b"\x02\x0atest-kek-1" + bytes(40), b"\x01\x0atest-kek-1" + bytes(28)],
    ids=["empty", "version-only", "version-2", "shorter-than-nonce-and-tag"],
)
def test_malformed_blobs_raise_key_unwrap_error(wrapper: KeyWrapper, blob: bytes) -> None:
    with pytest.raises(KeyUnwrapError) as caught:
        wrapper.unwrap(blob, CONTEXT)
    assert caught.value.status_code == 500
    assert isinstance(caught.value, SecconfError)


def test_errors_and_repr_never_show_key_material(wrapper: KeyWrapper) -> None:
    blob = wrapper.wrap(SECRET, CONTEXT)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(KeyUnwrapError) as caught:
        wrapper.unwrap(tampered, CONTEXT)
    shown = f"{caught.value} {caught.value!r} {wrapper!r} {wrapper}"
    for secret in (KEK, SECRET):
        assert secret.hex() not in shown
        assert base64.b64encode(secret).decode() not in shown
        assert repr(secret) not in shown
    assert repr(wrapper) == "KeyWrapper(kek_id='test-kek-1')"
    assert caught.value.__cause__ is None  # `from None`: no cryptography internals chained
    with pytest.raises(TypeError):
        pickle.dumps(wrapper)


@pytest.mark.parametrize("kek", [b"", bytes(16), bytes(31), bytes(33), "0" * 32])
def test_kek_must_be_32_bytes(kek: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyWrapper(kek, "k")


@pytest.mark.parametrize("kek_id", ["", "x" * 65, "tab\there", " padded", "é", "a\nb"])
def test_kek_id_is_short_printable_ascii(kek_id: str) -> None:
    with pytest.raises(ValueError, match="kek_id"):
        KeyWrapper(KEK, kek_id)


def test_wrap_refuses_empty_secret_and_str_context(wrapper: KeyWrapper) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        wrapper.wrap(b"", CONTEXT)
    with pytest.raises(TypeError):
        wrapper.wrap(SECRET, "text")  # type: ignore[arg-type]


# -- properties (2,000 examples each in CI) --------------------------------------

secrets_ = st.binary(min_size=1, max_size=96)
contexts = st.binary(max_size=64)


@given(secret=secrets_, context=contexts)
def test_property_round_trip(secret: bytes, context: bytes) -> None:
    wrapper = KeyWrapper(KEK, "prop-kek")
    assert wrapper.unwrap(wrapper.wrap(secret, context), context) == secret


@given(secret=secrets_, context=contexts, data=st.data())
def test_property_any_single_bit_flip_is_refused(
    secret: bytes, context: bytes, data: st.DataObject
) -> None:
    wrapper = KeyWrapper(KEK, "prop-kek")
    blob = bytearray(wrapper.wrap(secret, context))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1), label="bit")
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(KeyUnwrapError):
        wrapper.unwrap(bytes(blob), context)


# -- the KEK file ----------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "encoding",
    [
        lambda k: k,
        lambda k: k.hex().encode(),
        lambda k: k.hex().upper().encode() + b"\n",
        lambda k: base64.b64encode(k),
        lambda k: base64.b64encode(k) + b"\n",
    ],
    ids=["raw", "hex", "hex-upper-newline", "base64", "base64-newline"],
)
def test_load_key_file_accepts_raw_hex_and_base64(
    tmp_path: Path, encoding: Callable[[bytes], bytes]
) -> None:
    path = _write(tmp_path / "kek", encoding(KEK))
    assert load_key_file(path) == KEK


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o601])
def test_load_key_file_refuses_files_open_to_group_or_others(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "kek", KEK.hex().encode(), mode)
    with pytest.raises(KeyFileError, match=r"group or others .*chmod 600") as caught:
        load_key_file(path)
    assert KEK.hex() not in str(caught.value)
    assert caught.value.status_code == 500


@pytest.mark.parametrize(
    "content",
    [b"", bytes(31), bytes(33), b"zz" * 32, base64.b64encode(bytes(16)), b"not a key at all"],
    ids=["empty", "31-raw", "33-raw", "bad-hex", "base64-16", "text"],
)
def test_load_key_file_refuses_wrong_contents_without_quoting_them(
    tmp_path: Path, content: bytes
) -> None:
    path = _write(tmp_path / "kek", content)
    with pytest.raises(KeyFileError, match="does not hold a 32-byte key") as caught:
        load_key_file(path)
    if content:
        assert repr(content) not in str(caught.value)


def test_load_key_file_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot be read"):
        load_key_file(tmp_path / "absent")
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_key_file(directory)


def test_generate_key_file_is_0600_loadable_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    old_umask = os.umask(0)  # the most permissive umask must still give 0600
    try:
        generate_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kek = load_key_file(path)
    assert len(kek) == 32
    wrapper = KeyWrapper(kek, "generated")
    assert wrapper.unwrap(wrapper.wrap(SECRET, CONTEXT), CONTEXT) == SECRET
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_file(path)
    assert load_key_file(path) == kek
    other = tmp_path / "kek2"
    generate_key_file(other)
    assert load_key_file(other) != kek
