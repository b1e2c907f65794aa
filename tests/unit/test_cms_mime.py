"""The MIME around protected bodies (secconf.core.cms.mime) and the CMS errors' statuses."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core import cms, errors
from secconf.core.errors import MalformedCms, MalformedSipMessage, UnsupportedMediaType

XML = "application/conference-info+xml"


def test_the_header_values_are_rfc_8551s() -> None:
    assert cms.CONTENT_TYPE == (
        "application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m"
    )
    assert cms.CONTENT_DISPOSITION == "attachment; filename=smime.p7m; handling=required"
    cms.check_content_type(cms.CONTENT_TYPE)


@pytest.mark.parametrize(
    "value",
    [
        "application/pkcs7-mime;smime-type=authEnveloped-data",
        'Application/PKCS7-MIME ; SMIME-Type="authenveloped-data" ; name=smime.p7m',
        "application/pkcs7-mime; name=smime.p7m; smime-type=authEnveloped-data",
    ],
)
def test_content_types_accepted(value: str) -> None:
    assert cms.check_content_type(value) is None  # no UnsupportedMediaType


@pytest.mark.parametrize(
    "value",
    [
        "application/conference-info+xml",
        "application/pkcs7-mime",  # no smime-type: could be EnvelopedData
        "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
        "application/pkcs7-mime; smime-type=signed-data",
        "application/x-pkcs7-mime; smime-type=authEnveloped-data",
        'multipart/signed; protocol="application/pkcs7-signature"',
    ],
)
def test_content_types_refused(value: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        cms.check_content_type(value)
    assert caught.value.status_code == 415


def test_a_broken_parameter_list_is_a_malformed_message() -> None:
    with pytest.raises(MalformedSipMessage):
        cms.check_content_type("application/pkcs7-mime; =x")


@pytest.mark.parametrize("value", [None, "binary", " Binary "])
def test_binary_or_no_transfer_encoding_is_accepted(value: str | None) -> None:
    assert cms.check_transfer_encoding(value) is None  # no UnsupportedMediaType


@pytest.mark.parametrize("value", ["base64", "quoted-printable", "8bit", "7bit", ""])
def test_other_transfer_encodings_are_refused(value: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        cms.check_transfer_encoding(value)


def test_the_inner_entity() -> None:
    entity = cms.inner_entity(XML, b"<conference-info/>")
    assert entity == b"Content-Type: application/conference-info+xml\r\n\r\n<conference-info/>"
    assert cms.split_inner_entity(entity, XML) == b"<conference-info/>"
    assert (
        cms.split_inner_entity(b"content-type:" + entity[13:], XML.upper()) == b"<conference-info/>"
    )
    with_charset = b"Content-Type: application/conference-info+xml;charset=UTF-8\r\n\r\n<a/>"
    assert cms.split_inner_entity(with_charset, XML) == b"<a/>"


@pytest.mark.parametrize(
    "entity",
    [
        b"<conference-info/>",
        b"Content-Type: application/conference-info+xml\r\n<x/>",
        b"Content-Transfer-Encoding: base64\r\n\r\nPHgvPg==",
        b"Content-Type: application/conference-info+xml\r\nX-Other: 1\r\n\r\n<x/>",
        b"Content-Type \xff\r\n\r\n<x/>",
        b"Content-Type: " + b"a" * 2000 + b"\r\n\r\n",
        b"Content-Type: application/conference-info+xml\xff\r\n\r\n<x/>",
    ],
)
def test_inner_entities_that_are_not_ours_are_malformed(entity: bytes) -> None:
    with pytest.raises(MalformedCms):
        cms.split_inner_entity(entity, XML)


def test_an_inner_entity_of_another_type_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType):
        cms.split_inner_entity(cms.inner_entity("text/plain", b"hi"), XML)


@pytest.mark.parametrize("value", ["", "text/plain\r\nX: 1", "caf\u00e9/x"])
def test_inner_entity_refuses_a_bad_content_type(value: str) -> None:
    with pytest.raises((ValueError, UnicodeEncodeError)):
        cms.inner_entity(value, b"")


@given(st.binary(max_size=2048))
def test_any_body_round_trips_through_the_inner_entity(body: bytes) -> None:
    assert cms.split_inner_entity(cms.inner_entity(XML, body), XML) == body


@given(st.binary(max_size=256))
def test_garbage_inner_entities_raise_only_refusals(data: bytes) -> None:
    with contextlib.suppress(MalformedCms, UnsupportedMediaType):
        cms.split_inner_entity(data, XML)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.MalformedCms, 400),
        (errors.CmsTooLarge, 413),
        (errors.UnsupportedMediaType, 415),
        (errors.Undecipherable, 493),
        (errors.UnknownKeyId, 493),
        (errors.UnsupportedCms, 493),
        (errors.CmsAuthenticationFailed, 493),
    ],
)
def test_cms_errors_carry_their_sip_status(error: type[errors.ProtocolError], status: int) -> None:
    assert error("x").status_code == status
    assert issubclass(error, errors.ProtocolError)
    assert issubclass(errors.CmsTooLarge, errors.MessageTooLarge)
