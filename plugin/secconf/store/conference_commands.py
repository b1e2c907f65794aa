"""The conference store's operations outside the focus's per-request scripts (command layer).

The reads of a conference, a dialog and their streams, and the key-epoch scripts (add,
drop, report a refused rekey), each written once as an operation (:mod:`.commands`):
:class:`~.conferences.ConferenceStore` runs them with its :class:`~.executors.SyncExecutor`
(the focus, tests, operators), the watcher with its :class:`~.executors.AsyncExecutor`.
Nothing here unwraps a key: that needs the KEK, which only the store's callers hold
(:meth:`.ConferenceStore.group_key` unwraps what
:meth:`ConferenceCommands.epoch_key_blob` reads).

The create, join, answer, in-dialog and release scripts (every SIP request of a Kamailio
worker) stay on their direct path in the parts (:mod:`.conference_admission`,
:mod:`.conference_dialogs`, ...): one ``DirectScript`` call each, nothing in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from secconf.core.focus import ConferenceNotFound

from . import conference_scripts as scripts
from ._names import ConferenceKeys
from .commands import Eval, Script, Steps, command, operation
from .conference_records import ConferenceInfo, DialogRecord, parse_ssrcs, text
from .errors import Conflict, CorruptRecord

__all__ = ["REKEY_FAILED_MAX", "ConferenceCommands"]

#: Entries kept in a conference's rekey-failure stream.
REKEY_FAILED_MAX: Final = 1000

_ADD_EPOCH: Final = Script(scripts.ADD_EPOCH)
_DROP_EPOCH: Final = Script(scripts.DROP_EPOCH)
_REKEY_FAILED: Final = Script(scripts.REKEY_FAILED)

#: A stream's entries as ``XRANGE`` answers them.
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _entries(raw: _Entries) -> list[tuple[str, dict[str, str]]]:
    return [(text(i), {text(k): text(v) for k, v in f.items()}) for i, f in raw]


class ConferenceCommands:
    """A conference's record, dialogs, streams and key epochs, as operations."""

    def __init__(self, prefix: str) -> None:
        self.keys = ConferenceKeys(prefix)

    def __repr__(self) -> str:
        return f"ConferenceCommands(prefix={self.keys.prefix!r})"

    # -- key epochs and the rekeys refused ---------------------------------------------

    @operation("store a key epoch")
    def add_epoch(self, conference_id: str, epoch: int, blob: bytes, ticket: bytes) -> Steps[None]:
        """Make *epoch* (its wrapped key *blob*, its wrapped *ticket* or b"") current."""
        keys = [
            self.keys.conference(conference_id),
            self.keys.conference(conference_id, "epochs"),
            self.keys.events(conference_id),
        ]
        result = text((yield Eval(_ADD_EPOCH, keys, [epoch, blob, ticket])))
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "stale":
            raise Conflict("epoch is not the next one")

    @operation("drop a key epoch")
    def drop_epoch(self, conference_id: str, epoch: int) -> Steps[None]:
        """Undo :meth:`add_epoch` of *epoch* if it is still the newest (the edge refused it)."""
        keys = [
            self.keys.conference(conference_id),
            self.keys.conference(conference_id, "epochs"),
            self.keys.events(conference_id),
        ]
        result = text((yield Eval(_DROP_EPOCH, keys, [int(epoch)])))
        if result != "ok":
            raise Conflict("epoch is not the newest any more")

    @operation("report a failed rekey")
    def rekey_failed(
        self, conference_id: str, fields: Sequence[tuple[str, str]], max_entries: int
    ) -> Steps[str | None]:
        """Append a failed rekey to the conference's stream; its entry id (``None``: no
        conference record, nothing to report to)."""
        flat: list[str] = []
        for name, value in fields:
            flat += [name, value]
        keys = [self.keys.conference(conference_id), self.keys.rekey_failed(conference_id)]
        result = text((yield Eval(_REKEY_FAILED, keys, [int(max_entries), *flat])))
        return None if result == "not-found" else result

    @operation("read rekey failures")
    def rekey_failures(self, conference_id: str) -> Steps[list[tuple[str, dict[str, str]]]]:
        """The rekey-failure stream's entries, oldest first."""
        return _entries((yield command("XRANGE", self.keys.rekey_failed(conference_id), "-", "+")))

    @operation("read a key epoch")
    def epoch_key_blob(self, conference_id: str, epoch: int) -> Steps[bytes | None]:
        """*epoch*'s wrapped key || salt, ``None`` if it has none."""
        blob: bytes | None = yield command(
            "HGET", self.keys.conference(conference_id, "epochs"), str(epoch)
        )
        return blob

    @operation("read an epoch ticket")
    def epoch_ticket_blob(self, conference_id: str, epoch: int) -> Steps[bytes | None]:
        """*epoch*'s wrapped group epoch ticket, ``None`` if it is no KMS epoch."""
        blob: bytes | None = yield command(
            "HGET", self.keys.conference(conference_id, "epochs"), f"ticket:{epoch}"
        )
        return blob

    # -- reads -----------------------------------------------------------------------------

    @operation("read REFERs")
    def refers(self, conference_id: str) -> Steps[list[tuple[str, dict[str, str]]]]:
        """The REFER stream's entries, oldest first (tests and operators)."""
        return _entries((yield command("XRANGE", self.keys.refer_stream(conference_id), "-", "+")))

    @operation("read a conference")
    def get(self, conference_id: str) -> Steps[ConferenceInfo | None]:
        raw: dict[bytes, bytes] = yield command("HGETALL", self.keys.conference(conference_id))
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

    @operation("read an allowed set")
    def allowed(self, conference_id: str) -> Steps[frozenset[str]]:
        raw: set[bytes] = yield command("SMEMBERS", self.keys.conference(conference_id, "allowed"))
        return frozenset(text(item) for item in raw)

    @operation("read a roster")
    def members(self, conference_id: str) -> Steps[dict[str, int]]:
        raw: dict[bytes, bytes] = yield command(
            "HGETALL", self.keys.conference(conference_id, "members")
        )
        return {text(k): int(v) for k, v in raw.items()}

    @operation("read SSRCs")
    def ssrcs(self, conference_id: str) -> Steps[frozenset[int]]:
        raw: list[bytes] = yield command("HKEYS", self.keys.conference(conference_id, "ssrcs"))
        return frozenset(int(item) for item in raw)

    @operation("read a dialog")
    def dialog(self, conference_id: str, call_id: str) -> Steps[DialogRecord | None]:
        """The record of the dialog *call_id* in *conference_id*, ``None`` if it has none."""
        raw: dict[bytes, bytes] = yield command("HGETALL", self.keys.dialog(conference_id, call_id))
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
