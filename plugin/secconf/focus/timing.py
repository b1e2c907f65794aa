"""Cheap per-INVITE timing of the module's phases (``[focus] timing = true``; off by default).

Where the time of an answered INVITE goes, summed per worker and added to a
Redis hash every :data:`FLUSH_EVERY` answered INVITEs (one ``HINCRBY``
pipeline, outside the measured phases), so the benchmark
(``bench/kamailio_bench.py``) reads averages over all workers::

    P:timing   hash  invites, parse_us, redis_us, edge_us, kms_us, rewrite_us,
                     request_us, reply_us  (microseconds, summed)

* ``parse``: the body taken apart and checked (multipart, URI list, SDP, crypto);
* ``redis``: every call of the conference store and the replay cache (request
  and reply route);
* ``edge``: every call of the media edge's control API;
* ``kms``: RESOLVE round trips (KMS mode);
* ``rewrite``: the SDP edits towards the mixer and towards the participant;
* ``request`` / ``reply``: the whole request route / tm reply route in Python.

Only durations and counts are written: no identity, URI or key.  The totals
of the last (< FLUSH_EVERY) INVITEs of a worker stay in that worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["FLUSH_EVERY", "PHASES", "PhaseTimer", "Timed"]

PHASES = ("parse", "redis", "edge", "kms", "rewrite", "request", "reply")
FLUSH_EVERY = 20


class PhaseTimer:
    """Sums of phase durations in one worker, flushed through *flush* every *every* INVITEs."""

    def __init__(
        self,
        flush: Callable[[dict[str, int]], None],
        *,
        every: int = FLUSH_EVERY,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._flush = flush
        self._every = every
        self.clock = clock
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.invites = 0

    def add(self, phase: str, seconds: float) -> None:
        self.totals[phase] = self.totals.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.add(name, self.clock() - start)

    def invite_done(self) -> None:
        self.invites += 1
        if self.invites >= self._every:
            self.flush()

    def flush(self) -> None:
        if not self.invites:
            return
        counters = {f"{name}_us": int(value * 1e6) for name, value in self.totals.items()}
        counters["invites"] = self.invites
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.invites = 0
        self._flush(counters)


class Timed:
    """A proxy adding the duration of every method call of *target* to *phase*.

    *parts* names attributes of *target* that are collaborators of their own (the
    conference store's ``admission``, ``dialogs``, ...): their method calls count too.
    Each is wrapped once, at its first use, and kept on the proxy.
    """

    def __init__(
        self, target: Any, timer: PhaseTimer, phase: str, parts: Iterable[str] = ()
    ) -> None:
        self._target = target
        self._timer = timer
        self._phase = phase
        self._parts = frozenset(parts)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name in self._parts:
            part = Timed(attribute, self._timer, self._phase)
            setattr(self, name, part)  # found as an attribute from now on: no __getattr__
            return part
        if not callable(attribute):
            return attribute
        timer, phase, clock = self._timer, self._phase, self._timer.clock

        def call(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return attribute(*args, **kwargs)
            finally:
                timer.add(phase, clock() - start)

        return call
