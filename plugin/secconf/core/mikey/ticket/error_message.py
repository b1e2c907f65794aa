"""The MIKEY Error message (RFC 6043 §5.4, RFC 3830 §5.1.2): HDR, T, (ERR), [V].

A KMS or a Responder answers a message it refuses with one; the error numbers
are those of the :class:`~secconf.core.errors.MikeyError` the refusal raised.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import MalformedMikey, MikeyError
from ..constants import DataType
from ..keys import append_verification
from ..message import Message
from ..payloads import CommonHeader, EmptyMap, ErrorPayload
from .common import ntp_timestamp
from .profile import MAC, PRF


def build_error(
    in_reply_to: bytes,
    error_nos: Sequence[int],
    *,
    now: float,
    auth_key: bytes | None = None,
) -> bytes:
    """An Error message = HDR, T, (ERR), [V] answering *in_reply_to*.

    Version, PRF and CSB ID are copied from the faulty message when its HDR
    can be read (§5.4); otherwise CSB ID 0.  *auth_key* adds a V over the
    Error message itself (optional for authentication failures).
    """
    csb_id = 0
    try:
        csb_id = Message.parse(in_reply_to).header.csb_id
    except MikeyError:
        if len(in_reply_to) >= 8 and in_reply_to[0] == 1:
            csb_id = int.from_bytes(in_reply_to[4:8], "big")
    header = CommonHeader(DataType.ERROR, csb_id, EmptyMap(), False, PRF)
    body = Message(header, (ntp_timestamp(now), *(ErrorPayload(no) for no in error_nos)))
    if auth_key is None:
        return bytes(body)
    return bytes(append_verification(body, MAC, auth_key))


def read_error(data: bytes) -> tuple[int, ...]:
    """The error numbers of a MIKEY Error message (unauthenticated: for display only)."""
    message = Message.parse(data)
    if message.data_type != DataType.ERROR:
        raise MalformedMikey("not a MIKEY Error message")
    return tuple(p.error_no for p in message.find_all(ErrorPayload))
