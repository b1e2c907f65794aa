"""How many conference dialogs an identity holds across conferences (``[limits]``).

``P:ident:{<hash>}`` is a sorted set of ``<conference>/<dialog id>`` scored by the time
each was taken; its own Cluster slot, so one round trip per call and no conference key.
"""

from __future__ import annotations

import math

import redis

from secconf.core.errors import RateLimited

from . import conference_scripts as scripts
from ._names import ConferenceKeys, check_identity, dialog_id
from .conference_records import text
from .redis import redis_errors, register_script

__all__ = ["IdentityDialogs"]


class IdentityDialogs:
    """Counts each identity's concurrent dialogs (``ConferenceStore.identity_dialogs``)."""

    def __init__(self, client: redis.Redis, keys: ConferenceKeys) -> None:
        self._redis = client
        self._keys = keys
        self._hold = register_script(client, scripts.HOLD_DIALOG)

    def __repr__(self) -> str:
        return f"IdentityDialogs(prefix={self._keys.prefix!r})"

    def hold(
        self, identity: str, conference_id: str, call_id: str, *, limit: int, max_age: int = 86400
    ) -> None:
        """Count one more concurrent dialog for *identity*, or :class:`RateLimited`.

        A retransmission (the same dialog again) is no new one.  Entries older than
        *max_age* seconds are dropped (a dialog whose end was never seen); the key
        expires with the newest entry.  One round trip, one slot (the identity's).
        """
        check_identity(identity, "identity")
        member = f"{conference_id}/{dialog_id(call_id)}"
        with redis_errors("count an identity's dialogs"):
            result = text(
                self._hold(
                    keys=[self._keys.identity(identity)],
                    args=[member, int(limit), int(max_age) * 1000],
                )
            )
        if result.startswith("full:"):
            wait_ms = int(result.split(":", 1)[1] or 0)
            raise RateLimited(
                f"{identity} holds {limit} conference dialogs already",
                math.ceil(max(wait_ms, 1000) / 1000),
            )

    def drop(self, identity: str, conference_id: str, call_id: str) -> None:
        """The dialog ended: it no longer counts for *identity* (idempotent)."""
        if not identity:
            return
        with redis_errors("release an identity's dialog"):
            self._redis.zrem(self._keys.identity(identity), f"{conference_id}/{dialog_id(call_id)}")
