"""The JSON views of the relay the control API returns (docs/edge.md): legs and conferences.

Read-only and cold (one per API request).  A view never holds key material,
with one exception, said where it is: the edge's own key towards Asterisk in
a new leg's answer.
"""

from __future__ import annotations

from typing import Any

from secconf.core.edge import LegMode

from .counters import Counters
from .leg import Leg
from .relay import EdgeRelay

__all__ = ["conference_view", "leg_view", "new_leg_view"]


def new_leg_view(leg: Leg) -> dict[str, Any]:
    """The answer to POST /v1/legs: where each side listens, and the edge's key for Asterisk."""
    p_host, p_port = leg.participant_address
    i_host, i_port = leg.internal_address
    p_rtcp = leg.participant_rtcp_address[1]  # = p_port under rtcp-mux
    i_rtcp = leg.internal_rtcp_address[1]
    p_mux, i_mux = leg.prsock is None, leg.irsock is None
    advertise = leg.relay.advertise or p_host
    answer: dict[str, Any] = {
        "leg": leg.id,
        "id": leg.id,
        "conference": leg.conference.state.conference_id,
        "mode": leg.mode.value,
        "participant": {
            "host": advertise,
            "port": p_port,
            "rtp_port": p_port,
            "rtcp_port": p_rtcp,
            "rtcp_mux": p_mux,
        },
        "internal": {
            "host": i_host,
            "port": i_port,
            "rtp_port": i_port,
            "rtcp_port": i_rtcp,
            "rtcp_mux": i_mux,
            "mode": leg.internal_mode,
        },
        "external": {"address": advertise, "ports": [p_port], "rtcp_port": p_rtcp},
        "ssrc": leg.state.out_ssrc,
        "outbound_ssrc": leg.state.out_ssrc,
        "epoch": leg.state.tx_epoch,
    }
    answer["internal"].update({"address": i_host, "ports": [i_port]})
    edge_key = leg.keys.edge_internal_key
    if edge_key is not None:
        # The key the edge sends to Asterisk with: the module writes it into
        # Asterisk's SDP (a=crypto).  The one place a key leaves the edge.
        answer["internal"]["edge_key"] = edge_key.to_json()
    return answer


def leg_view(leg: Leg) -> dict[str, object]:
    """A leg's addresses, SSRCs, epochs, switch verification and counters."""
    state = leg.state
    check = state.check
    return {
        "leg": leg.id,
        "conference": leg.conference.state.conference_id,
        "mode": leg.mode.value,
        "internal_mode": leg.internal_mode,
        "participant": _address(leg.participant_address),
        "internal": _address(leg.internal_address),
        "participant_remote": _address(leg.participant_remote),
        "latched": _address(leg.latched),
        "internal_remote": _address(leg.internal_remote),
        "rtcp_mux": {"participant": leg.prsock is None, "internal": leg.irsock is None},
        "participant_rtcp": _address(leg.participant_rtcp_address),
        "internal_rtcp": _address(leg.internal_rtcp_address),
        "participant_rtcp_remote": _address(leg.participant_rtcp_peer),
        "rtcp_latched": _address(leg.rtcp_latched),
        "internal_rtcp_remote": _address(leg.internal_rtcp_peer),
        "ssrc": state.out_ssrc,
        "participant_ssrcs": sorted(int.from_bytes(s, "big") for s in leg.in_ssrcs),
        "epoch": state.tx_epoch,
        "suite": state.suite,
        "rx_epochs": [rx.epoch for rx in leg.rx] if leg.mode is LegMode.KMS else [],
        "switch": {
            "state": state.switch_state.value,
            "epoch": None if check is None else check.epoch,
            "reason": "" if check is None else check.reason,
            "since": None if check is None else check.started_at,
        },
        "counters": leg.counters.as_dict(),
    }


def conference_view(relay: EdgeRelay, conference_id: str) -> dict[str, object]:
    """A conference's epochs (who uses each, when it retires), legs, counters and collisions."""
    conference = relay.conference(conference_id)
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
                "keys": [{"suite": suite, "fingerprint": fp} for suite, fp in info.keys],
                "legs": state.epoch_users(info.number),
                "retire_in": _remaining(state.retire_at(info.number), relay.now()),
            }
            for info in sorted(state.epochs.values(), key=lambda i: i.number)
        ],
        "legs": [leg_view(leg) for leg in conference.legs.values()],
        "counters": counters.as_dict(),
        "collisions": [c.as_dict() for c in state.ssrcs.collisions],
    }


def _address(addr: tuple[str, int] | None) -> dict[str, object] | None:
    return None if addr is None else {"host": addr[0], "port": addr[1]}


def _remaining(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else max(0.0, round(deadline - now, 3))
