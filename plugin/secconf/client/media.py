"""An SRTP endpoint for the participant agent: one UDP port, RTP and RTCP multiplexed.

:class:`SrtpEndpoint` sends and receives SRTP (RFC 3711) and SRTCP with
pylibsrtp, on one port (RFC 5761 rtcp-mux).  Framing, sequence tracking and
report blocks come from the sans-IO :mod:`secconf.core.rtp`.

Keys and epochs.  pylibsrtp has no MKI (RFC 3711 §3.1), so a key epoch is a
:class:`pylibsrtp.Session` of its own.  :meth:`SrtpEndpoint.rekey` swaps the
sending session at once and keeps the previous receiving session for a grace
window, during which an incoming packet that fails under the current key is
tried under the previous one (DESIGN.md §2).  After the window the previous
session is dropped and its packets fail authentication.

Receive path.  CPython 3.11's selector event loop reads every datagram with
``sock.recvfrom(transport.max_size)``, a 256 KiB request: each packet costs a
fresh 256 KiB allocation (a memory map and unmap) before it is shrunk.  This
client keeps the stock datagram protocol but lowers the transport's
``max_size`` to :data:`RECV_SIZE` when the transport has that (private)
attribute; the media edge will use its own receive loop.  See
``docs/media-client.md``.

Keys never appear in ``repr()``, logs or exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pylibsrtp

from secconf.core import rtp
from secconf.core.errors import MalformedRtp
from secconf.core.rtp import PacketKind, ReceptionStats, RtpPacket, SenderInfo
from secconf.core.sdes import CryptoSuite
from secconf.srtp import AUTH_ERRORS, RECV_SIZE, REPLAY_ERRORS, srtp_session, supported_suite

__all__ = [
    "KeyMaterial",
    "ReceivedPacket",
    "SourceStats",
    "SrtpEndpoint",
    "inbound_session",
    "opened",
    "opens",
]

log = logging.getLogger(__name__)

#: (suite, master key, master salt); the suite as a :class:`CryptoSuite` or its name.
KeyMaterial = tuple[CryptoSuite | str, bytes, bytes]

_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (RFC 5905 §6)
_MAX_SOURCES = 256  # per-SSRC stats kept; packets of further sources count in totals only


def inbound_session(material: KeyMaterial) -> pylibsrtp.Session:
    """A receiving pylibsrtp session for *material* = (suite, master key, master salt)."""
    suite, key, salt = material
    return srtp_session(suite, key, salt, inbound=True)


#: Wraps of the 16-bit sequence number a sender may have made before a capture starts that
#: :func:`opened` still finds: 3 wraps are 196,608 packets, over an hour of 20 ms audio.
MAX_ROC_GUESS = 3
_STEP = 16384  # sequence steps a receiver takes as forward (< 2**15, RFC 3711 §3.3.1)


def _rtp(seq: int, ssrc: bytes) -> bytes:
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + bytes(4) + ssrc + b"\0"


def _at_roc(material: KeyMaterial, ssrc: bytes, first_seq: int, roc: int) -> pylibsrtp.Session:
    """A receiving session whose next expected packet is *first_seq* under rollover *roc*.

    libsrtp starts a receiver at ROC 0 and learns wraps only from the sequence numbers it
    sees (RFC 3711 §3.3.1), so the session is walked there with packets of its own: protected
    under the same key and SSRC by a sending session, in steps it takes as forward, ending
    just below *first_seq* + 65536 * *roc*.
    """
    receiver = inbound_session(material)
    target = roc * 65536 + first_seq - 1
    if roc == 0 or target < 0:
        return receiver
    suite, key, salt = material
    sender = srtp_session(suite, key, salt, inbound=False)
    index = target - -(-(target - 65535) // _STEP) * _STEP  # the first step under ROC 0
    while True:
        receiver.unprotect(sender.protect(_rtp(index % 65536, ssrc)))
        if index == target:
            return receiver
        index = min(index + _STEP, target)


def opened(material: KeyMaterial, packets: Sequence[bytes]) -> list[bool]:
    """Which of *packets* (SRTP of one sender and SRTCP, in arrival order) *material* opens.

    A capture that starts in the middle of a stream does not know how often the sender's
    sequence number has wrapped (its rollover counter, RFC 3711 §3.3.1), and a fresh libsrtp
    receiver assumes none: after a wrap it would refuse every packet, whatever the key. So
    the packets go through one receiver per guess 0..:data:`MAX_ROC_GUESS` (each brought to
    its rollover count by :func:`_at_roc`); a packet is opened if one of them opens it.
    SRTCP carries its own index (RFC 3711 §3.4) and needs no guess.
    """
    rtp = [p for p in packets if len(p) >= 12 and not 192 <= p[1] <= 223]
    if not rtp:
        return [opens(inbound_session(material), p) for p in packets]
    ssrc, first_seq = rtp[0][8:12], int.from_bytes(rtp[0][2:4], "big")
    receivers = [_at_roc(material, ssrc, first_seq, roc) for roc in range(MAX_ROC_GUESS + 1)]
    return [any(opens(receiver, packet) for receiver in receivers) for packet in packets]


def opens(session: pylibsrtp.Session, packet: bytes) -> bool:
    """True if *session* authenticates and decrypts *packet* (SRTP, or SRTCP by RFC 5761 §4)."""
    rtcp = len(packet) > 1 and 192 <= packet[1] <= 223
    try:
        session.unprotect_rtcp(packet) if rtcp else session.unprotect(packet)
    except (pylibsrtp.Error, ValueError):
        return False
    return True


class _Epoch:
    """One key epoch in one direction: a pylibsrtp session.  Holds no key copy of its own."""

    __slots__ = ("number", "session", "suite")

    def __init__(self, number: int, material: KeyMaterial, *, inbound: bool) -> None:
        suite = supported_suite(material[0])
        self.number = number
        self.suite = suite
        # A key or salt of the wrong length: ValueError naming the lengths, not the bytes.
        self.session = srtp_session(suite, material[1], material[2], inbound=inbound)

    def __repr__(self) -> str:
        return f"_Epoch({self.number}, {self.suite.name})"


@dataclass(slots=True)
class SourceStats:
    """What arrived from one SSRC (RTP and RTCP)."""

    ssrc: int
    packets: int = 0  # RTP packets decrypted and delivered
    octets: int = 0  # their payload octets
    auth_failures: int = 0  # SRTP packets that authenticated under no live epoch
    replays: int = 0  # rejected by the replay check (RFC 3711 §3.3.2)
    old_epoch: int = 0  # decrypted with the previous epoch's key during a grace window
    malformed: int = 0  # decrypted but not valid RTP/RTCP
    rtcp_packets: int = 0  # SRTCP compounds decrypted
    rtcp_auth_failures: int = 0
    highest_seq: int | None = None  # extended highest sequence number (RFC 3550 A.1)
    last_rtcp: tuple[rtp.RtcpPacket, ...] = ()
    reception: ReceptionStats | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """One decrypted RTP packet, with the key epoch it was decrypted under."""

    packet: RtpPacket
    source: tuple[str, int]
    arrival: float  # loop.time()
    epoch: int
    old_epoch: bool


@dataclass(slots=True)
class _SendState:
    sequence: int
    timestamp: int
    packets: int = 0
    octets: int = 0


class _KeyEpochs:
    """The live key epochs of one endpoint: one sending, and up to two receiving.

    The receiving side is the current epoch plus, for a grace window after a
    rekey, the one it replaced (DESIGN.md §2).  Kept apart from the endpoint so
    that the rule "at most two receiving epochs, the older one only until its
    timer fires" lives in one place, next to the only code that unprotects.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.tx: _Epoch | None = None
        self.rx: _Epoch | None = None
        self.rx_previous: _Epoch | None = None
        self._grace_handle: asyncio.TimerHandle | None = None
        self._counter = 0

    def start(self, tx: KeyMaterial, rx: KeyMaterial) -> None:
        """Use these keys from now on, dropping every earlier epoch."""
        tx_epoch = _Epoch(self._next(), tx, inbound=False)
        rx_epoch = _Epoch(self._next(), rx, inbound=True)
        self.tx, self.rx = tx_epoch, rx_epoch
        self.drop_previous()

    def rekey(self, tx: KeyMaterial | None, rx: KeyMaterial | None, grace: float) -> None:
        """New sending and/or receiving epoch; the replaced receiving one lives *grace* s."""
        if self.tx is None or self.rx is None:
            raise RuntimeError("set_keys() before rekey()")
        new_tx = _Epoch(self._next(), tx, inbound=False) if tx is not None else None
        new_rx = _Epoch(self._next(), rx, inbound=True) if rx is not None else None
        if new_tx is not None:
            self.tx = new_tx
        if new_rx is not None:
            self.drop_previous()
            self.rx_previous, self.rx = self.rx, new_rx
            self._grace_handle = self._loop.call_later(grace, self.drop_previous)

    @property
    def rx_numbers(self) -> tuple[int, ...]:
        """Receiving epochs currently live, current first."""
        return tuple(e.number for e in (self.rx, self.rx_previous) if e is not None)

    def drop_previous(self) -> None:
        if self._grace_handle is not None:
            self._grace_handle.cancel()
            self._grace_handle = None
        self.rx_previous = None

    def close(self) -> None:
        self.drop_previous()
        self.tx = self.rx = None

    def unprotect(self, data: bytes, rtcp_packet: bool) -> tuple[bytes | None, _Epoch | None, str]:
        """Try the current epoch, then the previous one.  Returns (plain, epoch, failure)."""
        failures = []
        for epoch in (self.rx, self.rx_previous):
            if epoch is None:
                continue
            try:
                if rtcp_packet:
                    return epoch.session.unprotect_rtcp(data), epoch, ""
                return epoch.session.unprotect(data), epoch, ""
            except pylibsrtp.Error as exc:
                failures.append(str(exc))
            except ValueError:  # longer than pylibsrtp's 1500-byte buffer
                return None, None, "malformed"
        if any(reason in REPLAY_ERRORS for reason in failures):
            return None, None, "replay"
        if any(reason in AUTH_ERRORS for reason in failures):
            return None, None, "auth"
        return None, None, "malformed"

    def _next(self) -> int:
        self._counter += 1
        return self._counter


class _Reception:
    """The receive-side bookkeeping: counters per SSRC and in total, RFC 3550 reception state.

    Knows nothing of keys or sockets: the endpoint hands it each packet's
    outcome (decrypted RTP, an SRTCP compound, or why it failed), and it
    answers with the report blocks the endpoint's RTCP carries.
    """

    def __init__(self) -> None:
        self.sources: dict[int, SourceStats] = {}
        self.totals = SourceStats(ssrc=0)

    def source(self, ssrc: int) -> SourceStats:
        """The stats of *ssrc*; the totals once :data:`_MAX_SOURCES` are tracked."""
        stats = self.sources.get(ssrc)
        if stats is None:
            if len(self.sources) >= _MAX_SOURCES:
                return self.totals
            stats = self.sources[ssrc] = SourceStats(ssrc)
        return stats

    def count_failure(self, stats: SourceStats, failure: str, *, is_rtcp: bool) -> None:
        """Count a packet no live epoch opened (*failure* from :meth:`_KeyEpochs.unprotect`)."""
        for counter in {id(stats): stats, id(self.totals): self.totals}.values():
            if failure == "replay":
                counter.replays += 1
            elif failure == "auth" and is_rtcp:
                counter.rtcp_auth_failures += 1
            elif failure == "auth":
                counter.auth_failures += 1
            else:
                counter.malformed += 1

    def count_rtp(self, stats: SourceStats, packet: RtpPacket, *, old: bool, now: float) -> None:
        """Count a decrypted RTP packet and feed the source's sequence/jitter state."""
        stats.packets += 1
        stats.octets += len(packet.payload)
        if old:
            stats.old_epoch += 1
        if stats is not self.totals:
            self.totals.packets += 1
            self.totals.old_epoch += old
        if stats.reception is None:
            stats.reception = ReceptionStats(packet.ssrc, packet.sequence_number)
        stats.reception.on_rtp(packet.sequence_number, packet.timestamp, now)
        if stats.reception.seq.probation == 0:
            stats.highest_seq = stats.reception.seq.extended_max

    def count_rtcp(self, plain: bytes, stats: SourceStats, now: float) -> None:
        """Record a decrypted compound; an SR feeds its sender's LSR/DLSR state."""
        try:
            packets = rtp.parse_rtcp(plain, strict=False)
        except MalformedRtp:
            stats.malformed += 1
            return
        stats.rtcp_packets += 1
        stats.last_rtcp = packets
        for packet in packets:
            if isinstance(packet, rtp.SenderReport):
                source = self.sources.get(packet.ssrc)
                if source is not None and source.reception is not None:
                    source.reception.on_sender_report(packet, now)

    def report_blocks(self, now: float) -> list[rtp.ReportBlock]:
        """Report blocks for the sources heard (at most 31, RFC 3550 §6.4.1)."""
        return [
            stats.reception.report_block(now)
            for stats in list(self.sources.values())[:31]
            if stats.reception is not None and stats.packets
        ]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.endpoint: SrtpEndpoint | None = None  # set once the endpoint exists

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.endpoint is not None:
            self.endpoint._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the peer is not (yet) listening.
        log.debug("media socket error: %s", exc)


class SrtpEndpoint:
    """SRTP/SRTCP on one UDP port (rtcp-mux), for a participant or a test.

    Create with :meth:`open`; then :meth:`set_remote` and :meth:`set_keys`.
    """

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        *,
        ssrc: int,
        cname: bytes,
        queue_size: int,
        rtcp_interval: float | None,
        on_packet: Callable[[ReceivedPacket], None] | None,
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self.ssrc = ssrc  # used for RR when not sending, and for SDES/BYE
        self.cname = cname
        self.remote: tuple[str, int] | None = None
        self.on_packet = on_packet
        self.queue: asyncio.Queue[ReceivedPacket] | None = (
            asyncio.Queue(queue_size) if queue_size > 0 else None
        )
        self.queue_drops = 0
        self.foreign = 0  # STUN, DTLS or unclassifiable datagrams
        self.rtcp_sent = 0
        self._keys = _KeyEpochs(self._loop)
        self._reception = _Reception()
        self._send: dict[int, _SendState] = {}
        self._rtcp_interval = rtcp_interval
        self._rtcp_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        local_host: str,
        local_port: int = 0,
        *,
        ssrc: int | None = None,
        cname: bytes | None = None,
        queue_size: int = 4096,
        rtcp_interval: float | None = 5.0,
        on_packet: Callable[[ReceivedPacket], None] | None = None,
        timeout: float = 5.0,
    ) -> SrtpEndpoint:
        """Bind a UDP socket on *local_host*:*local_port* (0: any free port).

        *rtcp_interval* is the mean SRTCP report interval in seconds (RFC 3550
        §6.2 minimum 5 s; randomised 0.5..1.5x per §6.3.1); None sends reports
        only when :meth:`send_rtcp` is called.
        """
        loop = asyncio.get_running_loop()
        transport, protocol = await asyncio.wait_for(
            loop.create_datagram_endpoint(_Protocol, local_addr=(local_host, local_port)),
            timeout,
        )
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = RECV_SIZE  # type: ignore[attr-defined]
        endpoint = cls(
            transport,
            ssrc=secrets.randbits(32) if ssrc is None else ssrc,
            cname=cname if cname is not None else f"secconf-{secrets.token_hex(6)}".encode(),
            queue_size=queue_size,
            rtcp_interval=rtcp_interval,
            on_packet=on_packet,
        )
        protocol.endpoint = endpoint
        return endpoint

    # -- configuration ------------------------------------------------------------

    @property
    def stats(self) -> dict[int, SourceStats]:
        """What arrived, per SSRC (at most :data:`_MAX_SOURCES` of them)."""
        return self._reception.sources

    @property
    def totals(self) -> SourceStats:
        """What arrived from every source together (``ssrc`` 0)."""
        return self._reception.totals

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        name = self._transport.get_extra_info("sockname")
        return name[0], name[1]

    def set_remote(self, addr: tuple[str, int]) -> None:
        """Where RTP and RTCP go (one port, RFC 5761)."""
        self.remote = (addr[0], addr[1])

    def set_keys(self, tx: KeyMaterial, rx: KeyMaterial) -> None:
        """Start (or restart, dropping any previous epoch) with these sending and receiving keys.

        Raises :class:`UnsupportedCryptoSuite` for a suite pylibsrtp cannot do
        and :class:`ValueError` for key or salt of the wrong length.
        """
        self._keys.start(tx, rx)
        self._start_rtcp()

    def rekey(
        self,
        *,
        tx: KeyMaterial | None = None,
        rx: KeyMaterial | None = None,
        grace: float = 2.0,
    ) -> None:
        """Switch to a new key epoch.

        *tx*: sending switches now, the next packet is protected with it.
        *rx*: it becomes the current receiving key; the one it replaces is still
        tried for *grace* seconds, then dropped.  An epoch older than that one is
        dropped now: only two receiving epochs are ever live.
        """
        self._keys.rekey(tx, rx, grace)

    @property
    def rx_epochs(self) -> tuple[int, ...]:
        """Receiving epochs currently live, current first."""
        return self._keys.rx_numbers

    # -- sending ------------------------------------------------------------------

    def send_rtp(
        self,
        payload: bytes,
        ssrc: int,
        *,
        pt: int = 0,
        marker: bool = False,
        samples: int | None = None,
    ) -> RtpPacket:
        """Protect and send one RTP packet; sequence and timestamp run on per SSRC.

        The timestamp advances by *samples* afterwards (default: the payload
        length, right for PCMU/PCMA at one byte per sample).
        """
        tx = self._keys.tx
        if tx is None:
            raise RuntimeError("set_keys() before sending")
        if self.remote is None:
            raise RuntimeError("set_remote() before sending")
        state = self._send.get(ssrc)
        if state is None:
            # RFC 3550 §5.1: initial sequence number and timestamp are random.
            state = self._send[ssrc] = _SendState(secrets.randbits(15), secrets.randbits(32))
        packet = RtpPacket(pt, state.sequence, state.timestamp, ssrc, payload, marker)
        self._transport.sendto(tx.session.protect(bytes(packet)), self.remote)
        state.sequence = (state.sequence + 1) & 0xFFFF
        state.timestamp = (state.timestamp + (len(payload) if samples is None else samples)) & (
            0xFFFFFFFF
        )
        state.packets += 1
        state.octets += len(payload)
        return packet

    async def send_audio(
        self,
        payloads: Iterable[bytes],
        ssrc: int,
        pt: int = 0,
        *,
        interval: float = 0.020,
    ) -> int:
        """Send *payloads* one per *interval* (20 ms: RFC 3551 §4.5 default packetisation).

        Paced against an absolute schedule, so the rate does not drift with
        scheduling delays.  The first packet carries the marker bit (RFC 3551
        §4.1, start of a talkspurt).  Returns the number of packets sent.
        """
        start = self._loop.time()
        sent = 0
        for index, payload in enumerate(payloads):
            delay = start + index * interval - self._loop.time()
            if delay > 0:
                await asyncio.sleep(min(delay, interval))
            if self._closed:
                break
            self.send_rtp(payload, ssrc, pt=pt, marker=index == 0)
            sent += 1
        return sent

    def build_rtcp(self, *, bye: bool = False) -> list[bytes]:
        """The RTCP compounds to send now (plain, before SRTCP): one per sending SSRC.

        Each is an SR (or an RR when nothing was sent) plus SDES CNAME (RFC 3550
        §6.1), followed by BYE when *bye* is set (§6.6).
        """
        now = self._loop.time()
        reports = self._reception.report_blocks(now)
        unix = time.time()
        ntp = (int(unix) + _NTP_EPOCH_OFFSET) << 32 | int((unix % 1) * (1 << 32))
        compounds = []
        senders = {ssrc: state for ssrc, state in self._send.items() if state.packets}
        for ssrc, state in senders.items() or [(self.ssrc, None)]:
            first: rtp.RtcpPacket
            if state is None:
                first = rtp.ReceiverReport(ssrc, tuple(reports))
            else:
                info = SenderInfo(
                    ntp & ((1 << 64) - 1),
                    state.timestamp,
                    state.packets & 0xFFFFFFFF,
                    state.octets & 0xFFFFFFFF,
                )
                first = rtp.SenderReport(ssrc, info, tuple(reports))
            packets: list[rtp.RtcpPacket] = [
                first,
                rtp.SourceDescription((rtp.SdesChunk(ssrc, ((rtp.SDES_CNAME, self.cname),)),)),
            ]
            if bye:
                packets.append(rtp.Bye((ssrc,)))
            compounds.append(rtp.build_compound(packets))
            reports = []  # report on each source once
        return compounds

    def send_rtcp(self, *, bye: bool = False) -> int:
        """Send SRTCP reports now (see :meth:`build_rtcp`); returns the compounds sent."""
        tx = self._keys.tx
        if tx is None or self.remote is None or self._closed:
            return 0
        count = 0
        for compound in self.build_rtcp(bye=bye):
            self._transport.sendto(tx.session.protect_rtcp(compound), self.remote)
            count += 1
        self.rtcp_sent += count
        return count

    def _start_rtcp(self) -> None:
        if self._rtcp_interval is not None and self._rtcp_task is None:
            self._rtcp_task = self._loop.create_task(self._rtcp_loop(self._rtcp_interval))

    async def _rtcp_loop(self, interval: float) -> None:
        while not self._closed:
            # RFC 3550 §6.3.1: randomise the interval to 0.5..1.5 times the mean.
            await asyncio.sleep(interval * (0.5 + secrets.randbits(16) / 65536))
            try:
                self.send_rtcp()
            except (pylibsrtp.Error, OSError) as exc:
                log.warning("SRTCP report not sent: %s", exc)

    # -- receiving ----------------------------------------------------------------

    async def receive(self, timeout: float = 5.0) -> ReceivedPacket:
        """The next decrypted packet from the queue; TimeoutError after *timeout* seconds."""
        if self.queue is None:
            raise RuntimeError("endpoint opened with queue_size=0: use on_packet")
        return await asyncio.wait_for(self.queue.get(), timeout)

    def drain(self) -> list[ReceivedPacket]:
        """Everything queued so far, without waiting."""
        out: list[ReceivedPacket] = []
        while self.queue is not None and not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram from the socket: classify, unprotect, count, deliver.

        Looked up on the instance for every datagram, so a test or the lab can
        wrap it to see the ciphertext as it arrives.
        """
        if self._closed or self._keys.rx is None:
            return
        try:
            kind = rtp.classify(data)
            ssrc = rtp.rtp_ssrc(data)
        except MalformedRtp:
            self.foreign += 1
            return
        if kind not in (PacketKind.RTP, PacketKind.RTCP):
            self.foreign += 1
            return
        is_rtcp = kind is PacketKind.RTCP
        stats = self._reception.source(ssrc)
        plain, epoch, failure = self._keys.unprotect(data, is_rtcp)
        if plain is None or epoch is None:
            self._reception.count_failure(stats, failure, is_rtcp=is_rtcp)
            return
        now = self._loop.time()
        if is_rtcp:
            self._reception.count_rtcp(plain, stats, now)
            return
        try:
            packet = RtpPacket.parse(plain)
        except MalformedRtp:
            stats.malformed += 1
            return
        old = epoch is not self._keys.rx
        self._reception.count_rtp(stats, packet, old=old, now=now)
        self._deliver(ReceivedPacket(packet, addr, now, epoch.number, old))

    def _deliver(self, received: ReceivedPacket) -> None:
        if self.queue is not None:
            try:
                self.queue.put_nowait(received)
            except asyncio.QueueFull:
                self.queue_drops += 1
        if self.on_packet is not None:
            self.on_packet(received)

    # -- shutdown -----------------------------------------------------------------

    async def close(self, *, bye: bool = True, timeout: float = 1.0) -> None:
        """Send a final report with BYE (RFC 3550 §6.6) if keyed, stop reports, close the port."""
        if self._closed:
            return
        if bye:
            with contextlib.suppress(pylibsrtp.Error, OSError):
                self.send_rtcp(bye=True)
        self._closed = True
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._rtcp_task, timeout)
        self._transport.close()
        self._keys.close()

    async def __aenter__(self) -> SrtpEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        host, port = self.local_address if not self._transport.is_closing() else ("-", 0)
        return (
            f"SrtpEndpoint({host}:{port} -> {self.remote}, "
            f"tx={self._keys.tx!r}, rx={self.rx_epochs}, sources={len(self.stats)})"
        )
