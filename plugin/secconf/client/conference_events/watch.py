"""A participant's subscription to its conference's state (RFC 6665, RFC 4575).

:class:`ConferenceWatch` SUBSCRIBEs to a conference URI with ``Event: conference``,
answers each NOTIFY with the status :func:`~.notify.read_notify` gives (a refusal
changes nothing held), keeps the roster view, refreshes before expiry, re-SUBSCRIBEs
for full state when a partial document cannot be applied (RFC 4575 §4.6), and
un-SUBSCRIBEs on close.

    watch = await ConferenceWatch.start(ua, "sip:conf@focus", protection=Protection.KMS,
                                         keyring=agent_keys)
    async for view in watch.views():          # ends when the subscription does
        show(view)
    await watch.close()

Everything is bounded: the body (:class:`~.notify.NotifyLimits`), the views queued for
a slow reader (the newest :attr:`WatchTiming.max_queued_views`; each view is a whole
state, so dropping older ones loses nothing), one SUBSCRIBE in flight at a time, one
re-SUBSCRIBE for full state per :attr:`WatchTiming.min_resync_interval`, and a
Timer N (RFC 6665 §4.1.2.4) after every SUBSCRIBE.  NOTIFYs are read as they arrive,
inside the user agent's answer to them, so none wait in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from secconf.core.confinfo import ConferenceView, Verdict
from secconf.core.errors import ProtocolError, SecconfError
from secconf.core.sip.message import SipRequest, SipResponse

from ..sip import Answer, SipRequestFailed, Subscription, UserAgent
from .keyring import EventKeyring
from .kms import MIKEY_CONTENT_TYPE, KmsSubscription
from .notify import (
    ACCEPT_KMS,
    ACCEPT_SDES,
    EVENT,
    NotifyLimits,
    Protection,
    SubState,
    read_notify,
)

__all__ = ["ConferenceWatch", "WatchTiming"]

log = logging.getLogger("secconf.client.conference_events")

#: RFC 6665 §4.1.2.2: a refresh answered with one of these ends the subscription.
_FATAL_REFRESH = frozenset({404, 405, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})
#: Refusals remembered for inspection (status codes, newest last).
_MAX_REFUSALS = 64
#: No refresh sooner than this after the last: a notifier granting 0 or 1 s cannot
#: drive a SUBSCRIBE loop.
_MIN_REFRESH_AFTER = 0.5


@dataclass(frozen=True, slots=True)
class WatchTiming:
    """The timers and bounds of a watch (seconds)."""

    #: Expires asked for in every SUBSCRIBE (the notifier may grant less).
    expires: int = 600
    #: Refresh this long before expiry at most (and at half the duration at the latest).
    refresh_margin: float = 60.0
    #: RFC 6665 §4.1.2.4 Timer N = 64*T1: a SUBSCRIBE with no NOTIFY within it failed.
    timer_n: float = 32.0
    #: Final answer to a SUBSCRIBE within this.
    request_timeout: float = 32.0
    #: At most one re-SUBSCRIBE for full state per this many seconds (a notifier that
    #: keeps sending gapped partial documents must not drive us to a SUBSCRIBE each).
    min_resync_interval: float = 1.0
    #: After the un-SUBSCRIBE, wait this long for the final NOTIFY.
    final_notify_wait: float = 2.0
    max_queued_views: int = 16

    def refresh_after(self, granted: int) -> float:
        """Seconds after a successful SUBSCRIBE to refresh it (never sooner than 0.5 s)."""
        return max(_MIN_REFRESH_AFTER, granted - min(granted / 2, self.refresh_margin))


@dataclass(slots=True)
class _Counters:
    refreshes: int = 0
    resyncs: int = 0
    refusals: deque[int] = field(default_factory=lambda: deque(maxlen=_MAX_REFUSALS))


class ConferenceWatch:
    """One participant's subscription to one conference's event package."""

    def __init__(
        self,
        ua: UserAgent,
        conference_uri: str,
        *,
        protection: Protection,
        keyring: EventKeyring | None,
        timing: WatchTiming,
        limits: NotifyLimits,
        on_view: Callable[[ConferenceView], None] | None,
    ) -> None:
        if protection is Protection.SDES and ua.transport != "tls":
            raise ValueError("SDES mode sends the roster in the clear: subscribe over TLS only")
        self.ua = ua
        self.conference_uri = conference_uri
        self.protection = protection
        self._keyring = keyring or EventKeyring()
        self.timing = timing
        self.limits = limits
        self.on_view = on_view
        #: The roster as last applied (None before the first full document, after the end).
        self.view: ConferenceView | None = None
        self.counters = _Counters()
        #: Set when the subscription is over; :attr:`end_reason` says why.
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self._subscription: Subscription | None = None
        self._notifier_tag: str | None = None
        self._views: asyncio.Queue[ConferenceView] = asyncio.Queue(timing.max_queued_views)
        self._notified = asyncio.Event()  # a NOTIFY came since the last SUBSCRIBE (Timer N)
        self._resync_wanted = asyncio.Event()
        self._refresh_due = 0.0
        self._expires_at = 0.0  # the subscription lapses then unless refreshed
        self._maintainer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # held so that they run to the end

    @classmethod
    async def start(
        cls,
        ua: UserAgent,
        conference_uri: str,
        *,
        protection: Protection,
        keyring: EventKeyring | None = None,
        kms: KmsSubscription | None = None,
        credentials: tuple[str, str] | None = None,
        timing: WatchTiming | None = None,
        limits: NotifyLimits | None = None,
        on_view: Callable[[ConferenceView], None] | None = None,
    ) -> ConferenceWatch:
        """SUBSCRIBE (answering a Digest challenge with *credentials*) and start watching.

        KMS mode: *kms* (``ParticipantAgent.subscription``) puts the TRANSFER_INIT in the
        SUBSCRIBE, verifies the focus's TRANSFER_RESP in the 2xx and installs the
        subscription's event key in *keyring* (default: a keyring of the watch's own);
        without *kms*, *keyring* must hold the key already.
        Raises :class:`~secconf.client.sip.SipRequestFailed` when the SUBSCRIBE is
        refused or not answered, a ``SecconfError`` when the 2xx's TRANSFER_RESP does not
        verify (the subscription is ended); the first NOTIFY is awaited in the
        background (Timer N ends the watch if none comes).
        """
        if protection is Protection.KMS and keyring is None and kms is None:
            raise ValueError("KMS mode needs the subscription's MIKEY exchange or a keyring")
        watch = cls(
            ua,
            conference_uri,
            protection=protection,
            keyring=keyring,
            timing=timing or WatchTiming(),
            limits=limits or NotifyLimits(),
            on_view=on_view,
        )
        accept = ACCEPT_KMS if protection is Protection.KMS else ACCEPT_SDES
        body, content_type = b"", None
        if kms is not None:
            early = kms.early_key()
            if early is not None:  # a NOTIFY may overtake the 2xx (RFC 6665 §4.1.2.4)
                watch._keyring.install(early)
            body, content_type = kms.body, MIKEY_CONTENT_TYPE
        watch._subscription = await ua.subscribe(
            conference_uri,
            EVENT,
            body=body,
            content_type=content_type,
            expires=watch.timing.expires,
            extra_headers=[("Accept", accept)],
            timeout=watch.timing.request_timeout,
            on_notify=watch._on_notify,
            credentials=credentials,
        )
        if kms is not None:
            await watch._take_exchange(kms)
        watch._granted_by(watch._subscription.response)
        watch._maintainer = asyncio.ensure_future(watch._maintain())
        return watch

    async def _take_exchange(self, kms: KmsSubscription) -> None:
        """The 2xx's TRANSFER_RESP: verified, its event key held; else un-SUBSCRIBE and raise."""
        response = self._subscription.response if self._subscription is not None else None
        try:
            self._keyring.install(kms.answered(response.body if response is not None else b""))
        except SecconfError as exc:
            self._end(f"the focus's TRANSFER_RESP did not verify: {exc.message}")
            await self._unsubscribe()
            raise

    # -- what the application reads -------------------------------------------------------

    async def next_view(self, timeout: float = 32.0) -> ConferenceView:
        """The next roster view applied (raises TimeoutError)."""
        return await asyncio.wait_for(self._views.get(), timeout)

    async def views(self) -> AsyncIterator[ConferenceView]:
        """Every roster view as it is applied, until the subscription ends."""
        while True:
            if self._views.empty() and self.ended.is_set():
                return
            getter = asyncio.ensure_future(self._views.get())
            ender = asyncio.ensure_future(self.ended.wait())
            try:
                await asyncio.wait({getter, ender}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the reader is cancelled: leave no task behind
                ender.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    @property
    def refusals(self) -> list[int]:
        """The status codes of the NOTIFYs refused so far (the newest 64)."""
        return list(self.counters.refusals)

    # -- NOTIFY ---------------------------------------------------------------------------

    def _on_notify(self, request: SipRequest) -> Answer:
        """The answer to one NOTIFY; the held view changes only with a 200."""
        if self.ended.is_set():
            return self._after_the_end(request)
        if self._notifier_tag is not None and request.from_.tag != self._notifier_tag:
            # RFC 6665 §4.1.4: a fork's second dialog; one notifier per watch.
            self.counters.refusals.append(481)
            return Answer(481)
        try:
            content = read_notify(
                request,
                self.view,
                protection=self.protection,
                over_tls=self.ua.transport == "tls",
                kek_for=self._keyring.kek_for,
                limits=self.limits,
            )
        except ProtocolError as exc:
            log.info("NOTIFY refused with %d: %s", exc.status_code, exc.message)
            self.counters.refusals.append(exc.status_code)
            return Answer(exc.status_code, reason=exc.reason)
        self._notifier_tag = request.from_.tag
        self._notified.set()
        received = content.received
        if received is not None:
            self._take(received.verdict, received.view)
        state = content.state
        if state.state is SubState.TERMINATED:
            self._end(f"terminated ({state.reason or 'no reason'})")
        elif state.expires is not None:
            self._set_duration(state.expires)  # RFC 6665 §4.1.3: "authoritative"
        return Answer(200)

    def _after_the_end(self, request: SipRequest) -> Answer:
        """The final NOTIFY after our un-SUBSCRIBE (RFC 6665 §4.1.2.3) gets 200 unread; others 481."""
        state = (request.get("subscription-state") or "").partition(";")[0].strip().lower()
        if state != "terminated" or request.from_.tag != self._notifier_tag:
            return Answer(481)
        self._notified.set()
        return Answer(200)

    def _take(self, verdict: Verdict, view: ConferenceView | None) -> None:
        if verdict is Verdict.APPLIED and view is not None:
            self.view = view
            self._publish(view)
        elif verdict is Verdict.RESYNC:
            self._resync_wanted.set()
        elif verdict is Verdict.ENDED:
            self.view = None
            self._end("conference deleted")
            # RFC 4575 §4.6 (docs/event-package.md): the subscriber SHOULD un-SUBSCRIBE.
            task = asyncio.ensure_future(self._unsubscribe())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _publish(self, view: ConferenceView) -> None:
        if self._views.full():
            self._views.get_nowait()  # a whole state supersedes the older ones
        self._views.put_nowait(view)
        if self.on_view is not None:
            try:
                self.on_view(view)
            except Exception:
                log.exception("on_view failed")

    def _end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()
            log.info("conference watch of %s ended: %s", self.conference_uri, reason)
            if self._maintainer is not None and self._maintainer is not asyncio.current_task():
                self._maintainer.cancel()

    # -- SUBSCRIBE: refresh, resync, un-SUBSCRIBE -----------------------------------------

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _granted_by(self, response: SipResponse | None) -> None:
        """RFC 6665 §4.1.2.1: the 2xx's Expires is the duration (no longer than asked)."""
        granted = self.timing.expires
        value = response.get("expires") if response is not None else None
        if value is not None and value.strip().isdigit():
            granted = min(granted, int(value.strip()))
        self._set_duration(granted)

    def _set_duration(self, seconds: int) -> None:
        now = self._now()
        self._expires_at = now + seconds
        self._refresh_due = now + self.timing.refresh_after(seconds)

    async def _maintain(self) -> None:
        """Timer N after the SUBSCRIBE, then refreshes and resyncs, one at a time."""
        last_resync = -self.timing.min_resync_interval
        if not await self._await_notify():
            return
        while not self.ended.is_set():
            delay = max(0.0, self._refresh_due - self._now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_wanted.wait(), delay)
            if self.ended.is_set():
                return
            if self._now() >= self._expires_at:
                self._end("expired")  # not refreshed in time (RFC 6665 §4.1.2.2)
                return
            resync = self._resync_wanted.is_set()
            if resync:
                wait = last_resync + self.timing.min_resync_interval - self._now()
                if wait > 0:
                    await asyncio.sleep(wait)
                last_resync = self._now()
                self._resync_wanted.clear()
                self.counters.resyncs += 1
            else:
                self.counters.refreshes += 1
            if not await self._refresh():
                return

    async def _await_notify(self) -> bool:
        """Timer N (RFC 6665 §4.1.2.4): False, and the watch ended, when no NOTIFY came."""
        try:
            await asyncio.wait_for(self._notified.wait(), self.timing.timer_n)
        except TimeoutError:
            self._end("no NOTIFY within Timer N")
            return False
        return True

    async def _refresh(self) -> bool:
        """One refreshing SUBSCRIBE; False when the subscription is over."""
        if self._subscription is None:
            return False
        self._notified.clear()
        try:
            response = await self._subscription.refresh(
                self.timing.expires, timeout=self.timing.request_timeout
            )
        except SipRequestFailed as exc:
            if exc.status_code in _FATAL_REFRESH:
                self._end(f"refresh refused ({exc.status_code})")
                return False
            # RFC 6665 §4.1.2.2: still valid until it expires; try again before that.
            log.info("refresh failed with %d; retrying", exc.status_code)
            left = self._expires_at - self._now()
            self._refresh_due = self._now() + max(
                _MIN_REFRESH_AFTER, min(self.timing.refresh_margin, left / 4)
            )
            return True
        self._granted_by(response)
        return await self._await_notify()

    async def _unsubscribe(self) -> None:
        """SUBSCRIBE with Expires: 0 (RFC 6665 §4.1.2.3), whatever answers it."""
        if self._subscription is None:
            return
        with contextlib.suppress(SecconfError, TimeoutError, ValueError):
            await self._subscription.refresh(0, timeout=self.timing.request_timeout)

    async def close(self) -> None:
        """Un-SUBSCRIBE and stop; the final NOTIFY is awaited briefly, then forgotten."""
        was_live = not self.ended.is_set()
        self._end("closed")
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if was_live:
            self._notified.clear()
            await self._unsubscribe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notified.wait(), self.timing.final_notify_wait)
        if self._subscription is not None:
            self._subscription.forget()
