"""A conference dialog's life after admission: answered, gated, switched, released.

The in-dialog gate reads here (:meth:`ConferenceDialogs.sender`, and a BYE's
:meth:`~ConferenceDialogs.release_from`: the sender's check and the release in one
script).  When the last dialog of a conference is released the conference ends
(see :mod:`.conferences` for what is deleted and what expires).
"""

from __future__ import annotations

from typing import Any, cast

import redis

from secconf.core.confinfo import DisconnectionMethod
from secconf.core.focus import ConferenceNotFound
from secconf.core.gate import DialogPeers, Direction
from secconf.core.sdes import SUITES

from . import conference_scripts as scripts
from ._names import ConferenceKeys, dialog_id
from .conference_records import (
    PEER_FIELDS,
    Answered,
    DialogRecord,
    Released,
    parse_ssrcs,
    peer_fields,
    released,
    sender_result,
    text,
    unwrap_epoch_key,
)
from .errors import CorruptRecord
from .keywrap import KeyWrapper
from .redis import redis_errors, register_script

__all__ = ["ConferenceDialogs"]

#: What a dialog's departure may say (``busy`` is a dial-out refused: never a member).
_METHODS = frozenset(
    {DisconnectionMethod.DEPARTED, DisconnectionMethod.BOOTED, DisconnectionMethod.FAILED}
)


class ConferenceDialogs:
    """Dialogs once admitted: their 2xx, in-dialog gate, epoch switch and release.

    ``ConferenceStore.dialogs``.
    """

    def __init__(
        self, client: redis.Redis, keys: ConferenceKeys, wrapper: KeyWrapper, *, ended_ttl_ms: int
    ) -> None:
        self._redis = client
        self._keys = keys
        self._wrapper = wrapper
        self._ended_ttl_ms = ended_ttl_ms
        self._answered = register_script(client, scripts.ANSWERED)
        self._release = register_script(client, scripts.RELEASE)
        self._switched = register_script(client, scripts.SWITCHED)
        self._sender = register_script(client, scripts.SENDER)
        self._release_from = register_script(client, scripts.RELEASE_FROM)

    def __repr__(self) -> str:
        return f"ConferenceDialogs(prefix={self._keys.prefix!r})"

    def answered(
        self,
        conference_id: str,
        call_id: str,
        *,
        media: str = "",
        epoch: int | None = None,
        peers: DialogPeers | None = None,
    ) -> Answered:
        """Mark the dialog up (its 2xx passed) and return the conference's current key.

        *media* (JSON, no key material) and the leg's *epoch* (default: the
        current one) are kept in the dialog record for later re-INVITEs.  One
        round trip.  Raises :class:`ConferenceNotFound` if the dialog or its
        conference is gone.
        """
        keys = [
            self._keys.dialog(conference_id, call_id),
            self._keys.conference(conference_id),
            self._keys.conference(conference_id, "epochs"),
            self._keys.events(conference_id),
        ]
        fields = peer_fields(peers)
        args: list[Any] = [media, "" if epoch is None else int(epoch), *fields]
        with redis_errors("read the conference key"):
            raw = cast(list[bytes], self._answered(keys=keys, args=args))
        status = text(raw[0])
        if status != "ok":
            raise ConferenceNotFound(f"dialog or conference gone ({status})")
        conference_id, identity, leg, ssrcs, creator, epoch_text, suite_name = (
            text(item) for item in raw[1:8]
        )
        current = int(epoch_text)
        suite = SUITES.get(suite_name)
        if suite is None:
            raise CorruptRecord("conference record: unknown suite")
        key = unwrap_epoch_key(self._wrapper, conference_id, current, suite, raw[8])
        record = DialogRecord(
            conference_id,
            identity,
            leg,
            "up",
            parse_ssrcs(ssrcs),
            creator == "1",
            current if epoch is None else int(epoch),
            media,
            peers=fields[0],
        )
        return Answered(record, key)

    def switched(self, conference_id: str, call_id: str, epoch: int) -> None:
        """The dialog's edge leg now sends under *epoch* (a re-INVITE's 2xx passed)."""
        with redis_errors("record a leg's epoch"):
            self._switched(keys=[self._keys.dialog(conference_id, call_id)], args=[int(epoch)])

    def release(
        self,
        conference_id: str,
        call_id: str,
        method: DisconnectionMethod | None = DisconnectionMethod.FAILED,
    ) -> Released | None:
        """Remove a dialog, its roster count and SSRCs; end the conference if it was the last.

        A member's dialog leaves a departure saying *method* (RFC 4575 §5.7.6: the
        focus's own releases of a relayed INVITE that failed: ``failed``; a BYE goes
        through :meth:`release_from`).  *method* ``None``: the dialog is *withdrawn* —
        the request that recorded it was refused before anything was relayed, so it
        never joined or failed to join: no departure (a refusal leaves no trace but
        the change counter's step, which a notifier that saw the pending record needs).
        Idempotent: ``None`` when the dialog has no record (already released).
        """
        if method is not None and method not in _METHODS:
            raise ValueError("a release is departed, booted or failed (or withdrawn: None)")
        keys = self._release_keys(conference_id, call_id)
        args = [dialog_id(call_id), self._ended_ttl_ms, "" if method is None else str(method)]
        with redis_errors("release a dialog"):
            raw = cast(list[bytes], self._release(keys=keys, args=args))
        if text(raw[0]) != "ok":
            return None
        return released(raw)

    def _release_keys(self, conference_id: str, call_id: str) -> list[str]:
        return [
            self._keys.dialog(conference_id, call_id),
            *(
                self._keys.conference(conference_id, part)
                for part in ("", "allowed", "members", "ssrcs", "epochs")
            ),
            self._keys.refer_stream(conference_id),
            self._keys.rekey_failed(conference_id),
            self._keys.dialogs(conference_id),
            self._keys.events(conference_id),
            self._keys.departures(conference_id),
        ]

    def closing(self, conference_id: str, call_id: str, peers: DialogPeers, ttl: int = 300) -> None:
        """Keep only a dialog's peers after its answer was refused (every stream rejected).

        The SIP dialog still exists between the two sides (a proxy cannot turn a 2xx into a
        failure, RFC 3261 §16.7): its ACK and BYE must reach the other side, and only from
        its peers.  The record has no member, key or leg; it expires after *ttl* seconds or
        goes with the BYE (:meth:`forget_closing`).
        """
        key = self._keys.dialog(conference_id, call_id)
        with redis_errors("record a closing dialog"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "conference": conference_id, "identity": "", "leg": "",
                    "state": "closing",
                    **dict(zip(PEER_FIELDS, peer_fields(peers), strict=True)),
                },
            )  # fmt: skip
            pipe.expire(key, ttl)
            pipe.execute()

    def forget_closing(self, conference_id: str, call_id: str) -> None:
        """The BYE of a closing dialog passed: its record goes."""
        with redis_errors("forget a closing dialog"):
            self._redis.delete(self._keys.dialog(conference_id, call_id))

    def sender(
        self, conference_id: str, call_id: str, fingerprint: str
    ) -> tuple[Direction, tuple[str, str], str]:
        """The gate's read for an in-dialog request other than INVITE/REFER: one round trip.

        Returns which side sent it, its next hop (the other side's recorded Contact and
        destination URI, :class:`~secconf.core.gate.AckHops`) and the dialog's state
        (``up``/``closing``);
        :class:`~secconf.core.errors.CallDoesNotExist` (481) without an answered dialog,
        :class:`~secconf.core.errors.Forbidden` (403) when *fingerprint* (the request's
        flow and tags, :func:`secconf.core.gate.sender_fingerprint`) is neither side's.
        """
        with redis_errors("read a dialog's peers"):
            raw = cast(
                list[bytes],
                self._sender(keys=[self._keys.dialog(conference_id, call_id)], args=[fingerprint]),
            )
        return sender_result(raw)

    def release_from(
        self, conference_id: str, call_id: str, fingerprint: str
    ) -> tuple[Direction, tuple[str, str], Released | None]:
        """A BYE: the sender's check and :meth:`release` in one script (one round trip).

        The release happens only when *fingerprint* is one side's (else 403, 481 as
        :meth:`sender`); a closing dialog's record just goes (``None``: nothing released).
        """
        keys = self._release_keys(conference_id, call_id)
        with redis_errors("release a dialog"):
            raw = cast(
                list[bytes],
                self._release_from(
                    keys=keys, args=[dialog_id(call_id), self._ended_ttl_ms, fingerprint]
                ),
            )
        direction, hop, status = sender_result(raw)
        if status != "released" or text(raw[3]) != "ok":
            return direction, hop, None
        return direction, hop, released(raw[3:])
