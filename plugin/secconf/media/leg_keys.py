"""A leg's keys, and the SRTP sessions made from them (the cold half of keying).

:class:`LegKeys` decides which keys a leg uses: the participant's SDES key (and,
for a grace period after an SDES re-INVITE, the previous one), the conference's
live epochs for a KMS leg, the epoch the leg protects under, Asterisk's key and
the edge's own key on an SRTP internal side.  It runs on control events only
(create, rekey, switch, epoch changes) and installs the resulting sessions into
the :class:`~secconf.media.leg.Leg`'s packet-path slots (``rx``, ``tx``,
``tx_epoch``, ``out_ssrc``, ``internal_tx``, ``asterisk_rx``), which the packet
path reads directly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from secconf.core.edge import Direction, EdgeConflict, EdgeNotFound, LegMode

from .keys import SrtpKey, session

if TYPE_CHECKING:
    from .leg import Leg

__all__ = ["LegKeys", "RxSessions"]


class RxSessions:
    """One inbound key: separate sessions for SRTP and SRTCP (SRTCP may be reset alone)."""

    __slots__ = ("epoch", "key", "rtcp", "rtp")

    def __init__(self, epoch: int, key: SrtpKey) -> None:
        self.epoch = epoch
        self.key = key
        self.rtp = session(key, inbound=True)
        self.rtcp = session(key, inbound=True)


class LegKeys:
    """The key material of one leg; installs the sessions the leg's packet path uses."""

    def __init__(
        self, leg: Leg, participant_key: SrtpKey | None, edge_internal_key: SrtpKey | None
    ) -> None:
        self.leg = leg
        self.participant_key = participant_key  # SDES mode
        self.previous_participant_key: SrtpKey | None = None
        self._previous_key_timer: asyncio.TimerHandle | None = None
        self.edge_internal_key = edge_internal_key  # the edge's key towards Asterisk
        self.asterisk_key: SrtpKey | None = None  # Asterisk's key towards the edge
        if leg.internal_mode == "srtp" and edge_internal_key is not None:
            leg.internal_tx = session(edge_internal_key, inbound=False)
        self.set_out_ssrc(leg.state.out_ssrc)
        self.set_tx_epoch(leg.state.tx_epoch)
        self.refresh_rx()

    def set_out_ssrc(self, ssrc: int) -> None:
        leg = self.leg
        owner = leg.conference.state.ssrcs.owner(ssrc)
        if owner != (leg.id, Direction.OUTBOUND):
            # R4: never protect under an SSRC the registry did not give this leg.
            raise EdgeConflict("outbound SSRC is not this leg's")
        leg.out_ssrc = ssrc.to_bytes(4, "big")

    def set_tx_epoch(self, epoch: int) -> None:
        """Protect towards the participant under *epoch* from the next packet."""
        leg = self.leg
        key = leg.conference.key(epoch, leg.state.suite)
        if key is None:
            raise EdgeNotFound(f"no {leg.state.suite} key for epoch {epoch}")
        leg.tx = session(key, inbound=False)
        leg.tx_epoch = epoch

    def refresh_rx(self) -> None:
        """Rebuild the inbound key list, keeping sessions of keys that stay (replay state)."""
        leg = self.leg
        if leg.mode is LegMode.SDES:
            wanted: list[tuple[int, SrtpKey]] = []
            if self.participant_key is not None:
                wanted.append((0, self.participant_key))
            if self.previous_participant_key is not None:
                wanted.append((-1, self.previous_participant_key))
        else:
            conference = leg.conference
            suite = leg.state.suite
            wanted = [
                (epoch, key)
                for epoch in conference.state.rx_epochs(leg.id)
                if (key := conference.key(epoch, suite)) is not None
            ]
        current = {(rx.epoch, rx.key.fingerprint): rx for rx in leg.rx}
        leg.rx = [current.get((e, k.fingerprint)) or RxSessions(e, k) for e, k in wanted]

    def set_participant_key(self, key: SrtpKey, grace: float) -> None:
        """SDES re-INVITE with a new participant key: the old one is tried for *grace* s."""
        leg = self.leg
        if leg.mode is not LegMode.SDES:
            raise EdgeConflict("only SDES legs have a participant key")
        if self.participant_key is not None and key.fingerprint == self.participant_key.fingerprint:
            return
        self.previous_participant_key, self.participant_key = self.participant_key, key
        if self._previous_key_timer is not None:
            self._previous_key_timer.cancel()
        self._previous_key_timer = leg.relay.loop.call_later(grace, self._drop_previous_key)
        self.refresh_rx()
        leg.conference.state.participant_rekeyed(leg.id, leg.relay.now())

    def _drop_previous_key(self) -> None:
        self.previous_participant_key = None
        self._previous_key_timer = None
        if not self.leg.closed:
            self.refresh_rx()

    def set_asterisk_key(self, key: SrtpKey) -> None:
        leg = self.leg
        if leg.internal_mode != "srtp":
            raise EdgeConflict("the internal leg is plain RTP: no Asterisk key")
        self.asterisk_key = key
        leg.asterisk_rx = session(key, inbound=True)

    def forget(self) -> None:
        """The leg stopped: every key and session goes."""
        if self._previous_key_timer is not None:
            self._previous_key_timer.cancel()
        leg = self.leg
        leg.tx = leg.internal_tx = leg.asterisk_rx = None
        leg.rx = []
        self.participant_key = self.previous_participant_key = None
        self.asterisk_key = self.edge_internal_key = None
