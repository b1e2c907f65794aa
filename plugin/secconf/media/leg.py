"""One participant call's packet path: RTP both ways between the participant and Asterisk.

A :class:`Leg` has one UDP socket per side when that side uses rtcp-mux
(RFC 5761), or an even/odd pair (RTP, RTCP: RFC 3550 §11) when it does not;
chosen per side when the leg is created:

* participant side: SRTP/SRTCP only.  Inbound packets are unprotected with the
  participant's SDES key (SDES mode) or the conference's live epochs, newest
  first (KMS mode); outbound packets are *always* the output of
  ``Session.protect`` under the leg's current group-key epoch: there is no
  code path that sends anything else on this socket (R3).
* internal side (towards ConfBridge): plain RTP, or SRTP with Asterisk's own
  SDES key inbound and an edge-chosen key outbound.

Receive path: each socket is read by a reader callback (``loop.add_reader``)
that drains up to :data:`~secconf.media.sockets.BATCH` datagrams
(:func:`~secconf.media.sockets.drain`): no transport or protocol objects.
Sends are non-blocking ``sendto``; a full socket buffer drops the packet
(counted), the relay never waits.

Per-packet work outbound: unprotect if the internal leg is SRTP, rewrite the
sequence number (bytes 2..3, kept monotonic so libsrtp's index never repeats)
and the SSRC (bytes 8..11) in place, protect, send.

This module is the hot path (CPU per packet is a tracked figure): the RTP
methods read the leg's own attributes (sessions, addresses, counters) directly,
with no object in between.  The cold parts live beside it and write into those
attributes: :class:`~secconf.media.leg_keys.LegKeys` (which keys and sessions,
on rekey and switch), :class:`~secconf.media.leg_rtcp.LegRtcp` (RTCP, a few
packets per leg every few seconds), :mod:`secconf.media.report` (describing).

RTCP arriving on the RTP port of a muxed side is handed to the leg's
:class:`~secconf.media.leg_rtcp.LegRtcp`; RTP arriving on an RTCP port, or
RTCP on the RTP port of a non-mux side, is dropped (``wrong_port``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING

import pylibsrtp

from secconf.core.edge import LegMode, LegState
from secconf.srtp import REPLAY_ERRORS

from .counters import Counters
from .keys import SrtpKey
from .leg_keys import LegKeys, RxSessions
from .leg_rtcp import LegRtcp
from .sockets import MAX_PACKET, drain

if TYPE_CHECKING:
    from .relay import Conference, EdgeRelay

__all__ = ["Leg"]

log = logging.getLogger("secconf.edge")

_MAX_DROPOUT = 3000
_MAX_MISORDER = 100


class Leg:
    """One participant call: its sockets, sessions, addresses and counters.  See the module doc.

    Every attribute the packet path reads is a plain attribute of the leg, set
    here (kept flat for speed: one lookup per use, no object in between).
    :class:`LegKeys` owns the key material and writes the session attributes
    (``rx``, ``tx``, ``internal_tx``, ...) on rekey and switch; :class:`LegRtcp`
    handles RTCP with the same attributes.
    """

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
        self.rx: list[RxSessions] = []  # inbound keys, newest first (LegKeys.refresh_rx)
        self.in_ssrcs: set[bytes] = set()
        self.refused_ssrcs: set[bytes] = set()
        # outbound (tx, tx_epoch, out_ssrc: set by LegKeys)
        self.tx: pylibsrtp.Session | None = None
        self.tx_epoch = -1
        self.out_ssrc = b""
        self._last_in_seq: int | None = None
        self.last_out_seq: int | None = None
        # internal side
        self.internal_remote: tuple[str, int] | None = None
        self.internal_rtcp_remote: tuple[str, int] | None = None  # non-mux; None: RTP port + 1
        self.internal_tx: pylibsrtp.Session | None = None  # under the edge's key (LegKeys)
        self.asterisk_rx: pylibsrtp.Session | None = None  # under Asterisk's key (LegKeys)
        self.asterisk_ssrc: bytes | None = None
        self.rtcp = LegRtcp(self)
        self.keys = LegKeys(self, participant_key, edge_internal_key)

    def __repr__(self) -> str:
        return (
            f"Leg({self.id}, conference={self.conference.state.conference_id}, "
            f"mode={self.mode.value}, internal={self.internal_mode}, "
            f"tx_epoch={self.tx_epoch}, ssrc={self.state.out_ssrc:#010x})"
        )

    # -- addresses --

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

    # -- participant -> Asterisk --

    def on_participant_readable(self) -> None:
        drain(self.psock, self.on_participant_datagram)

    def admitted(self, data: bytes, addr: tuple[str, int], latched: tuple[str, int] | None) -> bool:
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
        if not self.admitted(data, addr, self.latched):
            return
        counters = self.counters
        if 64 <= data[1] & 0x7F <= 95:
            if self.prsock is None:
                self.rtcp.from_participant(data, addr)  # RTCP: not the hot path
            else:
                counters.wrong_port += 1  # this side's RTCP has its own port
            return
        plain = None
        used: RxSessions | None = None
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
        self.to_internal(plain)
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

    def to_internal(self, plain: bytes, *, rtcp: bool = False) -> None:
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
                self.rtcp.from_asterisk(data)
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

    # -- life cycle --

    def start(self) -> None:
        loop = self.relay.loop
        loop.add_reader(self.psock.fileno(), self.on_participant_readable)
        loop.add_reader(self.isock.fileno(), self.on_internal_readable)
        if self.prsock is not None:
            loop.add_reader(self.prsock.fileno(), self.rtcp.on_participant_readable)
        if self.irsock is not None:
            loop.add_reader(self.irsock.fileno(), self.rtcp.on_internal_readable)

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
        self.keys.forget()

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


def _rtcp_peer(
    rtp_remote: tuple[str, int] | None, rtcp_remote: tuple[str, int] | None
) -> tuple[str, int] | None:
    """The RTCP address of a non-mux peer: a=rtcp if given, else RTP port + 1 (RFC 3550 §11)."""
    if rtcp_remote is not None:
        return rtcp_remote
    if rtp_remote is None or rtp_remote[1] >= 65535:
        return None
    return rtp_remote[0], rtp_remote[1] + 1
