"""Dialogs (RFC 3261 §12) and the UAS 2xx retransmission of §13.3.1.4.

A :class:`Dialog` holds the state §12.1 lists (Call-ID, tags, CSeqs, route
set, remote target, secure flag) and builds in-dialog requests per
§12.2.1.1: re-INVITE, BYE, REFER (RFC 3515), NOTIFY, and the ACK for a 2xx
(§13.2.2.4).  Incoming requests go through :meth:`Dialog.receive_request`,
which enforces the CSeq order of §12.2.2 and refreshes the remote target.

:class:`AnswerRetransmitter` is the sans-IO timer logic with which a UAS
core re-sends its 2xx to an INVITE until the ACK arrives (§13.3.1.4), in
the same action vocabulary as the transactions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import CallDoesNotExist, MalformedSipMessage, RequestOutOfOrder
from .builders import build_request
from .headers import Address, Via
from .message import SipRequest, SipResponse
from .transaction import (
    Action,
    CancelTimer,
    Send,
    StartTimer,
    Terminated,
    TimedOut,
    Timer,
    TimerConfig,
)

__all__ = [
    "AnswerRetransmitter",
    "Dialog",
    "DialogId",
    "DialogState",
    "parse_sipfrag_status",
    "sipfrag",
]

#: Requests that refresh the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665 §4.1.2.4).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag, remote tag (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Dialog:
    """One side's view of a dialog (RFC 3261 §12.1).

    Build one with :meth:`as_uac` (from the request we sent and the response
    that created the dialog) or :meth:`as_uas` (from the request we received
    and the To tag we chose).
    """

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: Address,
        remote_uri: Address,
        remote_target: str,
        route_set: list[str],
        local_seq: int | None,
        remote_seq: int | None,
        local_contact: Address,
        secure: bool = False,
        state: DialogState = DialogState.CONFIRMED,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_contact = local_contact
        self.secure = secure
        self.state = state

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} local={self.local_tag} remote={self.remote_tag} {self.state.value}>"

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- creation (§12.1) ------------------------------------------------------

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse, *, secure: bool = False) -> Dialog:
        """UAC side, from a 101-299 response carrying a To tag (RFC 3261 §12.1.2).

        Route set: the response's Record-Route in reverse; remote target: its
        Contact; local CSeq: the request's; remote CSeq: empty.
        """
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if remote_tag is None or local_tag is None:
            raise MalformedSipMessage("a dialog needs a From tag and a To tag (RFC 3261 §12.1.2)")
        contacts = response.get_all("contact")
        if not contacts and request.method.upper() == "INVITE":
            raise MalformedSipMessage("dialog-creating response without Contact (RFC 3261 §12.1.1)")
        local_contact = request.get("contact")
        state = DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(response.to),
            remote_target=Address.parse(contacts[0]).uri if contacts else request.uri,
            route_set=list(reversed(response.get_all("record-route"))),
            local_seq=request.cseq.number,
            remote_seq=None,
            local_contact=Address.parse(local_contact) if local_contact else request.from_,
            secure=secure or request.uri.lower().startswith("sips:"),
            state=state,
        )

    @classmethod
    def as_uas(
        cls, request: SipRequest, *, local_tag: str, local_contact: Address, secure: bool = False
    ) -> Dialog:
        """UAS side, when answering *request* with a To tag of ours (RFC 3261 §12.1.1).

        Route set: the request's Record-Route in order; remote target: its
        Contact; remote CSeq: the request's; local CSeq: empty.
        """
        remote_tag = request.from_.tag
        if remote_tag is None:
            raise MalformedSipMessage("request without From tag cannot create a dialog")
        contacts = request.get_all("contact")
        if not contacts:
            raise MalformedSipMessage("dialog-creating request without Contact (RFC 3261 §8.1.1.8)")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=Address.parse(contacts[0]).uri,
            route_set=list(request.get_all("record-route")),
            local_seq=None,
            remote_seq=request.cseq.number,
            local_contact=local_contact,
            secure=secure or request.uri.lower().startswith("sips:"),
            state=DialogState.CONFIRMED,
        )

    # -- sending (§12.2.1) ------------------------------------------------------

    def next_cseq(self) -> int:
        """The CSeq number of our next request (§12.2.1.1: one more than the last)."""
        self.local_seq = (self.local_seq or 0) + 1
        return self.local_seq

    def _target_and_route(self) -> tuple[str, list[str]]:
        """Request-URI and Route headers (RFC 3261 §12.2.1.1, loose and strict routing)."""
        if not self.route_set:
            return self.remote_target, []
        first = Address.parse(self.route_set[0])
        try:
            loose = first.sip_uri.has_param("lr")
        except MalformedSipMessage:
            loose = True
        if loose:
            return self.remote_target, list(self.route_set)
        # Strict router: it becomes the Request-URI, the remote target the last Route.
        return first.uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> SipRequest:
        """An in-dialog request (RFC 3261 §12.2.1.1); CSeq advances unless given."""
        if self.state is DialogState.TERMINATED:
            raise ValueError("dialog is terminated")
        uri, route = self._target_and_route()
        number = cseq if cseq is not None else self.next_cseq()
        return build_request(
            method,
            uri,
            from_=self.local_uri.with_tag(self.local_tag),
            to=self.remote_uri.with_tag(self.remote_tag),
            call_id=self.call_id,
            cseq=number,
            via=via,
            contact=self.local_contact if method.upper() in TARGET_REFRESH else None,
            route=route,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )

    def create_ack(
        self,
        invite: SipRequest,
        *,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """The ACK for a 2xx to *invite* (RFC 3261 §13.2.2.4).

        CSeq number of the INVITE (method ACK), a new branch (the caller's
        *via*), the dialog's route set; the credentials of the INVITE are kept.
        """
        extra = [
            (header.name, header.value)
            for header in invite.headers
            if header.key in ("authorization", "proxy-authorization")
        ]
        return self.create_request(
            "ACK",
            via=via,
            body=body,
            content_type=content_type,
            extra_headers=extra,
            cseq=invite.cseq.number,
        )

    def create_refer(
        self,
        refer_to: Address | str,
        *,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """A REFER with a Refer-To (RFC 3515 §2.1); a body (e.g. MIKEY) may go along."""
        target = refer_to if isinstance(refer_to, Address) else Address.parse(refer_to)
        if target.display is None and not target.params:
            target = Address(target.uri, None, ())
        headers = [("Refer-To", f"<{target.uri}>" if target.display is None else str(target))]
        return self.create_request(
            "REFER",
            via=via,
            body=body,
            content_type=content_type,
            extra_headers=[*headers, *extra_headers],
        )

    # -- receiving (§12.2.2) ----------------------------------------------------

    def matches(self, message: SipRequest | SipResponse) -> bool:
        """Whether an incoming request (To tag = ours) or response (From tag = ours) is ours."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, SipRequest):
            return message.to.tag == self.local_tag and message.from_.tag == self.remote_tag
        return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag

    def receive_request(self, request: SipRequest) -> None:
        """Check and absorb an in-dialog request (RFC 3261 §12.2.2).

        Raises :class:`CallDoesNotExist` (481) for a request of another dialog
        and :class:`RequestOutOfOrder` (500) for a CSeq below the last one.
        ACK and CANCEL reuse their INVITE's number and are not checked.
        """
        if not self.matches(request):
            raise CallDoesNotExist("request does not belong to this dialog")
        method = request.method.upper()
        if method in ("ACK", "CANCEL"):
            return
        number = request.cseq.number
        if self.remote_seq is not None and number <= self.remote_seq:
            if number < self.remote_seq:
                raise RequestOutOfOrder(
                    f"CSeq {number} is lower than {self.remote_seq} (RFC 3261 §12.2.2)"
                )
            raise RequestOutOfOrder(f"CSeq {number} repeats the last request's number")
        self.remote_seq = number
        if method in TARGET_REFRESH:
            contacts = request.get_all("contact")
            if contacts:
                self.remote_target = Address.parse(contacts[0]).uri
        if method == "BYE":
            self.state = DialogState.TERMINATED

    def receive_response(self, request: SipRequest, response: SipResponse) -> None:
        """Absorb the response to a request we sent in this dialog.

        A 2xx to a target refresh updates the remote target (§12.2.1.2); a 481
        or 408 ends the dialog (§12.2.1.2); a 2xx to BYE ends it (§15).
        """
        method = request.method.upper()
        if response.status in (408, 481):
            self.state = DialogState.TERMINATED
            return
        if 200 <= response.status < 300:
            if method in TARGET_REFRESH:
                contacts = response.get_all("contact")
                if contacts:
                    self.remote_target = Address.parse(contacts[0]).uri
            if method == "BYE":
                self.state = DialogState.TERMINATED
            elif self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED


def _without_tag(address: Address) -> Address:
    return Address(
        address.uri, address.display, tuple(p for p in address.params if p[0].lower() != "tag")
    )


# -- REFER's implicit subscription (RFC 3515 §2.4.4-§2.4.7) ---------------------------


def sipfrag(status: int, reason: str) -> bytes:
    """A ``message/sipfrag`` status line body for a REFER NOTIFY (RFC 3515 §2.4.5)."""
    return f"SIP/2.0 {status} {reason}\r\n".encode()


def parse_sipfrag_status(body: bytes) -> int:
    """The status code in a ``message/sipfrag`` NOTIFY body (RFC 3420, RFC 3515 §2.4.5)."""
    first = body.split(b"\n", 1)[0].strip()
    parts = first.split(b" ", 2)
    if len(parts) < 2 or parts[0].upper() != b"SIP/2.0" or not parts[1].isdigit():
        raise MalformedSipMessage("message/sipfrag body without a status line")
    status = int(parts[1])
    if not 100 <= status <= 699:
        raise MalformedSipMessage("message/sipfrag status out of range")
    return status


# -- UAS 2xx retransmission (§13.3.1.4) -----------------------------------------


class AnswerRetransmitter:
    """Re-send a 2xx to an INVITE until its ACK arrives (RFC 3261 §13.3.1.4).

    Unreliable transports: every T1, doubling up to T2.  Every transport:
    give up after 64*T1 without ACK (:class:`TimedOut`; the UA core should
    then send BYE).  Same action vocabulary as the transactions.
    """

    def __init__(self, response: SipResponse, *, reliable: bool, timers: TimerConfig | None = None):
        self.response_bytes = bytes(response)
        self.reliable = reliable
        self.timers = timers or TimerConfig()
        self._interval = self.timers.t1
        self.done = False

    def start(self) -> list[Action]:
        actions: list[Action] = [StartTimer(Timer.ACK_WAIT, self.timers.timeout)]
        if not self.reliable:
            actions.append(StartTimer(Timer.RETRANSMIT_2XX, self._interval))
        return actions

    def timer_fired(self, timer: Timer) -> list[Action]:
        if self.done:
            return []
        if timer is Timer.RETRANSMIT_2XX:
            self._interval = min(self._interval * 2, self.timers.t2)
            return [Send(self.response_bytes), StartTimer(Timer.RETRANSMIT_2XX, self._interval)]
        if timer is Timer.ACK_WAIT:
            self.done = True
            return [CancelTimer(Timer.RETRANSMIT_2XX), TimedOut(Timer.ACK_WAIT), Terminated()]
        return []

    def ack_received(self) -> list[Action]:
        """The ACK for this 2xx arrived (matched by the dialog and CSeq number)."""
        if self.done:
            return []
        self.done = True
        return [CancelTimer(Timer.RETRANSMIT_2XX), CancelTimer(Timer.ACK_WAIT), Terminated()]
