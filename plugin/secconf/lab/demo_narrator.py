"""The demo's narrator: prints each step and check as it happens, keeps the timeline and verdict."""

from __future__ import annotations

import time

from rich.console import Console

from .timeline import Timeline

__all__ = ["Story", "StoryFailed"]


class StoryFailed(Exception):
    """A step could not go on (the checks so far are reported)."""


class Story:
    """The narrator: prints steps and checks, keeps the timeline and the verdict."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.t0 = time.monotonic()
        self.timeline = Timeline(title)
        self.failed: list[str] = []
        self.passed = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def at(self, monotonic: float) -> float:
        return monotonic - self.t0

    def step(self, text: str) -> None:
        self.console.print(f"\n[bold cyan]{self.now():6.2f} s[/bold cyan]  [bold]{text}[/bold]")

    def say(self, text: str) -> None:
        self.console.print(f"           {text}")

    def check(self, ok: bool, text: str) -> bool:
        mark = "[green]ok[/green]    " if ok else "[red]FAILED[/red]"
        self.console.print(f"         {mark} {text}")
        if ok:
            self.passed += 1
        else:
            self.failed.append(text)
        return ok
