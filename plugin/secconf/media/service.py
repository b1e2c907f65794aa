"""The edge's control operations: validate, persist, then apply (docs/edge.md).

Every mutation is checked against the relay first (so a refusal changes
nothing), written to Redis (a 503 there changes nothing either), then applied.
One exception, for safety: the removal of a leg or of a whole conference stops
its media *before* Redis is written; if that write fails the answer is 503 and
the deletion is retried by the tick loop until Redis takes it, so a restart
never revives a departed leg or conference.  A leg id or conference id whose
deletion is still pending cannot be created again before that deletion is
written (it is written first, or the creation is refused with 503), so a late
retry never deletes the newcomer's records.  Mutations are serialised by one
lock: they are short, and ordering matters (switch after epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from secconf.core.edge import BadEdgeRequest, Direction, EdgeConflict, EpochInfo, LegMode
from secconf.core.errors import SecconfError

from .keys import SrtpKey
from .leg import Leg
from .relay import Conference, EdgeRelay, check_ident, check_rtcp_remote
from .state import EdgeStore

__all__ = ["EdgeService"]

log = logging.getLogger("secconf.edge")


class EdgeService:
    def __init__(
        self,
        relay: EdgeRelay,
        store: EdgeStore | None,
        *,
        tick: float = 0.1,
        default_internal_mode: str = "rtp",
    ) -> None:
        self.relay = relay
        self.default_internal_mode = default_internal_mode
        self.store = store
        self.tick_interval = tick
        self.lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._pending_deletes: dict[str, Leg] = {}
        # conference id -> leg ids whose records go with it
        self._pending_conference_deletes: dict[str, list[str]] = {}
        self._pending_epoch_deletes: set[tuple[str, int]] = set()
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.restored = 0
        self.restore_failures = 0
        relay.on_persist_ssrcs = self._mark_dirty
        relay.on_epoch_destroyed = self._epoch_destroyed

    # -- background --

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flushing, 2.0)
        if self.store is not None and (self._pending_deletes or self._pending_conference_deletes):
            with contextlib.suppress(Exception):  # one last try; a restart must not revive them
                await asyncio.wait_for(self._flush(), 2.0)
        self.relay.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.relay.tick()
            except Exception:  # a bug must not stop the clock of every conference
                log.exception("edge tick failed")
            pending = (
                self._dirty
                or self._pending_deletes
                or self._pending_epoch_deletes
                or self._pending_conference_deletes
            )
            idle = self._flushing is None or self._flushing.done()
            if self.store is not None and pending and idle:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        store = self.store
        if store is None:
            return
        try:
            for conference_id in list(self._pending_conference_deletes):
                await self._delete_conference_records(conference_id)
            for leg_id in list(self._pending_deletes):
                await self._delete_leg_record(leg_id)
            for conference_id, epoch in list(self._pending_epoch_deletes):
                await store.delete_epoch(conference_id, epoch)
                self._pending_epoch_deletes.discard((conference_id, epoch))
            while self._dirty:
                conference_id = self._dirty.pop()
                conference = self.relay.conferences.get(conference_id)
                if conference is not None:
                    await store.save_ssrcs(conference)
        except SecconfError as exc:
            log.warning("edge state not written yet (%s); retrying", exc.message)

    async def _delete_conference_records(self, conference_id: str) -> None:
        """Write a pending conference deletion now (taken off the list while in flight)."""
        legs = self._pending_conference_deletes.pop(conference_id, None)
        if legs is None or self.store is None:
            return
        try:
            await self.store.delete_conference(conference_id, legs)
        except BaseException:
            self._pending_conference_deletes.setdefault(conference_id, legs)
            raise

    async def _delete_leg_record(self, leg_id: str) -> None:
        """Write a pending leg deletion now (taken off the list while in flight)."""
        leg = self._pending_deletes.pop(leg_id, None)
        if leg is None or self.store is None:
            return
        try:
            await self.store.delete_leg(leg)
        except BaseException:
            self._pending_deletes.setdefault(leg_id, leg)
            raise

    async def _settle_pending(self, conference_id: str, leg_id: str | None = None) -> None:
        """Pending deletions of *conference_id* (and leg *leg_id*) are written first.

        Called before records under those ids are written again, so that a
        late retry cannot delete the newcomer's records.  Raises 503 if Redis
        still fails (the deletions stay pending, nothing else changed).
        """
        store = self.store
        if store is None:
            return
        if (
            conference_id in self._pending_conference_deletes
            or (leg_id is not None and leg_id in self._pending_deletes)
        ) and self._flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait({self._flushing})  # never two writers for one deletion
        # off the lists before the first await: a flush started meanwhile leaves them alone
        legs = self._pending_conference_deletes.pop(conference_id, None)
        leg = None if leg_id is None else self._pending_deletes.pop(leg_id, None)
        try:
            if legs is not None:
                await store.delete_conference(conference_id, legs)
                legs = None
            if leg is not None:
                await store.delete_leg(leg)
                leg = None
        finally:
            if legs is not None:
                self._pending_conference_deletes.setdefault(conference_id, legs)
            if leg is not None and leg_id is not None:
                self._pending_deletes.setdefault(leg_id, leg)

    def _mark_dirty(self, conference: Conference) -> None:
        self._dirty.add(conference.state.conference_id)

    def _epoch_destroyed(self, conference_id: str, epoch: int) -> None:
        self._pending_epoch_deletes.add((conference_id, epoch))

    # -- operations --

    async def put_epoch(self, conference_id: str, epoch: int, key: SrtpKey) -> bool:
        async with self.lock:
            if not self.relay.check_epoch(conference_id, epoch, key):
                return False
            if self.store is not None:
                await self._settle_pending(conference_id)
                keys = [*self.relay.epoch_keys(conference_id, epoch), key]
                await self.store.save_epoch(conference_id, epoch, keys, self.relay.now())
            return self.relay.add_epoch(conference_id, epoch, key)

    async def drop_epoch(self, conference_id: str, epoch: int) -> None:
        async with self.lock:
            conference = self.relay.conference(conference_id)
            if conference.state.epoch_users(epoch):
                raise EdgeConflict(f"epoch {epoch} still protects a leg")
            self.relay.drop_epoch(conference_id, epoch)
            if self.store is not None:
                await self.store.delete_epoch(conference_id, epoch)
                self._pending_epoch_deletes.discard((conference_id, epoch))

    async def create_leg(
        self,
        conference_id: str,
        mode: LegMode,
        *,
        participant_key: SrtpKey | None,
        internal_mode: str,
        leg_id: str | None = None,
        epoch: int | None = None,
        suite: str | None = None,
        participant_ssrcs: Iterable[int] = (),
        participant_remote: tuple[str, int] | None = None,
        internal_remote: tuple[str, int] | None = None,
        asterisk_key: SrtpKey | None = None,
        rtcp_mux: tuple[bool, bool] = (True, True),
        participant_rtcp_remote: tuple[str, int] | None = None,
        internal_rtcp_remote: tuple[str, int] | None = None,
    ) -> Leg:
        async with self.lock:
            if leg_id is not None:
                check_ident(leg_id, "leg id")
            check_rtcp_remote(
                rtcp_mux[0], participant_remote, participant_rtcp_remote, "participant",
                BadEdgeRequest,
            )  # fmt: skip
            check_rtcp_remote(
                rtcp_mux[1], internal_remote, internal_rtcp_remote, "internal", BadEdgeRequest
            )
            if leg_id is not None and self.store is not None and leg_id not in self.relay.legs:
                await self._settle_pending(check_ident(conference_id, "conference id"), leg_id)
            leg = self.relay.create_leg(
                conference_id, mode, participant_key=participant_key, internal_mode=internal_mode,
                epoch=epoch, suite=suite, participant_ssrcs=participant_ssrcs, leg_id=leg_id,
                rtcp_mux=rtcp_mux,
            )  # fmt: skip
            try:
                leg.participant_remote, leg.internal_remote = participant_remote, internal_remote
                leg.participant_rtcp_remote = participant_rtcp_remote
                leg.internal_rtcp_remote = internal_rtcp_remote
                if asterisk_key is not None:
                    leg.keys.set_asterisk_key(asterisk_key)
                if self.store is not None:
                    await self.store.save_leg(leg)
            except BaseException:
                self.relay.discard_leg(leg)
                raise
            leg.start()
            return leg

    async def set_remote(
        self,
        leg_id: str,
        side: str,
        remote: tuple[str, int],
        asterisk_key: SrtpKey | None = None,
        rtcp_remote: tuple[str, int] | None = None,
    ) -> Leg:
        """Set one side's remote; on a side without rtcp-mux also its RTCP address
        (None: RTP port + 1).  The whole remote is replaced."""
        async with self.lock:
            leg = self.relay.leg(leg_id)
            if asterisk_key is not None and leg.internal_mode != "srtp":
                raise EdgeConflict("the internal leg is plain RTP: no Asterisk key")
            mux = (leg.prsock if side == "participant" else leg.irsock) is None
            check_rtcp_remote(mux, remote, rtcp_remote, side, EdgeConflict)
            before = (
                leg.participant_remote,
                leg.internal_remote,
                leg.participant_rtcp_remote,
                leg.internal_rtcp_remote,
                leg.keys.asterisk_key,
            )
            if side == "participant":
                leg.participant_remote = remote
                leg.participant_rtcp_remote = rtcp_remote
            else:
                leg.internal_remote = remote
                leg.internal_rtcp_remote = rtcp_remote
            if asterisk_key is not None:
                leg.keys.asterisk_key = asterisk_key
            try:
                if self.store is not None:
                    await self.store.save_leg(leg)
            except BaseException:
                (
                    leg.participant_remote,
                    leg.internal_remote,
                    leg.participant_rtcp_remote,
                    leg.internal_rtcp_remote,
                    leg.keys.asterisk_key,
                ) = before
                raise
            if asterisk_key is not None:
                leg.keys.set_asterisk_key(asterisk_key)
            return leg

    async def set_participant_key(self, leg_id: str, key: SrtpKey) -> Leg:
        async with self.lock:
            leg = self.relay.leg(leg_id)
            if leg.mode is not LegMode.SDES:
                raise EdgeConflict("only SDES legs have a participant key")
            before = leg.keys.participant_key
            leg.keys.participant_key = key  # the record says what the leg will use
            try:
                if self.store is not None:
                    await self.store.save_leg(leg)
            finally:
                leg.keys.participant_key = before
            leg.keys.set_participant_key(key, self.relay.grace)
            return leg

    async def switch(self, leg_id: str, epoch: int) -> bool:
        async with self.lock:
            leg = self.relay.leg(leg_id)
            if not self.relay.check_switch(leg_id, epoch):
                return False
            if self.store is not None:
                previous = leg.state.tx_epoch
                leg.state.tx_epoch = epoch  # the record says where the leg will be
                try:
                    await self.store.save_leg(leg)
                finally:
                    leg.state.tx_epoch = previous
            return self.relay.switch(leg_id, epoch)

    async def delete_leg(self, leg_id: str) -> Leg:
        async with self.lock:
            leg = self.relay.remove_leg(leg_id)  # stops media first, whatever Redis says
            if self.store is not None:
                try:
                    await self.store.delete_leg(leg)
                except SecconfError:
                    self._pending_deletes[leg_id] = leg
                    raise
            return leg

    async def delete_conference(self, conference_id: str) -> list[str]:
        """Every leg stops now, whatever Redis says; a failed write is retried (503)."""
        async with self.lock:
            removed = self.relay.remove_conference(conference_id)  # stops media first
            if self.store is None:
                return removed
            # pending deletions of this conference's legs, epochs and SSRCs go with it
            legs = list(removed)
            for leg_id, leg in list(self._pending_deletes.items()):
                if leg.conference.state.conference_id == conference_id:
                    legs.append(leg_id)
                    del self._pending_deletes[leg_id]
            legs.extend(self._pending_conference_deletes.pop(conference_id, []))
            self._pending_epoch_deletes = {
                pending for pending in self._pending_epoch_deletes if pending[0] != conference_id
            }
            self._dirty.discard(conference_id)
            self._pending_conference_deletes[conference_id] = list(dict.fromkeys(legs))
            await self._settle_pending(conference_id)
            return removed

    # -- restart --

    async def restore(self) -> int:
        """Re-create every leg stored in Redis (epochs with their keys); how many came back.

        Each leg gets its old ports, keys and remotes, and a *new* outbound SSRC: its old
        one stays reserved (a fresh SRTP session under the same key and SSRC would restart
        the packet index: a two-time pad).  Switch verification restarts empty.
        """
        if self.store is None:
            return 0
        snapshot, relay = await self.store.load(), self.relay
        now = relay.now()
        restoring = {record.leg_id for record in snapshot.legs}
        for conference_id, epochs in snapshot.epochs.items():
            if not epochs:
                continue
            conference = relay.ensure_conference(conference_id)
            for number, (keys, _added) in sorted(epochs.items()):
                held = tuple((k.suite, k.fingerprint) for k in keys)  # one key per suite (#30)
                conference.state.restore_epoch(EpochInfo(number, held, now))
                conference.keys[number] = {key.suite: key for key in keys}
            newest = max(epochs)
            for ssrc, (leg_id, direction, retired) in snapshot.ssrcs.get(conference_id, {}).items():
                if direction is Direction.INBOUND and leg_id in restoring and retired is None:
                    continue  # re-claimed by the leg below
                conference.state.ssrcs.restore_retired(
                    ssrc, leg_id, direction, newest if retired is None else retired
                )
        for record in snapshot.legs:
            if record.conference not in relay.conferences:
                log.error("leg %s: its conference has no stored epoch; dropped", record.leg_id)
                self.restore_failures += 1
                continue
            declared = [
                ssrc
                for ssrc, (owner, direction, retired) in snapshot.ssrcs.get(
                    record.conference, {}
                ).items()
                if owner == record.leg_id and direction is Direction.INBOUND and retired is None
            ]
            try:
                leg = relay.create_leg(
                    record.conference,
                    LegMode(record.mode),
                    participant_key=record.participant_key,
                    internal_mode=record.internal_mode,
                    epoch=record.tx_epoch,
                    suite=record.suite,
                    participant_ssrcs=declared,
                    leg_id=record.leg_id,
                    ports=record.ports,
                    edge_internal_key=record.edge_internal_key,
                    rtcp_mux=(record.rtcp_ports[0] is None, record.rtcp_ports[1] is None),
                    rtcp_ports=record.rtcp_ports,
                )
            except SecconfError as exc:
                log.error("leg %s not restored: %s", record.leg_id, exc.message)
                self.restore_failures += 1
                continue
            leg.participant_remote = record.participant_remote
            leg.internal_remote = record.internal_remote
            leg.participant_rtcp_remote = record.participant_rtcp_remote
            leg.internal_rtcp_remote = record.internal_rtcp_remote
            if record.asterisk_key is not None:
                leg.keys.set_asterisk_key(record.asterisk_key)
            leg.start()
            self.restored += 1
        for conference in relay.conferences.values():
            conference.state.restored(now)
            for leg in conference.legs.values():
                await self.store.save_leg(leg)  # the new outbound SSRCs
        log.info("restored %d legs (%d failed)", self.restored, self.restore_failures)
        return self.restored
