"""The edge's ``/metrics``: Prometheus text exposition (format 0.0.4), families as data.

Most families are sums of the per-leg :class:`~secconf.media.counters.Counters`
(live legs plus removed ones); the rest are relay-wide figures.
"""

from __future__ import annotations

import math

from .counters import COUNTER_NAMES
from .relay import EdgeRelay

__all__ = ["render_metrics"]

#: Per-reason drops: ``secconf_edge_dropped_total{reason=<counter name>}``.
_DROPPED = (
    "unlatched",
    "malformed",
    "oversized",
    "ssrc_refused",
    "internal_unlatched",
    "internal_malformed",
    "no_remote",
    "send_errors",
    "protect_errors",
    "wrong_port",
)

#: Counter families from the leg counters: (name, help, ((labels, counter name), ...)).
_COUNTER_FAMILIES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "packets_total",
        "RTP/RTCP packets relayed",
        (
            ('{direction="in",kind="rtp"}', "rtp_in"),
            ('{direction="in",kind="rtcp"}', "rtcp_in"),
            ('{direction="out",kind="rtp"}', "rtp_out"),
            ('{direction="out",kind="rtcp"}', "rtcp_out"),
        ),
    ),
    (
        "bytes_total",
        "RTP payload bytes relayed",
        (('{direction="in"}', "bytes_in"), ('{direction="out"}', "bytes_out")),
    ),
    (
        "auth_failures_total",
        "SRTP/SRTCP packets that failed authentication",
        (
            ('{side="participant"}', "auth_failures"),
            ('{side="internal"}', "internal_auth_failures"),
        ),
    ),
    ("replays_total", "SRTP/SRTCP replays refused", (("", "replays"),)),
    ("epoch_switches_total", "leg switches to a new key epoch", (("", "epoch_switches"),)),
    (
        "dropped_total",
        "packets dropped, by reason",
        tuple((f'{{reason="{name}"}}', name) for name in _DROPPED),
    ),
    (
        "srtcp_index_restarts_total",
        "SRTCP index restarts tolerated after a key change",
        (("", "srtcp_restarts"),),
    ),
)

if not {c for _, _, samples in _COUNTER_FAMILIES for _, c in samples} <= set(COUNTER_NAMES):
    raise RuntimeError("a metrics family names an unknown counter")  # pragma: no cover


#: A family to render: (name, type, help, [(labels, value)]).
_Family = tuple[str, str, str, list[tuple[str, float]]]


def _relay_families(relay: EdgeRelay) -> list[_Family]:
    """The relay-wide families."""
    verdicts: list[tuple[str, float]] = [
        (f'{{state="{s}"}}', n) for s, n in relay.verdicts.items() if s != "none"
    ]
    return [
        ("switch_verdicts_total", "counter", "switch verification outcomes", verdicts),
        ("ssrc_collisions_total", "counter", "SSRC collisions refused", [("", relay.collisions)]),
        (
            "epochs_destroyed_total",
            "counter",
            "key epochs destroyed",
            [("", relay.epochs_destroyed)],
        ),
        ("legs", "gauge", "legs now", [("", len(relay.legs))]),
        ("conferences", "gauge", "conferences now", [("", len(relay.conferences))]),
    ]


def render_metrics(relay: EdgeRelay) -> str:
    """Every family, counters first, as Prometheus text."""
    totals = relay.totals().as_dict()
    families: list[_Family] = [
        (name, "counter", text, [(labels, totals[counter]) for labels, counter in samples])
        for name, text, samples in _COUNTER_FAMILIES
    ]
    families += _relay_families(relay)
    lines = []
    for name, kind, text, values in families:
        lines.append(f"# HELP secconf_edge_{name} {text}")
        lines.append(f"# TYPE secconf_edge_{name} {kind}")
        for labels, value in values:
            shown = int(value) if math.isfinite(value) and value == int(value) else value
            lines.append(f"secconf_edge_{name}{labels} {shown}")
    return "\n".join(lines) + "\n"
