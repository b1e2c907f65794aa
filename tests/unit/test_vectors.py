"""RFC 3711 Appendix B vectors, reproduced so the data file can be trusted by the SRTP work."""

from __future__ import annotations

import tomllib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import DATA

VECTORS = tomllib.loads((DATA / "vectors" / "rfc3711-appendix-b.toml").read_text())


def _aes_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - single-block primitive
    return encryptor.update(block) + encryptor.finalize()


def _derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    # RFC 3711 §4.3.1, kdr = 0 and index 0: x = (label << 48) XOR master_salt,
    # then AES-CM keystream with IV = x * 2^16.
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    out = b""
    counter = 0
    while len(out) < length:
        block = ((x << 16) + counter).to_bytes(16, "big")
        out += _aes_block(master_key, block)
        counter += 1
    return out[:length]


def test_b2_aes_cm_keystream_blocks() -> None:
    vector = VECTORS["b2_aes_cm_keystream"]
    key = bytes.fromhex(vector["session_key"])
    assert vector["keystream_octets"] == 65282 * 16
    for counter_block, keystream in vector["blocks"]:
        assert _aes_block(key, bytes.fromhex(counter_block)).hex() == keystream.lower()


def test_b3_key_derivation() -> None:
    vector = VECTORS["b3_key_derivation"]
    key, salt = bytes.fromhex(vector["master_key"]), bytes.fromhex(vector["master_salt"])
    assert _derive(key, salt, 0x00, 16).hex() == vector["cipher_key"].lower()
    assert _derive(key, salt, 0x02, 14).hex() == vector["cipher_salt"].lower()
    assert _derive(key, salt, 0x01, 94).hex() == vector["auth_key"].lower()


def test_b1_aes_f8() -> None:
    vector = VECTORS["b1_aes_f8"]
    key = bytes.fromhex(vector["key"])
    salt = bytes.fromhex(vector["salt"])
    mask = salt + b"\x55" * (16 - len(salt))  # RFC 3711 §4.1.2.1
    assert mask.hex() == vector["key_mask"]
    iv = bytes.fromhex(vector["iv"])
    assert iv == b"\x00" + bytes.fromhex(vector["rtp_header"])[1:] + bytes.fromhex(vector["roc"])
    masked_key = bytes(a ^ b for a, b in zip(key, mask, strict=True))
    iv_prime = _aes_block(masked_key, iv)
    assert iv_prime.hex() == vector["iv_prime"]
    payload = bytes.fromhex(vector["payload"])
    stream, previous = b"", bytes(16)
    for j in range((len(payload) + 15) // 16):
        block = int.from_bytes(iv_prime, "big") ^ int.from_bytes(previous, "big") ^ j
        previous = _aes_block(key, block.to_bytes(16, "big"))
        stream += previous
    ciphertext = bytes(p ^ s for p, s in zip(payload, stream, strict=False))
    assert ciphertext.hex() == vector["ciphertext"]
