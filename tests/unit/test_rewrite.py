"""Group-key rewriting on real captures: keyed exactly, refusals change nothing."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from secconf.core.errors import InsecureMedia, NotAcceptable
from secconf.core.keys import GroupKey
from secconf.core.rewrite import apply_group_key
from secconf.core.sdes import SUITES, CryptoAttribute
from secconf.core.sdp import MediaSection, SessionDescription

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
GROUP_KEY = GroupKey(1, SUITE, bytes(range(100, 116)), bytes(range(200, 214)))


def _body(offer_crypto: str, proto: str = "RTP/SAVP") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 5004 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{offer_crypto}a=sendrecv\r\n"
    )


KEY30 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


def test_first_acceptable_offer_is_answered_with_the_group_key() -> None:
    body = _body(
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=1\r\n"
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} WSH=64\r\n"
        f"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\n"
    )
    original = SessionDescription.parse(body)
    result = apply_group_key(original, GROUP_KEY, media_address="198.51.100.7", media_ports=[40000])
    assert str(original) == body  # input untouched
    [stream] = result.streams
    assert (stream.chosen_tag, stream.offered_lines) == (3, 4)
    section = result.description.media[0]
    [value] = section.attributes("crypto")
    answer = CryptoAttribute.parse(value or "")
    assert (answer.tag, answer.suite, answer.key, answer.salt) == (
        3,
        SUITE,
        GROUP_KEY.key,
        GROUP_KEY.salt,
    )
    assert answer.session_params == ()
    assert section.port == 40000
    assert section.connection is not None
    assert section.connection.address == "198.51.100.7"
    assert "a=rtpmap:0 PCMU/8000\r\na=crypto:3 " in str(result.description)


@pytest.mark.parametrize(
    ("crypto", "proto", "error", "message"),
    [
        ("", "RTP/SAVP", NotAcceptable, "no a=crypto line"),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}\r\n", "RTP/SAVP", NotAcceptable, "not the conference"),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP\r\n", "RTP/SAVP", NotAcceptable, "UNENCRYPTED_SRTP"),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:shortkey\r\n", "RTP/SAVP", NotAcceptable, "6 bytes"),
        ("", "RTP/AVP", InsecureMedia, "SRTP only"),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\n", "RTP/AVP", InsecureMedia, "RTP/AVP"),
    ],
)  # fmt: skip
def test_refusals_are_488_and_name_the_reason(
    crypto: str, proto: str, error: type[Exception], message: str
) -> None:
    original = SessionDescription.parse(_body(crypto, proto))
    with pytest.raises(error, match=message) as caught:
        apply_group_key(original, GROUP_KEY)
    assert getattr(caught.value, "status_code", None) == 488
    assert str(original) == _body(crypto, proto)
    assert KEY30 not in str(caught.value)


def test_rejected_and_non_rtp_streams_are_left_alone() -> None:
    body = (
        _body(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\n")
        + "m=video 0 RTP/AVP 31\r\nm=application 5000 TCP/BFCP *\r\na=floorctrl:s-only\r\n"
    )
    result = apply_group_key(SessionDescription.parse(body), GROUP_KEY, media_ports=[6000])
    assert [s.index for s in result.streams] == [0]
    assert str(result.description).endswith(
        "m=video 0 RTP/AVP 31\r\nm=application 5000 TCP/BFCP *\r\na=floorctrl:s-only\r\n"
    )
    with pytest.raises(ValueError, match="1 RTP streams but 2 ports"):
        apply_group_key(SessionDescription.parse(body), GROUP_KEY, media_ports=[1, 2])


def test_real_sdes_captures_change_only_crypto_connection_and_port(capture: Path) -> None:
    raw = capture.read_bytes()
    description = SessionDescription.parse(raw)
    rtp = [s for s in description.media if "RTP" in s.proto.split("/") and s.port != 0]
    has_sdes = rtp and all(s.is_secure_rtp and s.has_attribute("crypto") for s in rtp)
    if not has_sdes:
        # DTLS-SRTP, MIKEY and plain captures have no SDES key to answer: refused with 488.
        if rtp:
            with pytest.raises(NotAcceptable):
                apply_group_key(description, GROUP_KEY)
        return

    def offered_suites(section: MediaSection) -> set[str]:
        names = {value.split()[1] for value in section.attributes("crypto") if value}
        return names & set(SUITES)

    if any(SUITE.name not in offered_suites(section) for section in rtp):
        with pytest.raises(NotAcceptable, match="not the conference's"):
            apply_group_key(description, GROUP_KEY)
        return
    result = apply_group_key(
        description, GROUP_KEY, media_address="203.0.113.9", media_ports=[40000] * len(rtp)
    )
    assert bytes(description) == raw
    diff = [
        line
        for line in difflib.ndiff(raw.decode().splitlines(), str(result.description).splitlines())
        if line.startswith(("- ", "+ "))
    ]
    assert diff, "nothing was rewritten"
    assert all(line[2:4] in ("a=", "c=", "m=") for line in diff), diff
    assert all(line[2:4] != "a=" or line[4:10] == "crypto" for line in diff), diff
    for stream in result.streams:
        [value] = result.description.media[stream.index].attributes("crypto")
        assert CryptoAttribute.parse(value or "").key == GROUP_KEY.key
