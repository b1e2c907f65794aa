"""The REFERs accepted for a conference: ``P:conf:{<id>}:refer``, read by the dial-out watcher.

The focus appends (:meth:`ReferStream.add`), the watcher consumes the stream with a
consumer group (:class:`secconf.store.watcher.ReferQueue`); both name it by
:meth:`~._names.ConferenceKeys.refer_stream`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, cast

import redis

from secconf.core.errors import Forbidden, RateLimited, ReplayedMessage
from secconf.core.focus import ConferenceNotFound

from . import conference_scripts as scripts
from ._names import ConferenceKeys, check_identity, dialog_id
from .conference_records import text
from .redis import redis_errors, register_script
from .replay import forget_replay_key

__all__ = ["REFER_STREAM_MAX", "ReferStream"]

#: Entries kept in a conference's REFER stream (approximate trim, XADD MAXLEN ~).
REFER_STREAM_MAX: Final = 1000


class ReferStream:
    """Appends accepted REFERs to their conference's stream (``ConferenceStore.refer_stream``)."""

    def __init__(self, client: redis.Redis, keys: ConferenceKeys) -> None:
        self._redis = client
        self._keys = keys
        self._refer = register_script(client, scripts.REFER)

    def __repr__(self) -> str:
        return f"ReferStream(prefix={self._keys.prefix!r})"

    def add(
        self,
        conference_id: str,
        *,
        referrer: str,
        target: str,
        fields: Sequence[tuple[str, str]] = (),
        replay_key: str | None = None,
        replay_ttl: float = 0.0,
        max_entries: int = REFER_STREAM_MAX,
        mode: str | None = None,
        per_minute: int = 1_000_000,
    ) -> str:
        """Append an accepted REFER to the conference's stream; return the entry id.

        One script checks, then writes: the conference is active
        (:class:`ConferenceNotFound`, 404), *referrer* has a dialog in it
        (:class:`~secconf.core.errors.Forbidden`, 403), *target* is in the
        allowed set (403), the conference is keyed in *mode* (the referrer was
        authenticated the way the conference requires, 403), and *replay_key* (a replay-cache key, see
        :mod:`secconf.store.replay`) is new (``ReplayedMessage``, 403); a
        refusal writes nothing, an acceptance remembers the replay key for
        *replay_ttl* seconds and appends ``referrer``, ``target`` and *fields*.
        The replay key lies in another Cluster slot: it is set first (``SET NX
        PX``, one key) and deleted again if the script then refuses; two
        round trips when a replay key is given, one otherwise.
        """
        check_identity(referrer, "referrer")
        check_identity(target, "refer target")
        keys = [
            self._keys.conference(conference_id),
            self._keys.conference(conference_id, "allowed"),
            self._keys.conference(conference_id, "members"),
            self._keys.refer_stream(conference_id),
            self._keys.conference(conference_id, f"refer-rate:{dialog_id(referrer)}"),
        ]
        ttl_ms = max(1, math.ceil(replay_ttl * 1000)) if replay_key else 0
        flat: list[str] = ["referrer", referrer, "target", target]
        for name, value in fields:
            flat += [name, value]
        args: list[Any] = [
            referrer, target, ttl_ms, int(max_entries), mode or "", int(per_minute), *flat,
        ]  # fmt: skip
        if replay_key:
            with redis_errors("check a REFER for replay"):
                fresh = self._redis.set(replay_key, b"1", nx=True, px=ttl_ms)
            if not fresh:
                raise ReplayedMessage("MIKEY message replayed")
        try:
            with redis_errors("record a REFER"):
                result = text(self._refer(keys=keys, args=args))
        except BaseException:
            if replay_key:
                forget_replay_key(self._redis, replay_key)
            raise
        if replay_key and (
            result in ("not-found", "not-member", "target", "mode") or result.startswith("rate:")
        ):
            forget_replay_key(self._redis, replay_key)
        _raise_refusal(result, per_minute, mode)
        return result

    def entries(self, conference_id: str) -> list[tuple[str, dict[str, str]]]:
        """The stream's entries, oldest first (tests and operators)."""
        with redis_errors("read REFERs"):
            raw = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self._redis.xrange(self._keys.refer_stream(conference_id)),
            )
        return [(text(i), {text(k): text(v) for k, v in f.items()}) for i, f in raw]


def _raise_refusal(result: str, per_minute: int, mode: str | None) -> None:
    """The REFER script's refusal as the error the focus answers with (an entry id passes)."""
    if result.startswith("rate:"):
        wait_ms = int(result.split(":", 1)[1] or 0)
        raise RateLimited(
            f"more than {per_minute} REFERs a minute", math.ceil(max(wait_ms, 1) / 1000)
        )
    if result == "not-found":
        raise ConferenceNotFound("no such conference")
    if result == "not-member":
        raise Forbidden("the referrer is not in this conference")
    if result == "target":
        raise Forbidden("the refer target is not allowed in this conference")
    if result == "mode":
        raise Forbidden(f"this conference does not take {mode}-mode authentication")
    if result == "replay":
        raise ReplayedMessage("MIKEY message replayed")
