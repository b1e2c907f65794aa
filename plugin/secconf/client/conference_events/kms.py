"""KMS mode: the SUBSCRIBE's TRANSFER_INIT and the subscription's event key.

A KMS-mode SUBSCRIBE is authenticated as a REFER is: its body (``application/mikey``,
base64, RFC 3830 §10) is a TRANSFER_INIT made with the member's ticket for the focus;
the focus resolves it at the KMS and answers the 2xx with a TRANSFER_RESP (RFC 6043
§4.2.2.3), so the focus authenticates itself too.  The exchange's TGK defines the
subscription's event KEK (:func:`secconf.core.cms.exchange_event_key`,
docs/event-protection.md): the member computes it from its own ticket before the
SUBSCRIBE leaves when the ticket does not fork keys (the agent asks for such tickets:
one recipient, nothing to fork), so a NOTIFY that overtakes the 2xx is read; with a
forking ticket, from the verified TRANSFER_RESP.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.cms import EventKey, exchange_event_key
from secconf.core.errors import MalformedMessage, TicketRejected
from secconf.core.mikey import TicketFlags
from secconf.core.mikey import ticket as mikey_ticket

__all__ = ["MIKEY_CONTENT_TYPE", "KmsSubscription"]

#: RFC 3830 §10: the media type of a MIKEY message in a SIP body (base64, as for REFER).
MIKEY_CONTENT_TYPE = "application/mikey"
# A TRANSFER_RESP is a few hundred bytes; anything far larger is not one.
_MAX_ANSWER_BYTES = 8192


@dataclass(frozen=True, slots=True)
class KmsSubscription:
    """One SUBSCRIBE's TRANSFER_INIT (:attr:`body`) and how to get its event key."""

    pending: mikey_ticket.PendingTransfer = field(repr=False)
    clock: Callable[[], float] = field(repr=False)

    @property
    def body(self) -> bytes:
        """The SUBSCRIBE's body: the TRANSFER_INIT, base64."""
        return base64.b64encode(self.pending.data)

    @property
    def focus(self) -> str:
        return self.pending.responder

    def early_key(self) -> EventKey | None:
        """The event key before any answer: known when the ticket forks nothing."""
        issued = self.pending.issued
        if TicketFlags.I in issued.ticket.flags or not issued.traffic_keys:
            return None
        return exchange_event_key(
            issued.traffic_keys[0], randri=self.pending.randri, csb_id=self.pending.csb_id
        )

    def answered(self, body: bytes) -> EventKey:
        """Verify the 2xx's TRANSFER_RESP (RFC 6043 §4.2.2.4); the subscription's event key.

        Raises a ``SecconfError`` (the MAC, the timestamp, another responder) when the
        answer does not come from the focus the TRANSFER_INIT was for.
        """
        if len(body) > _MAX_ANSWER_BYTES:
            raise MalformedMessage("the SUBSCRIBE's answer body is too large for a TRANSFER_RESP")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage("the SUBSCRIBE's answer is not base64 MIKEY") from None
        result = mikey_ticket.process_transfer_resp(self.pending, data, now=self.clock())
        if result.responder != self.focus:
            raise TicketRejected("the TRANSFER_RESP is from another identity than the focus")
        if not result.traffic_keys:
            raise TicketRejected("the exchange carries no traffic-generating key")
        return exchange_event_key(
            result.traffic_keys[0], randri=self.pending.randri, csb_id=self.pending.csb_id
        )
