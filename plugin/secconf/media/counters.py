"""Per-leg packet counters: what the relay did with each datagram, by outcome.

The names are the JSON keys of a leg's ``counters`` (docs/edge.md) and the
source of the Prometheus families in :mod:`secconf.media.metrics`.
"""

from __future__ import annotations

__all__ = ["COUNTER_NAMES", "Counters"]

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
