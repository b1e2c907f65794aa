"""SIP URIs, name-addr, Via, CSeq and the identifier builders."""

from __future__ import annotations

import pytest

from secconf.core.errors import MalformedSipMessage
from secconf.core.sip.headers import (
    MAGIC_COOKIE,
    Address,
    CSeq,
    Via,
    new_branch,
    new_call_id,
    new_tag,
    parse_params,
    split_header_values,
)
from secconf.core.sip.uri import SipUri


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com",
        "sips:alice@example.com:5061;transport=tls",
        "sip:[2001:db8::1]:5070;lr",
        "sip:127.0.0.1",
        "sip:user;par=u%40example.net@example.com",
        "sip:sips%3Auser%40example.com@example.net",
        "sip:alice@example.com;maddr=239.255.255.1;ttl=15?Subject=hi&Priority=urgent",
        "SIP:Bob@BILOXI.example.com;Transport=TCP",
    ],
)
def test_uri_round_trips(text: str) -> None:
    assert str(SipUri.parse(text)) == text


def test_uri_parts() -> None:
    uri = SipUri.parse("sips:bob@[2001:db8::1]:5071;transport=TLS;lr?Subject=x")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sips", "bob", "[2001:db8::1]", 5071)
    assert uri.transport == "tls"
    assert uri.param("LR") == ""
    assert uri.bare_host == "2001:db8::1"
    assert uri.headers == (("Subject", "x"),)
    assert uri.secure
    assert str(uri.with_params(transport="udp")).count("transport") == 1
    assert "lr" not in str(uri.without_params("lr"))


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice:secret@example.com",  # password refused
        "tel:+15551234",
        "sip:",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:",
        "sip:alice@[2001:db8::1",
        "sip:alice@[zz]",
        "sip:alice@example.com;=x",
        "sip:alice@example.com?noequals",
    ],
)
def test_bad_uris_raise(text: str) -> None:
    with pytest.raises(MalformedSipMessage):
        SipUri.parse(text)


def test_password_is_not_quoted_in_the_error() -> None:
    with pytest.raises(MalformedSipMessage) as info:
        SipUri.parse("sip:alice:hunter2@example.com")
    assert "hunter2" not in str(info.value)


def test_name_addr_forms() -> None:
    a = Address.parse('"Alice, A." <sip:alice@example.com;transport=udp>;tag=abc;x')
    assert a.display_name == "Alice, A."
    assert a.uri == "sip:alice@example.com;transport=udp"
    assert a.tag == "abc"
    assert a.param("x") == ""
    assert Address.parse(str(a)) == a
    b = Address.parse("sip:bob@example.com;tag=xyz")  # addr-spec: params are header params
    assert b.uri == "sip:bob@example.com"
    assert b.tag == "xyz"
    c = Address.parse("Bob <sip:bob@example.com>")
    assert c.display_name == "Bob"
    assert Address.parse("<tel:+15551234>").uri == "tel:+15551234"
    built = Address.build("sip:carol@example.com", 'Carol "C"', tag="t1")
    assert Address.parse(str(built)).display_name == 'Carol "C"'
    assert built.with_tag("t2").tag == "t2"
    assert str(Address("sip:a@b;lr")) == "<sip:a@b;lr>"


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        "sip:a@b?x=y",
        "Bad, Name <sip:a@b>",
        "<>",
        "< sip:a@b >",
    ],
)
def test_bad_addresses_raise(text: str) -> None:
    with pytest.raises(MalformedSipMessage):
        Address.parse(text)


def test_via_parse_and_build() -> None:
    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKabc;rport;received=10.0.0.1")
    assert via.transport == "UDP"
    assert via.sent_by == ("192.0.2.1", 5070)
    assert via.branch == "z9hG4bKabc"
    assert via.rport is None
    assert via.param("rport") == ""
    assert via.received == "10.0.0.1"
    filled = via.with_param("rport", "6000")
    assert filled.rport == 6000
    assert str(filled).index("rport=6000") < str(filled).index("received")  # kept in place
    assert Via.parse(str(via)) == via
    tls = Via.parse("SIP/2.0/TLS [2001:db8::9];branch=z9hG4bKx")
    assert tls.sent_by == ("[2001:db8::9]", 5061)
    built = Via.build("udp", "::1", 5060, "z9hG4bKq")
    assert str(built) == "SIP/2.0/UDP [::1]:5060;branch=z9hG4bKq;rport"
    spaced = Via.parse("SIP / 2.0 / UDP host.example.com : 5062 ; branch = z9hG4bKs")
    assert spaced.sent_by == ("host.example.com", 5062)
    assert spaced.branch == "z9hG4bKs"


@pytest.mark.parametrize(
    "text", ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;;branch=x", "SIP/2.0/UDP :5060"]
)
def test_bad_vias_raise(text: str) -> None:
    with pytest.raises(MalformedSipMessage):
        Via.parse(text)


def test_cseq() -> None:
    assert CSeq.parse("  42   INVITE ") == CSeq(42, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    for bad in ("INVITE", "1", "-1 INVITE", "2147483648 INVITE", "1 IN VITE"):
        with pytest.raises(MalformedSipMessage):
            CSeq.parse(bad)
    assert CSeq.parse("2147483647 ACK").number == 2**31 - 1


def test_split_and_params() -> None:
    assert split_header_values('a, "b,c" <x,y>, d') == ["a", '"b,c" <x,y>', "d"]
    with pytest.raises(MalformedSipMessage):
        split_header_values('"open, ')
    assert parse_params(';a=1; b ; c="x;y"') == (("a", "1"), ("b", None), ("c", '"x;y"'))


def test_identifier_builders_use_the_given_randomness() -> None:
    counter = iter(range(256))

    def fake(n: int) -> bytes:
        return bytes(next(counter) for _ in range(n))

    branch = new_branch(fake)
    assert branch.startswith(MAGIC_COOKIE)
    assert len(branch) == len(MAGIC_COOKIE) + 24
    assert new_tag(fake) == "0c0d0e0f10111213"
    assert new_call_id(fake, "host").endswith("@host")
    with pytest.raises(ValueError, match="wrong number"):
        new_tag(lambda n: b"")
