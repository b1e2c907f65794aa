"""The MIKEY pseudo-random functions (RFC 3830 §4.1.2, RFC 6043 §6.1)."""

from __future__ import annotations

import hmac

from ..errors import MalformedMikey, MikeyErrorNo, UnsupportedMikey
from .constants import PrfFunc

__all__ = ["p_hash", "prf"]

# PRF func -> (hash name, output block bits H).  RFC 3830 §4.1.2: "160" is the
# SHA-1 output size; RFC 6043 §6.1 replaces HMAC-SHA-1 by HMAC-SHA-256 and 160 by 256.
_HASHES: dict[int, tuple[str, int]] = {
    PrfFunc.MIKEY_1: ("sha1", 160),
    PrfFunc.PRF_HMAC_SHA_256: ("sha256", 256),
}

# RFC 3830 §4.1.2: inkey is split into 256-bit blocks ("half the input block
# size" of SHA-1); RFC 6043 §6.1 keeps 256 for PRF-HMAC-SHA-256.
_INKEY_BLOCK_BYTES = 32

#: Longest output asked of the PRF (far above any key MIKEY derives).
MAX_OUT_BITS = 8 * 1024


def p_hash(secret: bytes, label: bytes, blocks: int, hash_name: str) -> bytes:
    """P(s, label, m) of RFC 3830 §4.1.2: HMAC(s, A_1 || label) || ... || HMAC(s, A_m || label).

    A_0 = label, A_i = HMAC(s, A_(i-1)).
    """
    out = []
    a_value = label
    for _ in range(blocks):
        a_value = hmac.new(secret, a_value, hash_name).digest()
        out.append(hmac.new(secret, a_value + label, hash_name).digest())
    return b"".join(out)


def prf(inkey: bytes, label: bytes, out_bits: int, func: int = PrfFunc.MIKEY_1) -> bytes:
    """PRF(inkey, label) cut to *out_bits* (RFC 3830 §4.1.2; RFC 6043 §6.1 for *func* 1).

    Returns ``ceil(out_bits / 8)`` bytes; when *out_bits* is not a multiple of
    8, the unused low bits of the last byte are zero ("the outkey_len most
    significant bits").
    """
    try:
        hash_name, block_bits = _HASHES[func]
    except KeyError:
        raise UnsupportedMikey(
            f"PRF func {func} is not supported", MikeyErrorNo.INVALID_PRF
        ) from None
    if not inkey:
        raise MalformedMikey("PRF input key is empty")
    if not 0 <= out_bits <= MAX_OUT_BITS:
        raise MalformedMikey(f"PRF output of {out_bits} bits is out of range")
    # n = ceil(inkey_len / 256): s_1 .. s_n, all 256 bits except possibly s_n.
    secrets = [inkey[i : i + _INKEY_BLOCK_BYTES] for i in range(0, len(inkey), _INKEY_BLOCK_BYTES)]
    # m = ceil(outkey_len / H).
    blocks = -(-out_bits // block_bits)
    # PRF = P(s_1, label, m) XOR ... XOR P(s_n, label, m).
    result = 0
    for secret in secrets:
        result ^= int.from_bytes(p_hash(secret, label, blocks, hash_name), "big")
    full = result.to_bytes(blocks * block_bits // 8, "big")
    out_bytes = -(-out_bits // 8)
    out = bytearray(full[:out_bytes])
    if out_bits % 8:
        out[-1] &= (0xFF << (8 - out_bits % 8)) & 0xFF
    return bytes(out)
