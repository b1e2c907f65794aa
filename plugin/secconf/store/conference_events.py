"""What a conference looks like to its event package's subscribers, read in one round trip.

The notifier (docs/event-package.md, "The focus's side") polls :meth:`ConferenceEvents.counters`
(one pipelined read of the conferences' ``P:conf:{<id>}:events`` counters) and, when one moved,
reads that conference's :meth:`~ConferenceEvents.facts` and describes them
(:func:`secconf.core.confinfo.describe`).  Who bumps the counter, in the same script or
MULTI as the change it announces: the focus's create, join, dial-out, answer, release and
epoch scripts (:mod:`.conference_scripts`), and the watcher's roster writes
(:class:`.watcher.RosterStore`).  Reading the counter *before* the facts means a change
that lands in between is read now and announced again at the next poll: never missed.

:meth:`~ConferenceEvents.facts` is one pipeline (one round trip, not atomic across its
two slots): the script :data:`FACTS` over the conference's own slot (its record, the
dialogs index and every dialog record, the departures) and the watcher's roster
``P:roster:<c>`` (another slot).  The script reads each dialog record by a name it builds
from the index (``P:conf:{<id>}:dialog:<dialog id>``), which ``KEYS`` cannot list in
advance; every such key shares the conference's hash tag, so the script stays within one
slot and runs on a Redis Cluster node too (the one deliberate exception to "every key in
``KEYS``", docs/store.md).  The roster's Call-IDs are matched to the dialogs by their
SHA-256 (the dialog id).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from secconf.core.confinfo import (
    ConferenceFacts,
    DepartureFacts,
    MemberFacts,
    OfferMode,
    leg_endpoint,
)
from secconf.core.errors import SecconfError

from ._names import ConferenceKeys, dialog_id, roster_key
from .commands import Pipeline, Steps, command, operation
from .conference_records import parse_ssrcs, text
from .errors import CorruptRecord
from .watcher import RosterEntry

__all__ = ["FACTS", "ConferenceEvents"]

#: The fields of a dialog record the facts need, in the order :data:`FACTS` returns them.
_DIALOG_FIELDS: Final = ("identity", "state", "ssrcs", "mode", "joined", "dialout", "epoch")

# KEYS: conf, dialogs (index), departures; ARGV: the dialog keys' common start
# (``P:conf:{<id>}:dialog:``).  Read only.  Answers {} without a conference record, else
# {conf fields (state, mode, uri, epoch, rekeyed), departures (JSON each), then per dialog:
# its id and _DIALOG_FIELDS}.
FACTS: Final = """
local c = redis.call('HMGET', KEYS[1], 'state', 'mode', 'uri', 'epoch', 'rekeyed')
if not c[1] then return {} end
local out = {c, redis.call('LRANGE', KEYS[3], 0, -1)}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local d = redis.call('HMGET', ARGV[1] .. id, 'identity', 'state', 'ssrcs', 'mode', 'joined',
    'dialout', 'epoch')
  out[#out + 1] = id
  out[#out + 1] = d
end
return out
"""


def _number(value: object) -> int | None:
    raw = text(value) if value is not None else ""
    return int(raw) if raw else None


def _member(dialog: str, raw: Sequence[object], in_bridge: set[str]) -> MemberFacts | None:
    """One dialog record as a member's leg; ``None`` for a record gone or closing."""
    fields = dict(zip(_DIALOG_FIELDS, (None if v is None else text(v) for v in raw), strict=True))
    identity, state = fields["identity"], fields["state"]
    if not identity or state not in ("pending", "up"):
        return None  # expired since (dialog_ttl) or a refused answer's closing record
    return MemberFacts(
        identity,
        leg_endpoint(identity, dialog),
        in_bridge=dialog in in_bridge,
        answered=state == "up",
        dialed_out=fields["dialout"] == "1",
        mode=OfferMode(fields["mode"] or "sdes"),
        ssrcs=tuple(parse_ssrcs(fields["ssrcs"] or "")),
        joined=_number(fields["joined"]),
        epoch=_number(fields["epoch"]),
    )


def _departure(raw: bytes) -> DepartureFacts:
    fields = json.loads(raw)
    joined = fields.get("joined")
    return DepartureFacts(
        str(fields["identity"]),
        leg_endpoint(str(fields["identity"]), str(fields["dialog"])),
        fields["method"],
        int(fields["when"]),
        None if joined is None else int(joined),
        fields.get("dialout") is True,
    )


def _in_bridge(roster: Mapping[bytes, bytes]) -> set[str]:
    """The dialog ids of the roster's channels (those whose Call-ID the watcher knew)."""
    call_ids = (RosterEntry.from_json(value).call_id for value in roster.values())
    return {dialog_id(call_id) for call_id in call_ids if call_id}


class ConferenceEvents:
    """The event package's reads: the change counters and a conference's facts."""

    def __init__(self, prefix: str) -> None:
        self.keys = ConferenceKeys(prefix)

    def __repr__(self) -> str:
        return f"ConferenceEvents(prefix={self.keys.prefix!r})"

    @operation("read the conferences' change counters")
    def counters(self, conference_ids: Sequence[str]) -> Steps[list[int | None]]:
        """Each conference's change counter (``None``: no such conference), one round trip.

        A pipeline of ``GET`` rather than one ``MGET``: the counters lie in their
        conferences' slots, which a Redis Cluster refuses in one ``MGET`` (CROSSSLOT); on
        one server it is the same single round trip.
        """
        if not conference_ids:
            return []
        gets = tuple(command("GET", self.keys.events(c)) for c in conference_ids)
        raw: list[bytes | None] = yield Pipeline(gets, transaction=False)
        return [None if value is None else int(value) for value in raw]

    @operation("read a conference's facts")
    def facts(self, conference_id: str) -> Steps[ConferenceFacts | None]:
        """What the conference looks like now (``None``: no such conference); one round trip."""
        keys = self.keys
        script = command(
            "EVAL", FACTS, 3,
            keys.conference(conference_id), keys.dialogs(conference_id),
            keys.departures(conference_id),
            keys.conference(conference_id, "dialog:"),
        )  # fmt: skip
        roster = command("HGETALL", roster_key(keys.prefix, conference_id))
        raw, members = yield Pipeline((script, roster), transaction=False)
        if not raw:
            return None
        try:
            return _facts(conference_id, raw, _in_bridge(members))
        except (KeyError, TypeError, ValueError, SecconfError) as exc:
            raise CorruptRecord(f"conference record unreadable ({type(exc).__name__})") from None


def _facts(conference_id: str, raw: list[Any], in_bridge: set[str]) -> ConferenceFacts:
    state, mode, uri, epoch, rekeyed = (None if v is None else text(v) for v in raw[0])
    dialogs = raw[2:]
    members = (
        _member(text(dialogs[i]), dialogs[i + 1], in_bridge) for i in range(0, len(dialogs), 2)
    )
    return ConferenceFacts(
        conference_id,
        uri or "",
        OfferMode(mode),
        int(epoch or ""),
        _number(rekeyed),
        state == "active",
        tuple(member for member in members if member is not None),
        tuple(_departure(item) for item in raw[1]),
    )
