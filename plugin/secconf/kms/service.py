"""The KMS's work per message: the sans-IO MIKEY-TICKET core plus Redis.

Order of every handler: read and authenticate (no writes), check policy and
the ticket (no writes), then remember the replay token and record what was
issued, then answer.  A refusal at any step before the writes leaves Redis as
it was.  A Ticket Request records the ticket first (that write is refused,
writing nothing, when the initiator holds its limit of live tickets) and
remembers its replay token after; a plain replay is caught by a read before
either, and a copy that loses the race to the replay cache takes its record
back.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..core.errors import AuthenticationFailed, ReplayedMessage, TicketRejected
from ..core.mikey import ticket as mikey_ticket
from ..store import (
    DEFAULT_MARGIN_SECONDS,
    DEFAULT_MAX_PER_USER,
    KeyWrapper,
    ReplayCache,
    RevokedUser,
    TicketRecord,
    TicketStore,
    UnknownUser,
    UserStore,
)
from ..store.redis import AsyncClient
from ..store.tpks import TpkStore

__all__ = ["KmsService"]

log = logging.getLogger("secconf.kms")


@dataclass
class KmsService:
    """Request and Resolve handling; construct with :meth:`create`."""

    #: the client under the stores (from ``secconf.store.connect``): the health check pings it
    client: AsyncClient
    identity: str
    users: UserStore
    tickets: TicketStore
    replay: ReplayCache
    tpks: TpkStore
    clock_skew: float
    grant: mikey_ticket.GrantSettings
    clock: Callable[[], float] = time.time
    #: Live-ticket limits of particular identities (the rest: ``tickets.max_per_user``).
    ticket_limits: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        client: AsyncClient,
        wrapper: KeyWrapper,
        *,
        identity: str,
        prefix: str = "secconf",
        clock_skew: float = mikey_ticket.DEFAULT_SKEW,
        max_ticket_lifetime: float = 86400.0,
        max_tickets_per_user: int = DEFAULT_MAX_PER_USER,
        max_tickets_per_identity: Mapping[str, int] | None = None,
        ticket_record_margin: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> KmsService:
        return cls(
            client=client,
            identity=identity,
            users=UserStore(client, wrapper, prefix, clock=clock),
            tickets=TicketStore(
                client,
                prefix,
                clock=clock,
                margin_seconds=ticket_record_margin,
                max_per_user=max_tickets_per_user,
            ),
            replay=ReplayCache(client, prefix),
            tpks=TpkStore(client, wrapper, prefix),
            clock_skew=clock_skew,
            grant=mikey_ticket.GrantSettings(max_lifetime=max_ticket_lifetime),
            clock=clock,
            ticket_limits=dict(max_tickets_per_identity or {}),
        )

    async def _psk(self, identity: str) -> bytes:
        # Unknown and revoked users get the same MIKEY answer: no oracle for
        # which identities exist (RFC 6043 §5.4 lets auth-failure errors be terse).
        try:
            return await self.users.psk(identity)
        except (UnknownUser, RevokedUser):
            raise AuthenticationFailed("unknown or revoked identity") from None

    async def _remember(self, token: bytes) -> None:
        # The token stays for twice the skew: a message can be accepted anywhere
        # in [now - skew, now + skew] of its own timestamp.
        if not await self.replay.remember(token, 2 * self.clock_skew):
            raise ReplayedMessage("MIKEY message replayed")

    async def handle_request(self, data: bytes) -> bytes:
        """REQUEST_INIT_PSK in, REQUEST_RESP out (RFC 6043 §4.2.1)."""
        now = self.clock()
        request = mikey_ticket.RequestInit.read(data)
        psk = await self._psk(request.initiator)
        request.verify(psk, kms_identity=self.identity, now=now, skew=self.clock_skew)
        granted = mikey_ticket.grant_policy(request, self.grant, now)
        tpk_id, tpk = await self.tpks.current()
        ticket_id = secrets.token_bytes(16)
        if await self.replay.seen(request.replay_token):
            raise ReplayedMessage("MIKEY message replayed")
        response = mikey_ticket.issue_ticket(
            request,
            granted,
            psk=psk,
            kms_identity=self.identity,
            tpk_id=tpk_id,
            tpk=tpk,
            ticket_id=ticket_id,
            now=now,
            random_bytes=secrets.token_bytes,
        )
        view = mikey_ticket.PolicyView.of(granted.policy.policy_payloads, granted.policy.flags)
        await self.tickets.record(
            ticket_id,
            TicketRecord(
                initiator=request.initiator,
                recipients=view.recipients,
                issued_at=now,
                expires_at=view.valid_until or now + self.grant.max_lifetime,
            ),
            limit=self.ticket_limits.get(request.initiator),
        )
        try:
            await self._remember(request.replay_token)
        except ReplayedMessage:
            # A copy of this message got there first (two in flight at once): this
            # ticket is never handed out, so its record must not hold a place.
            await self.tickets.discard(ticket_id, request.initiator)
            raise
        log.info(
            "ticket %s issued to %s for %d recipient(s)%s",
            ticket_id.hex(),
            request.initiator,
            len(view.recipients),
            # K is set (RFC 6043 §6.10): say what the KMS changed from the desired policy.
            f"; changed (K): {', '.join(granted.changes)}" if granted.changes else "",
        )
        return response

    async def handle_resolve(self, data: bytes) -> bytes:
        """RESOLVE_INIT_PSK in, RESOLVE_RESP out (RFC 6043 §4.2.3)."""
        now = self.clock()
        resolve = mikey_ticket.ResolveInit.read(data)
        psk = await self._psk(resolve.responder)
        resolve.verify(psk, kms_identity=self.identity, now=now, skew=self.clock_skew)
        tpk_id = mikey_ticket.ticket_tpk_id(resolve.ticket)
        if tpk_id is not None:
            await self.tpks.load(tpk_id)
        opened = mikey_ticket.open_ticket(resolve.ticket, self.tpks.cached)
        mikey_ticket.authorize_resolution(resolve, opened, now=now)
        if await self.tickets.is_revoked(opened.ticket_id):
            raise TicketRejected("ticket has been revoked")
        await self._remember(resolve.replay_token)
        response = mikey_ticket.build_resolve_resp(
            resolve,
            opened,
            psk=psk,
            kms_identity=self.identity,
            now=now,
            random_bytes=secrets.token_bytes,
        )
        log.info("ticket %s resolved by %s", opened.ticket_id.hex(), resolve.responder)
        return response
