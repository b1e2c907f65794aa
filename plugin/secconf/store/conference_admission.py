"""Admission to a conference: its creation with the creator's dialog, and every join.

The join path of the focus: each call is one Lua script (one round trip, one slot) that
checks everything before it writes, so a refused INVITE leaves nothing in Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from secconf.core.errors import Forbidden, NotAcceptable, RateLimited
from secconf.core.focus import ConferenceNotFound, SsrcCollision
from secconf.core.keys import GroupKey

from . import conference_scripts as scripts
from ._names import ConferenceKeys, check_identity, dialog_id
from .conference_records import (
    ConferenceExists,
    DialogExists,
    check_leg,
    check_ssrcs,
    epoch_context,
    text,
)
from .errors import CorruptRecord, InvalidRecord
from .keywrap import KeyWrapper
from .redis import redis_errors, register_script

__all__ = ["ConferenceAdmission"]


class ConferenceAdmission:
    """Creates conferences and admits joining dialogs (``ConferenceStore.admission``)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: ConferenceKeys,
        wrapper: KeyWrapper,
        *,
        dialog_ttl: int,
        clock: Callable[[], float],
    ) -> None:
        self._keys = keys
        self._wrapper = wrapper
        self._dialog_ttl = dialog_ttl
        self._clock = clock
        self._create = register_script(client, scripts.CREATE)
        self._join = register_script(client, scripts.JOIN)

    def __repr__(self) -> str:
        return f"ConferenceAdmission(prefix={self._keys.prefix!r})"

    def create(
        self,
        conference_id: str,
        *,
        creator: str,
        uri: str,
        group_key: GroupKey,
        call_id: str,
        leg: str,
        allowed: Iterable[str] = (),
        ssrcs: Sequence[int] = (),
        mode: str = "sdes",
    ) -> None:
        """Record a new conference with its creator's dialog (pending) and key epoch 1.

        Raises :class:`DialogExists` (this Call-ID already has a record in this
        conference: a retransmission) or :class:`ConferenceExists` (the id is
        taken); nothing written.
        """
        check_identity(creator, "creator")
        members = [check_identity(identity, "allowed identity") for identity in allowed]
        check_leg(leg)
        ssrc_list = check_ssrcs(ssrcs)
        if group_key.epoch != 1:
            raise InvalidRecord("a conference starts at key epoch 1")
        blob = self._wrapper.wrap(group_key.key + group_key.salt, epoch_context(conference_id, 1))
        keys = [
            self._keys.conference(conference_id),
            self._keys.conference(conference_id, "allowed"),
            self._keys.conference(conference_id, "members"),
            self._keys.conference(conference_id, "epochs"),
            self._keys.conference(conference_id, "ssrcs"),
            self._keys.dialog(conference_id, call_id),
            self._keys.dialogs(conference_id),
            self._keys.events(conference_id),
        ]
        args: list[Any] = [
            mode,
            creator,
            uri,
            repr(float(self._clock())),
            group_key.suite.name,
            blob,
            self._dialog_ttl,
            leg,
            dialog_id(call_id),
            conference_id,
            len(ssrc_list),
            *ssrc_list,
            *members,
        ]
        with redis_errors("create a conference"):
            result = text(self._create(keys=keys, args=args))
        if result == "conf-exists":
            raise ConferenceExists(f"conference {conference_id} exists")
        if result == "dialog-exists":
            raise DialogExists("dialog already recorded")
        if result != "ok":
            raise CorruptRecord(f"create script answered {result!r}")

    def join(
        self,
        conference_id: str,
        *,
        identity: str,
        call_id: str,
        leg: str,
        ssrcs: Sequence[int] = (),
        mode: str | None = None,
        mixed: bool = False,
        limit: int = 1_000_000,
    ) -> int:
        """Add *identity*'s dialog (pending) to the conference; return the current epoch.

        *identity* may hold at most *limit* dialogs in the conference (the roster counts
        them): one more is :class:`~secconf.core.errors.RateLimited`, nothing written.

        *mode* is how this leg is keyed (recorded in the dialog); unless *mixed*
        (``policy.mixed_modes``) it must be the conference's mode.

        Refusals, with nothing written: :class:`ConferenceNotFound` (404, no
        such active conference), :class:`~secconf.core.errors.Forbidden` (403,
        not in the allowed set), :class:`SsrcCollision` (488),
        :class:`~secconf.core.errors.NotAcceptable` (488, the conference is
        keyed in another *mode*), :class:`DialogExists`.
        """
        check_identity(identity)
        check_leg(leg)
        ssrc_list = check_ssrcs(ssrcs)
        keys = [
            self._keys.conference(conference_id),
            self._keys.conference(conference_id, "allowed"),
            self._keys.conference(conference_id, "members"),
            self._keys.conference(conference_id, "ssrcs"),
            self._keys.dialog(conference_id, call_id),
            self._keys.dialogs(conference_id),
            self._keys.events(conference_id),
        ]
        args: list[Any] = [
            identity,
            leg,
            dialog_id(call_id),
            self._dialog_ttl,
            conference_id,
            "" if mixed else (mode or ""),
            mode or "",
            int(limit),
            *ssrc_list,
        ]
        with redis_errors("join a conference"):
            result = text(self._join(keys=keys, args=args))
        if result == "limit":
            raise RateLimited(f"{identity} holds {limit} dialogs in this conference already", 30)
        if result == "not-found":
            raise ConferenceNotFound("no such conference")
        if result == "mode":
            raise NotAcceptable(f"this conference is not keyed in {mode} mode")
        if result == "forbidden":
            raise Forbidden("not a member of this conference")
        if result == "ssrc":
            raise SsrcCollision("an offered SSRC is already used in this conference")
        if result == "dialog-exists":
            raise DialogExists("dialog already recorded")
        try:
            return int(result)
        except ValueError:
            raise CorruptRecord(f"join script answered {result!r}") from None
