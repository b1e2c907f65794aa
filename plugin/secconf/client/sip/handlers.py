"""What the application sees of an incoming request, and what it answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secconf.core.sip.message import SipRequest

from .common import Addr

if TYPE_CHECKING:
    from .call import Call

__all__ = ["Answer", "Handler", "IncomingRequest"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a handler answers an incoming request with."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None

    def __repr__(self) -> str:
        return f"Answer({self.status}, {len(self.body)}-byte body)"


@dataclass(slots=True)
class IncomingRequest:
    """A request handed to a handler; ``call`` is set for requests inside a call."""

    request: SipRequest
    source: Addr
    call: Call | None = None

    @property
    def body(self) -> bytes:
        return self.request.body


Handler = Callable[[IncomingRequest], Awaitable[Answer]]
