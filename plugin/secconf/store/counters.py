"""``P:timing``: the focus's phase timings, summed across workers and nodes (benchmarks only).

:class:`~secconf.focus.timing.PhaseTimer` hands over its totals every few answered INVITEs;
they are added to one hash in one pipelined round trip, outside the measured phases
(docs/kamailio.md, "Benchmark"). Durations and counts only: no identity, URI or key.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from ._names import timing_key

__all__ = ["TimingCounters"]


class TimingCounters:
    """``HINCRBY`` of each counter into ``<prefix>:timing``; a failure is reported, not raised."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self.key = timing_key(prefix)

    def add(self, counters: Mapping[str, int]) -> bool:
        """Add *counters*; False if Redis could not take them (the numbers are then lost)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for name, value in counters.items():
                pipe.hincrby(self.key, name, value)
            pipe.execute()
        except redis.RedisError:
            return False
        return True
