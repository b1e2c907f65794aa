"""RTP and RTCP framing (RFC 3550), demultiplexing (RFC 5761, RFC 7983) and sequence tracking.

Sans-IO: bytes in, values out, values in, bytes out.  Nothing here encrypts;
SRTP (RFC 3711) is applied around these bytes by the caller.

* :class:`RtpPacket` parses and builds the fixed header of RFC 3550 §5.1, the
  CSRC list, the header extension of §5.3.1 and padding.  ``bytes(RtpPacket.parse(b))
  == b`` for every *b* that parses: nothing is normalised away.
* :func:`parse_rtcp` splits a compound packet (RFC 3550 §6.1) into its packets,
  each with its common header (§6.4): SR and RR with report blocks (§6.4.1,
  §6.4.2), SDES (§6.5), BYE (§6.6); any other type is kept as
  :class:`RtcpOther`.  :func:`build_compound` writes SR/RR + SDES CNAME.
* :func:`classify` tells RTP from RTCP on one port (RFC 5761 §4) and both from
  STUN and DTLS (RFC 7983 §7).
* :class:`SequenceTracker` is RFC 3550 Appendix A.1 ``update_seq``;
  :class:`ReceptionStats` adds loss (A.3) and jitter (A.8) for report blocks.

Every malformed input raises :class:`~secconf.core.errors.MalformedRtp`;
building from out-of-range values raises it too.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import MalformedRtp

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "Bye",
    "PacketKind",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpHeader",
    "RtcpOther",
    "RtcpPacket",
    "RtpExtension",
    "RtpPacket",
    "SdesChunk",
    "SenderInfo",
    "SenderReport",
    "SequenceTracker",
    "SourceDescription",
    "build_compound",
    "classify",
    "is_rtcp",
    "ntp_to_compact",
    "parse_rtcp",
    "parse_rtcp_headers",
    "rtp_ssrc",
]

RTP_VERSION = 2
_FIXED = struct.Struct("!BBHII")  # RFC 3550 §5.1: V/P/X/CC, M/PT, seq, timestamp, SSRC
_EXT = struct.Struct("!HH")  # §5.3.1: defined by profile, length in 32-bit words
_RTCP = struct.Struct("!BBH")  # §6.4.1: V/P/RC, PT, length in 32-bit words minus one
_WORD = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!QIII")  # NTP timestamp, RTP timestamp, packets, octets
_REPORT = struct.Struct("!IB3sIIII")  # SSRC, fraction, cumulative (signed 24), seq, jitter, ...

#: RTCP packet types (RFC 3550 §12.1).
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
#: SDES item type of the canonical name (RFC 3550 §6.5.1).
SDES_CNAME = 1

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise MalformedRtp(message)


def _in_range(value: int, bits: int, name: str) -> None:
    _check(0 <= value < 1 << bits, f"{name} {value} does not fit in {bits} bits")


def _check_padding(padding: bytes) -> None:
    # RFC 3550 §5.1: the last padding octet counts the padding octets, itself included.
    if padding:
        _check(padding[-1] == len(padding), "padding count octet does not match padding length")


# -- RTP ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """An RTP header extension (RFC 3550 §5.3.1): a 16-bit profile field and whole words.

    RFC 8285 one-byte (``0xBEDE``) and two-byte (``0x100x``) elements live inside
    *data*; this class does not split them.
    """

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _in_range(self.profile, 16, "extension profile")
        _check(len(self.data) % 4 == 0, "extension data is not a whole number of 32-bit words")
        _check(len(self.data) // 4 <= _U16, "extension data is longer than 65535 words")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    *padding* holds the padding octets exactly as sent, the count octet last;
    empty means the P bit is clear.  The payload never includes padding.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = field(default=b"", repr=False)
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _in_range(self.payload_type, 7, "payload type")
        _in_range(self.sequence_number, 16, "sequence number")
        _in_range(self.timestamp, 32, "timestamp")
        _in_range(self.ssrc, 32, "SSRC")
        _check(len(self.csrcs) <= 15, "more than 15 CSRCs")
        for csrc in self.csrcs:
            _in_range(csrc, 32, "CSRC")
        _check(len(self.padding) <= 255, "padding longer than 255 octets")
        _check_padding(self.padding)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet (RFC 3550 §5.1, §5.3.1); the inverse of ``bytes()``."""
        data = bytes(data)
        _check(len(data) >= _FIXED.size, f"RTP packet of {len(data)} bytes is shorter than 12")
        first, second, seq, timestamp, ssrc = _FIXED.unpack_from(data)
        _check(first >> 6 == RTP_VERSION, f"RTP version {first >> 6} is not 2")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F
        offset = _FIXED.size + 4 * csrc_count
        _check(len(data) >= offset, "RTP packet is shorter than its CSRC list")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, _FIXED.size)
        extension = None
        if has_extension:
            _check(len(data) >= offset + _EXT.size, "RTP packet is shorter than its extension")
            profile, words = _EXT.unpack_from(data, offset)
            offset += _EXT.size
            _check(len(data) >= offset + 4 * words, "RTP extension runs past the packet")
            extension = RtpExtension(profile, data[offset : offset + 4 * words])
            offset += 4 * words
        end = len(data)
        padding = b""
        if has_padding:
            # The count octet includes itself, so 0 is invalid (RFC 3550 §5.1, A.1 checks).
            _check(end > offset, "RTP padding bit set but no padding count octet")
            count = data[-1]
            _check(0 < count <= end - offset, f"RTP padding count {count} is invalid")
            end -= count
            padding = data[end:]
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        first = RTP_VERSION << 6 | len(self.csrcs)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _FIXED.pack(first, second, self.sequence_number, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
        ]
        if self.extension is not None:
            parts.append(_EXT.pack(self.extension.profile, len(self.extension.data) // 4))
            parts.append(self.extension.data)
        parts += [self.payload, self.padding]
        return b"".join(parts)


def rtp_ssrc(data: bytes) -> int:
    """The SSRC of an RTP packet (bytes 8..11), or of an RTCP packet's sender (bytes 4..7).

    Readable on SRTP and SRTCP too: RFC 3711 §3.1, §3.4 leave these headers in clear.
    """
    if len(data) >= 2 and is_rtcp(data):
        _check(len(data) >= 8, "RTCP packet shorter than 8 bytes")
        return int.from_bytes(data[4:8], "big")
    _check(len(data) >= _FIXED.size, "RTP packet shorter than 12 bytes")
    return int.from_bytes(data[8:12], "big")


# -- demultiplexing -------------------------------------------------------------


class PacketKind(enum.Enum):
    """What arrived on a multiplexed media port (RFC 7983 §7, RFC 5761 §4)."""

    STUN = "stun"
    DTLS = "dtls"
    RTP = "rtp"
    RTCP = "rtcp"


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: with the marker bit masked, payload types 64..95 are RTCP (PT 192..223)."""
    _check(len(data) >= 2, "packet shorter than 2 bytes")
    return 64 <= data[1] & 0x7F <= 95


def classify(data: bytes) -> PacketKind:
    """Tell STUN, DTLS, RTP and RTCP apart by the first two bytes (RFC 7983 §7, RFC 5761 §4).

    Anything else (ZRTP, TURN channels, QUIC, junk) raises :class:`MalformedRtp`.
    """
    _check(len(data) >= 2, "packet shorter than 2 bytes")
    first = data[0]
    if first <= 3:
        return PacketKind.STUN
    if 20 <= first <= 63:
        return PacketKind.DTLS
    if 128 <= first <= 191:
        return PacketKind.RTCP if is_rtcp(data) else PacketKind.RTP
    raise MalformedRtp(f"first byte {first} is neither STUN, DTLS, RTP nor RTCP")


# -- RTCP -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtcpHeader:
    """The RTCP common header (RFC 3550 §6.4.1): count is RC, SC or a subtype."""

    padding: bool
    count: int
    packet_type: int
    length: int  # in 32-bit words minus one, as on the wire

    @property
    def size(self) -> int:
        """Length of the whole packet in bytes."""
        return 4 * (self.length + 1)


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1).

    *cumulative_lost* is signed (24 bits): duplicates can make it negative.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int  # extended highest sequence number received
    jitter: int
    lsr: int  # middle 32 bits of the NTP timestamp of the last SR
    dlsr: int  # delay since that SR, 1/65536 s

    def __post_init__(self) -> None:
        _in_range(self.ssrc, 32, "report SSRC")
        _in_range(self.fraction_lost, 8, "fraction lost")
        _check(
            -(1 << 23) <= self.cumulative_lost < 1 << 23, "cumulative lost out of signed 24 bits"
        )
        for value, name in (
            (self.highest_sequence, "extended highest sequence"),
            (self.jitter, "jitter"),
            (self.lsr, "LSR"),
            (self.dlsr, "DLSR"),
        ):
            _in_range(value, 32, name)

    @classmethod
    def _parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost, seq, jitter, lsr, dlsr = _REPORT.unpack_from(data, offset)
        return cls(ssrc, fraction, int.from_bytes(lost, "big", signed=True), seq, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = self.cumulative_lost.to_bytes(3, "big", signed=True)
        return _REPORT.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """The sender information of an SR (RFC 3550 §6.4.1); *ntp_timestamp* is the 64-bit form."""

    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int

    def __post_init__(self) -> None:
        _in_range(self.ntp_timestamp, 64, "NTP timestamp")
        _in_range(self.rtp_timestamp, 32, "RTP timestamp")
        _in_range(self.packet_count, 32, "sender's packet count")
        _in_range(self.octet_count, 32, "sender's octet count")


def _check_reports(reports: tuple[ReportBlock, ...], extension: bytes) -> None:
    _check(len(reports) <= 31, "more than 31 report blocks")
    _check(len(extension) % 4 == 0, "profile-specific extension is not whole words")


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR, packet type 200 (RFC 3550 §6.4.1)."""

    ssrc: int
    sender_info: SenderInfo
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension (§6.4.1)
    padding: bytes = field(default=b"", repr=False)

    packet_type = RTCP_SR

    def __post_init__(self) -> None:
        _in_range(self.ssrc, 32, "SSRC")
        _check_reports(self.reports, self.extension)
        _check_padding(self.padding)

    def _body(self) -> tuple[int, bytes]:
        info = self.sender_info
        head = _WORD.pack(self.ssrc) + _SENDER_INFO.pack(
            info.ntp_timestamp, info.rtp_timestamp, info.packet_count, info.octet_count
        )
        return len(self.reports), head + b"".join(map(bytes, self.reports)) + self.extension


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR, packet type 201 (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""
    padding: bytes = field(default=b"", repr=False)

    packet_type = RTCP_RR

    def __post_init__(self) -> None:
        _in_range(self.ssrc, 32, "SSRC")
        _check_reports(self.reports, self.extension)
        _check_padding(self.padding)

    def _body(self) -> tuple[int, bytes]:
        return len(self.reports), (
            _WORD.pack(self.ssrc) + b"".join(map(bytes, self.reports)) + self.extension
        )


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk (RFC 3550 §6.5): an SSRC/CSRC and its (type, value) items."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        _in_range(self.ssrc, 32, "SDES SSRC")
        for item_type, value in self.items:
            _check(1 <= item_type <= 255, f"SDES item type {item_type} is not 1..255")
            _check(len(value) <= 255, "SDES item longer than 255 octets")

    @property
    def cname(self) -> bytes | None:
        """The CNAME item (RFC 3550 §6.5.1), if the chunk has one."""
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value
        return None

    def __bytes__(self) -> bytes:
        out = bytearray(_WORD.pack(self.ssrc))
        for item_type, value in self.items:
            out += bytes((item_type, len(value))) + value
        # §6.5: the item list ends with one or more null octets, up to a 32-bit boundary.
        out += b"\0" * (4 - len(out) % 4)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES, packet type 202 (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...] = ()
    padding: bytes = field(default=b"", repr=False)

    packet_type = RTCP_SDES

    def __post_init__(self) -> None:
        _check(len(self.chunks) <= 31, "more than 31 SDES chunks")
        _check_padding(self.padding)

    def _body(self) -> tuple[int, bytes]:
        return len(self.chunks), b"".join(map(bytes, self.chunks))


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE, packet type 203 (RFC 3550 §6.6), with the optional reason."""

    ssrcs: tuple[int, ...] = ()
    reason: bytes | None = None
    padding: bytes = field(default=b"", repr=False)

    packet_type = RTCP_BYE

    def __post_init__(self) -> None:
        _check(len(self.ssrcs) <= 31, "more than 31 SSRCs in BYE")
        for ssrc in self.ssrcs:
            _in_range(ssrc, 32, "BYE SSRC")
        _check(self.reason is None or len(self.reason) <= 255, "BYE reason over 255 octets")
        _check_padding(self.padding)

    def _body(self) -> tuple[int, bytes]:
        body = b"".join(_WORD.pack(ssrc) for ssrc in self.ssrcs)
        if self.reason is not None:
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + b"\0" * (-len(reason) % 4)
        return len(self.ssrcs), body


@dataclass(frozen=True, slots=True)
class RtcpOther:
    """Any other RTCP packet (APP, RTPFB, PSFB, XR...): common header fields and raw body."""

    packet_type: int
    count: int
    body: bytes = field(default=b"", repr=False)
    padding: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _in_range(self.packet_type, 8, "RTCP packet type")
        _in_range(self.count, 5, "RTCP count")
        _check(len(self.body) % 4 == 0, "RTCP body is not whole words")
        _check_padding(self.padding)

    def _body(self) -> tuple[int, bytes]:
        return self.count, self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpOther


def _serialise(packet: RtcpPacket) -> bytes:
    count, body = packet._body()
    total = len(body) + len(packet.padding)
    _check(total % 4 == 0, "RTCP packet with padding is not whole words")
    words = total // 4
    _check(words <= _U16, "RTCP packet longer than 65536 words")
    first = RTP_VERSION << 6 | (0x20 if packet.padding else 0) | count
    return _RTCP.pack(first, packet.packet_type, words) + body + packet.padding


def parse_rtcp_headers(data: bytes) -> Iterator[tuple[RtcpHeader, bytes]]:
    """Walk a compound packet: each packet's common header and its bytes after the header.

    Padding, when the P bit is set, is still at the end of the returned bytes.
    Checks version 2 and that the lengths add up to the datagram (RFC 3550 A.2).
    """
    data = bytes(data)
    offset = 0
    _check(len(data) >= _RTCP.size, "RTCP packet shorter than 4 bytes")
    while offset < len(data):
        _check(len(data) - offset >= _RTCP.size, "trailing bytes after the last RTCP packet")
        first, packet_type, length = _RTCP.unpack_from(data, offset)
        _check(first >> 6 == RTP_VERSION, f"RTCP version {first >> 6} is not 2")
        header = RtcpHeader(bool(first & 0x20), first & 0x1F, packet_type, length)
        end = offset + header.size
        _check(end <= len(data), "RTCP length field runs past the datagram")
        yield header, data[offset + _RTCP.size : end]
        offset = end


def _split_padding(header: RtcpHeader, body: bytes) -> tuple[bytes, bytes]:
    if not header.padding:
        return body, b""
    _check(len(body) > 0, "RTCP padding bit set on an empty packet")
    count = body[-1]
    _check(0 < count <= len(body), f"RTCP padding count {count} is invalid")
    return body[:-count], body[-count:]


def _parse_reports(body: bytes, offset: int, count: int) -> tuple[tuple[ReportBlock, ...], bytes]:
    end = offset + count * _REPORT.size
    _check(len(body) >= end, "RTCP report blocks run past the packet")
    reports = tuple(ReportBlock._parse(body, offset + i * _REPORT.size) for i in range(count))
    extension = body[end:]
    _check(len(extension) % 4 == 0, "profile-specific extension is not whole words")
    return reports, extension


def _parse_sdes(body: bytes, count: int) -> tuple[SdesChunk, ...]:
    chunks = []
    offset = 0
    for _ in range(count):
        _check(len(body) - offset >= 4, "SDES chunk runs past the packet")
        (ssrc,) = _WORD.unpack_from(body, offset)
        offset += 4
        items = []
        while True:
            _check(offset < len(body), "SDES item list is not terminated")
            item_type = body[offset]
            if item_type == 0:  # end of list; nulls pad to the next 32-bit boundary
                offset += 1
                offset += -offset % 4
                _check(offset <= len(body), "SDES chunk padding runs past the packet")
                break
            _check(offset + 2 <= len(body), "SDES item header runs past the packet")
            length = body[offset + 1]
            _check(offset + 2 + length <= len(body), "SDES item runs past the packet")
            items.append((item_type, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    _check(offset == len(body), "bytes after the last SDES chunk")
    return tuple(chunks)


def _parse_bye(body: bytes, count: int) -> tuple[tuple[int, ...], bytes | None]:
    _check(len(body) >= 4 * count, "BYE SSRC list runs past the packet")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    rest = body[4 * count :]
    if not rest:
        return tuple(ssrcs), None
    length = rest[0]
    _check(1 + length <= len(rest), "BYE reason runs past the packet")
    return tuple(ssrcs), rest[1 : 1 + length]


def _parse_one(header: RtcpHeader, raw: bytes) -> RtcpPacket:
    body, padding = _split_padding(header, raw)
    count = header.count
    if header.packet_type == RTCP_SR:
        _check(len(body) >= 4 + _SENDER_INFO.size, "SR shorter than its sender info")
        (ssrc,) = _WORD.unpack_from(body)
        info = SenderInfo(*_SENDER_INFO.unpack_from(body, 4))
        reports, extension = _parse_reports(body, 4 + _SENDER_INFO.size, count)
        return SenderReport(ssrc, info, reports, extension, padding)
    if header.packet_type == RTCP_RR:
        _check(len(body) >= 4, "RR shorter than its SSRC")
        (ssrc,) = _WORD.unpack_from(body)
        reports, extension = _parse_reports(body, 4, count)
        return ReceiverReport(ssrc, reports, extension, padding)
    if header.packet_type == RTCP_SDES:
        return SourceDescription(_parse_sdes(body, count), padding)
    if header.packet_type == RTCP_BYE:
        ssrcs, reason = _parse_bye(body, count)
        return Bye(ssrcs, reason, padding)
    _check(len(body) % 4 == 0, "RTCP body with padding removed is not whole words")
    return RtcpOther(header.packet_type, count, body, padding)


def parse_rtcp(data: bytes, *, strict: bool = True) -> tuple[RtcpPacket, ...]:
    """Parse an RTCP compound packet (RFC 3550 §6.1, §6.4) into its packets.

    With *strict* (the default) the RFC 3550 Appendix A.2 validity checks apply
    as well: the first packet is an SR or RR and only the last one is padded.
    ``strict=False`` accepts reduced-size RTCP (RFC 5506), e.g. a lone feedback packet.
    """
    walked = list(parse_rtcp_headers(data))
    if strict:
        first = walked[0][0]
        _check(first.packet_type in (RTCP_SR, RTCP_RR), "compound RTCP does not start with SR/RR")
        _check(not any(h.padding for h, _ in walked[:-1]), "padding before the last RTCP packet")
    return tuple(_parse_one(header, raw) for header, raw in walked)


def build_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate RTCP packets into one compound packet (RFC 3550 §6.1)."""
    out = b"".join(_serialise(packet) for packet in packets)
    _check(bool(out), "empty compound RTCP packet")
    return out


def build_report(
    ssrc: int,
    cname: bytes,
    reports: Iterable[ReportBlock] = (),
    sender_info: SenderInfo | None = None,
) -> bytes:
    """SR (with *sender_info*) or RR, then SDES CNAME: the minimal compound of RFC 3550 §6.1."""
    blocks = tuple(reports)
    first: RtcpPacket = (
        ReceiverReport(ssrc, blocks)
        if sender_info is None
        else SenderReport(ssrc, sender_info, blocks)
    )
    sdes = SourceDescription((SdesChunk(ssrc, ((SDES_CNAME, cname),)),))
    return build_compound((first, sdes))


__all__ += ["build_report"]


def ntp_to_compact(ntp_timestamp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: the LSR field (RFC 3550 §6.4.1)."""
    return (ntp_timestamp >> 16) & _U32


# -- sequence numbers and reception statistics (RFC 3550 Appendix A) -------------

#: Constants of RFC 3550 Appendix A.1.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_SEQ_MOD = 1 << 16


class SequenceTracker:
    """RFC 3550 Appendix A.1 ``update_seq`` for one source, probation included.

    Create it at the first packet of a source; that packet is passed to
    :meth:`update` like any other.  ``update`` returns whether the packet counts
    as valid.  Differences from the C code: ``seq == max_seq + 1`` is computed
    modulo 2^16 (the C code misses a source whose probation straddles 65535 -> 0).
    """

    __slots__ = (
        "bad_seq",
        "base_seq",
        "cycles",
        "expected_prior",
        "max_seq",
        "probation",
        "received",
        "received_prior",
    )

    def __init__(self, seq: int, probation: int = MIN_SEQUENTIAL) -> None:
        _in_range(seq, 16, "sequence number")
        self._init(seq)
        # A.1: "s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL" before the first update.
        self.max_seq = (seq - 1) % _SEQ_MOD
        self.probation = probation

    def _init(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, seq: int) -> bool:
        """Account for a packet with sequence number *seq*; False if it is not (yet) valid."""
        _in_range(seq, 16, "sequence number")
        udelta = (seq - self.max_seq) % _SEQ_MOD
        if self.probation:
            if seq == (self.max_seq + 1) % _SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:  # in order, with permissible gap: wrapped
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            # A very large jump: a restarted source, if the next packet follows this one.
            if seq == self.bad_seq:
                self._init(seq)
            else:
                self.bad_seq = (seq + 1) % _SEQ_MOD
                return False
        # else: duplicate or reordered packet, counted but max_seq unchanged
        self.received += 1
        return True

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (cycles + max_seq), 32 bits on the wire."""
        return (self.cycles + self.max_seq) & _U32

    @property
    def roll_over_count(self) -> int:
        """The SRTP ROC this receiver infers (RFC 3711 §3.3.1): wraps of the 16-bit seq."""
        return self.cycles >> 16

    @property
    def expected(self) -> int:
        """Packets expected since the base sequence number (A.3)."""
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3), clamped to the signed 24-bit field."""
        return max(-(1 << 23), min(self.expected - self.received, (1 << 23) - 1))

    def interval_fraction_lost(self) -> int:
        """Fraction lost since the previous call, in 1/256 (A.3); starts a new interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return min((lost_interval << 8) // expected_interval, 255)


class ReceptionStats:
    """What a receiver keeps per source for its report blocks (RFC 3550 A.1, A.3, A.8, §6.4.1).

    Times are passed in (seconds, any monotonic origin): the core reads no clock.
    """

    __slots__ = ("_last_sr", "_last_sr_at", "_transit", "clock_rate", "jitter", "seq", "ssrc")

    def __init__(self, ssrc: int, first_seq: int, clock_rate: int = 8000) -> None:
        _in_range(ssrc, 32, "SSRC")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.seq = SequenceTracker(first_seq)
        self.jitter = 0.0
        self._transit: int | None = None
        self._last_sr = 0
        self._last_sr_at: float | None = None

    def on_rtp(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Account for one RTP packet; returns :meth:`SequenceTracker.update`'s verdict."""
        valid = self.seq.update(seq)
        if valid:
            # A.8: interarrival jitter, in timestamp units, smoothed by 1/16.
            arrival_ts = int(arrival * self.clock_rate)
            transit = (arrival_ts - timestamp) & _U32
            if self._transit is not None:
                delta = abs(((transit - self._transit + (1 << 31)) & _U32) - (1 << 31))
                self.jitter += (delta - self.jitter) / 16
            self._transit = transit
        return valid

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        """Remember an SR from this source for the LSR/DLSR fields."""
        self._last_sr = ntp_to_compact(report.sender_info.ntp_timestamp)
        self._last_sr_at = arrival

    def report_block(self, now: float) -> ReportBlock:
        """A report block for this source at time *now*; starts a new loss interval (A.3)."""
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = min(int((now - self._last_sr_at) * 65536), _U32) if now > self._last_sr_at else 0
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=self.seq.interval_fraction_lost(),
            cumulative_lost=self.seq.lost,
            highest_sequence=self.seq.extended_max,
            jitter=min(int(self.jitter), _U32),
            lsr=self._last_sr,
            dlsr=dlsr,
        )
