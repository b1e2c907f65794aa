"""The participant side of the conference event package (RFC 4575 over RFC 6665, issue 15).

* :mod:`.notify` — reading one NOTIFY: Event and Subscription-State, the body's
  protection (CMS in KMS mode, TLS in SDES mode), then the document applied to the
  held view; every refusal a :class:`~secconf.core.errors.ProtocolError` with its status;
* :mod:`.keyring` — the event keys a member holds, looked up by KEK identifier;
* :mod:`.kms` — KMS mode: the SUBSCRIBE's TRANSFER_INIT, the focus's TRANSFER_RESP, the
  subscription's event key;
* :mod:`.watch` — :class:`ConferenceWatch`: SUBSCRIBE, refresh, resync, un-SUBSCRIBE,
  and the roster views as they change;
* :mod:`.roster` — the rows a participant shows (user, status, joining method, SSRC,
  epoch; never key material).

The focus side (SUBSCRIBE at the focus, NOTIFY fan-out) is not built yet;
docs/event-participant.md, says what it must match.
"""

from .keyring import EventKeyring
from .kms import MIKEY_CONTENT_TYPE, KmsSubscription
from .notify import (
    ACCEPT_KMS,
    ACCEPT_SDES,
    EVENT,
    NotifyContent,
    NotifyLimits,
    Protection,
    SubscriptionState,
    SubState,
    parse_subscription_state,
    read_notify,
)
from .roster import RosterRow, format_rows, roster_rows
from .watch import ConferenceWatch, WatchTiming

__all__ = [
    "ACCEPT_KMS",
    "ACCEPT_SDES",
    "EVENT",
    "MIKEY_CONTENT_TYPE",
    "ConferenceWatch",
    "EventKeyring",
    "KmsSubscription",
    "NotifyContent",
    "NotifyLimits",
    "Protection",
    "RosterRow",
    "SubState",
    "SubscriptionState",
    "WatchTiming",
    "format_rows",
    "parse_subscription_state",
    "read_notify",
    "roster_rows",
]
