"""Small shared pieces of the user agent: address and header types, Allow, background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

__all__ = ["ALLOW", "Addr", "BackgroundTasks", "ExtraHeaders"]

Addr = tuple[str, int]
ExtraHeaders = Iterable[tuple[str, str]]
#: The methods we understand (RFC 3261 §20.5), sent in Allow with INVITE, 405 and OPTIONS.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, SUBSCRIBE, NOTIFY"

_T = TypeVar("_T")


class BackgroundTasks:
    """Tasks the user agent starts and nobody awaits (a BYE, a first NOTIFY, a UAS handler).

    Held here so that they are not garbage-collected while running, and so
    that closing the user agent cancels whatever is still running.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
