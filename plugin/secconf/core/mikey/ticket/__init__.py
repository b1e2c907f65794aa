"""The six MIKEY-TICKET messages (RFC 6043 §4.2) with the MIKEY base ticket (App. A).

Sans-IO: every function takes the clock reading (``now``, Unix seconds) and a
``random_bytes`` source, and returns bytes or verified values.  Each verifying
step raises a :class:`~secconf.core.errors.MikeyError` whose ``error_no`` is
what an ERR payload answering it carries.

One module per exchange, on top of what they share:

- :mod:`.profile`: secconf's profile of RFC 6043 (algorithms, sizes, limits, flags);
- :mod:`.common`: randomness, timestamps, identities, message checks, replay tokens;
- :mod:`.policy`: the Ticket Policy (RFC 6043 §6.10) asked for and read;
- :mod:`.base_ticket`: the KMS seals and opens the MIKEY base ticket (App. A);
- :mod:`.request`: Ticket Request, REQUEST_INIT_PSK / REQUEST_RESP (§4.2.1);
- :mod:`.transfer`: Ticket Transfer, TRANSFER_INIT / TRANSFER_RESP (§4.2.2);
- :mod:`.resolve`: Ticket Resolve, RESOLVE_INIT_PSK / RESOLVE_RESP (§4.2.3);
- :mod:`.error_message`: the Error message (§5.4).

The names below are the package's interface; the parties import them from here.
"""

from __future__ import annotations

from .base_ticket import OpenedTicket, open_ticket, ticket_tpk_id
from .common import RandomBytes, ntp_timestamp, timestamp_seconds
from .error_message import build_error, read_error
from .policy import DesiredPolicy, PolicyView
from .profile import DEFAULT_SKEW
from .request import (
    GrantedPolicy,
    GrantSettings,
    IssuedTicket,
    PendingRequest,
    RequestInit,
    build_request_init,
    grant_policy,
    issue_ticket,
    process_request_resp,
)
from .resolve import (
    PendingResolve,
    ResolvedTicket,
    ResolveInit,
    authorize_resolution,
    build_resolve_init,
    build_resolve_resp,
    process_resolve_resp,
)
from .transfer import (
    PendingTransfer,
    TransferInit,
    TransferResult,
    build_transfer_init,
    build_transfer_resp,
    process_transfer_resp,
)

__all__ = [
    "DEFAULT_SKEW",
    "DesiredPolicy",
    "GrantSettings",
    "GrantedPolicy",
    "IssuedTicket",
    "OpenedTicket",
    "PendingRequest",
    "PendingResolve",
    "PendingTransfer",
    "PolicyView",
    "RandomBytes",
    "RequestInit",
    "ResolveInit",
    "ResolvedTicket",
    "TransferInit",
    "TransferResult",
    "authorize_resolution",
    "build_error",
    "build_request_init",
    "build_resolve_init",
    "build_resolve_resp",
    "build_transfer_init",
    "build_transfer_resp",
    "grant_policy",
    "issue_ticket",
    "ntp_timestamp",
    "open_ticket",
    "process_request_resp",
    "process_resolve_resp",
    "process_transfer_resp",
    "read_error",
    "ticket_tpk_id",
    "timestamp_seconds",
]
