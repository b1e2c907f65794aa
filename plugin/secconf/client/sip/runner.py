"""Carrying out what the sans-IO SIP machines ask for: sending, timers, results.

A transaction (:mod:`secconf.core.sip.transaction`) or the 2xx retransmitter
(:class:`~secconf.core.sip.dialog.AnswerRetransmitter`) answers every input
with a list of actions; this module performs them on the event loop, so
the machines themselves never touch a socket or a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from secconf.core.sip.transaction import (
    Action,
    CancelTimer,
    ClientTransaction,
    DeliverToTU,
    Send,
    ServerTransaction,
    StartTimer,
    Terminated,
    TimedOut,
    Timer,
    TransportFailed,
)

from .transport import Link, TransportLayer

__all__ = ["MachineRunner", "ignore"]

OnDeliver = Callable[[DeliverToTU], None]
OnFailure = Callable[[TimedOut | TransportFailed], None]


def ignore(action: object = None) -> None:
    """A callback for results nobody waits for."""
    return None


class MachineRunner:
    """Runs the actions of every machine of one user agent; owns their timers."""

    def __init__(self, transport: TransportLayer) -> None:
        self._transport = transport
        self._timers: dict[tuple[int, Timer], asyncio.TimerHandle] = {}

    def run(
        self,
        owner: object,
        link: Link,
        actions: list[Action],
        fire: Callable[[Timer], list[Action]],
        on_deliver: OnDeliver,
        on_failure: OnFailure,
        on_terminated: Callable[[], None],
    ) -> None:
        """Carry out *actions* of machine *owner*, in order; *fire* feeds it its timers."""
        ident = id(owner)
        for action in actions:
            if isinstance(action, Send):
                if not self._transport.send(link, action.data):
                    # §8.1.3.1 / §17.1.4: a transport error is an input of the machine.
                    self.run(
                        owner,
                        link,
                        self._transport_error(owner),
                        fire,
                        on_deliver,
                        on_failure,
                        on_terminated,
                    )
                    return
            elif isinstance(action, StartTimer):
                old = self._timers.pop((ident, action.timer), None)
                if old is not None:
                    old.cancel()

                def fired(timer: Timer = action.timer) -> None:
                    self._timers.pop((ident, timer), None)
                    self.run(owner, link, fire(timer), fire, on_deliver, on_failure, on_terminated)

                self._timers[(ident, action.timer)] = asyncio.get_running_loop().call_later(
                    action.seconds, fired
                )
            elif isinstance(action, CancelTimer):
                handle = self._timers.pop((ident, action.timer), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, DeliverToTU):
                on_deliver(action)
            elif isinstance(action, TimedOut | TransportFailed):
                on_failure(action)
            elif isinstance(action, Terminated):
                for key in [k for k in self._timers if k[0] == ident]:
                    self._timers.pop(key).cancel()
                on_terminated()

    def cancel_all(self) -> None:
        """Stop every timer (the user agent is closing)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    @staticmethod
    def _transport_error(owner: object) -> list[Action]:
        if isinstance(owner, ClientTransaction | ServerTransaction):
            return owner.transport_error()
        return []
