"""Protected NOTIFY bodies in KMS mode: CMS AuthEnvelopedData, its MIME, its key (issue 15).

* :mod:`.envelope` — AuthEnvelopedData with AES-GCM and one KEK recipient (RFC 5083,
  RFC 5084, RFC 5652 §6.2.3): :func:`protect`, :func:`open_protected`;
* :mod:`.mime` — the Content-Type and Content-Disposition of the body over SIP, and the
  MIME entity inside (RFC 8551, RFC 3261 §23);
* :mod:`.event_kek` — the KEK, derived from the member's MIKEY-TICKET exchange with the
  focus (the TGK of the TRANSFER_INIT its SUBSCRIBE carries), never an SRTP key.

Decisions and their reasons: docs/event-protection.md.
"""

from .envelope import MAX_PROTECTED_BYTES, KekLookup, open_protected, protect
from .event_kek import (
    EventKey,
    derive_event_kek,
    event_key_id,
    event_key_of_transfer,
    exchange_event_key,
    parse_event_key_id,
)
from .mime import (
    CONTENT_DISPOSITION,
    CONTENT_TYPE,
    check_content_type,
    check_transfer_encoding,
    inner_entity,
    split_inner_entity,
)

__all__ = [
    "CONTENT_DISPOSITION",
    "CONTENT_TYPE",
    "MAX_PROTECTED_BYTES",
    "EventKey",
    "KekLookup",
    "check_content_type",
    "check_transfer_encoding",
    "derive_event_kek",
    "event_key_id",
    "event_key_of_transfer",
    "exchange_event_key",
    "inner_entity",
    "open_protected",
    "parse_event_key_id",
    "protect",
    "split_inner_entity",
]
