"""secconf.core.digest: nonces, challenges, responses (RFC 7616 §3.9.1 example)."""

from __future__ import annotations

import pytest

from secconf.core.digest import (
    DigestChallenge,
    challenge,
    check_nonce,
    compute_ha1,
    make_nonce,
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


def test_nonce_is_bound_to_time_secret_and_call() -> None:
    nonce = make_nonce(SECRET, 1000, "call-1")
    assert check_nonce(SECRET, nonce, 1010, 30, "call-1") == "ok"
    assert check_nonce(SECRET, nonce, 1031, 30, "call-1") == "stale"
    assert check_nonce(SECRET, nonce, 1010, 30, "call-2") == "bad"
    assert check_nonce(b"t" * 32, nonce, 1010, 30, "call-1") == "bad"
    assert check_nonce(SECRET, nonce, 990, 30, "call-1") == "bad"  # from the future
    assert check_nonce(SECRET, "garbage", 1010, 30) == "bad"
    forged = nonce.replace(nonce[-1], "0" if nonce[-1] != "0" else "1")
    assert check_nonce(SECRET, forged, 1010, 30, "call-1") == "bad"


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
