"""The asyncio SRTP relay: participant legs <-> Asterisk, under conference key epochs.

One :class:`Leg` per participant call, with one UDP socket per side when that
side uses rtcp-mux (RFC 5761), or an even/odd pair (RTP, RTCP: RFC 3550 §11)
when it does not; chosen per side when the leg is created:

* participant side: SRTP/SRTCP only.  Inbound packets are unprotected with the
  participant's SDES key (SDES mode) or the conference's live epochs, newest
  first (KMS mode); outbound packets are *always* the output of
  ``Session.protect`` under the leg's current group-key epoch: there is no
  code path that sends anything else on this socket (R3).
* internal side (towards ConfBridge): plain RTP, or SRTP with Asterisk's own
  SDES key inbound and an edge-chosen key outbound.

Decisions (epochs, grace, SSRCs, switch verification) are made by the sans-IO
:class:`secconf.core.edge.ConferenceState`; this module applies them.

Receive path: each socket is read by a reader callback (``loop.add_reader``)
that drains up to :data:`BATCH` datagrams with ``sock.recvfrom(RECV_SIZE)``:
no per-datagram 256 KiB buffer as in stock asyncio (docs/media-client.md), no
transport or protocol objects.  Sends are non-blocking ``sendto``; a full
socket buffer drops the packet (counted), the relay never waits.

Per-packet work outbound: unprotect if the internal leg is SRTP, rewrite the
sequence number (bytes 2..3, kept monotonic so libsrtp's index never repeats)
and the SSRC (bytes 8..11) in place, protect, send.

RTCP on its own port (a side without rtcp-mux): SRTCP arriving there takes the
same unprotect/verify path as muxed SRTCP (:meth:`Leg._participant_rtcp`); its
source is latched on its own, from the first authenticated SRTCP packet.  RTP
arriving on an RTCP port, or RTCP on the RTP port of a non-mux side, is dropped
(``wrong_port``).  The RTP path is the same for both kinds of leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pylibsrtp

from secconf.core import rtp
from secconf.core.edge import (
    Action,
    BadEdgeRequest,
    ConferenceState,
    Direction,
    EdgeConflict,
    EdgeNotFound,
    EpochDestroyed,
    LegMode,
    LegState,
    RxEpochsChanged,
    SwitchState,
    SwitchVerdict,
    VerifyPolicy,
    srtcp_index,
)
from secconf.core.errors import MalformedRtp, ServiceUnavailable
from secconf.srtp import AUTH_ERRORS, RECV_SIZE, REPLAY_ERRORS

from .keys import SrtpKey, session

__all__ = ["BATCH", "MAX_PACKET", "Counters", "EdgeRelay", "Leg", "PortAllocator"]

log = logging.getLogger("secconf.edge")

#: Datagrams read per readiness event before yielding to the loop.
BATCH = 64
#: Largest datagram relayed: pylibsrtp's buffer (and an Ethernet MTU).
MAX_PACKET = 1500
#: An SRTCP index below this, refused as a replay right after a key change, is a restart.
_RESTART_INDEX = 1024
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_SOCKET_BUFFER = 1 << 20
#: Kernel-chosen ports tried before giving up on an even/odd pair.
_PAIR_ATTEMPTS = 64
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+-")


def check_ident(value: object, what: str) -> str:
    """Conference and leg ids: 1..128 characters of ``[A-Za-z0-9._:@+-]``."""
    if not isinstance(value, str) or not 0 < len(value) <= 128 or set(value) - _IDENT_CHARS:
        raise BadEdgeRequest(f"{what} must be 1..128 characters of A-Z a-z 0-9 . _ : @ + -")
    return value


COUNTER_NAMES = (
    "rtp_in",  # participant -> Asterisk, relayed
    "rtcp_in",
    "bytes_in",
    "rtp_out",  # Asterisk -> participant, relayed
    "rtcp_out",
    "bytes_out",
    "auth_failures",  # participant packets that authenticated under no live key
    "replays",
    "old_epoch_in",  # KMS: authenticated under the epoch the leg left (grace)
    "unlatched",  # from an address that is not the leg's latched/expected one
    "malformed",
    "oversized",
    "ssrc_refused",  # authenticated, but under an SSRC another leg owns
    "srtcp_restarts",
    "wrong_port",  # RTP on an RTCP port, or RTCP on the RTP port of a non-mux side
    "internal_auth_failures",
    "internal_unlatched",
    "internal_malformed",
    "no_remote",  # nowhere to send yet
    "send_errors",
    "protect_errors",
    "epoch_switches",
)


class Counters:
    """Per-leg packet counters (integers in slots: cheap to bump per packet)."""

    __slots__ = COUNTER_NAMES
    rtp_in: int
    rtcp_in: int
    bytes_in: int
    rtp_out: int
    rtcp_out: int
    bytes_out: int
    auth_failures: int
    replays: int
    old_epoch_in: int
    unlatched: int
    malformed: int
    oversized: int
    ssrc_refused: int
    srtcp_restarts: int
    wrong_port: int
    internal_auth_failures: int
    internal_unlatched: int
    internal_malformed: int
    no_remote: int
    send_errors: int
    protect_errors: int
    epoch_switches: int

    def __init__(self) -> None:
        for name in COUNTER_NAMES:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def add(self, other: Counters) -> None:
        for name in COUNTER_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class _Rx:
    """One inbound key: separate sessions for SRTP and SRTCP (SRTCP may be reset alone)."""

    __slots__ = ("epoch", "key", "rtcp", "rtp")

    def __init__(self, epoch: int, key: SrtpKey) -> None:
        self.epoch = epoch
        self.key = key
        self.rtp = session(key, inbound=True)
        self.rtcp = session(key, inbound=True)


class PortAllocator:
    """Binds UDP sockets from a port range (0, 0: the kernel picks)."""

    def __init__(self, port_min: int, port_max: int) -> None:
        self.port_min, self.port_max = port_min, port_max
        self._next = port_min

    def bind(self, host: str, port: int | None = None) -> socket.socket:
        """A non-blocking UDP socket on *host*; on *port* if given (restart), else from the range."""
        candidates: Iterable[int]
        if port is not None:
            candidates = (port,)
        elif self.port_min == 0:
            candidates = (0,)
        else:
            size = self.port_max - self.port_min + 1
            start = self._next
            candidates = (self.port_min + (start - self.port_min + i) % size for i in range(size))
        for candidate in candidates:
            sock = _bind_one(host, candidate, in_use_ok=port is None)
            if sock is None:
                continue
            if self.port_min and port is None:
                self._next = candidate + 1 if candidate < self.port_max else self.port_min
            return sock
        raise ServiceUnavailable("no free media port in the configured range")

    def bind_pair(
        self, host: str, port: int | None = None, rtcp_port: int | None = None
    ) -> tuple[socket.socket, socket.socket]:
        """RTP and RTCP sockets on *host*: an even port and the odd one above it (RFC 3550 §11).

        With *port* (restart) exactly *port* and *rtcp_port* (default port + 1).
        """
        if port is not None:
            rtp_sock = self.bind(host, port)
            try:
                return rtp_sock, self.bind(host, port + 1 if rtcp_port is None else rtcp_port)
            except BaseException:
                rtp_sock.close()
                raise
        if self.port_min == 0:
            for _ in range(_PAIR_ATTEMPTS):
                first = self.bind(host)
                got = int(first.getsockname()[1])
                partner = got + 1 if got % 2 == 0 else got - 1
                try:
                    second = _bind_one(host, partner, in_use_ok=True)
                except BaseException:
                    first.close()
                    raise
                if second is None:
                    first.close()
                    continue
                return (first, second) if got % 2 == 0 else (second, first)
            raise ServiceUnavailable("no free even/odd media port pair")
        low = self.port_min + (self.port_min & 1)
        pairs = (self.port_max - low + 1) // 2
        start = max(low, self._next + (self._next & 1))
        for i in range(pairs):
            even = low + ((start - low) // 2 + i) % pairs * 2
            even_sock = _bind_one(host, even, in_use_ok=True)
            if even_sock is None:
                continue
            try:
                odd_sock = _bind_one(host, even + 1, in_use_ok=True)
            except BaseException:
                even_sock.close()
                raise
            if odd_sock is None:
                even_sock.close()
                continue
            self._next = even + 2 if even + 2 < self.port_max else self.port_min
            return even_sock, odd_sock
        raise ServiceUnavailable("no free even/odd media port pair in the configured range")


def _bind_one(host: str, port: int, *, in_use_ok: bool) -> socket.socket | None:
    """A non-blocking UDP socket bound to (*host*, *port*); None if in use and *in_use_ok*."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE and in_use_ok:
            return None
        raise ServiceUnavailable(f"cannot bind a media port ({exc.strerror})") from None
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    return sock


@dataclass(slots=True)
class Conference:
    """A conference's core state plus the key bytes of its live epochs."""

    state: ConferenceState
    keys: dict[int, SrtpKey]
    legs: dict[str, Leg]


def drain(sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
    """Read up to BATCH datagrams from a ready non-blocking *sock* into *handle*.

    Reading in batches keeps the loop's per-readiness overhead off each packet;
    RECV_SIZE (not asyncio's 256 KiB) keeps each read from allocating big buffers.
    """
    recv = sock.recvfrom
    for _ in range(BATCH):
        try:
            data, addr = recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # ICMP errors surface here; the next read is fine
        handle(data, addr)


class Leg:
    """One participant call: its sockets, sessions and counters.  See the module doc."""

    def __init__(
        self,
        relay: EdgeRelay,
        conference: Conference,
        state: LegState,
        *,
        participant_sock: socket.socket,
        internal_sock: socket.socket,
        internal_mode: str,
        participant_key: SrtpKey | None,
        edge_internal_key: SrtpKey | None,
        participant_rtcp_sock: socket.socket | None = None,
        internal_rtcp_sock: socket.socket | None = None,
    ) -> None:
        self.relay = relay
        self.conference = conference
        self.state = state
        self.id = state.leg_id
        self.mode = state.mode
        self.psock = participant_sock
        self.isock = internal_sock
        # RTCP sockets of a side without rtcp-mux (None: RTCP shares the RTP socket)
        self.prsock = participant_rtcp_sock
        self.irsock = internal_rtcp_sock
        self.internal_mode = internal_mode
        self.counters = Counters()
        self.closed = False
        self.created = relay.now()
        # participant side
        self.participant_remote: tuple[str, int] | None = None  # from SDP
        self.latched: tuple[str, int] | None = None  # first authenticated source
        # non-mux participant side: a=rtcp from SDP (None: RTP port + 1), and the
        # source of the first authenticated SRTCP packet on the RTCP socket
        self.participant_rtcp_remote: tuple[str, int] | None = None
        self.rtcp_latched: tuple[str, int] | None = None
        self.participant_key = participant_key  # SDES mode
        self.previous_participant_key: SrtpKey | None = None
        self._previous_key_timer: asyncio.TimerHandle | None = None
        self.rx: list[_Rx] = []
        self.in_ssrcs: set[bytes] = set()
        self.refused_ssrcs: set[bytes] = set()
        self.rtcp_highest: int | None = None
        # outbound
        self.tx: pylibsrtp.Session | None = None
        self.tx_epoch = -1
        self.out_ssrc = b""
        self._last_in_seq: int | None = None
        self.last_out_seq: int | None = None
        # internal side
        self.internal_remote: tuple[str, int] | None = None
        self.internal_rtcp_remote: tuple[str, int] | None = None  # non-mux; None: RTP port + 1
        self.edge_internal_key = edge_internal_key
        self.asterisk_key: SrtpKey | None = None
        self.internal_tx: pylibsrtp.Session | None = None
        self.asterisk_rx: pylibsrtp.Session | None = None
        self.asterisk_ssrc: bytes | None = None
        if internal_mode == "srtp" and edge_internal_key is not None:
            self.internal_tx = session(edge_internal_key, inbound=False)
        self.set_out_ssrc(state.out_ssrc)
        self.set_tx_epoch(state.tx_epoch)
        self.refresh_rx()

    def __repr__(self) -> str:
        return (
            f"Leg({self.id}, conference={self.conference.state.conference_id}, "
            f"mode={self.mode.value}, internal={self.internal_mode}, "
            f"tx_epoch={self.tx_epoch}, ssrc={self.state.out_ssrc:#010x})"
        )

    # -- addresses and keys --

    @property
    def participant_address(self) -> tuple[str, int]:
        host, port = self.psock.getsockname()[:2]
        return str(host), int(port)

    @property
    def internal_address(self) -> tuple[str, int]:
        host, port = self.isock.getsockname()[:2]
        return str(host), int(port)

    @property
    def participant_rtcp_address(self) -> tuple[str, int]:
        """Where the participant sends RTCP: the RTP socket under rtcp-mux."""
        if self.prsock is None:
            return self.participant_address
        host, port = self.prsock.getsockname()[:2]
        return str(host), int(port)

    @property
    def internal_rtcp_address(self) -> tuple[str, int]:
        if self.irsock is None:
            return self.internal_address
        host, port = self.irsock.getsockname()[:2]
        return str(host), int(port)

    @property
    def participant_rtcp_peer(self) -> tuple[str, int] | None:
        """Where RTCP to the participant goes (non-mux side): latched, else a=rtcp, else port + 1."""
        if self.prsock is None:
            return self.latched or self.participant_remote
        if self.rtcp_latched is not None:
            return self.rtcp_latched
        return _rtcp_peer(self.participant_remote, self.participant_rtcp_remote)

    @property
    def internal_rtcp_peer(self) -> tuple[str, int] | None:
        """Asterisk's RTCP address: the only source accepted, and where RTCP to it goes."""
        if self.irsock is None:
            return self.internal_remote
        return _rtcp_peer(self.internal_remote, self.internal_rtcp_remote)

    def set_out_ssrc(self, ssrc: int) -> None:
        owner = self.conference.state.ssrcs.owner(ssrc)
        if owner != (self.id, Direction.OUTBOUND):
            # R4: never protect under an SSRC the registry did not give this leg.
            raise EdgeConflict("outbound SSRC is not this leg's")
        self.out_ssrc = ssrc.to_bytes(4, "big")

    def set_tx_epoch(self, epoch: int) -> None:
        key = self.conference.keys.get(epoch)
        if key is None:
            raise EdgeNotFound(f"no key for epoch {epoch}")
        self.tx = session(key, inbound=False)
        self.tx_epoch = epoch

    def refresh_rx(self) -> None:
        """Rebuild the inbound key list, keeping sessions of keys that stay (replay state)."""
        if self.mode is LegMode.SDES:
            wanted: list[tuple[int, SrtpKey]] = []
            if self.participant_key is not None:
                wanted.append((0, self.participant_key))
            if self.previous_participant_key is not None:
                wanted.append((-1, self.previous_participant_key))
        else:
            wanted = [
                (epoch, self.conference.keys[epoch])
                for epoch in self.conference.state.rx_epochs(self.id)
                if epoch in self.conference.keys
            ]
        current = {(rx.epoch, rx.key.fingerprint): rx for rx in self.rx}
        self.rx = [current.get((e, k.fingerprint)) or _Rx(e, k) for e, k in wanted]

    def set_participant_key(self, key: SrtpKey, grace: float) -> None:
        """SDES re-INVITE with a new participant key: the old one is tried for *grace* s."""
        if self.mode is not LegMode.SDES:
            raise EdgeConflict("only SDES legs have a participant key")
        if self.participant_key is not None and key.fingerprint == self.participant_key.fingerprint:
            return
        self.previous_participant_key, self.participant_key = self.participant_key, key
        if self._previous_key_timer is not None:
            self._previous_key_timer.cancel()
        self._previous_key_timer = self.relay.loop.call_later(grace, self._drop_previous_key)
        self.refresh_rx()
        self.conference.state.participant_rekeyed(self.id, self.relay.now())

    def _drop_previous_key(self) -> None:
        self.previous_participant_key = None
        self._previous_key_timer = None
        if not self.closed:
            self.refresh_rx()

    def set_asterisk_key(self, key: SrtpKey) -> None:
        if self.internal_mode != "srtp":
            raise EdgeConflict("the internal leg is plain RTP: no Asterisk key")
        self.asterisk_key = key
        self.asterisk_rx = session(key, inbound=True)

    # -- participant -> Asterisk --

    def on_participant_readable(self) -> None:
        drain(self.psock, self.on_participant_datagram)

    def _admitted(
        self, data: bytes, addr: tuple[str, int], latched: tuple[str, int] | None
    ) -> bool:
        """A datagram from the participant's side worth reading: not oversized, from the
        latched address (once there is one), RTP/RTCP version 2; else counted and dropped."""
        counters = self.counters
        if len(data) > MAX_PACKET:
            counters.oversized += 1
            return False
        if latched is not None and addr != latched:
            counters.unlatched += 1
            return False
        if len(data) < 12 or data[0] & 0xC0 != 0x80:
            counters.malformed += 1
            return False
        return True

    def on_participant_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._admitted(data, addr, self.latched):
            return
        counters = self.counters
        if 64 <= data[1] & 0x7F <= 95:
            if self.prsock is None:
                self._participant_rtcp(data, addr)
            else:
                counters.wrong_port += 1  # this side's RTCP has its own port
            return
        plain = None
        used: _Rx | None = None
        replay = False
        for rx in self.rx:
            try:
                plain = rx.rtp.unprotect(data)
            except pylibsrtp.Error as exc:
                replay = replay or str(exc) in REPLAY_ERRORS
                continue
            except ValueError:
                break
            used = rx
            break
        if plain is None or used is None:
            if replay:
                counters.replays += 1
            else:
                counters.auth_failures += 1
            return
        if self.latched is None:
            self.latched = addr
            log.info("leg %s latched to %s:%d", self.id, addr[0], addr[1])
        ssrc = data[8:12]
        if ssrc not in self.in_ssrcs and not self._admit_ssrc(ssrc):
            counters.ssrc_refused += 1
            return
        if used.epoch < self.tx_epoch and self.mode is LegMode.KMS:
            counters.old_epoch_in += 1
            self.relay.apply(
                self.conference,
                self.conference.state.on_old_inbound(self.id, self.relay.now()),
            )
        self._to_internal(plain)
        counters.rtp_in += 1
        counters.bytes_in += len(plain)

    def _admit_ssrc(self, ssrc: bytes) -> bool:
        if ssrc in self.refused_ssrcs:
            return False
        collision = self.conference.state.on_inbound_ssrc(
            self.id, int.from_bytes(ssrc, "big"), self.relay.now()
        )
        if collision is not None:
            self.refused_ssrcs.add(ssrc)
            self.relay.collisions += 1
            log.warning(
                "conference %s: SSRC collision %#010x on leg %s (owned by %s/%s)",
                self.conference.state.conference_id,
                collision.ssrc,
                self.id,
                collision.owner_leg,
                collision.owner_direction.value,
            )
            return False
        self.in_ssrcs.add(ssrc)
        self.relay.persist_ssrcs(self.conference)
        return True

    def _to_internal(self, plain: bytes, *, rtcp: bool = False) -> None:
        """To Asterisk, under its key on an SRTP internal leg: RTP from the RTP socket; RTCP
        on that socket too (rtcp-mux) or from the internal RTCP socket."""
        remote = self.internal_rtcp_peer if rtcp else self.internal_remote
        if remote is None:
            self.counters.no_remote += 1
            return
        out = plain
        tx = self.internal_tx
        if tx is not None:
            try:
                out = tx.protect_rtcp(plain) if rtcp else tx.protect(plain)
            except (pylibsrtp.Error, ValueError):
                self.counters.protect_errors += 1
                return
        sock = self.irsock if rtcp and self.irsock is not None else self.isock
        try:
            sock.sendto(out, remote)
        except OSError:
            self.counters.send_errors += 1

    def on_participant_rtcp_readable(self) -> None:
        if self.prsock is not None:
            drain(self.prsock, self.on_participant_rtcp_datagram)

    def on_participant_rtcp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """The participant's own RTCP port (no rtcp-mux): SRTCP only, latched on its own."""
        if not self._admitted(data, addr, self.rtcp_latched):
            return
        counters = self.counters
        if not 64 <= data[1] & 0x7F <= 95:
            counters.wrong_port += 1  # RTP on the RTCP port
            return
        self._participant_rtcp(data, addr, own_port=True)

    def _participant_rtcp(
        self, data: bytes, addr: tuple[str, int], *, own_port: bool = False
    ) -> None:
        """SRTCP from the participant, muxed or on its own port: one unprotect/verify path."""
        counters = self.counters
        now = self.relay.now()
        plain = None
        failure = "auth"
        for rx in self.rx:
            plain, failure = self._unprotect_rtcp(rx, data, now)
            if plain is not None:
                break
        if plain is None:
            if failure == "replay":
                counters.replays += 1
            elif failure == "malformed":
                counters.malformed += 1
            else:
                counters.auth_failures += 1
            return
        if own_port:
            if self.rtcp_latched is None:
                self.rtcp_latched = addr
                log.info("leg %s RTCP latched to %s:%d", self.id, addr[0], addr[1])
        elif self.latched is None:
            self.latched = addr
        counters.rtcp_in += 1
        try:
            packets = rtp.parse_rtcp(plain, strict=False)
        except MalformedRtp:
            counters.malformed += 1
            return
        state = self.conference.state
        asterisk = self.asterisk_ssrc
        rewritten: list[rtp.RtcpPacket] = []
        changed = False
        for packet in packets:
            if isinstance(packet, rtp.SenderReport | rtp.ReceiverReport):
                for block in packet.reports:
                    self.relay.apply(
                        self.conference,
                        state.on_report(self.id, block, now, counters.rtp_out),
                    )
                if asterisk is not None and any(
                    b.ssrc == self.state.out_ssrc for b in packet.reports
                ):
                    blocks = tuple(
                        dataclasses.replace(b, ssrc=int.from_bytes(asterisk, "big"))
                        if b.ssrc == self.state.out_ssrc
                        else b
                        for b in packet.reports
                    )
                    packet = dataclasses.replace(packet, reports=blocks)
                    changed = True
            rewritten.append(packet)
        if changed:
            with contextlib.suppress(MalformedRtp):
                plain = rtp.build_compound(rewritten)
        self._to_internal(plain, rtcp=True)

    def _unprotect_rtcp(self, rx: _Rx, data: bytes, now: float) -> tuple[bytes | None, str]:
        try:
            plain = rx.rtcp.unprotect_rtcp(data)
        except ValueError:
            return None, "malformed"
        except pylibsrtp.Error as exc:
            reason = str(exc)
            if reason not in REPLAY_ERRORS:
                return None, "auth" if reason in AUTH_ERRORS else "malformed"
            index = srtcp_index(data, rx.key.suite)
            highest = self.rtcp_highest
            if (
                index is None
                or highest is None
                # <=: a phone that had sent one report (index 1) restarts at index 1 again
                or not (index <= highest and index < _RESTART_INDEX)
                or not self.conference.state.allow_srtcp_restart(self.id, now)
            ):
                return None, "replay"
            # linphone restarted its SRTCP index under an unchanged key: a fresh
            # SRTCP session for it (the RTP session and its replay window stay).
            rx.rtcp = session(rx.key, inbound=True)
            self.counters.srtcp_restarts += 1
            self.rtcp_highest = None
            log.info("leg %s: SRTCP index restart tolerated", self.id)
            try:
                plain = rx.rtcp.unprotect_rtcp(data)
            except (pylibsrtp.Error, ValueError):
                return None, "auth"
        index = srtcp_index(data, rx.key.suite)
        if index is not None and (self.rtcp_highest is None or index > self.rtcp_highest):
            self.rtcp_highest = index
        return plain, ""

    # -- Asterisk -> participant --

    def on_internal_readable(self) -> None:
        drain(self.isock, self.on_internal_datagram)

    def on_internal_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        counters = self.counters
        if addr != self.internal_remote:
            counters.internal_unlatched += 1
            return
        if len(data) > MAX_PACKET or len(data) < 12 or data[0] & 0xC0 != 0x80:
            counters.internal_malformed += 1
            return
        if 64 <= data[1] & 0x7F <= 95:
            if self.irsock is None:
                self._internal_rtcp(data)
            else:
                counters.wrong_port += 1
            return
        if self.internal_mode == "srtp":
            if self.asterisk_rx is None:
                counters.internal_auth_failures += 1
                return
            try:
                data = self.asterisk_rx.unprotect(data)
            except (pylibsrtp.Error, ValueError):
                counters.internal_auth_failures += 1
                return
            if len(data) < 12:
                counters.internal_malformed += 1
                return
        if self.asterisk_ssrc is None:
            self.asterisk_ssrc = data[8:12]
        seq = self._map_seq(data[2] << 8 | data[3])
        if seq is None:
            counters.internal_malformed += 1  # a duplicate: sending it again is a replay
            return
        packet = bytearray(data)
        packet[2] = seq >> 8
        packet[3] = seq & 0xFF
        packet[8:12] = self.out_ssrc
        self._to_participant(packet, len(data) - 12)

    def on_internal_rtcp_readable(self) -> None:
        if self.irsock is not None:
            drain(self.irsock, self.on_internal_rtcp_datagram)

    def on_internal_rtcp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Asterisk's RTCP port (no rtcp-mux): only from its RTCP address, RTCP only."""
        counters = self.counters
        if addr != self.internal_rtcp_peer:
            counters.internal_unlatched += 1
            return
        if len(data) > MAX_PACKET or len(data) < 8 or data[0] & 0xC0 != 0x80:
            counters.internal_malformed += 1
            return
        if not 64 <= data[1] & 0x7F <= 95:
            counters.wrong_port += 1
            return
        self._internal_rtcp(data)

    def _map_seq(self, seq: int) -> int | None:
        """Asterisk's sequence number -> ours: gaps kept, jumps and restarts smoothed over.

        Ours never repeats within a key epoch and SSRC, so libsrtp's index
        (ROC || SEQ) never repeats either (RFC 3711 §3.3.1).
        """
        last_in, last_out = self._last_in_seq, self.last_out_seq
        if last_in is None or last_out is None:
            self._last_in_seq = self.last_out_seq = seq
            return seq
        delta = (seq - last_in) & 0xFFFF
        if delta == 0:
            return None
        if delta < _MAX_DROPOUT:
            out = (last_out + delta) & 0xFFFF
        elif delta > 0x10000 - _MAX_MISORDER:
            return (last_out - (0x10000 - delta)) & 0xFFFF  # late packet: no state change
        else:
            out = (last_out + 1) & 0xFFFF  # Asterisk jumped or restarted
        self._last_in_seq, self.last_out_seq = seq, out
        return out

    def _to_participant(self, packet: bytearray, payload: int) -> None:
        counters = self.counters
        destination = self.latched or self.participant_remote
        tx = self.tx
        if destination is None or tx is None:
            counters.no_remote += 1
            return
        try:
            protected = tx.protect(bytes(packet))
        except (pylibsrtp.Error, ValueError):
            counters.protect_errors += 1
            return
        try:
            self.psock.sendto(protected, destination)
        except OSError:
            counters.send_errors += 1
            return
        counters.rtp_out += 1
        counters.bytes_out += payload

    def _internal_rtcp(self, data: bytes) -> None:
        counters = self.counters
        if self.internal_mode == "srtp":
            if self.asterisk_rx is None:
                counters.internal_auth_failures += 1
                return
            try:
                data = self.asterisk_rx.unprotect_rtcp(data)
            except (pylibsrtp.Error, ValueError):
                counters.internal_auth_failures += 1
                return
        try:
            packets = rtp.parse_rtcp(data, strict=False)
        except MalformedRtp:
            counters.internal_malformed += 1
            return
        if self.asterisk_ssrc is None and isinstance(
            packets[0], rtp.SenderReport | rtp.ReceiverReport
        ):
            self.asterisk_ssrc = packets[0].ssrc.to_bytes(4, "big")  # RTCP before any RTP
        asterisk = int.from_bytes(self.asterisk_ssrc, "big") if self.asterisk_ssrc else None
        ours = self.state.out_ssrc
        out: list[rtp.RtcpPacket] = []
        for packet in packets:
            if isinstance(packet, rtp.SenderReport | rtp.ReceiverReport):
                if packet.ssrc == asterisk:
                    packet = dataclasses.replace(packet, ssrc=ours)
            elif isinstance(packet, rtp.SourceDescription):
                chunks = tuple(
                    dataclasses.replace(c, ssrc=ours) if c.ssrc == asterisk else c
                    for c in packet.chunks
                )
                packet = dataclasses.replace(packet, chunks=chunks)
            elif isinstance(packet, rtp.Bye):
                packet = dataclasses.replace(
                    packet, ssrcs=tuple(ours if s == asterisk else s for s in packet.ssrcs)
                )
            out.append(packet)
        destination = self.participant_rtcp_peer
        if destination is None or self.tx is None:
            counters.no_remote += 1
            return
        try:
            compound = rtp.build_compound(out)
        except MalformedRtp:
            counters.protect_errors += 1
            return
        if compound[4:8] != self.out_ssrc:
            # R4: SRTCP's IV is keyed by the first packet's SSRC; never protect under
            # an SSRC the registry did not give this leg (e.g. another source's RTCP).
            counters.internal_malformed += 1
            return
        try:
            protected = self.tx.protect_rtcp(compound)
        except (pylibsrtp.Error, ValueError):
            counters.protect_errors += 1
            return
        try:
            (self.psock if self.prsock is None else self.prsock).sendto(protected, destination)
        except OSError:
            counters.send_errors += 1
            return
        counters.rtcp_out += 1

    # -- life cycle --

    def start(self) -> None:
        loop = self.relay.loop
        loop.add_reader(self.psock.fileno(), self.on_participant_readable)
        loop.add_reader(self.isock.fileno(), self.on_internal_readable)
        if self.prsock is not None:
            loop.add_reader(self.prsock.fileno(), self.on_participant_rtcp_readable)
        if self.irsock is not None:
            loop.add_reader(self.irsock.fileno(), self.on_internal_rtcp_readable)

    def stop(self) -> None:
        """Stop at once, both directions: readers off, sockets closed, sessions dropped."""
        if self.closed:
            return
        self.closed = True
        loop = self.relay.loop
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        if self._previous_key_timer is not None:
            self._previous_key_timer.cancel()
        self.tx = self.internal_tx = self.asterisk_rx = None
        self.rx = []
        self.participant_key = self.previous_participant_key = None
        self.asterisk_key = self.edge_internal_key = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.psock, self.isock, self.prsock, self.irsock) if s is not None]

    @property
    def rtcp_ports(self) -> tuple[int | None, int | None]:
        """(participant, internal) RTCP ports of the sides without rtcp-mux; None: muxed."""
        return (
            None if self.prsock is None else self.participant_rtcp_address[1],
            None if self.irsock is None else self.internal_rtcp_address[1],
        )

    def describe(self) -> dict[str, object]:
        state = self.state
        check = state.check
        return {
            "leg": self.id,
            "conference": self.conference.state.conference_id,
            "mode": self.mode.value,
            "internal_mode": self.internal_mode,
            "participant": _address(self.participant_address),
            "internal": _address(self.internal_address),
            "participant_remote": _address(self.participant_remote),
            "latched": _address(self.latched),
            "internal_remote": _address(self.internal_remote),
            "rtcp_mux": {"participant": self.prsock is None, "internal": self.irsock is None},
            "participant_rtcp": _address(self.participant_rtcp_address),
            "internal_rtcp": _address(self.internal_rtcp_address),
            "participant_rtcp_remote": _address(self.participant_rtcp_peer),
            "rtcp_latched": _address(self.rtcp_latched),
            "internal_rtcp_remote": _address(self.internal_rtcp_peer),
            "ssrc": state.out_ssrc,
            "participant_ssrcs": sorted(int.from_bytes(s, "big") for s in self.in_ssrcs),
            "epoch": state.tx_epoch,
            "rx_epochs": [rx.epoch for rx in self.rx] if self.mode is LegMode.KMS else [],
            "switch": {
                "state": state.switch_state.value,
                "epoch": None if check is None else check.epoch,
                "reason": "" if check is None else check.reason,
                "since": None if check is None else check.started_at,
            },
            "counters": self.counters.as_dict(),
        }


def _address(addr: tuple[str, int] | None) -> dict[str, object] | None:
    return None if addr is None else {"host": addr[0], "port": addr[1]}


def _rtcp_peer(
    rtp_remote: tuple[str, int] | None, rtcp_remote: tuple[str, int] | None
) -> tuple[str, int] | None:
    """The RTCP address of a non-mux peer: a=rtcp if given, else RTP port + 1 (RFC 3550 §11)."""
    if rtcp_remote is not None:
        return rtcp_remote
    if rtp_remote is None or rtp_remote[1] >= 65535:
        return None
    return rtp_remote[0], rtp_remote[1] + 1


def check_rtcp_remote(
    mux: bool,
    remote: tuple[str, int] | None,
    rtcp_remote: tuple[str, int] | None,
    side: str,
    refusal: type[BadEdgeRequest] | type[EdgeConflict],
) -> None:
    """An RTCP address only for a side without rtcp-mux; port + 1 must exist if none is given."""
    if mux and rtcp_remote is not None:
        raise refusal(f"the {side} side uses rtcp-mux: no separate RTCP address")
    if not mux and rtcp_remote is None and remote is not None and remote[1] >= 65535:
        raise BadEdgeRequest(f"{side} RTP port 65535 has no port + 1: give rtcp_port")


class EdgeRelay:
    """All conferences and legs of one edge; the API and the tick loop drive it."""

    def __init__(
        self,
        *,
        participant_host: str,
        internal_host: str,
        ports: PortAllocator,
        grace: float,
        policy: VerifyPolicy,
        internal_suite: str = "AES_CM_128_HMAC_SHA1_80",
        advertise: str = "",
        random_u32: Callable[[], int] | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.participant_host = participant_host
        self.internal_host = internal_host
        self.ports = ports
        self.grace = grace
        self.policy = policy
        self.internal_suite = internal_suite
        self.advertise = advertise  # participant-facing address for SDP ("" = bound host)
        self.random_u32 = random_u32 or (lambda: secrets.randbits(32))
        self.random_bytes = random_bytes or secrets.token_bytes
        self.conferences: dict[str, Conference] = {}
        self.legs: dict[str, Leg] = {}
        self.retired = Counters()  # counters of removed legs
        self.verdicts: dict[str, int] = {s.value: 0 for s in SwitchState}
        self.collisions = 0
        self.epochs_destroyed = 0
        self.on_persist_ssrcs: Callable[[Conference], None] | None = None
        self.on_epoch_destroyed: Callable[[str, int], None] | None = None

    def now(self) -> float:
        return self.loop.time()

    # -- conferences and epochs --

    def conference(self, conference_id: str) -> Conference:
        conference = self.conferences.get(conference_id)
        if conference is None:
            raise EdgeNotFound("no such conference")
        return conference

    def ensure_conference(self, conference_id: str) -> Conference:
        check_ident(conference_id, "conference id")
        conference = self.conferences.get(conference_id)
        if conference is None:
            state = ConferenceState(conference_id, grace=self.grace, policy=self.policy)
            conference = self.conferences[conference_id] = Conference(state, {}, {})
        return conference

    def check_epoch(self, conference_id: str, epoch: int, key: SrtpKey) -> bool:
        """Would :meth:`add_epoch` change anything?  Raises what it would raise; no change."""
        check_ident(conference_id, "conference id")
        conference = self.conferences.get(conference_id)
        if conference is None:
            ConferenceState(conference_id, grace=self.grace, policy=self.policy).add_epoch(
                epoch, key.suite, key.fingerprint, 0.0
            )
            return True
        known = conference.state.epochs.get(epoch)
        if known is not None:
            return conference.state.add_epoch(epoch, key.suite, key.fingerprint, self.now())
        newest = conference.state.newest_epoch
        if newest is not None and epoch < newest:
            raise EdgeConflict(f"epoch {epoch} is older than epoch {newest}")
        if not 0 <= epoch <= 0xFFFFFFFF:
            raise BadEdgeRequest("epoch must be 0..2^32-1")
        return True

    def add_epoch(self, conference_id: str, epoch: int, key: SrtpKey) -> bool:
        conference = self.ensure_conference(conference_id)
        created = conference.state.add_epoch(epoch, key.suite, key.fingerprint, self.now())
        if created:
            conference.keys[epoch] = key
            for leg in conference.legs.values():
                if leg.mode is LegMode.KMS:
                    leg.refresh_rx()
        return created

    def drop_epoch(self, conference_id: str, epoch: int) -> None:
        conference = self.conference(conference_id)
        self.apply(conference, conference.state.drop_epoch(epoch))

    # -- legs --

    def create_leg(
        self,
        conference_id: str,
        mode: LegMode,
        *,
        participant_key: SrtpKey | None,
        internal_mode: str,
        epoch: int | None = None,
        participant_ssrcs: Iterable[int] = (),
        leg_id: str | None = None,
        ports: tuple[int, int] | None = None,
        edge_internal_key: SrtpKey | None = None,
        rtcp_mux: tuple[bool, bool] = (True, True),
        rtcp_ports: tuple[int | None, int | None] = (None, None),
    ) -> Leg:
        """Bind the leg's sockets and set it up; not receiving until :meth:`Leg.start`.

        *rtcp_mux*: (participant, internal) side uses rtcp-mux; a side without
        it gets an even/odd port pair.  *ports*, *rtcp_ports*: the ports to take
        again (restart).

        Undo with :meth:`discard_leg` (e.g. when persisting it failed).
        """
        if mode is LegMode.SDES and participant_key is None:
            raise BadEdgeRequest("an SDES leg needs the participant's key")
        if mode is LegMode.KMS and participant_key is not None:
            raise BadEdgeRequest("a KMS leg receives under the group key: no participant key")
        if internal_mode not in ("rtp", "srtp"):
            raise BadEdgeRequest("internal mode must be rtp or srtp")
        conference = self.conference(check_ident(conference_id, "conference id"))
        leg_id = check_ident(leg_id or secrets.token_hex(8), "leg id")
        if leg_id in self.legs:
            raise EdgeConflict("leg id already in use")
        state = conference.state.add_leg(
            leg_id,
            mode,
            self.now(),
            self.random_u32,
            epoch=epoch,
            participant_ssrcs=participant_ssrcs,
        )
        socks: list[socket.socket] = []
        try:
            psock, prsock = self._bind_side(
                self.participant_host,
                rtcp_mux[0],
                None if ports is None else ports[0],
                rtcp_ports[0],
                socks,
            )
            isock, irsock = self._bind_side(
                self.internal_host,
                rtcp_mux[1],
                None if ports is None else ports[1],
                rtcp_ports[1],
                socks,
            )
            if internal_mode == "srtp" and edge_internal_key is None:
                edge_internal_key = SrtpKey.generate(self.internal_suite, self.random_bytes)
            leg = Leg(
                self,
                conference,
                state,
                participant_sock=psock,
                internal_sock=isock,
                internal_mode=internal_mode,
                participant_key=participant_key,
                edge_internal_key=edge_internal_key,
                participant_rtcp_sock=prsock,
                internal_rtcp_sock=irsock,
            )
        except BaseException:
            for sock in socks:
                sock.close()
            self._forget_leg_state(conference, leg_id)
            raise
        leg.in_ssrcs.update(s.to_bytes(4, "big") for s in participant_ssrcs)
        conference.legs[leg_id] = leg
        self.legs[leg_id] = leg
        return leg

    def _bind_side(
        self,
        host: str,
        mux: bool,
        port: int | None,
        rtcp_port: int | None,
        socks: list[socket.socket],
    ) -> tuple[socket.socket, socket.socket | None]:
        """One side's sockets: RTP (and RTCP without rtcp-mux), also appended to *socks*."""
        if mux:
            sock = self.ports.bind(host, port)
            socks.append(sock)
            return sock, None
        pair = self.ports.bind_pair(host, port, rtcp_port)
        socks.extend(pair)
        return pair

    def _forget_leg_state(self, conference: Conference, leg_id: str) -> None:
        """Undo add_leg completely: the SSRCs were never used to send, so nothing retires."""
        conference.state.discard_leg(leg_id)

    def discard_leg(self, leg: Leg) -> None:
        """Undo :meth:`create_leg` of a leg that never started."""
        leg.stop()
        self.legs.pop(leg.id, None)
        leg.conference.legs.pop(leg.id, None)
        self._forget_leg_state(leg.conference, leg.id)

    def leg(self, leg_id: str) -> Leg:
        leg = self.legs.get(leg_id)
        if leg is None:
            raise EdgeNotFound("no such leg")
        return leg

    def remove_leg(self, leg_id: str) -> Leg:
        """The participant left: the leg stops now, in both directions."""
        leg = self.leg(leg_id)
        leg.stop()
        del self.legs[leg_id]
        conference = leg.conference
        del conference.legs[leg_id]
        conference.state.remove_leg(leg_id, self.now())
        self.retired.add(leg.counters)
        return leg

    def remove_conference(self, conference_id: str) -> list[str]:
        conference = self.conference(conference_id)
        removed = [self.remove_leg(leg_id).id for leg_id in list(conference.legs)]
        for key_epoch in list(conference.keys):
            conference.keys.pop(key_epoch)
        del self.conferences[conference_id]
        return removed

    def check_switch(self, leg_id: str, epoch: int) -> bool:
        """Would :meth:`switch` change anything?  Raises what it would raise; no change."""
        leg = self.leg(leg_id)
        state = leg.conference.state
        if epoch not in state.epochs or epoch not in leg.conference.keys:
            raise EdgeNotFound(f"no epoch {epoch} in this conference")
        if epoch < leg.state.tx_epoch:
            raise EdgeConflict(f"leg already uses the newer epoch {leg.state.tx_epoch}")
        return epoch != leg.state.tx_epoch

    def switch(self, leg_id: str, epoch: int) -> bool:
        """The leg's 200 OK passed: protect towards it under *epoch* from the next packet."""
        leg = self.leg(leg_id)
        self.check_switch(leg_id, epoch)
        changed = leg.conference.state.switch(
            leg_id, epoch, self.now(), seq=leg.last_out_seq, sent_total=leg.counters.rtp_out
        )
        if changed:
            leg.set_tx_epoch(epoch)
            leg.counters.epoch_switches += 1
            leg.refresh_rx()
        return changed

    # -- actions from the core --

    def apply(self, conference: Conference, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, EpochDestroyed):
                conference.keys.pop(action.epoch, None)  # the key bytes go with it
                self.epochs_destroyed += 1
                log.info("conference %s: epoch %d destroyed", action.conference, action.epoch)
                for each in conference.legs.values():
                    each.refresh_rx()
                if self.on_epoch_destroyed is not None:
                    self.on_epoch_destroyed(action.conference, action.epoch)
            elif isinstance(action, RxEpochsChanged):
                changed = conference.legs.get(action.leg)
                if changed is not None:
                    changed.refresh_rx()
            elif isinstance(action, SwitchVerdict):
                self.verdicts[action.state.value] += 1
                level = logging.INFO if action.state is SwitchState.FOLLOWED else logging.WARNING
                log.log(
                    level,
                    "conference %s leg %s epoch %d: %s (%s)",
                    action.conference,
                    action.leg,
                    action.epoch,
                    action.state.value,
                    action.reason,
                )

    def tick(self) -> None:
        now = self.now()
        for conference in list(self.conferences.values()):
            sent = {leg_id: leg.counters.rtp_out for leg_id, leg in conference.legs.items()}
            self.apply(conference, conference.state.tick(now, sent))

    def persist_ssrcs(self, conference: Conference) -> None:
        if self.on_persist_ssrcs is not None:
            self.on_persist_ssrcs(conference)

    def totals(self) -> Counters:
        total = Counters()
        total.add(self.retired)
        for leg in self.legs.values():
            total.add(leg.counters)
        return total

    def describe_conference(self, conference_id: str) -> dict[str, object]:
        conference = self.conference(conference_id)
        state = conference.state
        counters = Counters()
        for leg in conference.legs.values():
            counters.add(leg.counters)
        return {
            "conference": conference_id,
            "epochs": [
                {
                    "epoch": info.number,
                    "suite": info.suite,
                    "fingerprint": info.fingerprint,
                    "legs": state.epoch_users(info.number),
                    "retire_in": _remaining(state.retire_at(info.number), self.now()),
                }
                for info in sorted(state.epochs.values(), key=lambda i: i.number)
            ],
            "legs": [leg.describe() for leg in conference.legs.values()],
            "counters": counters.as_dict(),
            "collisions": [c.as_dict() for c in state.ssrcs.collisions],
        }

    def close(self) -> None:
        for leg in list(self.legs.values()):
            leg.stop()
        self.legs.clear()
        self.conferences.clear()


def _remaining(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else max(0.0, round(deadline - now, 3))
