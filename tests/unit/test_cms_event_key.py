"""The event-package KEK (secconf.core.cms.event_kek) against an independent derivation.

``_independent_prf`` and ``_independent_label`` are written from the RFC text alone
(RFC 3830 §4.1.2 P() and PRF, RFC 6043 §6.1 PRF-HMAC-SHA-256, RFC 6043 §5.1.3 label)
with hmac and hashlib, sharing no code with secconf.core.mikey.  They computed the
vectors in tests/data/vectors/event-key.toml; the product must reproduce them.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from fractions import Fraction

import pytest

from secconf.core import cms
from secconf.core.cms import event_kek as ek
from secconf.core.errors import MalformedMikey
from secconf.core.mikey import KeyData, KeyDataType, PrfFunc
from secconf.core.mikey import group as mg
from tests.conftest import DATA
from tests.fixtures.mikey_world import (
    ALICE,
    BOB,
    FOCUS,
    NOW,
    CountingRandom,
    Kms,
    _epoch,
    _resolve,
)

VECTORS = tomllib.loads((DATA / "vectors" / "event-key.toml").read_text())


# -- the independent implementation ---------------------------------------------------------


def _independent_prf(inkey: bytes, label: bytes, out_bytes: int, hash_name: str) -> bytes:
    """RFC 3830 §4.1.2 (MIKEY-1, SHA-1) and RFC 6043 §6.1 (SHA-256), from the text."""
    block = hashlib.new(hash_name).digest_size  # H: 160 or 256 bits
    m = -(-out_bytes // block)
    # "inkey is divided into n blocks of 256 bits (the last block may be shorter)"
    chunks = [inkey[i : i + 32] for i in range(0, len(inkey), 32)]
    out = bytes(m * block)
    for s in chunks:
        # P(s, label, m) = HMAC(s, A_1 || label) || ... || HMAC(s, A_m || label),
        # A_0 = label, A_i = HMAC(s, A_{i-1})
        a = label
        p = b""
        for _ in range(m):
            a = hmac.new(s, a, hash_name).digest()
            p += hmac.new(s, a + label, hash_name).digest()
        out = bytes(x ^ y for x, y in zip(out, p, strict=True))
    return out[:out_bytes]


def _independent_label(constant: int, cs_id: int, randri: bytes, randrr: bytes) -> bytes:
    """RFC 6043 §5.1.3: constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || RANDRi || len RANDRr || RANDRr."""
    return (
        constant.to_bytes(4, "big")
        + bytes([cs_id])
        + b"\xff\xff\xff\xff\x03"
        + bytes([len(randri)])
        + randri
        + bytes([len(randrr)])
        + randrr
    )


def _e_chunk(index: int) -> int:
    """The *index*-th (1-based) nine-digit chunk of e's decimals, from the series sum 1/k!."""
    total, term = Fraction(0), Fraction(1)
    for k in range(1, 150):
        total += term
        term /= k
    digits = str((total * 10 ** (9 * index + 5)).__floor__())[1:]
    return int(digits[9 * (index - 1) : 9 * index])


_HASH = {
    "prf-hmac-sha-256": ("sha256", PrfFunc.PRF_HMAC_SHA_256),
    "mikey-1": ("sha1", PrfFunc.MIKEY_1),
}


# -- the constant -------------------------------------------------------------------------


def test_the_constant_is_the_twelfth_chunk_of_e_after_those_rfc_3830_and_6043_take() -> None:
    assert [_e_chunk(i) for i in (1, 11)] == [718281828, 525166427]  # TEK, MPKr (RFC 6043 A.1)
    assert ek.EVENT_KEK_CONSTANT == _e_chunk(12) == 427466391


# -- the vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VECTORS["case"]))
def test_vectors_are_what_the_independent_derivation_gives(name: str) -> None:
    case = VECTORS["case"][name]
    hash_name, _ = _HASH[case["prf"]]
    label = _independent_label(
        ek.EVENT_KEK_CONSTANT,
        case["cs_id"],
        bytes.fromhex(case["randri"]),
        bytes.fromhex(case["randrr"]),
    )
    assert label.hex() == case["label"]
    kek = _independent_prf(bytes.fromhex(case["tgk"]), label, case["key_bytes"], hash_name)
    assert kek.hex() == case["kek"]


@pytest.mark.parametrize("name", sorted(VECTORS["case"]))
def test_the_product_reproduces_the_vectors(name: str) -> None:
    case = VECTORS["case"][name]
    _, prf_func = _HASH[case["prf"]]
    key = cms.event_key(
        KeyData(KeyDataType[case["key_type"]], bytes.fromhex(case["tgk"])),
        cs_id=case["cs_id"],
        randri=bytes.fromhex(case["randri"]) or None,
        randrr=bytes.fromhex(case["randrr"]) or None,
        prf_func=prf_func,
        epoch=case["epoch"],
        csb_id=case["csb_id"],
        key_bytes=case["key_bytes"],
    )
    assert key.kek.hex() == case["kek"]
    assert key.key_id.hex() == case["key_id"]


def test_the_independent_prf_agrees_with_the_mikey_kat() -> None:
    # Cross-check the independent P() on the MIKEY known answers (two inkey blocks, SHA-1).
    kat = tomllib.loads((DATA / "vectors" / "mikey-kat.toml").read_text())["prf"]
    out = _independent_prf(
        bytes.fromhex(kat["mikey1_inkey"]), bytes.fromhex(kat["mikey1_label"]), 32, "sha1"
    )
    assert out.hex() == kat["mikey1_out"]
    out = _independent_prf(
        bytes.fromhex(kat["sha256_inkey"]), bytes.fromhex(kat["sha256_label"]), 32, "sha256"
    )
    assert out.hex() == kat["sha256_out"]


# -- never the SRTP key --------------------------------------------------------------------


def test_the_kek_is_not_the_srtp_key_and_a_tek_is_refused() -> None:
    epoch = _epoch(Kms(CountingRandom(b"kms")))
    srtp = epoch.srtp_master_key(256, 112)
    key = cms.group_event_key(epoch)
    assert key.kek not in (srtp.key, epoch.gtgk)
    assert srtp.key not in key.kek
    assert key.kek[:16] != epoch.srtp_master_key().key
    with pytest.raises(MalformedMikey):
        cms.event_key(
            KeyData(KeyDataType.TEK, bytes(16)), cs_id=1, randri=bytes(32), randrr=None,
            prf_func=PrfFunc.PRF_HMAC_SHA_256, epoch=1, csb_id=1,
        )  # fmt: skip


def test_key_ids_name_epoch_and_csb_id() -> None:
    key_id = cms.event_key_id(7, 0xCAFEBABE)
    assert key_id == bytes.fromhex("0100000007cafebabe")
    assert cms.parse_event_key_id(key_id) == (7, 0xCAFEBABE)
    assert cms.parse_event_key_id(b"\x02" + key_id[1:]) is None
    assert cms.parse_event_key_id(key_id[:-1]) is None


def test_the_kek_never_shows_in_a_repr() -> None:
    key = cms.group_event_key(_epoch(Kms(CountingRandom(b"kms"))))
    assert key.kek.hex() not in repr(key)
    assert str(key.kek) not in repr(key)


# -- focus and members agree; a new epoch is a new key ---------------------------------------


def test_every_member_derives_the_focus_event_key_from_its_exchange() -> None:
    kms = Kms(CountingRandom(b"kms"))
    epoch = _epoch(kms)
    at_focus = cms.group_event_key(epoch)
    for member in (ALICE, BOB):
        pending = mg.build_group_transfer_init(
            epoch, initiator=FOCUS, responder=member, ssrcs=[0x1111], now=NOW,
            random_bytes=CountingRandom(b"t"),
        )  # fmt: skip
        transfer, resolved = _resolve(kms, pending.data, member)
        at_member = cms.event_key_of_transfer(transfer, resolved)
        assert (at_member.key_id, at_member.kek) == (at_focus.key_id, at_focus.kek)
    assert cms.parse_event_key_id(at_focus.key_id) == (epoch.epoch, epoch.csb_id)


def test_a_rekey_gives_a_new_key_and_key_id() -> None:
    # Each epoch is a new GTGK ticket (two KMS runs: the fixture's focus reuses its RANDs).
    first = _epoch(Kms(CountingRandom(b"kms")), 2)
    second = _epoch(Kms(CountingRandom(b"kms again")), 3)
    one, two = cms.group_event_key(first), cms.group_event_key(second)
    assert one.kek != two.kek
    assert one.key_id != two.key_id
