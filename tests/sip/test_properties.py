"""Hypothesis: exact round trips, and garbage raises only ProtocolError subclasses."""

from __future__ import annotations

import contextlib
import string

from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import ProtocolError
from secconf.core.sip.builders import build_request, build_response
from secconf.core.sip.headers import Address, Via
from secconf.core.sip.message import StreamFramer, canonical_name, parse_message
from secconf.core.sip.uri import SipUri

from .conftest import SIP_DIR, provenance

MANDATORY = {"via", "from", "to", "call-id", "cseq", "content-length", "content-type"}
SEEDS = [(SIP_DIR / name).read_bytes() for name in sorted(provenance())]

token = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12)
host = st.one_of(
    st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=8), min_size=1, max_size=3).map(
        ".".join
    ),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
uri_token = st.text(string.ascii_letters + string.digits + "-_.!~*'()", min_size=1, max_size=12)
port = st.one_of(st.none(), st.integers(1, 65535))
value_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"), max_size=40
).map(str.strip)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    params = draw(st.lists(st.tuples(uri_token, st.one_of(st.none(), uri_token)), max_size=3))
    return SipUri(
        draw(st.sampled_from(["sip", "sips"])),
        draw(host),
        draw(st.one_of(st.none(), uri_token)),
        draw(port),
        tuple(params),
    )


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    uri = draw(sip_uris())
    other = draw(sip_uris())
    method = draw(st.sampled_from(["INVITE", "BYE", "REFER", "SUBSCRIBE", "OPTIONS", "X-NEW"]))
    extra = draw(st.lists(st.tuples(token, value_text), max_size=6))
    body = draw(st.binary(max_size=200))
    request = build_request(
        method,
        str(uri),
        from_=Address.build(other, draw(st.one_of(st.none(), value_text)), tag=draw(token)),
        to=Address.build(uri),
        call_id=draw(token) + "@" + draw(token),
        cseq=draw(st.integers(0, 2**31 - 1)),
        via=Via.build(
            draw(st.sampled_from(["UDP", "TLS", "TCP"])),
            draw(host),
            draw(port),
            "z9hG4bK" + draw(token),
        ),
        contact=Address.build(other),
        body=body,
        content_type="application/octet-stream" if body else None,
        extra_headers=[
            (name, value) for name, value in extra if canonical_name(name) not in MANDATORY
        ],
    )
    if draw(st.booleans()):
        return bytes(request)
    status = draw(st.integers(100, 699))
    return bytes(build_response(request, status, draw(value_text), to_tag=draw(token), body=body))


@given(sip_uris())
def test_uri_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@given(messages())
def test_message_round_trip(data: bytes) -> None:
    message = parse_message(data)
    assert bytes(message) == data
    again = parse_message(bytes(message))
    assert again.headers == message.headers
    assert again.body == message.body


ACCEPTED_SEEDS = [
    (SIP_DIR / name).read_bytes() for name, entry in sorted(provenance().items())
    if entry["expect"] == "accept" and b"Content-Length" in (SIP_DIR / name).read_bytes()
]  # fmt: skip


@given(st.sampled_from(ACCEPTED_SEEDS), st.integers(1, 600))
def test_framer_reassembles_any_chunking(data: bytes, chunk: int) -> None:
    framer = StreamFramer()
    frames: list[bytes] = []
    stream = data + b"\r\n" + data
    for start in range(0, len(stream), chunk):
        frames += framer.feed(stream[start : start + chunk])
    assert frames == [data, data]


@given(st.binary(max_size=600))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_message(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 3))
        if kind == 0 and data:
            del data[min(position, len(data) - 1)]
        elif kind == 1:
            data[position:position] = draw(
                st.sampled_from(
                    [
                        b":",
                        b";",
                        b"<",
                        b">",
                        b'"',
                        b",",
                        b" ",
                        b"\r\n",
                        b"\n ",
                        b"@",
                        b"[",
                        b"%",
                        b"\x00",
                        b"\xff",
                        b"9" * 12,
                    ]
                )
            )
        elif kind == 2 and data:
            data[min(position, len(data) - 1)] = draw(st.integers(0, 255))
        else:
            data = data[:position]
    return bytes(data)


@given(mutated())
def test_mutated_messages_raise_only_protocol_errors(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ProtocolError:
        return
    assert bytes(message) == data.lstrip(b"\r\n")
    # every parsed view either works or raises a ProtocolError, nothing else
    for view in ("vias", "from_", "to", "cseq", "call_id", "content_type"):
        with contextlib.suppress(ProtocolError):
            getattr(message, view)
    for name in ("contact", "route", "record-route"):
        with contextlib.suppress(ProtocolError):
            for value in message.get_all(name):
                with contextlib.suppress(ProtocolError):
                    Address.parse(value).sip_uri  # noqa: B018
    with contextlib.suppress(ProtocolError):
        StreamFramer().feed(data)
