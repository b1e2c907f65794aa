"""A fake ``KSR`` module for fast unit tests of the adapter (tests only; records every call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeKsr:
    pvs: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    relay_result: int = 1

    def __post_init__(self) -> None:
        fake = self

        class Namespace:
            def __init__(self, prefix: str, results: dict[str, Any] | None = None) -> None:
                self._prefix = prefix
                self._results = results or {}

            def __getattr__(self, name: str) -> Any:
                def call(*args: Any) -> Any:
                    fake.calls.append((f"{self._prefix}.{name}", args))
                    result = self._results.get(name, 1)
                    return result() if callable(result) else result

                return call

        class Pv:
            def get(self, name: str) -> Any:
                return fake.pvs.get(name)

            def sets(self, name: str, value: str) -> None:
                fake.calls.append(("pv.sets", (name, value)))
                fake.pvs[name] = value

        self.pv = Pv()
        self.tm = Namespace("tm", {"t_relay": lambda: fake.relay_result, "t_check_trans": -1})
        self.sl = Namespace("sl")
        self.hdr = Namespace("hdr")
        self.textops = Namespace("textops")
        self.rr = Namespace("rr")
        self.maxfwd = Namespace("maxfwd")
        self.sanity = Namespace("sanity")
        self.siputils = Namespace("siputils", {"has_totag": -1})

    def is_myself_ruri(self) -> bool:
        return True

    def set_drop(self) -> None:
        self.calls.append(("set_drop", ()))

    def info(self, text: str) -> None:
        self.calls.append(("info", (text,)))

    def err(self, text: str) -> None:
        self.calls.append(("err", (text,)))

    def warn(self, text: str) -> None:
        self.calls.append(("warn", (text,)))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
