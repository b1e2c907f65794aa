"""Which suite an SDES offer's leg runs (docs/mikey-decisions.md #30, RFC 4568 §7.1.3)."""

from __future__ import annotations

import base64
import os

import pytest

from secconf.core.errors import InsecureMedia, NotAcceptable, NoUsableKey
from secconf.core.sdes import SUITES
from secconf.focus.offers import check_offer_suites

CM_128, CM_256_80, CM_256_32 = (
    SUITES["AES_CM_128_HMAC_SHA1_80"],
    SUITES["AES_256_CM_HMAC_SHA1_80"],
    SUITES["AES_256_CM_HMAC_SHA1_32"],
)
POLICY = (CM_128, CM_256_80, CM_256_32)  # the focus's order: its conference suite first


def offer(*crypto: tuple[int, str], proto: str = "RTP/SAVP") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
             f"m=audio 30000 {proto} 0", "a=rtpmap:0 PCMU/8000"]  # fmt: skip
    for tag, name in crypto:
        inline = base64.b64encode(os.urandom(SUITES[name].key_salt_length)).decode()
        lines.append(f"a=crypto:{tag} {name} inline:{inline}")
    return ("\r\n".join(lines) + "\r\n").encode()


def test_the_focus_preference_decides_among_offered_suites() -> None:
    body = offer((1, CM_256_32.name), (2, CM_128.name))
    _, streams, suite = check_offer_suites(body, POLICY)
    assert (suite, streams[0].tag) == (CM_128, 2)


@pytest.mark.parametrize("name", [CM_256_80.name, CM_256_32.name])
def test_an_offer_in_one_allowed_suite_gets_it(name: str) -> None:
    _, streams, suite = check_offer_suites(offer((3, name)), POLICY)
    assert (suite.name, streams[0].tag) == (name, 3)


def test_an_offer_in_no_allowed_suite_is_refused_naming_them() -> None:
    body = offer((1, "AES_CM_128_HMAC_SHA1_32"))
    with pytest.raises(NotAcceptable, match="no usable key in a suite this focus allows") as caught:
        check_offer_suites(body, POLICY)
    assert CM_256_32.name in caught.value.message
    with pytest.raises(NoUsableKey, match="no usable AES_CM_128_HMAC_SHA1_80 key"):
        check_offer_suites(body, (CM_128,))  # one suite allowed: its own message, as before


def test_a_clear_offer_is_refused_as_such_whatever_the_suites() -> None:
    with pytest.raises(InsecureMedia):
        check_offer_suites(offer((1, CM_256_80.name), proto="RTP/AVP"), POLICY)
