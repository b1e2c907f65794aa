"""Dial-out dialogs: the mixer calling a participant (after a REFER, or to replace a leg).

A dial-out dialog has ``dialout`` = "1" in its record; it is admitted like a join but
without SSRCs, which come with the participant's answer (:meth:`DialOutRecords.answered`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from secconf.core.errors import Forbidden, NotAcceptable
from secconf.core.focus import ConferenceNotFound, SsrcCollision
from secconf.core.gate import DialogPeers

from . import conference_scripts as scripts
from ._names import ConferenceKeys, check_identity, dialog_id
from .conference_records import DialogExists, check_leg, check_ssrcs, peer_fields, text
from .errors import CorruptRecord
from .redis import redis_errors, register_script

__all__ = ["DialOutRecords"]


class DialOutRecords:
    """The records of the mixer's dial-outs (``ConferenceStore.dialouts``)."""

    def __init__(self, client: redis.Redis, keys: ConferenceKeys, *, dialog_ttl: int) -> None:
        self._keys = keys
        self._dialog_ttl = dialog_ttl
        self._dialout = register_script(client, scripts.DIALOUT)
        self._answered = register_script(client, scripts.DIALOUT_ANSWERED)

    def __repr__(self) -> str:
        return f"DialOutRecords(prefix={self._keys.prefix!r})"

    def record(
        self,
        conference_id: str,
        *,
        identity: str,
        call_id: str,
        leg: str,
        mixed: bool = False,
        mode: str = "sdes",
    ) -> int:
        """Record the mixer's dial-out to *identity* (pending); return the current epoch.

        Like a join, one script that checks before it writes:
        :class:`ConferenceNotFound` (404), :class:`~secconf.core.errors.Forbidden`
        (403, *identity* not in the allowed set), :class:`~secconf.core.errors.NotAcceptable`
        (488, the conference is keyed in another mode than the leg's *mode*, unless
        *mixed*), :class:`DialogExists`.  The dialog's mode is *mode* (``sdes``, or
        ``kms``: counted in the conference's ``kms_legs``).  The record has
        ``dialout`` = "1"; its SSRCs come with the participant's answer
        (:meth:`answered`).
        """
        check_identity(identity)
        check_leg(leg)
        if mode not in ("sdes", "kms"):
            raise ValueError("a dial-out leg is keyed in sdes or kms mode")
        keys = [
            self._keys.conference(conference_id),
            self._keys.conference(conference_id, "allowed"),
            self._keys.conference(conference_id, "members"),
            self._keys.dialog(conference_id, call_id),
            self._keys.dialogs(conference_id),
            self._keys.events(conference_id),
        ]
        args: list[Any] = [
            identity, leg, dialog_id(call_id), self._dialog_ttl, conference_id,
            "" if mixed else mode, mode,
        ]  # fmt: skip
        with redis_errors("record a dial-out"):
            result = text(self._dialout(keys=keys, args=args))
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "mode":
            raise NotAcceptable(f"this conference is not keyed in {mode} mode")
        if result == "forbidden":
            raise Forbidden("the dial-out target is not allowed in this conference")
        if result == "dialog-exists":
            raise DialogExists("dialog already recorded")
        try:
            return int(result)
        except ValueError:
            raise CorruptRecord(f"dial-out script answered {result!r}") from None

    def answered(
        self,
        conference_id: str,
        call_id: str,
        *,
        media: str,
        epoch: int,
        ssrcs: Sequence[int] = (),
        peers: DialogPeers | None = None,
    ) -> None:
        """A dial-out's 2xx passed: its SSRCs registered, the dialog up on *epoch*.

        :class:`SsrcCollision` (an SSRC of another dialog) and
        :class:`ConferenceNotFound` write nothing.  One script, one slot: the
        dialog, the conference and its SSRC map (all under ``{conference_id}``).
        """
        ssrc_list = check_ssrcs(ssrcs)
        keys = [
            self._keys.dialog(conference_id, call_id),
            self._keys.conference(conference_id),
            self._keys.conference(conference_id, "ssrcs"),
            self._keys.events(conference_id),
        ]
        args: list[Any] = [dialog_id(call_id), media, int(epoch), *peer_fields(peers),
                           *ssrc_list]  # fmt: skip
        with redis_errors("record a dial-out's answer"):
            result = text(self._answered(keys=keys, args=args))
        if result == "ssrc":
            raise SsrcCollision("an answered SSRC is already used in this conference")
        if result != "ok":
            raise ConferenceNotFound(f"dial-out dialog or conference gone ({result})")
