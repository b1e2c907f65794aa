"""Conference state shared by every Kamailio worker and node: one Redis, atomic scripts.

This store is **synchronous** (``redis.Redis``): it runs inside Kamailio
workers, which have no event loop and must not start threads.  Every call has
the client's socket timeout (see :func:`connect_blocking`) and a dead or slow
Redis surfaces as :class:`~secconf.core.errors.ServiceUnavailable` (503).

Key layout (``P`` is the prefix; ``{id}`` is the conference id in braces, a
Redis Cluster hash tag: every key of one conference, its dialogs and streams
included, lives in one slot)::

    P:conf:{id}                    hash  state ("active"/"ended"), mode, creator, uri,
                                         created, epoch (current key epoch), suite,
                                         kms_legs (dialogs keyed in KMS mode)
    P:conf:{id}:allowed            set   identities allowed to join
    P:conf:{id}:members            hash  identity -> number of its dialogs (pending or up)
    P:conf:{id}:epochs             hash  epoch number -> wrapped key||salt
                                         (context ``conf-epoch:<id>:<n>``); for an epoch
                                         from the KMS also ``ticket:<n>`` -> the wrapped
                                         group epoch ticket (``conf-epoch-ticket:<id>:<n>``,
                                         secconf.core.mikey.group), deleted with the epochs
    P:conf:{id}:ssrcs              hash  SSRC (decimal) -> dialog id holding it
    P:conf:{id}:dialog:<dialog id> hash  conference, identity, leg, state ("pending"/"up"),
                                         ssrcs (comma list), creator ("1" for the creating call),
                                         mode (how this leg is keyed: "sdes"/"kms"),
                                         dialout ("1" for a dial-out dialog)
    P:conf:{id}:refer              stream  accepted REFERs to the focus (referrer, target,
                                         mode, ...): consumed by the dial-out watcher
                                         (secconf.store.watcher.ReferQueue);
                                         expires with the conference
    P:conf:{id}:rekey-failed       stream  re-INVITEs carrying a new epoch that a
                                         participant refused (leg, identity, call_id,
                                         status, epoch, ...): consumed by the watcher;
                                         expires with the conference
    P:conf:{id}:dialogs            set   the ids of the conference's dialogs (pending or up)
    P:conf:{id}:events             string  the change counter: INCR by every change a
                                         subscriber of the event package must see (the
                                         scripts here; the watcher's roster writes)
    P:conf:{id}:departures         list  the newest DEPARTURES_MAX dialogs released, JSON
                                         {identity, dialog, method, when, joined, dialout}
                                         (secconf.store.conference_events reads them)
    P:dialout:<id>                 stream  dial-outs the watcher made (target, result, ...;
                                         no keys): the watcher's own single-key stream
                                         (XADD + EXPIRE of that key only, any slot;
                                         secconf.store.watcher.WatcherJournal)

A dial-out dialog (the mixer called a participant after a REFER, or to replace a
leg) has ``dialout`` = "1"; its SSRCs come from the participant's answer
(:meth:`.DialOutRecords.answered`).

Once its 2xx passed a dialog record also holds ``joined`` (Redis's clock, POSIX
seconds), ``epoch`` (the key epoch its edge
leg sends under) and ``media`` (JSON: the negotiated streams with their crypto
tags, the edge's external and internal addresses), which rekey re-INVITEs use.

The dialog id is the SHA-256 of the SIP Call-ID (hex).  A dialog is addressed
by its conference and its Call-ID: the Kamailio module puts the conference id
into its Record-Route (``;sc-conf=<id>``), so every in-dialog request from
either side names it, and the reply and failure routes carry it in the
transaction's state.  Every script declares every key it touches in ``KEYS``
and all of them share the ``{id}`` tag: one round trip, one slot, on a single
Redis, behind Sentinel or on Redis Cluster alike.  The replay cache of a REFER's
TRANSFER_INIT (``P:replay:<sha256>``, another slot) is a separate single-key
``SET NX`` before the script, undone if the script refuses.

The store is composed of one part per concern, built once per client and reached as
attributes of :class:`ConferenceStore`: ``admission`` (create and join,
:mod:`.conference_admission`), ``dialogs`` (a dialog's answer, in-dialog gate, epoch
switch and release, :mod:`.conference_dialogs`), ``dialouts`` (the mixer's dial-outs,
:mod:`.conference_dialouts`), ``refer_stream`` (accepted REFERs,
:mod:`.conference_refers`) and ``identity_dialogs`` (dialogs per identity across
conferences, :mod:`.identity_dialogs`) and ``subscriptions`` (conference event
subscriptions, :mod:`.conference_subscriptions`).  The store itself keeps the conference record,
its key epochs and the reads.  The Lua scripts are data in :mod:`.conference_scripts`,
the records and their decoding in :mod:`.conference_records`, key names in
:class:`._names.ConferenceKeys`.

Every multi-key change is one Lua script: a refusal (unknown conference, not
allowed, SSRC taken, duplicate dialog) writes nothing.  When the last dialog of
a conference is released the conference is marked ended, its key epochs are
deleted at once, and its other keys expire after ``ended_ttl`` seconds; if
that dialog was the creating call and never answered, the conference never
existed and every key is deleted.  Dialog records expire after ``dialog_ttl``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import redis

from secconf.core.confinfo import ConferenceFacts
from secconf.core.focus import ConferenceNotFound
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES

from ._names import conference_key, dialog_id
from .conference_admission import ConferenceAdmission
from .conference_commands import REKEY_FAILED_MAX, ConferenceCommands
from .conference_dialogs import ConferenceDialogs
from .conference_dialouts import DialOutRecords
from .conference_events import ConferenceEvents
from .conference_records import (
    Answered,
    ConferenceExists,
    ConferenceInfo,
    DialogExists,
    DialogRecord,
    Released,
    epoch_context,
    epoch_ticket_context,
    unwrap_epoch_key,
)
from .conference_refers import ReferStream
from .conference_subscriptions import Subscriptions
from .executors import SyncExecutor
from .identity_dialogs import IdentityDialogs
from .keywrap import KeyWrapper
from .redis import connect_blocking, redis_errors

# The records and key helpers are re-exported: this module is where the focus, the
# watcher and the lab import the conference store's public names from.
__all__ = [
    "REKEY_FAILED_MAX",
    "Answered",
    "ConferenceExists",
    "ConferenceInfo",
    "ConferenceStore",
    "DialogExists",
    "DialogRecord",
    "Released",
    "conference_key",
    "connect_blocking",
    "dialog_id",
    "epoch_context",
    "epoch_ticket_context",
]


class ConferenceStore:
    """Conferences and their wrapped key epochs; the parts for admission, dialogs and REFERs.

    The parts (attributes below) share this store's client and :class:`ConferenceKeys`;
    each registers only the scripts it runs.
    """

    #: the attributes that are parts (their calls are Redis round trips, like the store's)
    PARTS: ClassVar[tuple[str, ...]] = (
        "admission",
        "dialogs",
        "dialouts",
        "refer_stream",
        "identity_dialogs",
        "subscriptions",
    )

    def __init__(
        self,
        client: redis.Redis,
        wrapper: KeyWrapper,
        prefix: str = "secconf",
        *,
        ended_ttl: float = 60.0,
        dialog_ttl: int = 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(ended_ttl, int | float) and ended_ttl > 0):
            raise ValueError("ended_ttl must be positive")
        self._redis = client
        self._wrapper = wrapper
        #: the reads and key-epoch scripts, as operations (the watcher runs them too)
        self._commands = ConferenceCommands(prefix)
        self._events = ConferenceEvents(prefix)
        self.keys = self._commands.keys
        #: create and join (the focus's INVITE path)
        self.admission = ConferenceAdmission(
            client, self.keys, wrapper, dialog_ttl=int(dialog_ttl), clock=clock
        )
        #: answered dialogs: the in-dialog gate, epoch switches, releases
        self.dialogs = ConferenceDialogs(
            client, self.keys, wrapper, ended_ttl_ms=max(1, math.ceil(ended_ttl * 1000))
        )
        #: the mixer's dial-outs
        self.dialouts = DialOutRecords(client, self.keys, dialog_ttl=int(dialog_ttl))
        #: accepted REFERs, queued for the dial-out watcher
        self.refer_stream = ReferStream(client, self.keys)
        #: each identity's concurrent dialogs across conferences
        self.identity_dialogs = IdentityDialogs(client, self.keys)
        #: conference event subscriptions (RFC 6665) and their node indexes
        self.subscriptions = Subscriptions(client, self.keys, wrapper)
        # Refusals pass unchanged (redis_errors): the focus fails loudly on one.
        self._run = SyncExecutor(client, errors=redis_errors).run

    def __repr__(self) -> str:
        return f"ConferenceStore(prefix={self.keys.prefix!r})"

    @property
    def client(self) -> redis.Redis:
        return self._redis

    # -- key names (ConferenceKeys; these two are what the watcher's tests read) ------

    def conference_key(self, conference_id: str, part: str = "") -> str:
        return self.keys.conference(conference_id, part)

    def refer_stream_key(self, conference_id: str) -> str:
        """``P:conf:{<id>}:refer``: the REFERs accepted for a conference, for the dial-out watcher."""
        return self.keys.refer_stream(conference_id)

    # -- key epochs and the rekeys refused (operations of ConferenceCommands) -------------

    def add_epoch(
        self, conference_id: str, group_key: GroupKey, ticket: bytes | None = None
    ) -> None:
        """Store the next epoch's key and make it current (the rekey step uses this).

        *ticket*: for an epoch from the KMS, the stored form of its group epoch
        ticket (:meth:`secconf.core.mikey.group.GroupEpochTicket.to_bytes`),
        wrapped under the KEK like the key, in the same script.
        """
        blob = self._wrapper.wrap(
            group_key.key + group_key.salt, epoch_context(conference_id, group_key.epoch)
        )
        ticket_blob = (
            b""
            if ticket is None
            else self._wrapper.wrap(ticket, epoch_ticket_context(conference_id, group_key.epoch))
        )
        self._run(self._commands.add_epoch(conference_id, group_key.epoch, blob, ticket_blob))

    def drop_epoch(self, conference_id: str, epoch: int) -> None:
        """Undo :meth:`add_epoch` of *epoch* if it is still the newest (the edge refused it)."""
        self._run(self._commands.drop_epoch(conference_id, epoch))

    def rekey_failed(
        self,
        conference_id: str,
        fields: Sequence[tuple[str, str]],
        *,
        max_entries: int = REKEY_FAILED_MAX,
    ) -> str | None:
        """Append a failed rekey to the conference's stream (for the watcher); its entry id.

        ``None`` when the conference record is gone (nothing to report to).
        The stream expires with the conference's other keys.
        """
        return self._run(self._commands.rekey_failed(conference_id, fields, max_entries))

    def rekey_failures(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The rekey-failure stream's entries, oldest first (tests and operators)."""
        return self._run(self._commands.rekey_failures(conference_id))

    # -- reads (the focus, tests and operators; the watcher runs the same commands) -------

    def refers(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The stream's entries, oldest first (tests and operators)."""
        return self._run(self._commands.refers(conference_id))

    def get(self, conference_id: str) -> ConferenceInfo | None:
        return self._run(self._commands.get(conference_id))

    def allowed(self, conference_id: str) -> frozenset[str]:
        return self._run(self._commands.allowed(conference_id))

    def members(self, conference_id: str) -> dict[str, int]:
        return self._run(self._commands.members(conference_id))

    def ssrcs(self, conference_id: str) -> frozenset[int]:
        return self._run(self._commands.ssrcs(conference_id))

    def dialog(self, conference_id: str, call_id: str) -> DialogRecord | None:
        """The record of the dialog *call_id* in *conference_id*, ``None`` if it has none."""
        return self._run(self._commands.dialog(conference_id, call_id))

    def event_facts(self, conference_id: str) -> ConferenceFacts | None:
        """What the conference looks like to its event package (``None``: no such
        conference): one round trip (:mod:`.conference_events`)."""
        return self._run(self._events.facts(conference_id))

    def event_counters(self, conference_ids: Sequence[str]) -> list[int | None]:
        """The conferences' change counters (``None``: no such conference), one round trip."""
        return self._run(self._events.counters(conference_ids))

    def epoch_ticket(self, conference_id: str, epoch: int) -> bytes | None:
        """The unwrapped stored group epoch ticket of *epoch* (``None``: not a KMS epoch)."""
        blob = self._run(self._commands.epoch_ticket_blob(conference_id, epoch))
        if blob is None:
            return None
        return self._wrapper.unwrap(blob, epoch_ticket_context(conference_id, epoch))

    def group_key(self, conference_id: str, epoch: int | None = None) -> GroupKey:
        """The key of *epoch* (the current one by default), unwrapped."""
        info = self.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        number = info.epoch if epoch is None else epoch
        blob = self._run(self._commands.epoch_key_blob(conference_id, number))
        if blob is None:
            raise ConferenceNotFound(f"no key for epoch {number}")
        return unwrap_epoch_key(self._wrapper, conference_id, number, SUITES[info.suite], blob)
