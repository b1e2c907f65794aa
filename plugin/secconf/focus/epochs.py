"""A conference's next key epoch: :class:`EpochMinter` (the focus's rekey, for every caller).

Kamailio's workers (a KMS dial-out that needs its target named in the epoch's ticket),
the roster watcher (a rekey on every roster change) and ``secconf focus rekey`` all
mint through one :class:`EpochMinter`: the epoch number from Redis, the key from the
KMS (:class:`GroupEpochs`: a GTGK ticket naming the current members, when the
conference has KMS-mode legs) or from the local CSPRNG, stored wrapped in Redis and
put to the edge, or undone.  It needs only the store, the edge's client and the KMS's
client, so the watcher builds one when it starts and keeps it (``wiring.build_minter``)
instead of a whole :class:`~.service.FocusService` per rekey.

No leg switches here: each does when its re-INVITE's 2xx passes (``reinvite.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.errors import NotAcceptable, SecconfError, ServiceUnavailable, TicketRejected
from secconf.core.focus import ConferenceNotFound
from secconf.core.keys import GroupKey, suite_key
from secconf.core.mikey import group as mikey_group
from secconf.core.sdes import SUITES
from secconf.kms.client import TicketResolver
from secconf.media.control_client import EdgeControl
from secconf.store.conferences import ConferenceStore

from .settings import KmsSettings

__all__ = ["EpochMinter", "GroupEpochs", "leg_group_key"]

Log = Callable[[str, str], None]


@dataclass
class GroupEpochs:
    """KMS-mode epochs: a GTGK ticket per epoch, naming the conference's current members."""

    kms_settings: KmsSettings | None
    kms: TicketResolver | None
    store: ConferenceStore
    clock: Callable[[], float] = field(repr=False)
    random_bytes: Callable[[int], bytes] = field(repr=False)

    def new_epoch(
        self, conference_id: str, epoch: int, include: tuple[str, ...]
    ) -> mikey_group.GroupEpochTicket:
        """REQUEST_INIT for a GTGK ticket naming the current members (RFC 6043 §4.2.1, §5.1.1).

        The members are read from Redis now: whoever left is not named, so the
        KMS will not resolve this epoch's ticket for them (forward security).
        *include* names identities besides them (a dial-out's target).
        """
        if self.kms is None or self.kms_settings is None:
            raise ServiceUnavailable("a conference with KMS legs needs the KMS to rekey")
        recipients = sorted(set(self.store.members(conference_id)) | set(include))
        if not recipients:
            raise ConferenceNotFound("the conference has no members to key")
        desired = mikey_group.group_ticket_policy(
            recipients, valid_until=self.clock() + self.kms_settings.epoch_ticket_lifetime
        )
        issued = self.kms.request_ticket(desired)
        if set(issued.policy.recipients) != set(recipients):
            raise TicketRejected("the KMS granted a group ticket for other recipients")
        return mikey_group.new_group_epoch(issued, epoch, self.random_bytes)


@dataclass
class EpochMinter:
    """Mints, stores and publishes a conference's next key epoch; nothing half-done on failure."""

    store: ConferenceStore
    edge: EdgeControl
    group_epochs: GroupEpochs
    random_bytes: Callable[[int], bytes] = field(repr=False)
    log: Log = field(default=lambda level, message: None, repr=False)

    def mint(self, conference_id: str, include: tuple[str, ...] = ()) -> int:
        """The conference's next epoch, wrapped in Redis and at the edge; returns its number.

        A conference with KMS-mode legs (or a dial-out target in *include*) gets the
        epoch from the KMS (DESIGN.md §1), an SDES-only one from the local CSPRNG.
        Raises ``ConferenceNotFound`` (no such active conference), ``ServiceUnavailable``
        (Redis, the KMS or the edge down, or the KMS refused the group ticket): if the
        edge refuses the epoch it is removed from Redis again.
        """
        info = self.store.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        suite = SUITES.get(info.suite)
        if suite is None:
            raise NotAcceptable(f"conference suite {info.suite} unknown")
        ticket: bytes | None = None
        if info.kms_legs > 0 or include:
            group_epoch = self.group_epochs.new_epoch(conference_id, info.epoch + 1, include)
            master = group_epoch.srtp_master_key(8 * suite.key_length, 8 * suite.salt_length)
            key = GroupKey(group_epoch.epoch, suite, master.key, master.salt)
            ticket = group_epoch.to_bytes()
        else:
            key = GroupKey.generate(info.epoch + 1, suite, self.random_bytes)
        self.store.add_epoch(conference_id, key, ticket)
        try:
            self.edge.put_epoch(conference_id, key)
        except SecconfError:
            try:
                self.store.drop_epoch(conference_id, key.epoch)
            except SecconfError as exc:
                self.log("err", f"secconf: could not undo epoch {key.epoch}: {exc.message}")
            raise
        source = "the KMS" if ticket is not None else "the local CSPRNG"
        self.log(
            "info", f"secconf: conference {conference_id} rekeyed to epoch {key.epoch} ({source})"
        )
        return key.epoch


def leg_group_key(
    store: ConferenceStore, edge: EdgeControl, conference_id: str, epoch: int | None, suite: str
) -> GroupKey:
    """Epoch *epoch*'s key (None: the current) in a leg's *suite*, held by the edge too.

    Per-leg suites (docs/mikey-decisions.md #30): the conference's own suite
    ("" too) is the stored key; another suite's key follows from the epoch's
    one secret: a KMS epoch's TEK and salt at the suite's lengths from its
    GTGK (RFC 6043 §5.1.3, what a member whose crypto session asks that suite
    derives), else :func:`~secconf.core.keys.suite_key`.  It goes to the edge
    before any leg uses it (the PUT is idempotent).
    """
    base = store.group_key(conference_id, epoch)
    wanted = SUITES.get(suite) if suite else base.suite
    if wanted is None:
        raise NotAcceptable(f"leg suite {suite} unknown")
    if wanted == base.suite:
        return base
    ticket = store.epoch_ticket(conference_id, base.epoch)
    if ticket is None:
        key = suite_key(base, wanted)
    else:
        group_epoch = mikey_group.GroupEpochTicket.from_bytes(ticket)
        master = group_epoch.srtp_master_key(8 * wanted.key_length, 8 * wanted.salt_length)
        key = GroupKey(base.epoch, wanted, master.key, master.salt)
    edge.put_epoch(conference_id, key)
    return key
