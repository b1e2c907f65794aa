"""RFC 4568 a=crypto: the RFC's own examples, the suite table, every validity rule."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from secconf.core.errors import InvalidCryptoAttribute, UnsupportedCryptoSuite
from secconf.core.sdes import SUITES, CryptoAttribute, KeyParam, Mki

# RFC 4568 §4 and §8.1/§8.2 examples (line folding of the RFC text removed).
RFC4568_EXAMPLES = [
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
    "1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32",
    "1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP",
    "2 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;"
    "inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP",
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
]
KEY30 = base64.b64encode(bytes(range(30))).decode()


@pytest.mark.parametrize("value", RFC4568_EXAMPLES)
def test_rfc4568_examples_parse_and_round_trip(value: str) -> None:
    attribute = CryptoAttribute.parse(value)
    assert str(attribute) == value
    assert attribute.key_params[0].lifetime == 2**20
    assert len(attribute.key) == 16
    assert len(attribute.salt) == 14


def test_fields_of_the_rfc_example() -> None:
    attribute = CryptoAttribute.parse(RFC4568_EXAMPLES[4])
    assert attribute.tag == 2
    assert attribute.suite is SUITES["F8_128_HMAC_SHA1_80"]
    assert [p.mki for p in attribute.key_params] == [Mki(1, 4), Mki(2, 4)]
    assert bytes(attribute.key_params[1].mki or Mki(0, 1)) == b"\x00\x00\x00\x02"
    assert [str(p) for p in attribute.session_params] == ["FEC_ORDER=FEC_SRTP"]
    blob = base64.b64decode("MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm")
    assert attribute.key + attribute.salt == blob


@pytest.mark.parametrize(
    ("name", "key", "salt", "rtp_tag", "rtcp_tag"),
    [
        ("AES_CM_128_HMAC_SHA1_80", 16, 14, 10, 10),
        ("AES_CM_128_HMAC_SHA1_32", 16, 14, 4, 10),
        ("F8_128_HMAC_SHA1_80", 16, 14, 10, 10),
        ("AES_256_CM_HMAC_SHA1_80", 32, 14, 10, 10),
        ("AEAD_AES_128_GCM", 16, 12, 16, 16),
        ("AEAD_AES_256_GCM", 32, 12, 16, 16),
    ],
)
def test_suite_table(name: str, key: int, salt: int, rtp_tag: int, rtcp_tag: int) -> None:
    suite = SUITES[name]
    assert (suite.key_length, suite.salt_length) == (key, salt)
    assert (suite.srtp_auth_tag_length, suite.srtcp_auth_tag_length) == (rtp_tag, rtcp_tag)
    assert suite.srtp_lifetime_max == 2**48
    assert suite.srtcp_lifetime_max == 2**31


def test_exact_text_is_kept_whitespace_padding_and_spelling() -> None:
    value = f"07\t AES_CM_128_HMAC_SHA1_80  INLINE:{KEY30}|1048576|0001:4  WSH=128  -X-vendor"
    attribute = CryptoAttribute.parse(value)
    assert str(attribute) == value
    assert attribute.tag == 7
    assert attribute.key_params[0].lifetime == 1048576
    assert attribute.key_params[0].mki == Mki(1, 4)
    assert [p.name for p in attribute.session_params] == ["WSH", "-X-vendor"]
    assert attribute.session_params[1].is_extension


def test_unpadded_base64_is_accepted_for_a_256_bit_suite() -> None:
    blob = bytes(range(46))
    unpadded = base64.b64encode(blob).decode().rstrip("=")
    attribute = CryptoAttribute.parse(f"1 AES_256_CM_HMAC_SHA1_80 inline:{unpadded}")
    assert attribute.key + attribute.salt == blob


def test_built_attributes_use_canonical_text() -> None:
    key_param = KeyParam(bytes(16), bytes(14), 2**31, Mki(5, 2))
    attribute = CryptoAttribute(3, SUITES["AES_CM_128_HMAC_SHA1_32"], (key_param,))
    text = str(attribute)
    assert (
        text
        == "3 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(bytes(30)).decode() + "|2^31|5:2"
    )
    assert CryptoAttribute.parse(text) == attribute
    assert str(KeyParam(bytes(16), bytes(14), 1000)).endswith("|1000")


def test_replace_drops_the_parsed_text() -> None:
    parsed = CryptoAttribute.parse(RFC4568_EXAMPLES[0])
    retagged = dataclasses.replace(parsed, tag=9)
    assert str(retagged).startswith("9 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVe")


def test_generate_draws_key_and_salt_from_the_source_passed_in() -> None:
    draws: list[int] = []

    def source(n: int) -> bytes:
        draws.append(n)
        return bytes(range(n))

    attribute = CryptoAttribute.generate(1, SUITES["AEAD_AES_128_GCM"], source)
    assert draws == [28]
    assert attribute.key == bytes(range(16))
    assert attribute.salt == bytes(range(16, 28))
    assert CryptoAttribute.parse(str(attribute)) == attribute
    with pytest.raises(ValueError, match="30 bytes"):
        CryptoAttribute.generate(1, SUITES["AES_CM_128_HMAC_SHA1_80"], lambda n: b"short")


def test_repr_never_shows_keys() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} FEC_KEY=inline:{KEY30}"
    with pytest.raises(InvalidCryptoAttribute):
        CryptoAttribute.parse(value + " BOGUS")
    attribute = CryptoAttribute.parse(value)
    shown = repr(attribute) + repr(attribute.key_params) + repr(attribute.session_params)
    assert KEY30[:10] not in shown
    assert "AAECAwQF" not in shown


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "not '<tag> <suite> <key-params>'"),
        ("1 AES_CM_128_HMAC_SHA1_80", "not '<tag> <suite> <key-params>'"),
        (f" 1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", "not '<tag>"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", "tag"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", "longer than 9"),
        (f"1 AES-CM inline:{KEY30}", "malformed"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY30}", "inline:"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:@@@@", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:A", "not valid base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(29)).decode(), "29 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^49", "maximum"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^999", "every suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|0", "at least 1"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^x", "exponent"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:0", "MKI length 0"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:129", "MKI length 129"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|256:1", "does not fit"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:1|2^20", "out of order"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:1|x", "more than"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30};inline:{KEY30}", "MKIs of equal length"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:1;inline:{KEY30}|2:2", "equal length"),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:1;inline:{KEY30}|1:1",
            "MKI values must differ",
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:1;inline:{KEY30}|2:1",
            "keys in one attribute",
        ),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=25", "KDR"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=010", "KDR"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} WSH=63", "WSH"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} FEC_ORDER=X", "FEC_ORDER"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} FEC_KEY=inline:AAAA", "bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP=1", "wrong form"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR", "wrong form"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} BOGUS", "unknown session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} -", "empty session extension"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\n", "CR, LF"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 5000, "longer than"),
    ],
)
def test_invalid_attributes_are_refused_with_488(value: str, message: str) -> None:
    with pytest.raises(InvalidCryptoAttribute, match=message) as caught:
        CryptoAttribute.parse(value)
    assert caught.value.status_code == 488
    assert KEY30 not in str(caught.value)


def test_unknown_suite_is_its_own_error() -> None:
    with pytest.raises(UnsupportedCryptoSuite, match="SEED_CTR_128_HMAC_SHA1_80"):
        CryptoAttribute.parse(f"1 SEED_CTR_128_HMAC_SHA1_80 inline:{KEY30}")


def test_constructor_validates_too() -> None:
    suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
    with pytest.raises(InvalidCryptoAttribute, match="16-byte key"):
        CryptoAttribute(1, suite, (KeyParam(bytes(15), bytes(14)),))
    with pytest.raises(InvalidCryptoAttribute, match="no key-params"):
        CryptoAttribute(1, suite, ())
    with pytest.raises(InvalidCryptoAttribute, match="tag"):
        CryptoAttribute(10**9, suite, (KeyParam(bytes(16), bytes(14)),))
