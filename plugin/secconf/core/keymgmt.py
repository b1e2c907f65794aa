"""RFC 4567 ``a=key-mgmt``: MIKEY messages inside SDP.

``a=key-mgmt:mikey <base64>`` may stand at session level or in a media
section; a media-level attribute overrides the session-level one for that
stream (RFC 4567 §3.1).  Only the ``mikey`` protocol is understood; lines of
other protocols are ignored, and a stream with none raises ``NotAcceptable``
(§4.1.2: 488).
"""

from __future__ import annotations

import base64
import binascii

from .errors import MalformedMikey, NotAcceptable
from .sdp import MediaSection, SessionDescription

__all__ = ["KMPID", "key_mgmt_value", "mikey_message"]

#: The registered protocol identifier of MIKEY (RFC 4567 §9.3), also for MIKEY-TICKET.
KMPID = "mikey"


def key_mgmt_value(message: bytes) -> str:
    """The value of an ``a=key-mgmt`` attribute carrying *message* (RFC 4567 §3)."""
    return f"{KMPID} {base64.b64encode(message).decode('ascii')}"


def _mikey_in(values: list[str | None]) -> bytes | None:
    for value in values:
        protocol, _, data = (value or "").strip().partition(" ")
        if protocol != KMPID:
            continue
        try:
            return base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMikey("key-mgmt data is not base64") from None
    return None


def mikey_message(description: SessionDescription, section: MediaSection | None = None) -> bytes:
    """The MIKEY message protecting *section* (or the session): media level first."""
    if section is not None:
        found = _mikey_in(section.attributes("key-mgmt"))
        if found is not None:
            return found
    found = _mikey_in(description.session.attributes("key-mgmt"))
    if found is None:
        raise NotAcceptable("no a=key-mgmt:mikey for the stream")
    return found
