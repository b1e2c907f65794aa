"""CMS AuthEnvelopedData with AES-GCM and a KEK recipient (secconf.core.cms.envelope).

The wire format against an independent implementation is tests/unit/test_cms_openssl.py;
here: the structure as decoded, refusals one by one, tampering, and properties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_modules import rfc3565, rfc5083, rfc5084, rfc5652

from secconf.core import cms
from secconf.core.errors import (
    CmsAuthenticationFailed,
    CmsTooLarge,
    MalformedCms,
    Undecipherable,
    UnknownKeyId,
    UnsupportedCms,
)
from tests.fixtures.mikey_world import CountingRandom

KEK_16 = bytes(range(0x10, 0x20))
KEK_32 = bytes(range(0x20, 0x40))
KEY_ID = bytes.fromhex("010000000212345678")
CONTENT = b"Content-Type: application/conference-info+xml\r\n\r\n<conference-info/>"
REFUSED = (MalformedCms, Undecipherable)


def _protect(content: bytes = CONTENT, kek: bytes = KEK_16, seed: bytes = b"r") -> bytes:
    return cms.protect(content, kek=kek, kek_id=KEY_ID, random_bytes=CountingRandom(seed))


def _lookup(kek: bytes = KEK_16, key_id: bytes = KEY_ID) -> Callable[[bytes], bytes | None]:
    return lambda wanted: kek if wanted == key_id else None


def _envelope(der: bytes) -> Any:
    outer, rest = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    assert rest == b""
    envelope, rest = decoder.decode(outer["content"], asn1Spec=rfc5083.AuthEnvelopedData())
    assert rest == b""
    return envelope


def _rebuild(der: bytes, mutate: Callable[[Any], None], outer_type: Any = None) -> bytes:
    """*der* decoded, changed by *mutate*, encoded again (the GCM tag stays valid: no AAD)."""
    envelope = _envelope(der)
    mutate(envelope)
    outer = rfc5652.ContentInfo()
    outer["contentType"] = outer_type or rfc5083.id_ct_authEnvelopedData
    outer["content"] = encoder.encode(envelope)
    return bytes(encoder.encode(outer))


def _gcm_parameters(nonce: bytes, icv_len: int | None) -> bytes:
    parameters = rfc5084.GCMParameters()
    parameters["aes-nonce"] = nonce
    if icv_len is not None:
        parameters["aes-ICVlen"] = icv_len
    return bytes(encoder.encode(parameters))


# -- the structure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kek", "wrap", "gcm"),
    [
        (KEK_16, rfc3565.id_aes128_wrap, rfc5084.id_aes128_GCM),
        (KEK_32, rfc3565.id_aes256_wrap, rfc5084.id_aes256_GCM),
    ],
)
def test_the_structure_is_the_profile(kek: bytes, wrap: Any, gcm: Any) -> None:
    der = _protect(kek=kek)
    outer, _ = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    assert outer["contentType"] == rfc5083.id_ct_authEnvelopedData
    envelope = _envelope(der)
    assert int(envelope["version"]) == 0
    for absent in ("originatorInfo", "authAttrs", "unauthAttrs"):
        assert envelope.getComponentByName(absent, instantiate=False) is univ.noValue
    (recipient,) = envelope["recipientInfos"]
    assert recipient.getName() == "kekri"
    kekri = recipient["kekri"]
    assert int(kekri["version"]) == 4
    assert bytes(kekri["kekid"]["keyIdentifier"]) == KEY_ID
    assert kekri["keyEncryptionAlgorithm"]["algorithm"] == wrap
    assert (
        kekri["keyEncryptionAlgorithm"].getComponentByName("parameters", instantiate=False)
        is univ.noValue
    )
    assert len(bytes(kekri["encryptedKey"])) == len(kek) + 8  # RFC 3394: n + 1 blocks
    content_info = envelope["authEncryptedContentInfo"]
    assert content_info["contentType"] == rfc5652.id_data
    algorithm = content_info["contentEncryptionAlgorithm"]
    assert algorithm["algorithm"] == gcm
    parameters, _ = decoder.decode(algorithm["parameters"], asn1Spec=rfc5084.GCMParameters())
    assert len(bytes(parameters["aes-nonce"])) == 12
    assert int(parameters["aes-ICVlen"]) == 16
    ciphertext = bytes(content_info["encryptedContent"])
    assert len(ciphertext) == len(CONTENT)
    assert CONTENT not in der
    assert len(bytes(envelope["mac"])) == 16


@pytest.mark.parametrize("kek", [KEK_16, KEK_32])
def test_round_trip(kek: bytes) -> None:
    assert cms.open_protected(_protect(kek=kek), _lookup(kek)) == CONTENT


def test_every_message_has_a_fresh_key_and_nonce() -> None:
    random = CountingRandom(b"one source")
    first, second = (
        cms.protect(CONTENT, kek=KEK_16, kek_id=KEY_ID, random_bytes=random) for _ in range(2)
    )
    one, two = _envelope(first), _envelope(second)
    path = ("authEncryptedContentInfo", "contentEncryptionAlgorithm", "parameters")
    assert one[path[0]][path[1]][path[2]] != two[path[0]][path[1]][path[2]]
    assert bytes(one["recipientInfos"][0]["kekri"]["encryptedKey"]) != bytes(
        two["recipientInfos"][0]["kekri"]["encryptedKey"]
    )


# -- keys -----------------------------------------------------------------------------------


def test_an_unknown_key_id_is_refused() -> None:
    with pytest.raises(UnknownKeyId) as caught:
        cms.open_protected(_protect(), _lookup(key_id=b"another exchange"))
    assert caught.value.status_code == 493


def test_the_wrong_kek_under_the_right_id_fails_authentication() -> None:
    with pytest.raises(CmsAuthenticationFailed):
        cms.open_protected(_protect(), _lookup(kek=bytes(16)))


def test_a_kek_of_the_other_length_is_refused() -> None:
    with pytest.raises(UnsupportedCms):
        cms.open_protected(_protect(kek=KEK_16), _lookup(kek=KEK_32))


def test_protect_refuses_bad_keys_ids_and_randomness() -> None:
    with pytest.raises(ValueError, match="16 or 32"):
        cms.protect(CONTENT, kek=bytes(24), kek_id=KEY_ID, random_bytes=CountingRandom())
    with pytest.raises(ValueError, match="identifier"):
        cms.protect(CONTENT, kek=KEK_16, kek_id=b"", random_bytes=CountingRandom())
    with pytest.raises(ValueError, match="identifier"):
        cms.protect(CONTENT, kek=KEK_16, kek_id=bytes(65), random_bytes=CountingRandom())
    with pytest.raises(ValueError, match="random"):
        cms.protect(CONTENT, kek=KEK_16, kek_id=KEY_ID, random_bytes=lambda n: bytes(n - 1))


# -- sizes and framing ------------------------------------------------------------------------


def test_oversize_input_is_refused_unread() -> None:
    with pytest.raises(CmsTooLarge) as caught:
        cms.open_protected(b"\x30" * (cms.MAX_PROTECTED_BYTES + 1), _lookup())
    assert caught.value.status_code == 413
    with pytest.raises(CmsTooLarge):
        _protect(content=bytes(cms.MAX_PROTECTED_BYTES - 100))


def test_every_truncation_and_trailing_bytes_are_malformed() -> None:
    der = _protect()
    for cut in range(len(der)):
        with pytest.raises(MalformedCms):
            cms.open_protected(der[:cut], _lookup())
    with pytest.raises(MalformedCms, match="after the ContentInfo"):
        cms.open_protected(der + b"\x00", _lookup())


def test_indefinite_length_ber_is_refused() -> None:
    der = _protect()
    # The outer SEQUENCE re-framed with indefinite length (BER, X.690 §8.1.3.6) + end-of-contents.
    header = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    ber = b"\x30\x80" + der[header:] + b"\x00\x00"
    with pytest.raises(MalformedCms):
        cms.open_protected(ber, _lookup())


# -- tampering --------------------------------------------------------------------------------


def test_every_single_bit_flip_is_refused_and_says_nothing_of_the_keys() -> None:
    der = _protect()
    for index in range(len(der)):
        for bit in range(8):
            tampered = der[:index] + bytes([der[index] ^ (1 << bit)]) + der[index + 1 :]
            with pytest.raises(REFUSED) as caught:
                cms.open_protected(tampered, _lookup())
            text = f"{caught.value} {caught.value!r}"
            assert KEK_16.hex() not in text
            assert repr(KEK_16) not in text


def _region(der: bytes, part: bytes) -> range:
    start = der.index(part)
    return range(start, start + len(part))


def test_flips_in_ciphertext_tag_nonce_and_wrapped_key_fail_authentication() -> None:
    der = _protect()
    envelope = _envelope(der)
    content_info = envelope["authEncryptedContentInfo"]
    parameters, _ = decoder.decode(
        content_info["contentEncryptionAlgorithm"]["parameters"],
        asn1Spec=rfc5084.GCMParameters(),
    )
    parts = [
        bytes(content_info["encryptedContent"]),
        bytes(envelope["mac"]),
        bytes(parameters["aes-nonce"]),
        bytes(envelope["recipientInfos"][0]["kekri"]["encryptedKey"]),
    ]
    for part in parts:
        for index in _region(der, part):
            tampered = der[:index] + bytes([der[index] ^ 0x01]) + der[index + 1 :]
            with pytest.raises(CmsAuthenticationFailed):
                cms.open_protected(tampered, _lookup())


def test_a_flip_in_the_key_id_names_an_unknown_key() -> None:
    der = _protect()
    for index in _region(der, KEY_ID):
        tampered = der[:index] + bytes([der[index] ^ 0x80]) + der[index + 1 :]
        with pytest.raises(UnknownKeyId):
            cms.open_protected(tampered, _lookup())


# -- the profile, field by field ---------------------------------------------------------------


def _set_version(value: int) -> Callable[[Any], None]:
    def mutate(envelope: Any) -> None:
        envelope["version"] = value

    return mutate


def _set_kekri_version(envelope: Any) -> None:
    envelope["recipientInfos"][0]["kekri"]["version"] = 3


def _add_auth_attrs(envelope: Any) -> None:
    attribute = rfc5652.Attribute()
    attribute["attrType"] = rfc5652.id_contentType
    attribute["attrValues"].append(encoder.encode(rfc5652.id_data))
    envelope["authAttrs"].append(attribute)


def _add_unauth_attrs(envelope: Any) -> None:
    attribute = rfc5652.Attribute()
    attribute["attrType"] = rfc5652.id_contentType
    attribute["attrValues"].append(encoder.encode(rfc5652.id_data))
    envelope["unauthAttrs"].append(attribute)


def _add_kekid_date(envelope: Any) -> None:
    envelope["recipientInfos"][0]["kekri"]["kekid"]["date"] = "20261208000000Z"


def _wrap_alg(oid: Any) -> Callable[[Any], None]:
    def mutate(envelope: Any) -> None:
        envelope["recipientInfos"][0]["kekri"]["keyEncryptionAlgorithm"]["algorithm"] = oid

    return mutate


def _wrap_null_parameters(envelope: Any) -> None:
    algorithm = envelope["recipientInfos"][0]["kekri"]["keyEncryptionAlgorithm"]
    algorithm["parameters"] = encoder.encode(univ.Null(""))


def _content_alg(oid: Any) -> Callable[[Any], None]:
    def mutate(envelope: Any) -> None:
        envelope["authEncryptedContentInfo"]["contentEncryptionAlgorithm"]["algorithm"] = oid

    return mutate


def _content_type(envelope: Any) -> None:
    envelope["authEncryptedContentInfo"]["contentType"] = rfc5652.id_signedData


def _gcm(nonce_bytes: int, icv_len: int | None) -> Callable[[Any], None]:
    def mutate(envelope: Any) -> None:
        algorithm = envelope["authEncryptedContentInfo"]["contentEncryptionAlgorithm"]
        old, _ = decoder.decode(algorithm["parameters"], asn1Spec=rfc5084.GCMParameters())
        nonce = bytes(old["aes-nonce"])
        algorithm["parameters"] = _gcm_parameters((nonce * 2)[:nonce_bytes], icv_len)

    return mutate


def _no_gcm_parameters(envelope: Any) -> None:
    algorithm = envelope["authEncryptedContentInfo"]["contentEncryptionAlgorithm"]
    fresh = rfc5652.ContentEncryptionAlgorithmIdentifier()
    fresh["algorithm"] = algorithm["algorithm"]
    envelope["authEncryptedContentInfo"]["contentEncryptionAlgorithm"] = fresh


def _detached(envelope: Any) -> None:
    old = envelope["authEncryptedContentInfo"]
    fresh = rfc5652.EncryptedContentInfo()
    fresh["contentType"] = old["contentType"]
    fresh["contentEncryptionAlgorithm"] = old["contentEncryptionAlgorithm"]
    envelope["authEncryptedContentInfo"] = fresh


def _short_mac(envelope: Any) -> None:
    envelope["mac"] = bytes(envelope["mac"])[:12]


def _many_recipients(envelope: Any) -> None:
    first = envelope["recipientInfos"][0]
    for _ in range(8):
        envelope["recipientInfos"].append(first)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (_set_version(2), UnsupportedCms),
        (_set_kekri_version, UnsupportedCms),
        (_add_auth_attrs, UnsupportedCms),
        (_add_unauth_attrs, UnsupportedCms),
        (_add_kekid_date, UnsupportedCms),
        (_wrap_alg(rfc3565.id_aes192_wrap), UnsupportedCms),
        (_wrap_alg(rfc3565.id_aes256_wrap), UnsupportedCms),  # a 16-byte KEK
        (_wrap_null_parameters, UnsupportedCms),
        (_content_alg(rfc5084.id_aes192_GCM), UnsupportedCms),
        (_content_alg(rfc5084.id_aes256_GCM), UnsupportedCms),  # a 16-byte CEK
        (_content_alg(rfc3565.id_aes128_CBC), UnsupportedCms),
        (_content_alg(rfc5084.id_aes128_CCM), UnsupportedCms),
        (_content_type, UnsupportedCms),
        (_gcm(16, 16), UnsupportedCms),
        (_gcm(12, 12), UnsupportedCms),
        (_gcm(12, None), UnsupportedCms),  # RFC 5084 DEFAULT 12
        (_no_gcm_parameters, MalformedCms),
        (_detached, UnsupportedCms),
        (_short_mac, MalformedCms),
        (_many_recipients, MalformedCms),
    ],
    ids=lambda value: getattr(value, "__qualname__", getattr(value, "__name__", str(value))),
)
def test_fields_outside_the_profile_are_refused(
    mutate: Callable[[Any], None], error: type[Exception]
) -> None:
    with pytest.raises(error):
        cms.open_protected(_rebuild(_protect(), mutate), _lookup())


def test_the_rebuild_helper_itself_keeps_a_valid_message() -> None:
    assert cms.open_protected(_rebuild(_protect(), lambda envelope: None), _lookup()) == CONTENT


def test_enveloped_data_without_integrity_is_refused() -> None:
    downgraded = _rebuild(_protect(), lambda envelope: None, outer_type=rfc5652.id_envelopedData)
    with pytest.raises(UnsupportedCms, match="not CMS AuthEnvelopedData"):
        cms.open_protected(downgraded, _lookup())


def test_recipients_under_unknown_ids_are_passed_over_for_a_known_one() -> None:
    other = cms.protect(
        CONTENT, kek=KEK_32, kek_id=b"someone else", random_bytes=CountingRandom(b"other")
    )

    def put_another_first(envelope: Any) -> None:
        ours = envelope["recipientInfos"][0]
        envelope["recipientInfos"].clear()
        envelope["recipientInfos"].append(_envelope(other)["recipientInfos"][0])
        envelope["recipientInfos"].append(ours)

    two = _rebuild(_protect(), put_another_first)
    assert len(_envelope(two)["recipientInfos"]) == 2
    assert cms.open_protected(two, _lookup()) == CONTENT


def test_ber_that_the_der_decoder_lets_through_is_refused() -> None:
    der = _protect()
    # Same lengths, same values, not DER: version 0 as an empty INTEGER with a long-form
    # length (02 81 00 for 02 01 00), and the [0] EXPLICIT tag of ContentInfo.content
    # marked primitive (80 for a0).  pyasn1's decoder takes both; the re-encoding does not.
    at = der.index(b"\x02\x01\x00\x31")
    empty_integer = der[:at] + b"\x02\x81\x00" + der[at + 3 :]
    oid = encoder.encode(rfc5083.id_ct_authEnvelopedData)
    tag_at = der.index(oid) + len(oid)
    primitive = der[:tag_at] + b"\x80" + der[tag_at + 1 :]
    for ber in (empty_integer, primitive):
        with pytest.raises(MalformedCms, match="BER, not DER"):
            cms.open_protected(ber, _lookup())


# -- properties ---------------------------------------------------------------------------


@given(
    content=st.binary(max_size=4096),
    kek=st.sampled_from([KEK_16, KEK_32]) | st.binary(min_size=16, max_size=16),
    key_id=st.binary(min_size=1, max_size=64),
    seed=st.binary(max_size=8),
)
def test_any_content_round_trips(content: bytes, kek: bytes, key_id: bytes, seed: bytes) -> None:
    der = cms.protect(content, kek=kek, kek_id=key_id, random_bytes=CountingRandom(seed))
    assert cms.open_protected(der, _lookup(kek, key_id)) == content


_SAMPLE = _protect(content=b"x" * 40)


@given(index=st.integers(0, len(_SAMPLE) - 1), mask=st.integers(1, 255))
def test_any_byte_change_is_refused(index: int, mask: int) -> None:
    tampered = _SAMPLE[:index] + bytes([_SAMPLE[index] ^ mask]) + _SAMPLE[index + 1 :]
    with pytest.raises(REFUSED):
        cms.open_protected(tampered, _lookup())


@given(st.binary(max_size=512))
def test_garbage_raises_only_refusals(data: bytes) -> None:
    with pytest.raises(REFUSED):
        cms.open_protected(data, _lookup())


@given(prefix=st.binary(max_size=8), cut=st.integers(0, len(_SAMPLE)), tail=st.binary(max_size=8))
def test_spliced_messages_raise_only_refusals(prefix: bytes, cut: int, tail: bytes) -> None:
    data = prefix + _SAMPLE[:cut] + tail
    if data == _SAMPLE:
        return
    with pytest.raises(REFUSED):
        cms.open_protected(data, _lookup())
