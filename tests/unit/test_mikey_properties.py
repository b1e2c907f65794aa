"""Hypothesis properties for the MIKEY codec: exact round-trips; garbage raises only MikeyError.

CI runs each with 2,000 examples (tests/conftest.py, profile "ci").
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import MikeyError
from secconf.core.mikey import (
    BaseTicketData,
    CertHash,
    Certificate,
    CommonHeader,
    DhData,
    EmptyMap,
    EnvelopeData,
    ErrorPayload,
    GeneralExtension,
    GenericIdEntry,
    GenericIdMap,
    Identity,
    IdentityWithRole,
    IntervalValidity,
    Kemac,
    KeyData,
    Message,
    Payload,
    PolicyParam,
    Rand,
    RandWithRole,
    SecurityPolicy,
    Signature,
    SpiValidity,
    SrtpIdEntry,
    SrtpIdMap,
    Ticket,
    TicketFlags,
    TicketHeader,
    TicketPolicy,
    Timestamp,
    TimestampWithRole,
    Verification,
)
from secconf.core.mikey.payloads import (
    decode_key_data_list,
    encode_key_data_list,
    encode_payload_chain,
)

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
small = st.binary(max_size=24)
mac_algs = st.sampled_from([(0, 0), (1, 20), (2, 32)])


@st.composite
def timestamps(draw: st.DrawFn) -> Timestamp:
    ts_type = draw(st.integers(0, 3))
    bits = 64 if ts_type < 2 else 32
    return Timestamp(ts_type, draw(st.integers(0, (1 << bits) - 1)))


@st.composite
def timestamps_with_role(draw: st.DrawFn) -> TimestampWithRole:
    stamp = draw(timestamps())
    return TimestampWithRole(draw(u8), stamp.ts_type, stamp.value)


@st.composite
def verifications(draw: st.DrawFn) -> Verification:
    alg, length = draw(mac_algs)
    return Verification(alg, draw(st.binary(min_size=length, max_size=length)))


@st.composite
def kemacs(draw: st.DrawFn) -> Kemac:
    alg, length = draw(mac_algs)
    return Kemac(draw(u8), draw(small), alg, draw(st.binary(min_size=length, max_size=length)))


validities = st.none() | st.builds(SpiValidity, small) | st.builds(IntervalValidity, small, small)


@st.composite
def dh_payloads(draw: st.DrawFn) -> DhData:
    group, length = draw(st.sampled_from([(0, 192), (1, 96), (2, 128)]))
    value = draw(st.binary(min_size=length, max_size=length))
    return DhData(group, value, draw(validities), draw(st.integers(0, 15)))


@st.composite
def cert_hashes(draw: st.DrawFn) -> CertHash:
    func, length = draw(st.sampled_from([(0, 20), (1, 16), (2, 32)]))
    return CertHash(func, draw(st.binary(min_size=length, max_size=length)))


flags = st.integers(0, 0x0FFF).map(TicketFlags)

simple_payloads: st.SearchStrategy[Payload] = st.one_of(
    timestamps(),
    timestamps_with_role(),
    st.builds(Rand, small),
    st.builds(RandWithRole, u8, small),
    st.builds(Identity, u8, small),
    st.builds(Certificate, u8, small),
    st.builds(IdentityWithRole, u8, u8, small),
    cert_hashes(),
    verifications(),
    st.builds(
        SecurityPolicy,
        u8,
        u8,
        st.lists(st.builds(PolicyParam, u8, st.binary(max_size=4)), max_size=5).map(tuple),
    ),
    st.builds(ErrorPayload, u8, u16),
    st.builds(GeneralExtension, u8, small),
    kemacs(),
    st.builds(EnvelopeData, st.integers(0, 3), small),
    dh_payloads(),
)

policy_lists = st.lists(simple_payloads, max_size=3).map(tuple)


@st.composite
def tickets(draw: st.DrawFn) -> Ticket:
    initiator = draw(st.lists(verifications(), max_size=2))
    return Ticket(
        draw(u16), draw(u8), draw(u8), draw(st.integers(0, 127)), draw(flags),
        draw(policy_lists), draw(small), encode_payload_chain(initiator), draw(st.integers(0, 31)),
    )  # fmt: skip


ticket_policies = st.builds(
    TicketPolicy, u16, u8, u8, st.integers(0, 127), flags, policy_lists, st.integers(0, 31)
)

any_payload = st.one_of(simple_payloads, tickets(), ticket_policies)

srtp_maps = st.lists(st.builds(SrtpIdEntry, u8, u32, u32), max_size=4).map(
    lambda entries: SrtpIdMap(tuple(entries))
)
generic_maps = st.lists(
    st.builds(
        GenericIdEntry,
        u8,
        u8,
        st.lists(u8, max_size=3).map(tuple),
        st.binary(max_size=10),
        st.binary(max_size=4),
        st.booleans(),
    ),
    max_size=4,
).map(lambda entries: GenericIdMap(tuple(entries)))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    cs_map = draw(st.one_of(srtp_maps, generic_maps, st.builds(EmptyMap, u8)))
    header = CommonHeader(
        draw(u8), draw(u32), cs_map, draw(st.booleans()), draw(st.integers(0, 127))
    )
    payloads = draw(st.lists(any_payload, max_size=6))
    if draw(st.booleans()):
        payloads.append(Signature(draw(st.integers(0, 15)), draw(small)))
    return Message(header, tuple(payloads))


@given(messages())
def test_generated_messages_round_trip_exactly(message: Message) -> None:
    data = bytes(message)
    parsed = Message.parse(data)
    assert parsed == message
    assert bytes(parsed) == data


@given(
    st.lists(
        st.builds(
            KeyData,
            st.sampled_from([0, 2, 4, 6]),
            small,
            st.none(),
            validities,
        )
        | st.builds(KeyData, st.sampled_from([1, 3, 5]), small, small, validities),
        max_size=4,
    )
)
def test_key_data_lists_round_trip(keys: list[KeyData]) -> None:
    assert decode_key_data_list(encode_key_data_list(keys)) == (None, tuple(keys))


@given(st.binary(max_size=16), policy_lists)
def test_base_ticket_data_round_trips(thdr: bytes, payloads: tuple[Payload, ...]) -> None:
    data = BaseTicketData(TicketHeader(thdr), payloads)
    assert BaseTicketData.parse(bytes(data)) == data


def _parse_only_mikey_errors(data: bytes) -> None:
    with contextlib.suppress(MikeyError):
        message = Message.parse(data)
        assert bytes(message) == data  # whatever parses, round-trips


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_mikey_errors(data: bytes) -> None:
    _parse_only_mikey_errors(data)


@given(st.binary(max_size=120))
def test_random_bodies_after_a_valid_header_raise_only_mikey_errors(body: bytes) -> None:
    _parse_only_mikey_errors(bytes.fromhex("01 0e") + body[:1] + b"\x00\x00\x00\x00\x01" + body[1:])


@given(messages(), st.data())
def test_mutated_messages_raise_only_mikey_errors(message: Message, data: st.DataObject) -> None:
    raw = bytearray(bytes(message))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[position:]
        else:
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=3))
    _parse_only_mikey_errors(bytes(raw))


@given(st.binary(max_size=80), st.booleans())
def test_random_key_data_raises_only_mikey_errors(data: bytes, leading_id: bool) -> None:
    with contextlib.suppress(MikeyError):
        decode_key_data_list(data, leading_id)
