"""The store's command layer: a Redis operation written once, as data, run by either executor.

An operation is a generator that *yields* what it needs Redis to do — a
:class:`Command`, a script (:class:`Eval`), a :class:`Pipeline` or a key :class:`Scan` —
and receives each reply (``reply = yield Command(("HGETALL", key))``); what it
returns is the operation's result.  An error reply of Redis (redis-py's
``ResponseError``: ``BUSYGROUP``, ``WRONGTYPE``, ...) is thrown into it at that
``yield``, so an operation can handle the one it expects.  The operation does no I/O
(the sans-IO split of h11 or aioquic): :class:`~.executors.SyncExecutor` runs it over
``redis.Redis`` (Kamailio workers, which have no event loop) and
:class:`~.executors.AsyncExecutor` over ``redis.asyncio`` (the watcher); both turn
Redis failing into the store's errors the same way.

Writing one (docs/store.md "The command layer")::

    @operation("read a roster")
    def members(self, conference: str) -> Steps[dict[str, RosterEntry]]:
        raw = yield command("HGETALL", self.key(conference))
        return {k.decode(): RosterEntry.from_json(v) for k, v in raw.items()}

and run it with ``executor.run(rosters.members(c))`` or ``await executor.run(...)``.
Replies are what redis-py's ``execute_command`` answers (its per-command response
callbacks applied: ``HGETALL`` a dict, ``SET`` a bool or ``None``, ``XRANGE`` a list of
``(id, fields)``), bytes as stored (the clients do not decode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar

__all__ = [
    "Command",
    "Eval",
    "Operation",
    "Pipeline",
    "Request",
    "Scan",
    "Script",
    "Steps",
    "command",
    "operation",
]

P = ParamSpec("P")
T = TypeVar("T")

#: One argument of a command as redis-py encodes it.
Arg: TypeAlias = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command, its name first (``("XGROUP CREATE", key, group, "0")`` as redis-py
    spells its two-word commands, so its response callback applies)."""

    args: tuple[Arg, ...]


def command(*args: Arg) -> Command:
    return Command(args)


@dataclass(frozen=True, slots=True, eq=False)
class Script:
    """A Lua script's source.  Each executor loads it once per client and keeps the runner
    (for a plain ``redis.Redis``, :class:`~.redis.DirectScript`): define scripts at module
    level, never per call."""

    text: str


@dataclass(frozen=True, slots=True)
class Eval:
    """Run *script* with *keys* and *args* (``EVALSHA``, loaded again after ``NOSCRIPT``)."""

    script: Script
    keys: Sequence[Arg]
    args: Sequence[Arg] = ()


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Several commands in one round trip; a ``MULTI``/``EXEC`` if *transaction*.  The reply
    is the list of their replies."""

    commands: tuple[Command, ...]
    transaction: bool


@dataclass(frozen=True, slots=True)
class Scan:
    """Every key matching *match* (``SCAN`` to the end; on a Cluster, every node's): the
    reply is the list of keys."""

    match: str
    count: int = 500


#: What an operation may yield.
Request: TypeAlias = Command | Eval | Pipeline | Scan
#: An operation's body: yields requests, is sent their replies, returns its result.
Steps: TypeAlias = Generator[Request, Any, T]


@dataclass(frozen=True, slots=True)
class Operation(Generic[T]):
    """One store operation ready to run: its steps, and what it does in words (the
    executors' error messages: "could not *action*")."""

    action: str
    steps: Steps[T]


def operation(action: str) -> Callable[[Callable[P, Steps[T]]], Callable[P, Operation[T]]]:
    """Make a generator function an operation's factory (see the module doc)."""

    def decorate(function: Callable[P, Steps[T]]) -> Callable[P, Operation[T]]:
        @functools.wraps(function)
        def make(*args: P.args, **kwargs: P.kwargs) -> Operation[T]:
            return Operation(action, function(*args, **kwargs))

        return make

    return decorate
