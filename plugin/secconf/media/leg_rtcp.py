"""A leg's RTCP, both directions: SRTCP verification, report feedback, SSRC translation.

Participant -> Asterisk: SRTCP is unprotected under the leg's inbound keys (an
SRTCP index restart under an unchanged key is tolerated once the core allows
it), its report blocks feed the core's switch verification, and blocks about
the leg's outbound SSRC are rewritten to Asterisk's SSRC before the compound
goes on to Asterisk.  Asterisk -> participant: Asterisk's SSRC in SR/RR, SDES
and BYE becomes the leg's outbound SSRC, and the compound is protected under
the leg's current epoch (never under an SSRC that is not the leg's: R4).

RTCP arrives muxed on a leg's RTP socket (RFC 5761), where :class:`~secconf.media.leg.Leg`
hands it over, or on a side's own RTCP port (RFC 3550 §11), whose reader is a
method of this class.  RTCP is a few packets per leg every few seconds (the RTP
path carries the load); it reads and writes the leg's slots through ``leg``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pylibsrtp

from secconf.core import rtp
from secconf.core.edge import srtcp_index
from secconf.core.errors import MalformedRtp
from secconf.srtp import AUTH_ERRORS, REPLAY_ERRORS

from .keys import session
from .sockets import MAX_PACKET, drain

if TYPE_CHECKING:
    from .leg import Leg
    from .leg_keys import RxSessions

__all__ = ["LegRtcp"]

log = logging.getLogger("secconf.edge")

#: An SRTCP index below this, refused as a replay right after a key change, is a restart.
_RESTART_INDEX = 1024


class LegRtcp:
    """The RTCP of one leg; see the module doc."""

    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self.highest: int | None = None  # highest SRTCP index received from the participant

    # -- participant -> Asterisk --

    def on_participant_readable(self) -> None:
        """Reader of the participant's own RTCP socket (a side without rtcp-mux)."""
        sock = self.leg.prsock
        if sock is not None:
            drain(sock, self.on_participant_datagram)

    def on_participant_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """The participant's own RTCP port (no rtcp-mux): SRTCP only, latched on its own."""
        leg = self.leg
        if not leg.admitted(data, addr, leg.rtcp_latched):
            return
        if not 64 <= data[1] & 0x7F <= 95:
            leg.counters.wrong_port += 1  # RTP on the RTCP port
            return
        self.from_participant(data, addr, own_port=True)

    def from_participant(
        self, data: bytes, addr: tuple[str, int], *, own_port: bool = False
    ) -> None:
        """SRTCP from the participant, muxed or on its own port: one unprotect/verify path."""
        leg = self.leg
        counters = leg.counters
        now = leg.relay.now()
        plain = None
        failure = "auth"
        for rx in leg.rx:
            plain, failure = self._unprotect(rx, data, now)
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
            if leg.rtcp_latched is None:
                leg.rtcp_latched = addr
                log.info("leg %s RTCP latched to %s:%d", leg.id, addr[0], addr[1])
        elif leg.latched is None:
            leg.latched = addr
        counters.rtcp_in += 1
        try:
            packets = rtp.parse_rtcp(plain, strict=False)
        except MalformedRtp:
            counters.malformed += 1
            return
        state = leg.conference.state
        ours = leg.state.out_ssrc
        asterisk = leg.asterisk_ssrc
        rewritten: list[rtp.RtcpPacket] = []
        changed = False
        for packet in packets:
            if isinstance(packet, rtp.SenderReport | rtp.ReceiverReport):
                for block in packet.reports:
                    leg.relay.apply(
                        leg.conference, state.on_report(leg.id, block, now, counters.rtp_out)
                    )
                if asterisk is not None and any(b.ssrc == ours for b in packet.reports):
                    blocks = tuple(
                        dataclasses.replace(b, ssrc=int.from_bytes(asterisk, "big"))
                        if b.ssrc == ours
                        else b
                        for b in packet.reports
                    )
                    packet = dataclasses.replace(packet, reports=blocks)
                    changed = True
            rewritten.append(packet)
        if changed:
            with contextlib.suppress(MalformedRtp):
                plain = rtp.build_compound(rewritten)
        leg.to_internal(plain, rtcp=True)

    def _unprotect(self, rx: RxSessions, data: bytes, now: float) -> tuple[bytes | None, str]:
        """SRTCP under one inbound key: (plain, "") or (None, "auth"/"replay"/"malformed")."""
        leg = self.leg
        try:
            plain = rx.rtcp.unprotect_rtcp(data)
        except ValueError:
            return None, "malformed"
        except pylibsrtp.Error as exc:
            reason = str(exc)
            if reason not in REPLAY_ERRORS:
                return None, "auth" if reason in AUTH_ERRORS else "malformed"
            index = srtcp_index(data, rx.key.suite)
            highest = self.highest
            if (
                index is None
                or highest is None
                # <=: a phone that had sent one report (index 1) restarts at index 1 again
                or not (index <= highest and index < _RESTART_INDEX)
                or not leg.conference.state.allow_srtcp_restart(leg.id, now)
            ):
                return None, "replay"
            # linphone restarted its SRTCP index under an unchanged key: a fresh
            # SRTCP session for it (the RTP session and its replay window stay).
            rx.rtcp = session(rx.key, inbound=True)
            leg.counters.srtcp_restarts += 1
            self.highest = None
            log.info("leg %s: SRTCP index restart tolerated", leg.id)
            try:
                plain = rx.rtcp.unprotect_rtcp(data)
            except (pylibsrtp.Error, ValueError):
                return None, "auth"
        index = srtcp_index(data, rx.key.suite)
        if index is not None and (self.highest is None or index > self.highest):
            self.highest = index
        return plain, ""

    # -- Asterisk -> participant --

    def on_internal_readable(self) -> None:
        """Reader of the internal side's own RTCP socket (a side without rtcp-mux)."""
        sock = self.leg.irsock
        if sock is not None:
            drain(sock, self.on_internal_datagram)

    def on_internal_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Asterisk's RTCP port (no rtcp-mux): only from its RTCP address, RTCP only."""
        leg = self.leg
        counters = leg.counters
        if addr != leg.internal_rtcp_peer:
            counters.internal_unlatched += 1
            return
        if len(data) > MAX_PACKET or len(data) < 8 or data[0] & 0xC0 != 0x80:
            counters.internal_malformed += 1
            return
        if not 64 <= data[1] & 0x7F <= 95:
            counters.wrong_port += 1
            return
        self.from_asterisk(data)

    def from_asterisk(self, data: bytes) -> None:
        """RTCP from Asterisk, muxed or on its own port: to the participant as the leg's SRTCP."""
        leg = self.leg
        counters = leg.counters
        if leg.internal_mode == "srtp":
            if leg.asterisk_rx is None:
                counters.internal_auth_failures += 1
                return
            try:
                data = leg.asterisk_rx.unprotect_rtcp(data)
            except (pylibsrtp.Error, ValueError):
                counters.internal_auth_failures += 1
                return
        try:
            packets = rtp.parse_rtcp(data, strict=False)
        except MalformedRtp:
            counters.internal_malformed += 1
            return
        if leg.asterisk_ssrc is None and isinstance(
            packets[0], rtp.SenderReport | rtp.ReceiverReport
        ):
            leg.asterisk_ssrc = packets[0].ssrc.to_bytes(4, "big")  # RTCP before any RTP
        destination = leg.participant_rtcp_peer
        tx = leg.tx
        if destination is None or tx is None:
            counters.no_remote += 1
            return
        compound = _as_ours(packets, leg.asterisk_ssrc, leg.state.out_ssrc)
        if compound is None:
            counters.protect_errors += 1
            return
        if compound[4:8] != leg.out_ssrc:
            # R4: SRTCP's IV is keyed by the first packet's SSRC; never protect under
            # an SSRC the registry did not give this leg (e.g. another source's RTCP).
            counters.internal_malformed += 1
            return
        try:
            protected = tx.protect_rtcp(compound)
        except (pylibsrtp.Error, ValueError):
            counters.protect_errors += 1
            return
        try:
            (leg.psock if leg.prsock is None else leg.prsock).sendto(protected, destination)
        except OSError:
            counters.send_errors += 1
            return
        counters.rtcp_out += 1


def _as_ours(
    packets: Sequence[rtp.RtcpPacket], asterisk_ssrc: bytes | None, ours: int
) -> bytes | None:
    """Asterisk's compound with its SSRC (SR/RR sender, SDES chunks, BYE) replaced by *ours*;
    None if it cannot be built again."""
    asterisk = int.from_bytes(asterisk_ssrc, "big") if asterisk_ssrc else None
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
    try:
        return rtp.build_compound(out)
    except MalformedRtp:
        return None
