"""``Timed`` counts the calls of a proxied object's parts too (the conference store's)."""

from __future__ import annotations

from secconf.focus.timing import PhaseTimer, Timed


class _Part:
    def call(self) -> str:
        return "part"


class _Target:
    PARTS = ("part",)

    def __init__(self) -> None:
        self.part = _Part()
        self.plain = _Part()

    def call(self) -> str:
        return "target"


def test_calls_of_named_parts_are_timed_and_the_part_wrapped_once() -> None:
    ticks = iter(range(100))
    timer = PhaseTimer(lambda totals: None, clock=lambda: float(next(ticks)))
    timed = Timed(_Target(), timer, "redis", parts=_Target.PARTS)
    assert timed.call() == "target"
    assert timed.part.call() == "part"
    assert timer.totals["redis"] == 2.0
    assert timed.part is timed.part  # cached: no proxy built per call
    assert timed.plain.call() == "part"  # not a part: not timed
    assert timer.totals["redis"] == 2.0
