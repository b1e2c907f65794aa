"""The event-package KEK (secconf.core.cms.event_kek) against an independent derivation.

``_independent_prf`` and ``_independent_label`` are written from the RFC text alone
(RFC 3830 §4.1.2 P() and PRF, RFC 6043 §6.1 PRF-HMAC-SHA-256, RFC 6043 §5.1.3 label)
with hmac and hashlib, sharing no code with secconf.core.mikey.  They computed the
vectors in tests/data/vectors/event-key.toml; the product must reproduce them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import tomllib
from fractions import Fraction

import pytest

from secconf.client.conference_events import KmsSubscription
from secconf.core import cms
from secconf.core.cms import event_kek as ek
from secconf.core.errors import MalformedMessage, MalformedMikey, SecconfError
from secconf.core.mikey import KeyData, KeyDataType, PrfFunc
from secconf.core.mikey import ticket as mt
from tests.conftest import DATA
from tests.fixtures.mikey_world import (
    ALICE,
    FOCUS,
    NOW,
    CountingRandom,
    Kms,
    _desired,
    _issue,
    _respond,
    _transfer,
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
    kek = cms.derive_event_kek(
        KeyData(KeyDataType[case["key_type"]], bytes.fromhex(case["tgk"])),
        cs_id=case["cs_id"],
        randri=bytes.fromhex(case["randri"]) or None,
        randrr=bytes.fromhex(case["randrr"]) or None,
        prf_func=prf_func,
        key_bytes=case["key_bytes"],
    )
    assert kek.hex() == case["kek"]
    assert cms.event_key_id(case["csb_id"]).hex() == case["key_id"]


def test_the_exchange_profile_is_the_vector_of_that_name() -> None:
    case = VECTORS["case"]["exchange-profile"]
    key = cms.exchange_event_key(
        KeyData(KeyDataType.TGK, bytes.fromhex(case["tgk"])),
        randri=bytes.fromhex(case["randri"]),
        csb_id=case["csb_id"],
    )
    assert (key.kek.hex(), key.key_id.hex()) == (case["kek"], case["key_id"])


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


def _subscription(kms: Kms, *, forking: bool) -> KmsSubscription:
    """Alice's SUBSCRIBE exchange with the focus: a ticket naming the focus alone."""
    issued = _issue(kms, _desired(recipients=(FOCUS,), forking=forking))
    return KmsSubscription(_transfer(issued, FOCUS), lambda: NOW)


def test_the_kek_is_not_the_srtp_key_and_a_tek_is_refused() -> None:
    kms = Kms(CountingRandom(b"kms"))
    subscription = _subscription(kms, forking=False)
    answer = _respond(kms, subscription.pending.data, FOCUS)
    transfer = mt.TransferInit.read(subscription.pending.data)
    key = cms.event_key_of_transfer(transfer, answer.resolved)
    srtp = answer.keys[1]
    assert key.kek not in (srtp.key, answer.resolved.traffic_keys[0].key)
    assert srtp.key not in key.kek
    with pytest.raises(MalformedMikey):
        cms.derive_event_kek(
            KeyData(KeyDataType.TEK, bytes(16)), cs_id=1, randri=bytes(32), randrr=None,
            prf_func=PrfFunc.PRF_HMAC_SHA_256,
        )  # fmt: skip


def test_key_ids_name_the_exchange_by_its_csb_id() -> None:
    key_id = cms.event_key_id(0xCAFEBABE)
    assert key_id == bytes.fromhex("02cafebabe")
    assert cms.parse_event_key_id(key_id) == 0xCAFEBABE
    assert cms.parse_event_key_id(b"\x01" + key_id[1:]) is None  # the retired group form
    assert cms.parse_event_key_id(key_id[:-1]) is None
    with pytest.raises(ValueError, match="32 bits"):
        cms.event_key_id(1 << 32)


def test_the_kek_never_shows_in_a_repr() -> None:
    subscription = _subscription(Kms(CountingRandom(b"kms")), forking=False)
    key = subscription.early_key()
    assert key is not None
    assert key.kek.hex() not in repr(key)
    assert str(key.kek) not in repr(key)
    assert key.kek.hex() not in repr(subscription)


# -- focus and member agree; a new exchange is a new key --------------------------------------


@pytest.mark.parametrize("forking", [False, True])
def test_focus_and_member_derive_the_same_key_from_the_subscribe_exchange(forking: bool) -> None:
    kms = Kms(CountingRandom(b"kms"))
    subscription = _subscription(kms, forking=forking)
    answer = _respond(kms, subscription.pending.data, FOCUS)
    at_focus = cms.event_key_of_transfer(
        mt.TransferInit.read(subscription.pending.data), answer.resolved
    )
    at_member = subscription.answered(base64.b64encode(answer.data))
    assert (at_member.key_id, at_member.kek) == (at_focus.key_id, at_focus.kek)
    assert cms.parse_event_key_id(at_focus.key_id) == subscription.pending.csb_id
    early = subscription.early_key()
    if forking:  # TGK' needs RANDRkms, which only the answer brings
        assert early is None
    else:  # known before the SUBSCRIBE leaves: a NOTIFY overtaking the 2xx is read
        assert early is not None
        assert (early.key_id, early.kek) == (at_focus.key_id, at_focus.kek)


def test_an_answer_from_elsewhere_gives_no_key() -> None:
    kms = Kms(CountingRandom(b"kms"))
    subscription = _subscription(kms, forking=True)
    answer = _respond(kms, subscription.pending.data, FOCUS)
    flipped = bytearray(answer.data)
    flipped[-3] ^= 1
    with pytest.raises(SecconfError):
        subscription.answered(base64.b64encode(bytes(flipped)))
    with pytest.raises(MalformedMessage):
        subscription.answered(b"not base64 !")


def test_each_exchange_gives_a_new_key_and_key_id() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(recipients=(FOCUS,), forking=False, reusable=True))
    first = KmsSubscription(_transfer(issued, FOCUS), lambda: NOW).early_key()
    pending = mt.build_transfer_init(
        issued, initiator=ALICE, responder=FOCUS, sessions=[], now=NOW,
        random_bytes=CountingRandom(b"another transfer"),
    )  # fmt: skip
    second = KmsSubscription(pending, lambda: NOW).early_key()
    assert first is not None
    assert second is not None
    assert first.kek != second.kek
    assert first.key_id != second.key_id
