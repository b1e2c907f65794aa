"""Building requests and responses the way RFC 3261 §8 and §9 prescribe.

Each builder copies exactly the headers its section names and nothing else,
so a message built here is never a surprise to a peer.  Branches, tags and
Call-IDs come from the caller (see :func:`~.headers.new_branch`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .headers import Address, Via
from .message import Header, SipRequest, SipResponse

__all__ = [
    "REASON_PHRASES",
    "build_ack_for_non2xx",
    "build_cancel",
    "build_request",
    "build_response",
]

#: Default reason phrases (RFC 3261 §21, RFC 3265/6665 §8.3.1 489, RFC 3515 202).
REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}

ExtraHeaders = Iterable[tuple[str, str]]


def _finish(
    message: SipRequest | SipResponse,
    extra_headers: ExtraHeaders,
    body: bytes,
    content_type: str | None,
) -> None:
    for name, value in extra_headers:
        message.add(name, value)
    if content_type is not None:
        message.add("Content-Type", content_type)
    message.add("Content-Length", str(len(body)))
    message.body = body


def build_request(
    method: str,
    request_uri: str,
    *,
    from_: Address,
    to: Address,
    call_id: str,
    cseq: int,
    via: Via,
    contact: Address | None = None,
    route: Sequence[str] = (),
    max_forwards: int = 70,
    body: bytes = b"",
    content_type: str | None = None,
    extra_headers: ExtraHeaders = (),
) -> SipRequest:
    """A request outside or inside a dialog (RFC 3261 §8.1.1, §12.2.1.1).

    Header order: Via, Max-Forwards, Route, From, To, Call-ID, CSeq, Contact,
    the extra headers, Content-Type, Content-Length.
    """
    request = SipRequest(method, request_uri)
    request.add("Via", str(via))
    request.add("Max-Forwards", str(max_forwards))
    for value in route:
        request.add("Route", value)
    request.add("From", str(from_))
    request.add("To", str(to))
    request.add("Call-ID", call_id)
    request.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        request.add("Contact", str(contact))
    _finish(request, extra_headers, body, content_type)
    return request


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    contact: Address | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    extra_headers: ExtraHeaders = (),
) -> SipResponse:
    """A response to *request* (RFC 3261 §8.2.6).

    §8.2.6.2: From, Call-ID, CSeq and every Via (in order) are copied; the To
    gets *to_tag* if it has none (never on 100 Trying).  §8.2.6.1: a 100
    copies Timestamp.  §12.1.1: a 101-299 copies Record-Route in order.
    """
    response = SipResponse(status, reason if reason is not None else REASON_PHRASES.get(status, ""))
    for header in request.headers:
        if header.key == "via":
            response.headers.append(Header(header.name, header.value))
    to = request.to
    if to.tag is None and to_tag is not None and status > 100:
        to = to.with_tag(to_tag)
    response.add("From", request.get("from") or "")
    response.add("To", str(to))
    response.add("Call-ID", request.call_id)
    response.add("CSeq", str(request.cseq))
    if status == 100 and request.has("timestamp"):
        response.add("Timestamp", request.get("timestamp") or "")
    if 100 < status < 300:
        for value in request.get_all("record-route"):
            response.add("Record-Route", value)
    if contact is not None:
        response.add("Contact", str(contact))
    _finish(response, extra_headers, body, content_type)
    return response


def build_ack_for_non2xx(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK an INVITE client transaction sends for a 300-699 (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and top Via as the INVITE,
    the To of the response (with its tag), and the INVITE's Route headers.
    """
    ack = SipRequest("ACK", request.uri)
    ack.add("Via", request.get_all("via")[0])
    ack.add("Max-Forwards", request.get("max-forwards") or "70")
    for value in request.get_all("route"):
        ack.add("Route", value)
    ack.add("From", request.get("from") or "")
    ack.add("To", response.get("to") or "")
    ack.add("Call-ID", request.call_id)
    ack.add("CSeq", f"{request.cseq.number} ACK")
    ack.add("Content-Length", "0")
    return ack


def build_cancel(request: SipRequest) -> SipRequest:
    """A CANCEL for a pending *request* (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From, CSeq number and the single top Via equal
    the request's (so it reaches the same server transaction); Route is copied.
    """
    cancel = SipRequest("CANCEL", request.uri)
    cancel.add("Via", request.get_all("via")[0])
    cancel.add("Max-Forwards", request.get("max-forwards") or "70")
    for value in request.get_all("route"):
        cancel.add("Route", value)
    cancel.add("From", request.get("from") or "")
    cancel.add("To", request.get("to") or "")
    cancel.add("Call-ID", request.call_id)
    cancel.add("CSeq", f"{request.cseq.number} CANCEL")
    cancel.add("Content-Length", "0")
    return cancel
