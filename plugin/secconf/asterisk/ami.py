"""An AMI client for the roster watcher, on top of panoramisk (docs/asterisk.md).

panoramisk parses the protocol; this layer adds what a long-running watcher
needs and panoramisk leaves out:

* every network step has a timeout (connect, login, each action);
* a lost connection is noticed (panoramisk's callback, plus a ``Ping`` with a
  timeout every ``keepalive`` seconds for a half-open TCP connection) and
  re-established with exponential backoff and jitter (``backoff_initial`` up to
  ``backoff_max``); panoramisk's own fixed-delay reconnect is switched off;
* actions in flight when the connection drops fail with :class:`AmiDisconnected`
  instead of being re-sent later by panoramisk (a stale ``Setvar`` or
  ``Originate`` replayed after a reconnect would be wrong);
* helpers for the actions secconf uses: ``ConfbridgeList``/``ConfbridgeListRooms``,
  ``Setvar`` of ``PJSIP_SEND_SESSION_REFRESH()`` / ``PJSIP_MEDIA_OFFER()``,
  ``Originate``, ``Hangup``.

Events go to the callbacks given to :meth:`AmiClient.on_event` as plain
``dict[str, str]``; ``on_connected`` callbacks run after each (re)login so a
follower can resynchronise (``ConfbridgeList`` of every room).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from panoramisk import Manager  # type: ignore[import-untyped]
from panoramisk.ami_protocol import AMIProtocol  # type: ignore[import-untyped]

from secconf.core.errors import ServiceUnavailable

__all__ = [
    "AmiClient",
    "AmiDisconnected",
    "AmiError",
    "AmiSettings",
    "AmiTimeout",
]

log = logging.getLogger("secconf.asterisk.ami")

EventCallback = Callable[[dict[str, str]], Awaitable[None] | None]
ConnectedCallback = Callable[["AmiClient"], Awaitable[None] | None]


class AmiError(ServiceUnavailable):
    """Asterisk refused an action (``Response: Error``) or the connection failed."""

    def __init__(self, message: str, response: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = dict(response or {})


class AmiTimeout(AmiError):
    """No answer within the timeout."""


class AmiDisconnected(AmiError):
    """Not connected, or the connection dropped while the action was in flight."""


@dataclass(frozen=True, slots=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "secconf"
    secret: str = ""
    connect_timeout: float = 2.0
    action_timeout: float = 2.0
    keepalive: float = 10.0
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    #: The two codec lists a rekey refresh alternates between (docs/asterisk.md,
    #: "The re-INVITE trigger"): each names a codec the other lacks, so the offer
    #: never equals the media state the previous answer left, and Asterisk always
    #: sends the re-INVITE.  The codecs in use come first.
    refresh_offers: tuple[str, str] = ("ulaw,alaw,gsm", "ulaw,alaw,adpcm")

    def __repr__(self) -> str:  # never the secret
        return f"AmiSettings({self.username}@{self.host}:{self.port})"


def _plain(message: Any) -> dict[str, str]:
    """A panoramisk Message (case-insensitive dict, maybe list values) as a plain dict."""
    out: dict[str, str] = {}
    for key, value in dict(message).items():
        out[str(key)] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return out


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager, with reconnecting handed to :class:`AmiClient`."""

    def __init__(self, client: AmiClient, **config: Any) -> None:
        super().__init__(**config)
        self._client = client

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        pinger: Any = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
        self.pinger = None
        self._client._lost(self)


class AmiClient:
    """One AMI connection that stays up: ``await client.start()``, ``await client.close()``."""

    def __init__(self, settings: AmiSettings) -> None:
        self.settings = settings
        self._manager: _Manager | None = None
        self._event_callbacks: list[tuple[str, EventCallback]] = []
        self._connected_callbacks: list[ConnectedCallback] = []
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._ready = asyncio.Event()
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None
        self._lost_signal = asyncio.Event()
        self._refreshes: dict[str, int] = {}
        self._events: asyncio.Queue[tuple[EventCallback, dict[str, str]]] = asyncio.Queue()
        self._deliverer: asyncio.Task[None] | None = None
        self.connects = 0

    # -- callbacks ----------------------------------------------------------------------

    def on_event(self, pattern: str, callback: EventCallback) -> None:
        """Call *callback* with every event whose name matches *pattern* (fnmatch, e.g. ``Confbridge*``)."""
        self._event_callbacks.append((pattern, callback))

    def on_connected(self, callback: ConnectedCallback) -> None:
        self._connected_callbacks.append(callback)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect and log in (raising :class:`AmiError` if *wait* and the first attempt fails),
        then keep the connection up in the background."""
        if self._deliverer is None:
            self._deliverer = asyncio.ensure_future(self._deliver())
        if wait:
            await self._connect_once()
        self._supervisor = asyncio.ensure_future(self._supervise(first_done=wait))

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError as exc:
            raise AmiTimeout(f"AMI not connected within {timeout} s") from exc

    async def close(self) -> None:
        self._closed = True
        for task in (self._supervisor, self._deliverer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._drop()

    async def _connect_once(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        manager = _Manager(
            self,
            loop=loop,
            host=settings.host,
            port=settings.port,
            username=settings.username,
            secret=settings.secret,
            events="on",
            ping_delay=10**6,  # our keepalive does it, with a timeout
            ping_interval=10**6,
            # Nothing is queued for a re-send after a reconnect.
            forgetable_actions=(),
        )
        manager.awaiting_actions = _NoQueue()
        manager.register_event("*", self._dispatch)
        try:
            # The TCP connection is ours (with a timeout); panoramisk's connect()
            # would retry on its own every reconnect_timeout seconds, forever.
            connection = await asyncio.wait_for(
                loop.create_connection(AMIProtocol, settings.host, settings.port),
                settings.connect_timeout,
            )
            made: asyncio.Future[Any] = loop.create_future()
            made.set_result(connection)
            manager.connection_made(made)  # sets the protocol up and sends Login
            login = manager.authenticated_future
            if login is None:
                raise AmiError("AMI login was not sent")
            response = await asyncio.wait_for(asyncio.shield(login), settings.connect_timeout)
        except TimeoutError as exc:
            manager.close()
            raise AmiTimeout(f"AMI {settings.host}:{settings.port}: no answer") from exc
        except OSError as exc:
            manager.close()
            raise AmiDisconnected(f"AMI {settings.host}:{settings.port}: {exc}") from exc
        except AmiError:
            manager.close()
            raise
        if not getattr(response, "success", False):
            manager.close()
            raise AmiError("AMI login refused", _plain(response))
        self._manager = manager
        self._lost_signal.clear()
        self._ready.set()
        self.connects += 1
        log.info("AMI connected to %s:%s", settings.host, settings.port)
        for callback in list(self._connected_callbacks):
            try:
                result = callback(self)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("AMI on_connected callback failed")

    async def _supervise(self, *, first_done: bool) -> None:
        delay = self.settings.backoff_initial
        connected = first_done
        while not self._closed:
            if connected:
                delay = self.settings.backoff_initial
                await self._watch()
                connected = False
                continue
            try:
                await self._connect_once()
                connected = True
            except AmiError as exc:
                log.warning("AMI connect failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter
                delay = min(delay * 2, self.settings.backoff_max)

    async def _watch(self) -> None:
        """Return when the connection is lost (or a keepalive Ping goes unanswered)."""
        while not self._closed:
            try:
                await asyncio.wait_for(self._lost_signal.wait(), self.settings.keepalive)
            except TimeoutError:
                try:
                    await self.action({"Action": "Ping"})
                except AmiError:
                    log.warning("AMI keepalive failed; reconnecting")
                    self._drop()
                    return
                continue
            return

    def _lost(self, manager: _Manager) -> None:
        if manager is self._manager:
            log.warning("AMI connection lost")
            self._drop()

    def _drop(self) -> None:
        manager, self._manager = self._manager, None
        self._ready.clear()
        self._lost_signal.set()
        for future in list(self._in_flight):
            if not future.done():
                future.set_exception(AmiDisconnected("AMI connection lost"))
                with contextlib.suppress(BaseException):
                    future.exception()
        self._in_flight.clear()
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.close()

    def _dispatch(self, manager: Manager, message: Any) -> None:
        fields = _plain(message)
        name = fields.get("Event", "")
        for pattern, callback in self._event_callbacks:
            if fnmatch.fnmatchcase(name, pattern):
                # One queue, one consumer: callbacks see events in Asterisk's order.
                self._events.put_nowait((callback, fields))

    async def _deliver(self) -> None:
        while True:
            callback, fields = await self._events.get()
            try:
                result = callback(fields)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("AMI event callback failed for %s", fields.get("Event"))

    # -- actions ------------------------------------------------------------------------

    async def action(
        self,
        fields: Mapping[str, str | list[str]],
        *,
        as_list: bool | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send an action; its response (or the list of events for a list action)."""
        manager = self._manager
        if manager is None or manager.protocol is None:
            raise AmiDisconnected("AMI not connected")
        future = manager.send_action(dict(fields), as_list=as_list)
        self._in_flight.add(future)
        try:
            result = await asyncio.wait_for(
                asyncio.shield(future), timeout or self.settings.action_timeout
            )
        except TimeoutError as exc:
            raise AmiTimeout(f"AMI {fields.get('Action')}: no answer") from exc
        finally:
            self._in_flight.discard(future)
        first = result[0] if isinstance(result, list) else result
        if str(first.get("Response", "")).lower() == "error":
            raise AmiError(
                f"AMI {fields.get('Action')}: {first.get('Message', 'error')}", _plain(first)
            )
        return result

    async def confbridge_rooms(self) -> list[str]:
        """The names of every running ConfBridge (``ConfbridgeListRooms``)."""
        try:
            result = await self.action({"Action": "ConfbridgeListRooms"})
        except AmiError as exc:
            if "no active conferences" in str(exc).lower():
                return []
            raise
        messages = result if isinstance(result, list) else [result]
        return [
            _plain(message)["Conference"]
            for message in messages
            if _plain(message).get("Event") == "ConfbridgeListRooms"
        ]

    async def confbridge_list(self, conference: str) -> list[dict[str, str]]:
        """The members of *conference* (``ConfbridgeList`` events: Channel, CallerIDNum, ...)."""
        try:
            result = await self.action({"Action": "ConfbridgeList", "Conference": conference})
        except AmiError as exc:
            # "No active conferences." (none at all) or "No Conference by that name found."
            # (others exist): both mean nobody is in *conference*.
            message = str(exc).lower()
            if "no active conferences" in message or "no conference by that name" in message:
                return []
            raise
        messages = result if isinstance(result, list) else [result]
        return [
            _plain(message)
            for message in messages
            if _plain(message).get("Event") == "ConfbridgeList"
        ]

    async def setvar(self, channel: str, variable: str, value: str) -> None:
        await self.action(
            {"Action": "Setvar", "Channel": channel, "Variable": variable, "Value": value}
        )

    async def getvar(self, channel: str, variable: str) -> str:
        response = await self.action({"Action": "Getvar", "Channel": channel, "Variable": variable})
        return str(response.get("Value", ""))

    async def session_refresh(self, channel: str, *, media_offer: str | None = None) -> None:
        """Make Asterisk send a re-INVITE on *channel* (see docs/asterisk.md, "re-INVITE trigger").

        With *media_offer* (a codec list such as ``"ulaw,alaw"``), first set
        ``PJSIP_MEDIA_OFFER(audio)`` to it: Asterisk skips a refresh whose
        offer would equal the current one ("Topologies are equal").
        """
        if media_offer is not None:
            await self.setvar(channel, "PJSIP_MEDIA_OFFER(audio)", media_offer)
        await self.setvar(channel, "PJSIP_SEND_SESSION_REFRESH()", "invite")

    async def rekey_refresh(self, channel: str) -> None:
        """Make Asterisk send a re-INVITE on *channel*, every time it is called.

        ``PJSIP_SEND_SESSION_REFRESH()`` alone is skipped by Asterisk when the
        offer it would send equals the active media state ("Topologies are
        equal. Not sending re-invite": always the case once a phone answered
        with every codec offered).  So each call first sets
        ``PJSIP_MEDIA_OFFER(audio)`` to the other of ``refresh_offers``: the
        active state is a subset of the previous offer, which lacks a codec the
        new offer has, so the two never compare equal (measured 4 of 4 in a row
        for every answering behaviour; tests/asterisk/test_reinvite.py).
        """
        count = self._refreshes.get(channel, 0)
        self._refreshes[channel] = count + 1
        offer = self.settings.refresh_offers[count % 2]
        await self.session_refresh(channel, media_offer=offer)

    def forget_channel(self, channel: str) -> None:
        """Drop the per-channel refresh state (the channel left)."""
        self._refreshes.pop(channel, None)

    async def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        variables: Mapping[str, str] | None = None,
        caller_id: str | None = None,
        ring_timeout: float = 30.0,
        channel_id: str | None = None,
    ) -> None:
        """``Originate`` asynchronously (``Async: true``): returns once Asterisk queued it.

        *channel_id* sets the new channel's Uniqueid (``ChannelId``), which the
        ``OriginateResponse`` event and the ``ConfbridgeJoin`` event carry.
        """
        fields: dict[str, str | list[str]] = {
            "Action": "Originate",
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": str(priority),
            "Async": "true",
            "Timeout": str(int(ring_timeout * 1000)),
        }
        if variables:
            fields["Variable"] = [f"{name}={value}" for name, value in variables.items()]
        if caller_id:
            fields["CallerID"] = caller_id
        if channel_id:
            fields["ChannelId"] = channel_id
        await self.action(fields, as_list=False)

    async def hangup(self, channel: str, cause: int = 16) -> None:
        await self.action({"Action": "Hangup", "Channel": channel, "Cause": str(cause)})


class _NoQueue(list[Any]):
    """panoramisk's ``awaiting_actions`` that never keeps anything for a re-send."""

    def append(self, item: Any) -> None:
        future = getattr(item, "future", None)
        if future is not None and not future.done():
            future.set_exception(AmiDisconnected("AMI connection lost"))
            with contextlib.suppress(BaseException):
                future.exception()

    def popleft(self) -> Any:
        raise IndexError("empty")
