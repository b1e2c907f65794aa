"""RFC 5366 URI lists: multipart splitting (RFC 2046 §5.1) and hardened resource-lists XML."""

from __future__ import annotations

import time

import pytest

from secconf.core.errors import MalformedMessage, MessageTooLarge, NotAcceptable
from secconf.core.urilist import parse_resource_lists, split_multipart, split_offer

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n"


def resource_list(*uris: str, extra: str = "") -> bytes:
    entries = "".join(f'<entry uri="{u}"/>' for u in uris)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"\r\n'
        ' xmlns:cp="urn:ietf:params:xml:ns:copycontrol">\r\n'
        f"<list>{entries}{extra}</list>\r\n</resource-lists>\r\n"
    ).encode()


def multipart(*parts: tuple[str, bytes], boundary: str = "boundary1") -> bytes:
    out = b"preamble, ignored\r\n"
    for headers, body in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue\r\n".encode()


LIST_HEADERS = "Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list"
CT = "multipart/mixed;boundary=boundary1"


def test_rfc5366_example_shape() -> None:
    body = multipart(
        ("Content-Type: application/sdp", SDP),
        (LIST_HEADERS, resource_list("sip:Bob@Example.COM;transport=tcp", "sip:carol@example.com")),
    )
    split = split_offer(CT, body)
    assert split.sdp == SDP
    assert split.uris == ("sip:Bob@example.com", "sip:carol@example.com")


def test_plain_sdp_passes_through() -> None:
    assert split_offer("application/sdp", SDP).uris is None
    assert split_offer("Application/SDP; charset=x", SDP).sdp == SDP


def test_quoted_boundary_and_part_order_and_lf_in_payload() -> None:
    body = multipart(
        (LIST_HEADERS, resource_list("sip:bob@example.com")),
        ("Content-Type: application/sdp\r\nContent-Disposition: session", SDP),
        boundary="a'b(c)+_,-./:=? z",
    )
    split = split_offer('multipart/mixed; boundary="a\'b(c)+_,-./:=? z"', body)
    assert split.sdp == SDP
    assert split.uris == ("sip:bob@example.com",)


def test_nested_lists_flattened_duplicates_dropped_copycontrol_ignored() -> None:
    xml = resource_list(
        "sip:bob@example.com",
        extra='<list name="x"><entry uri="sip:bob@EXAMPLE.com:5060" cp:copyControl="to"/>'
        '<entry uri="sips:dave@example.com"><display-name>D</display-name></entry></list>',
    )
    assert parse_resource_lists(xml) == ("sip:bob@example.com", "sips:dave@example.com")


def test_sdp_only_multipart_has_no_list() -> None:
    split = split_offer(CT, multipart(("Content-Type: application/sdp", SDP)))
    assert split.uris is None
    assert split.sdp == SDP


def test_empty_part_body() -> None:
    parts = split_multipart(b"--b\r\nContent-Type: text/plain\r\n\r\n--b--", "b")
    assert parts[0].body == b""
    parts = split_multipart(b"--b\r\nContent-Type: text/plain\r\n\r\n\r\n--b--", "b")
    assert parts[0].body == b""


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("multipart/mixed", b"--b\r\n\r\nx\r\n--b--", MalformedMessage),  # no boundary
        ("multipart/mixed;boundary=b", b"no delimiter here", MalformedMessage),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n", MalformedMessage),
        ("multipart/mixed;boundary=b", b"--bX\r\n\r\nx\r\n--b--", MalformedMessage),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/sdp\r\n--b--", MalformedMessage),
        ("multipart/mixed;boundary=b", b"--b\r\nbad header\r\n\r\nx\r\n--b--", MalformedMessage),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/sdp\r\nContent-Transfer-Encoding: base64\r\n\r\ndj0w\r\n--b--", MalformedMessage),
        ("multipart/mixed;boundary=" + "x" * 71, b"", MalformedMessage),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--", NotAcceptable),
        ("multipart/alternative;boundary=b", b"--b\r\n\r\nx\r\n--b--", NotAcceptable),
        ("text/plain", b"hi", NotAcceptable),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/resource-lists+xml\r\n\r\n<x/>\r\n--b--", NotAcceptable),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/sdp\r\nContent-Disposition: render\r\n\r\nv=0\r\n--b--", NotAcceptable),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--", MalformedMessage),
        ("multipart/mixed;boundary=b", b"".join(b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n" for _ in range(5)) + b"--b--", MessageTooLarge),
    ],
)  # fmt: skip
def test_malformed_multipart(content_type: str, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        split_offer(content_type, body)


def test_refusal_statuses() -> None:
    with pytest.raises(MalformedMessage) as bad:
        split_offer(CT, b"garbage")
    assert bad.value.status_code == 400
    with pytest.raises(MessageTooLarge) as big:
        parse_resource_lists(resource_list(*(f"sip:u{i}@example.com" for i in range(65))))
    assert big.value.status_code == 413


# -- hostile XML ---------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>
<entry uri="sip:&lol9;@example.com"/></list></resource-lists>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>
<entry uri="sip:&xxe;@example.com"/></list></resource-lists>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % remote SYSTEM "http://198.51.100.1/x.dtd"> %remote;]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"/>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE resource-lists SYSTEM "http://198.51.100.1/x.dtd">
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"/>"""


@pytest.mark.parametrize(
    "xml",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        PARAMETER_ENTITY,
        EXTERNAL_DTD,
        b"<!doctype x><resource-lists xmlns='urn:ietf:params:xml:ns:resource-lists'/>",
        b"<resource-lists xmlns='urn:ietf:params:xml:ns:resource-lists'><!ELEMENT x ANY></resource-lists>",
    ],
    ids=["billion-laughs", "external-entity", "parameter-entity", "external-dtd", "lower-doctype", "element-decl"],
)  # fmt: skip
def test_declarations_refused_before_parsing(xml: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(MalformedMessage, match="DTD and entity"):
        parse_resource_lists(xml)
    assert time.perf_counter() - started < 0.1


def test_undefined_entity_reference_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="well-formed"):
        parse_resource_lists(resource_list("sip:&xxe;@example.com"))


def test_other_encodings_refused() -> None:
    utf16 = resource_list("sip:bob@example.com").decode().replace("UTF-8", "UTF-16")
    with pytest.raises(MalformedMessage):
        parse_resource_lists(utf16.encode("utf-16"))
    with pytest.raises(MalformedMessage, match="UTF-8"):
        parse_resource_lists(utf16.encode())
    with pytest.raises(MalformedMessage, match="UTF-8"):
        split_offer(
            CT,
            multipart(
                ("Content-Type: application/sdp", SDP),
                (
                    "Content-Type: application/resource-lists+xml;charset=iso-8859-1",
                    resource_list("sip:bob@example.com"),
                ),
            ),
        )


def test_huge_documents_refused_before_parsing() -> None:
    huge = resource_list("sip:bob@example.com", extra="<!-- " + "x" * 10_000_000 + " -->")
    started = time.perf_counter()
    with pytest.raises(MessageTooLarge):
        parse_resource_lists(huge)
    assert time.perf_counter() - started < 0.1
    with pytest.raises(MessageTooLarge):
        parse_resource_lists(resource_list("sip:bob@example.com"), max_bytes=100)


def test_element_bombs_and_depth() -> None:
    many = resource_list("sip:bob@example.com", extra="<x/>" * 1000)
    with pytest.raises(MessageTooLarge, match="elements"):
        parse_resource_lists(many, max_bytes=100_000)
    deep = resource_list("sip:bob@example.com", extra="<list>" * 20 + "</list>" * 20)
    with pytest.raises(MalformedMessage, match="deeply"):
        parse_resource_lists(deep)


@pytest.mark.parametrize(
    "xml",
    [
        b"<resource-lists><list><entry uri='sip:bob@example.com'/></list></resource-lists>",
        b"<other xmlns='urn:ietf:params:xml:ns:resource-lists'/>",
        resource_list(extra="<entry/>"),
        resource_list("tel:+15551234"),
        resource_list("sip:example.com"),
        resource_list(extra='<external anchor="http://xcap.example.com/x"/>'),
        resource_list(extra='<entry-ref ref="users/x"/>'),
        b"<resource-lists xmlns='urn:ietf:params:xml:ns:resource-lists'><entry uri='sip:b@example.com'/></resource-lists>",
        b"<resource-lists xmlns='urn:ietf:params:xml:ns:resource-lists'><list>",
        b"\xff\xfe not utf-8",
    ],
    ids=["no-namespace", "wrong-root", "entry-without-uri", "tel-uri", "no-user", "external",
         "entry-ref", "entry-outside-list", "truncated", "not-utf8"],
)  # fmt: skip
def test_not_a_usable_resource_list(xml: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_resource_lists(xml)


def test_error_messages_do_not_echo_the_document() -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_resource_lists(resource_list("sip:secret-name@example.com", extra="<unclosed>"))
    assert "secret-name" not in info.value.message
