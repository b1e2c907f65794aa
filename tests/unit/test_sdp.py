"""SessionDescription: exact round-trips of real captures, minimal edits, precise refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from secconf.core.errors import MalformedSdp, MessageTooLarge
from secconf.core.sdp import MAX_SDP_BYTES, MAX_SDP_LINES, Connection, SessionDescription
from tests.conftest import sdp_captures, sdp_provenance

BASIC = (
    "v=0\r\n"
    "o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.101\r\n"
    "t=0 0\r\n"
    "a=sendrecv\r\n"
    "m=audio 49170 RTP/SAVP 0 8 97\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\n"
    "a=ptime:20\r\n"
    "m=video 51372 RTP/AVP 31\r\n"
    "a=rtpmap:31 H261/90000\r\n"
)


def test_corpus_is_present_and_documented() -> None:
    captures = sdp_captures()
    assert len(captures) >= 10
    provenance = sdp_provenance()
    for path in captures:
        assert path.name in provenance, f"{path.name} has no provenance entry"
        assert provenance[path.name].get("source")


def test_capture_round_trips_byte_for_byte(capture: Path) -> None:
    raw = capture.read_bytes()
    description = SessionDescription.parse(raw)
    assert bytes(description) == raw
    assert str(SessionDescription.parse(raw.decode("utf-8"))) == raw.decode("utf-8")


def test_capture_copy_is_independent(capture: Path) -> None:
    description = SessionDescription.parse(capture.read_bytes())
    copy = description.copy()
    for section in copy.media:
        section.add_attribute("x-secconf-test")
    assert bytes(description) == capture.read_bytes()


def test_accessors() -> None:
    sd = SessionDescription.parse(BASIC)
    assert sd.origin.version == 2890844527
    assert sd.origin.address == "host.atlanta.example.com"
    assert sd.session.connection == Connection("IN", "IP4", "192.0.2.101")
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio", 49170, "RTP/SAVP", ["0", "8", "97"],
    )  # fmt: skip
    assert audio.is_secure_rtp
    assert not video.is_secure_rtp
    assert audio.port_count is None
    assert audio.connection is None
    assert len(audio.attributes("crypto")) == 2
    assert audio.attribute("ptime") == "20"
    assert sd.session.attributes("sendrecv") == [None]
    assert sd.session.has_attribute("sendrecv")
    assert not audio.has_attribute("sendrecv")


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    return [(a, b) for a, b in zip(old, new, strict=False) if a != b]


def test_set_port_changes_only_the_port_token() -> None:
    sd = SessionDescription.parse(BASIC)
    sd.media[0].set_port(40000)
    assert _changed_lines(BASIC, str(sd)) == [
        ("m=audio 49170 RTP/SAVP 0 8 97\r\n", "m=audio 40000 RTP/SAVP 0 8 97\r\n")
    ]
    with pytest.raises(ValueError, match="out of range"):
        sd.media[0].set_port(70000)


def test_port_with_count_is_kept() -> None:
    sd = SessionDescription.parse(BASIC.replace("m=video 51372 ", "m=video 51372/2 "))
    assert sd.media[1].port_count == 2
    sd.media[1].set_port(6000)
    assert "m=video 6000/2 RTP/AVP 31\r\n" in str(sd)


def test_set_connection_inserts_after_m_line_with_the_body_line_ending() -> None:
    sd = SessionDescription.parse(BASIC.replace("\r\n", "\n"))
    sd.media[0].set_connection("203.0.113.7")
    lines = str(sd).split("\n")
    index = lines.index("m=audio 49170 RTP/SAVP 0 8 97")
    assert lines[index + 1] == "c=IN IP4 203.0.113.7"
    assert "\r" not in str(sd)
    sd.media[0].set_connection("203.0.113.8")
    assert str(sd).count("c=IN IP4 203.0.113.") == 1
    sd.session.set_connection("2001:db8::1", "IP6")
    assert sd.session.connection == Connection("IN", "IP6", "2001:db8::1")


def test_set_connection_respects_i_line_order() -> None:
    body = BASIC.replace("m=video 51372 RTP/AVP 31\r\n", "m=video 51372 RTP/AVP 31\r\ni=cam\r\n")
    sd = SessionDescription.parse(body)
    sd.media[1].set_connection("198.51.100.1")
    assert "i=cam\r\nc=IN IP4 198.51.100.1\r\na=rtpmap:31" in str(sd)


def test_replace_attributes_rewrites_in_place_and_removes_surplus() -> None:
    sd = SessionDescription.parse(BASIC)
    sd.media[0].replace_attributes("crypto", ["9 AES_CM_128_HMAC_SHA1_80 inline:x"])
    text = str(sd)
    assert (
        "a=rtpmap:0 PCMU/8000\r\na=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:x\r\na=ptime:20" in text
    )
    assert text.count("a=crypto") == 1
    assert text.replace("a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:x\r\n", "") == BASIC.replace(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n", ""
    ).replace(
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\n", ""
    )


def test_replace_attributes_appends_extra_values_after_the_last_existing_one() -> None:
    sd = SessionDescription.parse(BASIC)
    sd.media[0].replace_attributes("crypto", ["1 A", "2 B", "3 C"])
    assert "a=crypto:2 B\r\na=crypto:3 C\r\na=ptime:20" in str(sd)
    sd.media[1].replace_attributes("crypto", ["1 D"])
    assert str(sd).endswith("a=rtpmap:31 H261/90000\r\na=crypto:1 D\r\n")


def test_add_and_remove_keep_a_missing_final_line_ending_missing() -> None:
    body = BASIC.rstrip("\r\n")
    sd = SessionDescription.parse(body)
    assert str(sd) == body
    sd.media[1].add_attribute("sendonly")
    assert str(sd).endswith("a=rtpmap:31 H261/90000\r\na=sendonly")
    assert sd.media[1].remove_attributes("sendonly") == 1
    assert str(sd) == body


def test_attribute_edits_refuse_line_breaks_and_bad_names() -> None:
    sd = SessionDescription.parse(BASIC)
    with pytest.raises(ValueError, match="CR, LF"):
        sd.media[0].add_attribute("x", "1\r\nm=audio 1 RTP/AVP 0")
    with pytest.raises(ValueError, match="token"):
        sd.media[0].add_attribute("bad name")
    assert str(sd) == BASIC


def test_trailing_blank_lines_are_kept() -> None:
    assert str(SessionDescription.parse(BASIC + "\r\n")) == BASIC + "\r\n"


def test_repr_shows_no_keys() -> None:
    sd = SessionDescription.parse(BASIC)
    shown = repr(sd) + repr(list(sd.lines())) + repr(sd.media)
    assert "PS1uQCVe" not in shown
    assert "NzB4d1BI" not in shown


@pytest.mark.parametrize(
    ("body", "message", "line"),
    [
        ("", "empty SDP body", None),
        ("\r\n\r\n", "empty SDP body", None),
        ("o=a 1 1 IN IP4 h\r\nv=0\r\ns=-\r\nt=0 0\r\n", "expected an v= line", 1),
        ("v=0\r\ns=-\r\no=a 1 1 IN IP4 h\r\nt=0 0\r\n", "expected an o= line", 2),
        ("v=1\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", "only v=0", 1),
        ("v=0\r\no=a x 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", "malformed origin", 2),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\n", "no t= line", None),
        ("v=0\r\no=a 1 1 IN IP4 h\r\n", "ends before", None),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n\r\nm=audio 1 RTP/AVP 0\r\n", "empty line", 5),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\rx\r\n", "bare CR", 4),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nhello\r\n", "<type>=<value>", 5),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nA=x\r\n", "<type>=<value>", 5),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\na=\0\r\n", "NUL", 5),
        (
            "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n",
            "malformed media",
            5,
        ),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP\r\n", "malformed media", 5),
        (
            "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 99999999 RTP/AVP 0\r\n",
            "malformed media",
            5,
        ),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\nt=0 0\r\n", "malformed connection", 4),
    ],
)
def test_malformed_bodies_name_the_problem(body: str, message: str, line: int | None) -> None:
    with pytest.raises(MalformedSdp, match=message) as caught:
        SessionDescription.parse(body)
    assert caught.value.line_number == line
    assert caught.value.status_code == 400


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(MalformedSdp, match="not UTF-8"):
        SessionDescription.parse(b"v=0\r\ns=\xff\r\n")


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(MalformedSdp, match="unencodable"):
        SessionDescription.parse("v=0\r\no=a 1 1 IN IP4 h\r\ns=\udcff\r\nt=0 0\r\n")


def test_oversized_bodies_are_refused_before_parsing() -> None:
    big = BASIC + "a=x:" + "y" * MAX_SDP_BYTES + "\r\n"
    with pytest.raises(MessageTooLarge) as caught:
        SessionDescription.parse(big)
    assert caught.value.status_code == 413
    with pytest.raises(MessageTooLarge):
        SessionDescription.parse(big.encode())
    with pytest.raises(MessageTooLarge):
        SessionDescription.parse("é" * (MAX_SDP_BYTES // 2 + 1))
    many_lines = BASIC + "a=x\r\n" * MAX_SDP_LINES
    with pytest.raises(MessageTooLarge, match="lines"):
        SessionDescription.parse(many_lines)


def test_malformed_crypto_key_never_appears_in_sdp_errors() -> None:
    body = "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nk=clear:hunter2hunter2\r\nX=1\r\n"
    with pytest.raises(MalformedSdp) as caught:
        SessionDescription.parse(body)
    assert "hunter2" not in str(caught.value)
