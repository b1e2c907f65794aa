"""Hypothesis properties: exact round-trips, and garbage raises only our ProtocolError.

CI runs each with at least 2,000 examples (tests/conftest.py, profile "ci").
"""

from __future__ import annotations

import base64
import contextlib

from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import InvalidCryptoAttribute, ProtocolError
from secconf.core.sdes import SUITES, CryptoAttribute, KeyParam, Mki, SessionParam
from secconf.core.sdp import SdpLine, SessionDescription
from tests.conftest import sdp_captures

CAPTURES = [path.read_bytes() for path in sdp_captures()]

# -- SDP ----------------------------------------------------------------------

eols = st.sampled_from(["\r\n", "\n"])
# Any text without CR, LF or NUL is a legal SDP value (RFC 8866 byte-string).
values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
    max_size=40,
)
tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=10)
ports = st.integers(0, 65535).map(str)


@st.composite
def media_sections(draw: st.DrawFn) -> list[tuple[str, str]]:
    count = draw(st.none() | st.integers(1, 99))
    port = draw(ports) + ("" if count is None else f"/{count}")
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "udp"]))
    formats = " ".join(draw(st.lists(tokens, min_size=1, max_size=4)))
    lines = [("m", f"{draw(tokens)} {port} {proto} {formats}")]
    if draw(st.booleans()):
        lines.append(("c", f"IN IP4 {draw(tokens)}"))
    other = st.tuples(st.sampled_from("abikxyz"), values)
    lines += draw(st.lists(other, max_size=6))
    return lines


@st.composite
def sdp_bodies(draw: st.DrawFn) -> str:
    lines = [
        ("v", "0"),
        (
            "o",
            f"{draw(tokens)} {draw(st.integers(0, 2**64))} {draw(st.integers(0, 2**64))} IN IP4 h",
        ),
        ("s", draw(values)),
    ]
    lines += draw(st.lists(st.tuples(st.sampled_from("iuepbzka"), values), max_size=5))
    lines.append(("t", "0 0"))
    lines += draw(st.lists(st.tuples(st.sampled_from("ra"), values), max_size=5))
    for section in draw(st.lists(media_sections(), max_size=4)):
        lines += section
    text = "".join(f"{kind}={value}{draw(eols)}" for kind, value in lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    elif draw(st.booleans()):
        text += draw(eols)
    return text


@given(sdp_bodies())
def test_generated_sdp_round_trips_exactly(text: str) -> None:
    description = SessionDescription.parse(text)
    assert str(description) == text
    assert bytes(SessionDescription.parse(text.encode("utf-8"))) == text.encode("utf-8")


@given(sdp_bodies(), tokens, st.lists(values.filter(lambda v: v.strip() == v), max_size=3))
def test_replacing_attributes_touches_nothing_else(
    text: str, name: str, new_values: list[str]
) -> None:
    description = SessionDescription.parse(text)

    def other(line: SdpLine) -> bool:
        # Attribute names match without regard to case (secconf.core.sdp.SdpLine.is_attribute).
        return line.attribute_name is None or line.attribute_name.lower() != name.lower()

    for section in [description.session, *description.media]:
        # Compared without line endings: an append after a last line that had
        # none moves the (missing) ending to the new last line.
        others = [(line.kind, line.value) for line in section.lines if other(line)]
        section.replace_attributes(name, new_values)
        assert section.attributes(name) == new_values
        kept = [(line.kind, line.value) for line in section.lines if other(line)]
        assert kept == others
    assert SessionDescription.parse(str(description)) == description


@given(st.text(max_size=300))
def test_garbage_text_raises_only_protocol_errors(text: str) -> None:
    try:
        description = SessionDescription.parse(text)
    except ProtocolError:
        return
    assert str(description) == text


@given(st.binary(max_size=300))
def test_garbage_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        description = SessionDescription.parse(data)
    except ProtocolError:
        return
    assert bytes(description) == data


@st.composite
def mutated_captures(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CAPTURES)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(
            st.binary(min_size=1, max_size=4) | st.sampled_from([b"\r", b"\n", b"=", b" ", b"\0"])
        )
        if action == "insert":
            data[position:position] = chunk
        elif action == "delete":
            del data[position : position + len(chunk)]
        else:
            data[position : position + len(chunk)] = chunk
    return bytes(data)


@given(mutated_captures())
def test_mutated_captures_raise_only_protocol_errors(data: bytes) -> None:
    try:
        description = SessionDescription.parse(data)
    except ProtocolError:
        return
    assert bytes(description) == data
    for section in description.media:
        _ = (section.media, section.port, section.proto, section.formats, section.connection)
        for value in section.attributes("crypto"):
            with contextlib.suppress(InvalidCryptoAttribute):
                CryptoAttribute.parse(value or "")


# -- a=crypto -----------------------------------------------------------------


@st.composite
def crypto_attributes(draw: st.DrawFn) -> CryptoAttribute:
    suite = draw(st.sampled_from(list(SUITES.values())))
    count = draw(st.integers(1, 3))
    mki_length = draw(st.integers(1, 8))
    use_mki = count > 1 or draw(st.booleans())
    mki_values = draw(
        st.lists(
            st.integers(0, 2 ** (8 * mki_length) - 1), min_size=count, max_size=count, unique=True
        )
    )
    material = draw(
        st.lists(
            st.binary(min_size=suite.key_salt_length, max_size=suite.key_salt_length),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    key_params = tuple(
        KeyParam(
            blob[: suite.key_length],
            blob[suite.key_length :],
            draw(st.none() | st.integers(1, 2**48)),
            Mki(mki_values[i], mki_length) if use_mki else None,
        )
        for i, blob in enumerate(material)
    )
    params = draw(
        st.lists(
            st.sampled_from(
                [
                    SessionParam("KDR", "12"),
                    SessionParam("UNENCRYPTED_SRTCP"),
                    SessionParam("WSH", "256"),
                    SessionParam("FEC_ORDER", "SRTP_FEC"),
                    SessionParam("-X-ext", None),
                ]
            ),
            max_size=3,
        )
    )
    return CryptoAttribute(draw(st.integers(0, 999_999_999)), suite, key_params, tuple(params))


@given(crypto_attributes())
def test_crypto_attributes_round_trip(attribute: CryptoAttribute) -> None:
    text = str(attribute)
    parsed = CryptoAttribute.parse(text)
    assert parsed == attribute
    assert str(parsed) == text
    for param in attribute.key_params:
        assert base64.b64encode(param.key + param.salt).decode() not in repr(parsed)


@given(st.text(max_size=200))
def test_crypto_garbage_raises_only_invalid_crypto(text: str) -> None:
    try:
        attribute = CryptoAttribute.parse(text)
    except InvalidCryptoAttribute:
        return
    assert str(attribute) == text


@given(crypto_attributes(), st.data())
def test_mutated_crypto_raises_only_invalid_crypto(
    attribute: CryptoAttribute, data: st.DataObject
) -> None:
    text = str(attribute)
    position = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(min_size=1, max_size=3))
    mutated = text[:position] + junk + text[position + data.draw(st.integers(0, 3)) :]
    try:
        parsed = CryptoAttribute.parse(mutated)
    except InvalidCryptoAttribute:
        return
    assert str(parsed) == mutated
