"""Shared helpers for the SIP tests: captures, a fake clock, free ports."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

from secconf.core.sip.transaction import Action, CancelTimer, StartTimer, Timer

SIP_DIR = Path(__file__).parent.parent / "data" / "sip"


def provenance() -> dict[str, dict[str, object]]:
    with (SIP_DIR / "PROVENANCE.toml").open("rb") as handle:
        return tomllib.load(handle)


def load(name: str) -> bytes:
    return (SIP_DIR / name).read_bytes()


class FakeClock:
    """Runs the timers a sans-IO machine asks for, on a virtual clock.

    ``advance(seconds)`` fires due timers in deadline order, feeds each back
    through *fire* and records every action, with the time it happened.
    """

    def __init__(self, fire: Callable[[Timer], list[Action]]) -> None:
        self.now = 0.0
        self.fire = fire
        self.timers: dict[Timer, float] = {}
        self.log: list[tuple[float, Action]] = []

    def apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            self.log.append((self.now, action))
            if isinstance(action, StartTimer):
                self.timers[action.timer] = self.now + action.seconds
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.timer, None)
        return actions

    def advance(self, seconds: float) -> list[Action]:
        end = self.now + seconds
        out: list[Action] = []
        while self.timers:
            timer, deadline = min(self.timers.items(), key=lambda item: item[1])
            if deadline > end + 1e-9:
                break
            del self.timers[timer]
            self.now = deadline
            out += self.apply(self.fire(timer))
        self.now = end
        return out
