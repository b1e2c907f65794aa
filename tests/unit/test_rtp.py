"""RTP/RTCP framing, demultiplexing and sequence tracking (secconf.core.rtp).

Real packets come from tests/data/rtp/ (baresip 1.0.0 and SIPp 3.6.1, see
PROVENANCE.toml); properties run 2,000 examples each in CI.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import struct
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core import rtp
from secconf.core.errors import MalformedMessage, MalformedRtp
from secconf.core.g711 import tone_ratio, ulaw_decode
from secconf.core.rtp import (
    Bye,
    PacketKind,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpOther,
    RtpExtension,
    RtpPacket,
    SdesChunk,
    SenderInfo,
    SenderReport,
    SequenceTracker,
    SourceDescription,
)
from tests.conftest import DATA

RTP_DIR = DATA / "rtp"


def _datagrams(name: str) -> list[bytes]:
    lines = (RTP_DIR / name).read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


BARESIP_RTP = _datagrams("baresip-pcmu-1khz.rtp.hex")
BARESIP_RTCP = _datagrams("baresip-rtcp.rtcp.hex")
SIPP_RTP = _datagrams("sipp-uac_pcap.rtp.hex")


# -- the captures themselves -----------------------------------------------------


def test_captures_match_their_provenance() -> None:
    with (RTP_DIR / "PROVENANCE.toml").open("rb") as handle:
        provenance = tomllib.load(handle)
    files = sorted(path.name for path in RTP_DIR.glob("*.hex"))
    assert sorted(provenance) == files
    for name, entry in provenance.items():
        data = (RTP_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(_datagrams(name)) == entry["packets"], name


@pytest.mark.parametrize("datagram", BARESIP_RTP + SIPP_RTP, ids=lambda d: d[:4].hex())
def test_real_rtp_round_trips_exactly(datagram: bytes) -> None:
    packet = RtpPacket.parse(datagram)
    assert bytes(packet) == datagram
    assert rtp.classify(datagram) is PacketKind.RTP
    assert rtp.rtp_ssrc(datagram) == packet.ssrc


def test_baresip_stream_is_pcmu_at_20ms_with_a_1khz_tone() -> None:
    packets = [RtpPacket.parse(d) for d in BARESIP_RTP]
    assert {p.payload_type for p in packets} == {0}
    assert {len(p.payload) for p in packets} == {160}
    assert len({p.ssrc for p in packets}) == 1
    assert packets[0].marker
    assert not any(p.marker for p in packets[1:])
    for before, after in itertools.pairwise(packets):
        assert after.sequence_number == (before.sequence_number + 1) % 65536
        assert after.timestamp == (before.timestamp + 160) % 2**32
    # ausine's 1000 Hz, through baresip's resampler and µ-law encoder, decoded by us.
    samples = ulaw_decode(b"".join(p.payload for p in packets[10:60]))
    assert tone_ratio(samples, 1000) > 0.95
    assert tone_ratio(samples, 1300) < 0.01


def test_sipp_capture_has_pcma_and_rfc4733_events() -> None:
    packets = [RtpPacket.parse(d) for d in SIPP_RTP]
    pcma = [p for p in packets if p.payload_type == 8]
    events = [p for p in packets if p.payload_type == 101]
    assert len(pcma) == 40
    assert {len(p.payload) for p in pcma} == {240}
    assert len(events) == 10
    assert {len(p.payload) for p in events} == {4}
    assert events[0].marker
    assert pcma[0].ssrc != events[0].ssrc
    assert events[0].payload[0] == 1  # RFC 4733 §3.5: event 1, the digit '1'


def test_real_rtcp_parses_and_rebuilds_exactly() -> None:
    ping, report, goodbye = (rtp.parse_rtcp(d, strict=False) for d in BARESIP_RTCP)
    for datagram in BARESIP_RTCP:
        assert rtp.classify(datagram) is PacketKind.RTCP
        assert rtp.build_compound(rtp.parse_rtcp(datagram, strict=False)) == datagram

    # A lone APP "PING" (PT 204): kept raw, and refused by the strict compound check.
    (app,) = ping
    assert isinstance(app, RtcpOther)
    assert (app.packet_type, app.count) == (204, 0)
    assert app.body[4:] == b"PINGPONG"  # after the SSRC: name "PING", data "PONG" (§6.7)
    with pytest.raises(MalformedRtp, match="SR/RR"):
        rtp.parse_rtcp(BARESIP_RTCP[0])

    sr, sdes = report
    assert isinstance(sr, SenderReport)
    assert isinstance(sdes, SourceDescription)
    assert rtp.parse_rtcp(BARESIP_RTCP[1]) == report  # a valid compound in strict mode too
    assert sr.sender_info.packet_count == 250
    assert sr.sender_info.octet_count == 250 * 160
    assert sdes.chunks[0].ssrc == sr.ssrc
    assert sdes.chunks[0].cname == b"sip:cap@127.0.0.1"
    (block,) = sr.reports  # baresip's report on the recorder's stream (SSRC 0x5EC0F000)
    assert block.ssrc == 0x5EC0F000
    assert block.cumulative_lost == 0
    assert block.fraction_lost == 0
    assert 200 <= block.highest_sequence <= 400
    assert block.lsr == 0
    assert block.dlsr == 0

    bye, sdes_at_end = goodbye
    assert isinstance(bye, Bye)
    assert bye.ssrcs == (sr.ssrc,)
    assert bye.reason == b"Adjo"
    assert isinstance(sdes_at_end, SourceDescription)


def test_real_stream_through_sequence_tracker() -> None:
    packets = [RtpPacket.parse(d) for d in BARESIP_RTP]
    tracker = SequenceTracker(packets[0].sequence_number)
    verdicts = [tracker.update(p.sequence_number) for p in packets]
    assert verdicts == [False] + [True] * 99  # MIN_SEQUENTIAL = 2: the first is on probation
    assert tracker.received == 99
    assert tracker.lost == 0
    assert tracker.extended_max == packets[-1].sequence_number


# -- RTP fields -----------------------------------------------------------------


def test_rtp_all_header_fields() -> None:
    packet = RtpPacket(
        payload_type=96,
        sequence_number=0xBEEF,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"abc",
        marker=True,
        csrcs=(1, 2),
        extension=RtpExtension(0xBEDE, b"\x10\xff\x00\x00"),
        padding=b"\0\0\3",
    )
    data = bytes(packet)
    assert data[:2] == bytes((0b1011_0010, 0x80 | 96))
    assert data[2:12] == bytes.fromhex("beef deadbeef 01020304")
    assert data[12:20] == struct.pack("!II", 1, 2)
    assert data[20:24] == bytes.fromhex("bede0001")
    assert data[-6:] == b"abc\0\0\3"
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than 12"),
        (bytes.fromhex("40000000000000000000000000"), "version 1"),
        (bytes.fromhex("810000000000000000000000"), "CSRC list"),
        (bytes.fromhex("900000000000000000000000bede"), "shorter than its extension"),
        (bytes.fromhex("900000000000000000000000bede0002 00000000"), "extension runs past"),
        (bytes.fromhex("a00000000000000000000000"), "no padding count"),
        (bytes.fromhex("a0000000000000000000000000"), "padding count 0"),
        (bytes.fromhex("a0000000000000000000000005"), "padding count 5"),
    ],
)
def test_malformed_rtp(data: bytes, match: str) -> None:
    with pytest.raises(MalformedRtp, match=match) as caught:
        RtpPacket.parse(data)
    assert isinstance(caught.value, MalformedMessage)
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "fields",
    [
        {"payload_type": 128},
        {"sequence_number": 65536},
        {"timestamp": -1},
        {"ssrc": 2**32},
        {"csrcs": tuple(range(16))},
        {"padding": b"\0\1"},
    ],
)
def test_building_from_bad_values_raises_malformed_rtp(fields: dict[str, object]) -> None:
    values: dict[str, object] = {"payload_type": 0, "sequence_number": 0, "timestamp": 0, "ssrc": 0}
    values.update(fields)
    with pytest.raises(MalformedRtp):
        RtpPacket(**values)  # type: ignore[arg-type]


def test_extension_must_be_whole_words() -> None:
    with pytest.raises(MalformedRtp):
        RtpExtension(0xBEDE, b"\1\2\3")


# -- demultiplexing (RFC 5761 §4, RFC 7983 §7) -----------------------------------


@pytest.mark.parametrize(
    ("first_two", "kind"),
    [
        ("0001", PacketKind.STUN),  # Binding request
        ("1603", PacketKind.DTLS),  # handshake record
        ("8000", PacketKind.RTP),  # PT 0
        ("80e0", PacketKind.RTP),  # marker + PT 96
        ("807f", PacketKind.RTP),  # PT 127
        ("8060", PacketKind.RTP),  # PT 96 without marker: 0x60 = 96 is not 64..95
        ("80c0", PacketKind.RTCP),  # 192, FIR (first of the RTCP range)
        ("80c8", PacketKind.RTCP),  # SR
        ("80df", PacketKind.RTCP),  # 223, last of the range
        ("8040", PacketKind.RTCP),  # PT 64 with marker clear: in the RTCP range per §4
        ("805f", PacketKind.RTCP),  # 95
    ],
)
def test_classify(first_two: str, kind: PacketKind) -> None:
    assert rtp.classify(bytes.fromhex(first_two) + bytes(10)) is kind


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x40\x00", b"\xff\x00", b"\x10\x00"])
def test_classify_refuses_the_rest(data: bytes) -> None:
    with pytest.raises(MalformedRtp):
        rtp.classify(data)


# -- RTCP ------------------------------------------------------------------------


def test_build_report_rr_and_sr_with_cname() -> None:
    block = ReportBlock(0xAABBCCDD, 25, -3, 0x0001FFFF, 17, 0x11223344, 65536)
    rr = rtp.build_report(0x1234, b"alice@example", [block])
    first, sdes = rtp.parse_rtcp(rr)
    assert first == ReceiverReport(0x1234, (block,))
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].cname == b"alice@example"
    # RFC 3550 §6.4.2 layout: header (RC=1, PT=201, length 7) SSRC, one 24-byte block.
    assert rr[:8] == bytes.fromhex("81c90007 00001234")
    assert rr[12:16] == bytes.fromhex("19fffffd")  # fraction 25, cumulative -3 (signed 24)

    info = SenderInfo(0x0102030405060708, 160, 10, 1600)
    sr = rtp.build_report(0x1234, b"x", sender_info=info)
    first, _ = rtp.parse_rtcp(sr)
    assert first == SenderReport(0x1234, info)
    assert sr[:4] == bytes.fromhex("80c80006")
    assert rtp.ntp_to_compact(info.ntp_timestamp) == 0x03040506


def test_rtcp_headers_walk() -> None:
    walked = list(rtp.parse_rtcp_headers(BARESIP_RTCP[1]))
    assert [(h.packet_type, h.count, h.size) for h, _ in walked] == [(200, 1, 52), (202, 1, 28)]


@pytest.mark.parametrize(
    ("data", "strict"),
    [
        (b"\x80\xc9\x00", True),  # shorter than a header
        (bytes.fromhex("80c90002 00000001"), True),  # length runs past
        (bytes.fromhex("40c90000"), True),  # version 1
        (bytes.fromhex("81c90001 00000001"), True),  # RC 1 without a report block
        (bytes.fromhex("80c80001 00000001"), True),  # SR without sender info
        (bytes.fromhex("80ca0000"), True),  # SDES first
        (bytes.fromhex("81ca0001 00000001"), False),  # SDES chunk without end
        (bytes.fromhex("81ca0002 00000001 0105"), False),  # CNAME runs past (and odd length)
        (bytes.fromhex("81cb0000"), False),  # BYE missing its SSRC
        (bytes.fromhex("81cb0002 00000001 09616263"), False),  # reason runs past
        (bytes.fromhex("a0c90000"), True),  # padding with nothing to count
        (bytes.fromhex("a0c90001 00000000"), True),  # padding count 0
        (bytes.fromhex("a0c90001 00000004 80c90000"), True),  # padding before the last packet
        (bytes.fromhex("80c90000 80"), True),  # trailing bytes
    ],
)
def test_malformed_rtcp(data: bytes, strict: bool) -> None:
    with pytest.raises(MalformedRtp):
        rtp.parse_rtcp(data, strict=strict)


def test_padding_on_the_last_packet() -> None:
    packets = (ReceiverReport(1), SourceDescription((SdesChunk(1, ((1, b"c"),)),), b"\0\0\0\4"))
    data = rtp.build_compound(packets)
    assert rtp.parse_rtcp(data) == packets


# -- sequence tracking (RFC 3550 Appendix A.1) ----------------------------------


def test_probation_then_valid() -> None:
    tracker = SequenceTracker(100)
    assert tracker.update(100) is False  # on probation
    assert tracker.update(101) is True
    assert (tracker.base_seq, tracker.received, tracker.probation) == (101, 1, 0)


def test_probation_restarts_on_a_gap() -> None:
    tracker = SequenceTracker(100)
    assert [tracker.update(s) for s in (100, 105, 106, 107)] == [False, False, True, True]


def test_probation_across_the_wrap() -> None:
    # The C code compares seq == max_seq + 1 in int, so 65535 -> 0 never passes probation.
    tracker = SequenceTracker(65535)
    assert [tracker.update(s) for s in (65535, 0, 1)] == [False, True, True]


def test_wrap_counts_cycles_and_roc() -> None:
    tracker = SequenceTracker(65530)
    for seq in [*range(65530, 65536), *range(0, 10)]:
        tracker.update(seq)
    assert tracker.cycles == 65536
    assert tracker.roll_over_count == 1
    assert tracker.extended_max == 65536 + 9
    assert tracker.lost == 0


def test_loss_duplicates_and_fraction() -> None:
    tracker = SequenceTracker(0)
    for seq in (0, 1, 2, 4, 5, 5, 8):  # 3, 6, 7 lost; 5 duplicated
        tracker.update(seq)
    assert tracker.expected == 8  # base 1 (0 was on probation) .. 8
    assert tracker.received == 6  # 1, 2, 4, 5, 5, 8
    assert tracker.lost == 2  # A.3: expected - received, so the duplicate offsets one loss
    assert tracker.interval_fraction_lost() == 64  # 2 of 8, in 1/256
    assert tracker.interval_fraction_lost() == 0


def test_reordered_packet_is_counted_not_max() -> None:
    tracker = SequenceTracker(10)
    for seq in (10, 11, 12, 14, 13):
        assert tracker.update(seq) or seq == 10
    assert tracker.max_seq == 14


def test_big_jump_needs_two_in_a_row() -> None:
    tracker = SequenceTracker(10)
    for seq in (10, 11, 12):
        tracker.update(seq)
    assert tracker.update(40000) is False  # bad_seq remembered
    assert tracker.update(40001) is True  # sequential: the source restarted
    assert tracker.base_seq == 40001
    assert tracker.received == 1


def test_reception_stats_report_block_and_jitter() -> None:
    stats = ReceptionStats(0x42, 1000)
    arrival = 10.0
    for index in range(50):
        # Every packet 2 ms late against a 20 ms clock, alternately: jitter settles near 16.
        late = 0.002 if index % 2 else 0.0
        stats.on_rtp(1000 + index, 160 * index, arrival + 0.02 * index + late)
    sr = SenderReport(0x42, SenderInfo(0x1122334455667788, 0, 0, 0))
    stats.on_sender_report(sr, 11.0)
    block = stats.report_block(11.5)
    assert block.ssrc == 0x42
    assert block.highest_sequence == 1049
    assert block.cumulative_lost == 0
    assert 8 <= block.jitter <= 16
    assert block.lsr == 0x33445566
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s


# -- properties --------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
padding = st.integers(1, 255).flatmap(
    lambda n: st.binary(min_size=n - 1, max_size=n - 1).map(lambda b: b + bytes((n,)))
)


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    extension = draw(
        st.none()
        | st.builds(
            RtpExtension,
            st.integers(0, 0xFFFF),
            st.integers(0, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
        )
    )
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=200)),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(u32, max_size=15))),
        extension=extension,
        padding=draw(st.just(b"") | padding),
    )


@given(rtp_packets())
def test_rtp_build_parse_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data


@given(st.binary(max_size=120))
def test_rtp_garbage_raises_only_malformed_rtp(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except MalformedRtp:
        return
    assert bytes(packet) == data  # whatever parses, round-trips exactly


@given(st.binary(min_size=12, max_size=120))
def test_rtp_mutated_version_2_round_trips_or_raises(data: bytes) -> None:
    data = bytes((0x80 | data[0] & 0x3F,)) + data[1:]
    try:
        packet = RtpPacket.parse(data)
    except MalformedRtp:
        return
    assert bytes(packet) == data


report_blocks = st.builds(
    ReportBlock,
    u32,
    st.integers(0, 255),
    st.integers(-(2**23), 2**23 - 1),
    u32,
    u32,
    u32,
    u32,
)
sdes_items = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=30)), max_size=4).map(tuple)
words = st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))
rtcp_packets = st.one_of(
    st.builds(
        SenderReport,
        u32,
        st.builds(SenderInfo, st.integers(0, 2**64 - 1), u32, u32, u32),
        st.lists(report_blocks, max_size=3).map(tuple),
        words,
    ),
    st.builds(ReceiverReport, u32, st.lists(report_blocks, max_size=3).map(tuple), words),
    st.builds(
        SourceDescription, st.lists(st.builds(SdesChunk, u32, sdes_items), max_size=3).map(tuple)
    ),
    st.builds(Bye, st.lists(u32, max_size=3).map(tuple), st.none() | st.binary(max_size=40)),
    st.builds(
        RtcpOther,
        st.integers(204, 223),  # RFC 5761 §4: RTCP types stay in 192..223
        st.integers(0, 31),
        words,
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_rtcp_build_parse_round_trip(packets: list[rtp.RtcpPacket]) -> None:
    data = rtp.build_compound(packets)
    parsed = rtp.parse_rtcp(data, strict=False)
    assert parsed == tuple(packets)
    assert rtp.build_compound(parsed) == data
    assert rtp.classify(data) is PacketKind.RTCP


@given(st.binary(max_size=120), st.booleans())
def test_rtcp_garbage_raises_only_malformed_rtp(data: bytes, strict: bool) -> None:
    with contextlib.suppress(MalformedRtp):
        rtp.parse_rtcp(data, strict=strict)


@given(st.lists(rtcp_packets, min_size=1, max_size=3), st.data())
def test_rtcp_corrupted_raises_only_malformed_rtp(
    packets: list[rtp.RtcpPacket], data: st.DataObject
) -> None:
    wire = bytearray(rtp.build_compound(packets))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(MalformedRtp):
        rtp.parse_rtcp(bytes(wire[:cut]), strict=False)


@given(st.lists(st.integers(0, 0xFFFF), max_size=200), st.integers(0, 0xFFFF))
def test_sequence_tracker_never_fails_and_stays_consistent(seqs: list[int], first: int) -> None:
    tracker = SequenceTracker(first)
    for seq in seqs:
        tracker.update(seq)
        assert 0 <= tracker.max_seq <= 0xFFFF
        assert tracker.cycles % 65536 == 0
        assert 0 <= tracker.interval_fraction_lost() <= 255
        ReportBlock(1, 0, tracker.lost, tracker.extended_max, 0, 0, 0)


@given(st.binary(max_size=40))
def test_classify_raises_only_malformed_rtp(data: bytes) -> None:
    try:
        kind = rtp.classify(data)
    except MalformedRtp:
        return
    assert isinstance(kind, PacketKind)
