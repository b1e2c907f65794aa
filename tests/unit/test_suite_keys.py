"""An epoch's key per SRTP suite (docs/mikey-decisions.md #30), checked against the RFC text.

The reference PRF here is written from RFC 3830 §4.1.2 with RFC 6043 §6.1's
changes (HMAC-SHA-256, 256-bit output blocks) on pyca/cryptography's HMAC,
sharing no code with ``secconf.core.mikey.prf``.  SDES-mode epochs: a suite's
key is PRF(key || salt, "SUIT" || epoch || suite name).  KMS-mode epochs: a
suite's key is the TEK and salt every member derives from the GTGK at that
suite's lengths (RFC 6043 §5.1.3), the same derivation at another length.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from secconf.core.keys import GroupKey, suite_key
from secconf.core.mikey import KeyData, KeyDataType
from secconf.core.mikey.constants import PrfFunc
from secconf.core.mikey.keys import ticket_srtp_master_key
from secconf.core.sdes import SUITES
from secconf.srtp import srtp_session
from tests.unit.test_rfc6188 import Reference

CM_128 = SUITES["AES_CM_128_HMAC_SHA1_80"]
CM_256 = ("AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32")


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def reference_prf(inkey: bytes, label: bytes, out_bits: int) -> bytes:
    """RFC 3830 §4.1.2: PRF(inkey, label) = P(s_1, label, m) XOR ... XOR P(s_n, label, m).

    s_i: inkey in 256-bit pieces; m = ceil(out_bits / 256) (RFC 6043 §6.1: H = 256);
    P(s, label, m) = HMAC(s, A_1 || label) || ... with A_0 = label, A_i = HMAC(s, A_(i-1)).
    """
    m = -(-out_bits // 256)
    out = bytes(32 * m)
    for start in range(0, len(inkey), 32):
        s, a, p = inkey[start : start + 32], label, b""
        for _ in range(m):
            a = _hmac(s, a)
            p += _hmac(s, a + label)
        out = bytes(x ^ y for x, y in zip(out, p, strict=True))
    return out[: out_bits // 8]


def expected_key(base: GroupKey, suite: str) -> tuple[str, bytes, bytes]:
    """The epoch's key in *suite* as a member gets it (decision #30), by :func:`reference_prf`."""
    if suite == base.suite.name:
        return (suite, base.key, base.salt)
    label = b"SUIT" + base.epoch.to_bytes(4, "big") + suite.encode()
    known = SUITES[suite]
    out = reference_prf(base.key + base.salt, label, 8 * known.key_salt_length)
    return (suite, out[: known.key_length], out[known.key_length :])


def test_a_key_in_its_own_suite_is_itself() -> None:
    key = GroupKey.generate(4, CM_128, os.urandom)
    assert suite_key(key, CM_128) is key


@pytest.mark.parametrize("suite", CM_256)
def test_another_suites_key_is_the_prf_of_the_epoch_key(suite: str) -> None:
    key = GroupKey.generate(7, CM_128, os.urandom)
    derived = suite_key(key, SUITES[suite])
    label = b"SUIT" + (7).to_bytes(4, "big") + suite.encode()
    expected = reference_prf(key.key + key.salt, label, 8 * (32 + 14))
    assert (derived.key, derived.salt) == (expected[:32], expected[32:])
    assert (derived.epoch, derived.suite.name) == (7, suite)
    # the other direction too: an AES-256 conference's AES-128 key
    back = suite_key(derived, CM_128)
    label = b"SUIT" + (7).to_bytes(4, "big") + CM_128.name.encode()
    assert back.key + back.salt == reference_prf(derived.key + derived.salt, label, 8 * 30)


def test_keys_of_an_epoch_differ_per_suite_and_per_epoch() -> None:
    material = os.urandom(30)
    one = GroupKey(1, CM_128, material[:16], material[16:])
    two = GroupKey(2, CM_128, material[:16], material[16:])  # same bytes, next epoch
    keys = {suite_key(k, SUITES[s]).key for k in (one, two) for s in CM_256}
    assert len(keys) == 4
    assert not any(one.key in k for k in keys)


@pytest.mark.parametrize("suite", CM_256)
def test_the_derived_key_runs_in_libsrtp_and_opens_under_the_rfc_6188_reference(
    suite: str,
) -> None:
    derived = suite_key(GroupKey.generate(1, CM_128, os.urandom), SUITES[suite])
    sender = srtp_session(suite, derived.key, derived.salt, inbound=False)
    packet = bytes([0x80, 0]) + (5).to_bytes(2, "big") + bytes(4) + (0xABCD).to_bytes(4, "big")
    protected = sender.protect(packet + b"voice" * 32)
    assert Reference(suite, derived.key, derived.salt).unprotect(protected)[12:] == b"voice" * 32


@pytest.mark.parametrize("suite", [CM_128.name, *CM_256])
def test_kms_epochs_key_each_suite_with_the_tek_of_rfc_6043(suite: str) -> None:
    """A member whose crypto session's policy is *suite* derives this from the GTGK (§5.1.3)."""
    gtgk, randri, cs_id = os.urandom(32), os.urandom(32), 1
    known = SUITES[suite]
    master = ticket_srtp_master_key(
        KeyData(KeyDataType.GTGK, gtgk), cs_id, randri, None, PrfFunc.PRF_HMAC_SHA_256,
        8 * known.key_length, 8 * known.salt_length,
    )  # fmt: skip

    def label(constant: int) -> bytes:
        # RFC 6043 §5.1.3: constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || RANDRi || 0
        rands = bytes([32]) + randri + b"\x00"
        return constant.to_bytes(4, "big") + bytes([cs_id]) + b"\xff" * 4 + b"\x03" + rands

    assert master.key == reference_prf(gtgk, label(0x2AD01C64), 8 * known.key_length)
    assert master.salt == reference_prf(gtgk, label(0x39A2C14B), 8 * known.salt_length)
