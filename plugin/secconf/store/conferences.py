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
    P:dialout:<id>                 stream  dial-outs the watcher made (target, result, ...;
                                         no keys): the watcher's own single-key stream
                                         (XADD + EXPIRE of that key only, any slot;
                                         secconf.store.watcher.WatcherJournal)

A dial-out dialog (the mixer called a participant after a REFER, or to replace a
leg) has ``dialout`` = "1"; its SSRCs come from the participant's answer
(:meth:`.DialOutRecords.answered`).

Once its 2xx passed a dialog record also holds ``epoch`` (the key epoch its edge
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
conferences, :mod:`.identity_dialogs`).  The store itself keeps the conference record,
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
from typing import ClassVar, Final, cast

import redis

from secconf.core.focus import ConferenceNotFound
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES

from . import conference_scripts as scripts
from ._names import ConferenceKeys, conference_key, dialog_id
from .conference_admission import ConferenceAdmission
from .conference_dialogs import ConferenceDialogs
from .conference_dialouts import DialOutRecords
from .conference_records import (
    Answered,
    ConferenceExists,
    ConferenceInfo,
    DialogExists,
    DialogRecord,
    Released,
    epoch_context,
    epoch_ticket_context,
    parse_ssrcs,
    text,
    unwrap_epoch_key,
)
from .conference_refers import ReferStream
from .errors import Conflict, CorruptRecord
from .identity_dialogs import IdentityDialogs
from .keywrap import KeyWrapper
from .redis import connect_blocking, redis_errors, register_script

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

#: Entries kept in a conference's rekey-failure stream.
REKEY_FAILED_MAX: Final = 1000


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
        self.keys = ConferenceKeys(prefix)
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
        self._add_epoch = register_script(client, scripts.ADD_EPOCH)
        self._drop_epoch = register_script(client, scripts.DROP_EPOCH)
        self._rekey_failed = register_script(client, scripts.REKEY_FAILED)

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

    # -- key epochs and the rekeys refused ---------------------------------------------

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
        keys = [self.conference_key(conference_id), self.conference_key(conference_id, "epochs")]
        with redis_errors("store a key epoch"):
            result = text(self._add_epoch(keys=keys, args=[group_key.epoch, blob, ticket_blob]))
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "stale":
            raise Conflict("epoch is not the next one")

    def drop_epoch(self, conference_id: str, epoch: int) -> None:
        """Undo :meth:`add_epoch` of *epoch* if it is still the newest (the edge refused it)."""
        keys = [self.conference_key(conference_id), self.conference_key(conference_id, "epochs")]
        with redis_errors("drop a key epoch"):
            result = text(self._drop_epoch(keys=keys, args=[int(epoch)]))
        if result != "ok":
            raise Conflict("epoch is not the newest any more")

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
        flat: list[str] = []
        for name, value in fields:
            flat += [name, value]
        keys = [self.conference_key(conference_id), self.keys.rekey_failed(conference_id)]
        with redis_errors("report a failed rekey"):
            result = text(self._rekey_failed(keys=keys, args=[int(max_entries), *flat]))
        return None if result == "not-found" else result

    def rekey_failures(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The rekey-failure stream's entries, oldest first (tests and operators)."""
        with redis_errors("read rekey failures"):
            raw = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self._redis.xrange(self.keys.rekey_failed(conference_id)),
            )
        return [(text(i), {text(k): text(v) for k, v in f.items()}) for i, f in raw]

    # -- reads (the focus, the watcher, tests and operators) -----------------------------

    def refers(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The stream's entries, oldest first (tests and operators)."""
        with redis_errors("read REFERs"):
            raw = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self._redis.xrange(self.keys.refer_stream(conference_id)),
            )
        return [(text(i), {text(k): text(v) for k, v in f.items()}) for i, f in raw]

    def get(self, conference_id: str) -> ConferenceInfo | None:
        with redis_errors("read a conference"):
            raw = cast(dict[bytes, bytes], self._redis.hgetall(self.conference_key(conference_id)))
        if not raw:
            return None
        fields = {text(k): text(v) for k, v in raw.items()}
        try:
            return ConferenceInfo(
                conference_id,
                fields["state"],
                fields["mode"],
                fields["creator"],
                fields["uri"],
                int(fields["epoch"]),
                fields["suite"],
                float(fields["created"]),
                int(fields.get("kms_legs", "0")),
            )
        except (KeyError, ValueError):
            raise CorruptRecord("conference record incomplete") from None

    def allowed(self, conference_id: str) -> frozenset[str]:
        with redis_errors("read an allowed set"):
            raw = cast(
                set[bytes], self._redis.smembers(self.conference_key(conference_id, "allowed"))
            )
        return frozenset(text(item) for item in raw)

    def members(self, conference_id: str) -> dict[str, int]:
        with redis_errors("read a roster"):
            raw = cast(
                dict[bytes, bytes],
                self._redis.hgetall(self.conference_key(conference_id, "members")),
            )
        return {text(k): int(v) for k, v in raw.items()}

    def ssrcs(self, conference_id: str) -> frozenset[int]:
        with redis_errors("read SSRCs"):
            raw = cast(list[bytes], self._redis.hkeys(self.conference_key(conference_id, "ssrcs")))
        return frozenset(int(item) for item in raw)

    def dialog(self, conference_id: str, call_id: str) -> DialogRecord | None:
        """The record of the dialog *call_id* in *conference_id*, ``None`` if it has none."""
        with redis_errors("read a dialog"):
            raw = cast(
                dict[bytes, bytes], self._redis.hgetall(self.keys.dialog(conference_id, call_id))
            )
        if not raw:
            return None
        fields = {text(k): text(v) for k, v in raw.items()}
        try:
            return DialogRecord(
                fields["conference"],
                fields["identity"],
                fields["leg"],
                fields["state"],
                parse_ssrcs(fields.get("ssrcs", "")),
                fields.get("creator") == "1",
                int(fields["epoch"]) if fields.get("epoch") else None,
                fields.get("media", ""),
                fields.get("mode", ""),
                fields.get("dialout") == "1",
                fields.get("peers", ""),
            )
        except (KeyError, ValueError):
            raise CorruptRecord("dialog record incomplete") from None

    def epoch_ticket(self, conference_id: str, epoch: int) -> bytes | None:
        """The unwrapped stored group epoch ticket of *epoch* (``None``: not a KMS epoch)."""
        with redis_errors("read an epoch ticket"):
            blob = self._redis.hget(self.conference_key(conference_id, "epochs"), f"ticket:{epoch}")
        if blob is None:
            return None
        return self._wrapper.unwrap(cast(bytes, blob), epoch_ticket_context(conference_id, epoch))

    def group_key(self, conference_id: str, epoch: int | None = None) -> GroupKey:
        """The key of *epoch* (the current one by default), unwrapped."""
        info = self.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        number = info.epoch if epoch is None else epoch
        with redis_errors("read a key epoch"):
            blob = self._redis.hget(self.conference_key(conference_id, "epochs"), str(number))
        if blob is None:
            raise ConferenceNotFound(f"no key for epoch {number}")
        return unwrap_epoch_key(
            self._wrapper, conference_id, number, SUITES[info.suite], cast(bytes, blob)
        )
