"""The edge's relay: every conference and leg, driven by the control API and the tick loop.

:class:`EdgeRelay` keeps the conferences (their core state and the key bytes of
their live epochs) and legs, creates legs (binding their sockets), adds and
drops epochs, switches legs, and applies the actions of the sans-IO
:class:`secconf.core.edge.ConferenceState`, where the decisions (epochs, grace,
SSRCs, switch verification) are made.  The packet path is
:class:`secconf.media.leg.Leg`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from secconf.core.edge import (
    Action,
    BadEdgeRequest,
    ConferenceState,
    EdgeConflict,
    EdgeNotFound,
    EpochDestroyed,
    LegMode,
    RxEpochsChanged,
    SwitchState,
    SwitchVerdict,
    VerifyPolicy,
)

from .counters import Counters
from .keys import SrtpKey
from .leg import Leg
from .sockets import PortAllocator

__all__ = ["Conference", "EdgeRelay", "check_ident", "check_rtcp_remote"]

log = logging.getLogger("secconf.edge")

_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+-")


def check_ident(value: object, what: str) -> str:
    """Conference and leg ids: 1..128 characters of ``[A-Za-z0-9._:@+-]``."""
    if not isinstance(value, str) or not 0 < len(value) <= 128 or set(value) - _IDENT_CHARS:
        raise BadEdgeRequest(f"{what} must be 1..128 characters of A-Z a-z 0-9 . _ : @ + -")
    return value


@dataclass(slots=True)
class Conference:
    """A conference's core state plus the key bytes of its live epochs."""

    state: ConferenceState
    keys: dict[int, dict[str, SrtpKey]]  # epoch -> suite -> key (one per suite in use, #30)
    legs: dict[str, Leg]

    def key(self, epoch: int, suite: str) -> SrtpKey | None:
        return self.keys.get(epoch, {}).get(suite)


def _leg_suite(mode: LegMode, participant_key: SrtpKey | None, suite: str | None) -> str | None:
    """The leg's participant-side suite (None: the epoch's first); refuses a mode/key mismatch."""
    if mode is LegMode.SDES and participant_key is None:
        raise BadEdgeRequest("an SDES leg needs the participant's key")
    if mode is LegMode.KMS and participant_key is not None:
        raise BadEdgeRequest("a KMS leg receives under the group key: no participant key")
    if participant_key is None:
        return suite
    # SDES: the participant side runs one suite both ways (RFC 4568 §6.1).
    if suite not in (None, participant_key.suite):
        raise BadEdgeRequest("the leg's suite is its participant key's")
    return participant_key.suite


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
        state = (
            ConferenceState(conference_id, grace=self.grace, policy=self.policy)
            if conference is None
            else conference.state
        )
        return state.check_epoch(epoch, key.suite, key.fingerprint)

    def epoch_keys(self, conference_id: str, epoch: int) -> list[SrtpKey]:
        """The keys epoch *epoch* holds, one per suite, first added first."""
        conference = self.conferences.get(conference_id)
        return [] if conference is None else list(conference.keys.get(epoch, {}).values())

    def add_epoch(self, conference_id: str, epoch: int, key: SrtpKey) -> bool:
        """Epoch *epoch*'s key in *key*'s suite (legs of other suites are untouched)."""
        conference = self.ensure_conference(conference_id)
        created = conference.state.add_epoch(epoch, key.suite, key.fingerprint, self.now())
        if created:
            conference.keys.setdefault(epoch, {})[key.suite] = key
            for leg in conference.legs.values():
                if leg.mode is LegMode.KMS and leg.state.suite == key.suite:
                    leg.keys.refresh_rx()
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
        suite: str | None = None,
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
        suite = _leg_suite(mode, participant_key, suite)
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
            suite=suite,
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
        if epoch not in state.epochs:
            raise EdgeNotFound(f"no epoch {epoch} in this conference")
        if leg.conference.key(epoch, leg.state.suite) is None:
            raise EdgeNotFound(f"epoch {epoch} holds no {leg.state.suite} key")
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
            leg.keys.set_tx_epoch(epoch)
            leg.counters.epoch_switches += 1
            leg.keys.refresh_rx()
        return changed

    # -- actions from the core --

    def apply(self, conference: Conference, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, EpochDestroyed):
                conference.keys.pop(action.epoch, None)  # the key bytes go with it
                self.epochs_destroyed += 1
                log.info("conference %s: epoch %d destroyed", action.conference, action.epoch)
                for each in conference.legs.values():
                    each.keys.refresh_rx()
                if self.on_epoch_destroyed is not None:
                    self.on_epoch_destroyed(action.conference, action.epoch)
            elif isinstance(action, RxEpochsChanged):
                changed = conference.legs.get(action.leg)
                if changed is not None:
                    changed.keys.refresh_rx()
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

    def close(self) -> None:
        for leg in list(self.legs.values()):
            leg.stop()
        self.legs.clear()
        self.conferences.clear()
