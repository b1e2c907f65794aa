"""secconf.core.digest: nonces, challenges, responses (RFC 7616 §3.9.1 example)."""

from __future__ import annotations

import pytest

from secconf.core.digest import (
    DigestChallenge,
    challenge,
    check_nonce,
    compute_ha1,
    flow_binding,
    make_nonce,
    nonce_count,
    parse_challenge,
    parse_credentials,
    respond,
    verify,
)
from secconf.core.errors import MalformedMessage

SECRET = b"s" * 32


def test_rfc7616_example_responses() -> None:
    # RFC 7616 §3.9.1: Mufasa / Circle of Life, both algorithms.
    chosen = DigestChallenge(
        "http-auth@example.org",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "MD5",
        ("auth",),
        False,
        "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    )
    common = {
        "username": "Mufasa",
        "password": "Circle of Life",
        "method": "GET",
        "uri": "/dir/index.html",
        "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    }
    md5 = parse_credentials(respond(chosen, **common))  # type: ignore[arg-type]
    assert md5.response == "8ca523f5e9506fed4657c9700eebdbec"
    sha = parse_credentials(
        respond(  # type: ignore[arg-type]
            DigestChallenge(chosen.realm, chosen.nonce, "SHA-256", ("auth",), False, chosen.opaque),
            **common,
        )
    )
    assert sha.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    ha1 = compute_ha1("Mufasa", chosen.realm, "Circle of Life", "SHA-256")
    assert verify(sha, ha1, "GET")
    assert not verify(sha, ha1, "POST")
    assert not verify(sha, compute_ha1("Mufasa", chosen.realm, "wrong", "SHA-256"), "GET")


FLOW = flow_binding("call-1", "192.0.2.7", 5060, "udp")
SALT = bytes(range(12))


def test_rfc7616_example_nonce_count() -> None:
    # RFC 7616 §3.9.1: the first request with the server's nonce sends nc=00000001.
    assert nonce_count("00000001") == 1
    assert nonce_count("0000000A") == nonce_count("0000000a") == 10
    assert nonce_count("ffffffff") == 0xFFFFFFFF
    for bad in ("00000000", "1", "000000001", "0000000g", " 0000001", "+0000001"):
        with pytest.raises(MalformedMessage):
            nonce_count(bad)


def test_nonce_is_bound_to_time_secret_call_and_flow() -> None:
    nonce = make_nonce(SECRET, 1000, FLOW, SALT)
    assert nonce.split(".")[1] == SALT.hex()
    assert check_nonce(SECRET, nonce, 1010, 30, FLOW) == "ok"
    assert check_nonce(SECRET, nonce, 1031, 30, FLOW) == "stale"
    assert check_nonce(b"t" * 32, nonce, 1010, 30, FLOW) == "bad"
    assert check_nonce(SECRET, nonce, 990, 30, FLOW) == "bad"  # from the future
    assert check_nonce(SECRET, "garbage", 1010, 30, FLOW) == "bad"
    forged = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert check_nonce(SECRET, forged, 1010, 30, FLOW) == "bad"
    # Another call, or the same call from another flow: not this nonce's.
    for other in (
        flow_binding("call-2", "192.0.2.7", 5060, "udp"),
        flow_binding("call-1", "192.0.2.8", 5060, "udp"),
        flow_binding("call-1", "192.0.2.7", 5062, "udp"),
        flow_binding("call-1", "192.0.2.7", 5060, "tcp"),
        flow_binding("call-1", "192.0.2.7", 5060, "tls"),
    ):
        assert check_nonce(SECRET, nonce, 1010, 30, other) == "bad", other
    # The salt is covered by the MAC: another salt with the same MAC is not ours.
    timestamp, _, mac = nonce.split(".")
    assert check_nonce(SECRET, f"{timestamp}.{'ab' * 12}.{mac}", 1010, 30, FLOW) == "bad"
    # The old format (no salt) is not accepted any more.
    assert check_nonce(SECRET, f"{timestamp}.{mac}", 1010, 30, FLOW) == "bad"


def test_every_nonce_is_new_and_the_salt_is_checked() -> None:
    # Two challenges in one second for one flow: two nonces (the salt), both valid.
    first = make_nonce(SECRET, 1000, FLOW, b"\x01" * 12)
    second = make_nonce(SECRET, 1000, FLOW, b"\x02" * 12)
    assert first != second
    assert check_nonce(SECRET, first, 1000, 30, FLOW) == "ok"
    assert check_nonce(SECRET, second, 1000, 30, FLOW) == "ok"
    for salt in (b"", b"\x00" * 7, b"\x00" * 33):
        with pytest.raises(ValueError, match="salt"):
            make_nonce(SECRET, 1000, FLOW, salt)
    with pytest.raises(ValueError, match="timestamp"):
        make_nonce(SECRET, -1, FLOW, SALT)


def test_flow_binding_is_unambiguous_and_normalised() -> None:
    assert flow_binding("c", "::1", 5060, "udp") == flow_binding("c", "[::1]", 5060, "UDP")
    assert flow_binding("c", "2001:DB8::1", 1, "tls") == flow_binding("c", "2001:db8::1", 1, "tls")
    # Length-prefixed parts: moving characters between parts changes the binding.
    assert flow_binding("a1", "2", 3, "udp") != flow_binding("a", "12", 3, "udp")
    assert flow_binding("c", "192.0.2.1", 5060, "udp") != flow_binding("c", "192.0.2.1", 506, "udp")


def test_credentials_without_qop_are_refused() -> None:
    # RFC 2069 style (no qop, nc, cnonce): no nonce-count, so no replay check: refused.
    rfc2069 = (
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="n", '
        'uri="/dir/index.html", response="1949323746fe6a43ef61f9606e7febea"'
    )
    with pytest.raises(MalformedMessage, match="RFC 2069"):
        parse_credentials(rfc2069)
    # qop=auth without nc or cnonce: malformed too.
    with pytest.raises(MalformedMessage):
        parse_credentials(rfc2069 + ", qop=auth")


def test_challenge_round_trip_and_malformed_headers() -> None:
    text = challenge("example.com", "abc", "SHA-256", stale=True)
    parsed = parse_challenge(text)
    assert (parsed.realm, parsed.nonce, parsed.algorithm, parsed.qop, parsed.stale) == (
        "example.com", "abc", "SHA-256", ("auth",), True,
    )  # fmt: skip
    for bad in (
        "Basic abc",
        'Digest username="a"',  # missing fields
        'Digest username="a", username="b"',
        "Digest " + "x" * 5000,
        'Digest username="a", realm="r", nonce="n", uri="u", response="r", qop=auth-int, '
        'nc=00000001, cnonce="c"',
    ):
        with pytest.raises(MalformedMessage):
            parse_credentials(bad)
