"""What the focus reads of a SIP message and what it decides: plain values, no server API.

The SIP server's adapter (secconf.kamailio.adapter for Kamailio's KEMI) fills a
:class:`RequestView` or :class:`ReplyView` from the message it holds and carries out the
:class:`Reply` or :class:`Relay` the focus returns. Nothing here knows which server that is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secconf.core.errors import MessageTooLarge, NotAcceptable
from secconf.core.gate import Flow

__all__ = ["Relay", "Reply", "ReplyView", "RequestView", "require_offer"]


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str
    ruri: str
    ruri_user: str | None
    call_id: str
    source_ip: str
    from_uri: str
    from_tag: str
    to_tag: str | None
    content_type: str | None
    body: bytes = field(repr=False)
    content_length: int
    headers: dict[str, str | None] = field(default_factory=dict, repr=False)
    source_port: int = 0  # $sp: the dial-out path checks the mixer's address and port
    transport: str = ""  # $pr, lower case: "udp", "tcp", "tls" (the flow the request came on)
    contact: str = ""  # the Contact header's URI (no display name, no header parameters)
    #: Where the request came from: transport, source address and port (made once).
    flow: Flow = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flow = Flow.of(self.transport or "udp", self.source_ip, self.source_port)
        object.__setattr__(self, "flow", flow)

    @property
    def in_dialog(self) -> bool:
        return bool(self.to_tag)


@dataclass(frozen=True, slots=True)
class ReplyView:
    status: int
    reason: str
    call_id: str
    method: str
    content_type: str | None
    body: bytes = field(repr=False)
    to_tag: str = ""  # the answerer's tag (a 2xx to an initial INVITE fixes the dialog)
    contact: str = ""  # the answerer's Contact URI
    flow: Flow | None = None  # where the reply came from


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request ourselves."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class Relay:
    """Forward the request statefully, optionally to a new Request-URI with a new body."""

    uri: str | None = None
    body: bytes | None = field(default=None, repr=False)
    content_type: str = "application/sdp"
    state: str | None = None  # JSON for the reply/failure routes (no keys)
    record_route: bool = True
    on_reply: str | None = None
    on_failure: str | None = None
    remove_headers: tuple[str, ...] = ()  # e.g. the focus's own Proxy-Authorization
    add_headers: tuple[tuple[str, str], ...] = ()  # after the removals (e.g. a trimmed Require)
    conference_id: str | None = None  # put into our Record-Route (RR_PARAM), if record-routed
    route_mac: str | None = None  # ... with its MAC (RR_MAC_PARAM)
    #: In-dialog: the recorded peer of the other side (never the request's Request-URI).
    next_hop: tuple[str, str] | None = None  # Request-URI, destination URI (AckHops.receiver)


def require_offer(request: RequestView, limit: int, method: str) -> None:
    """*request* (a *method*) carries an SDP offer of at most *limit* bytes: 413, 488 otherwise."""
    if request.content_length > limit or len(request.body) > limit:
        raise MessageTooLarge(f"body over {limit} bytes")
    if not request.body:
        raise NotAcceptable(f"{method} without an SDP offer (no late offer in a secure conference)")
