"""The dialogs of one user agent: who they are, how to reach them, and the ACK rules.

RFC 3261 §12: requests within a dialog go to its remote target (or first
route), and every response updates it.  An INVITE dialog adds the 2xx/ACK
handshake, end to end rather than per transaction: the UAC core ACKs every
2xx, retransmissions too (§13.2.2.4); the UAS core retransmits its 2xx until
the ACK comes, and hangs up without one (§13.3.1.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from secconf.core.errors import ProtocolError, SecconfError
from secconf.core.sip.dialog import AnswerRetransmitter, Dialog, DialogState
from secconf.core.sip.headers import RandomBytes, Via
from secconf.core.sip.message import SipRequest, SipResponse
from secconf.core.sip.transaction import TimedOut, TransportFailed

from .call import Call, OutgoingCall
from .common import BackgroundTasks
from .errors import SipRequestFailed
from .runner import MachineRunner, ignore
from .subscription import ServerSubscription, Subscription
from .transactions import ServerState, TransactionLayer
from .transport import NullLink, TransportLayer

__all__ = ["CallKey", "DialogLayer"]

log = logging.getLogger("secconf.sip")

#: (Call-ID, local tag, remote tag): a dialog's id (RFC 3261 §12).
CallKey = tuple[str, str, str]


class DialogLayer:
    """The calls and subscriptions of one user agent, and what keeps them consistent.

    Established incoming calls go to *incoming_calls* once their 2xx is ACKed.
    """

    def __init__(
        self,
        transport: TransportLayer,
        transactions: TransactionLayer,
        runner: MachineRunner,
        tasks: BackgroundTasks,
        *,
        incoming_calls: asyncio.Queue[Call],
    ) -> None:
        self.transport = transport
        self.transactions = transactions
        self._runner = runner
        self._tasks = tasks
        self._incoming_calls = incoming_calls
        self.calls: dict[CallKey, Call] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.server_subscriptions: list[ServerSubscription] = []
        #: Subscriptions made with us by SUBSCRIBE (not REFER's), for the notifier to serve.
        self.incoming_subscriptions: asyncio.Queue[ServerSubscription] = asyncio.Queue()

    @property
    def random_bytes(self) -> RandomBytes:
        return self.transport.random_bytes

    @property
    def secure(self) -> bool:
        """Dialogs over TLS are SIPS dialogs (RFC 3261 §12.1.1)."""
        return self.transport.kind == "tls"

    def new_via(self) -> Via:
        return self.transport.new_via()

    async def send_in_dialog(
        self, call: Call, request: SipRequest, timeout: float, *, raise_on_error: bool = True
    ) -> SipResponse:
        """Send *request* of *call*'s dialog to its remote target; the response updates it."""
        dest = self.transport.dialog_destination(call.dialog)
        response = await self.transactions.transact(request, dest, timeout)
        call.dialog.receive_response(request, response)
        if raise_on_error and response.status >= 300:
            raise SipRequestFailed(response.status, response.reason, response)
        return response

    def end_call(self, call: Call, *, by_remote: bool) -> None:
        call.dialog.state = DialogState.TERMINATED
        call.ended_by_remote = by_remote
        call.ended.set()
        self._stop_retransmitter(call)

    async def quiet_bye(self, call: Call) -> None:
        """Hang up, whatever happens (a call nobody wants any more)."""
        with contextlib.suppress(SecconfError, TimeoutError):
            await call.bye(timeout=5.0)

    # -- the UAC side: our INVITE's responses, our ACKs ----------------------------------

    def invite_response(self, outgoing: OutgoingCall, response: SipResponse) -> None:
        """Every response to our INVITE: provisional ones noted, each 2xx ACKed (§13.2.2.4)."""
        if response.status < 200:
            outgoing.provisional.append(response)
            outgoing.got_provisional.set()
            return
        if response.status >= 300:
            return
        tag = response.to.tag or ""
        key = (response.call_id, response.from_.tag or "", tag)
        call = self.calls.get(key)
        if call is not None:
            self._resend_ack(call)
            return
        try:
            dialog = Dialog.as_uac(outgoing.request, response, secure=self.secure)
        except ProtocolError as exc:
            log.info("unusable 2xx: %s", exc)
            return
        call = Call(self, dialog, outgoing.request, outgoing=True)
        call.response = response
        call.remote_sdp = response.body
        self.calls[key] = call
        self.ack_2xx(call, outgoing.request, response)
        if outgoing.result.done() or outgoing.cancelled:
            # A 2xx that crossed our CANCEL, or a second 2xx of a fork: ACK and BYE (§15).
            self._tasks.spawn(self.quiet_bye(call))
            if not outgoing.result.done():
                outgoing.result.set_exception(SipRequestFailed(487, "Request Terminated"))
            return
        call.confirmed.set()
        outgoing.result.set_result(call)

    def stray_2xx(self, response: SipResponse) -> None:
        """A 2xx retransmission after the INVITE transaction ended: re-ACK (§13.2.2.4)."""
        call = self.calls.get((response.call_id, response.from_.tag or "", response.to.tag or ""))
        if call is not None:
            self._resend_ack(call)

    def ack_2xx(self, call: Call, invite: SipRequest, response: SipResponse) -> None:
        """Send the ACK for the 2xx to *invite* (§13.2.2.4), kept for retransmitted 2xx."""
        ack = call.dialog.create_ack(invite, via=self.new_via())
        call._ack_bytes = bytes(ack)
        dest = self.transport.dialog_destination(call.dialog)
        udp = self.transport.udp_link(dest)
        if udp is not None:
            call._ack_link = udp
            self.transport.send(call._ack_link, call._ack_bytes)
            return

        async def send_ack() -> None:
            link = await self.transport.link_to(dest)
            call._ack_link = link
            if call._ack_bytes is not None:
                self.transport.send(link, call._ack_bytes)

        self._tasks.spawn(send_ack())

    def _resend_ack(self, call: Call) -> None:
        if call._ack_bytes is not None and call._ack_link is not None:
            self.transport.send(call._ack_link, call._ack_bytes)

    # -- the UAS side: our 2xx, the peer's ACK -------------------------------------------

    def start_retransmitter(self, call: Call, state: ServerState, response: SipResponse) -> None:
        """Repeat our 2xx *response* until the ACK comes (§13.3.1.4)."""
        retransmitter = AnswerRetransmitter(
            response, reliable=state.link.reliable, timers=self.transactions.timers
        )
        call._retransmitter = retransmitter
        call._invite_pending = True

        def failure(action: TimedOut | TransportFailed) -> None:
            # §13.3.1.4: no ACK within 64*T1: the dialog is confirmed, then ended with BYE.
            log.info("no ACK for our 2xx on %s: hanging up", call.call_id)
            call._invite_pending = False
            if call.dialog.state is not DialogState.TERMINATED:
                self._tasks.spawn(self.quiet_bye(call))

        self._runner.run(
            retransmitter,
            state.link,
            retransmitter.start(),
            retransmitter.timer_fired,
            ignore,
            failure,
            ignore,
        )

    def ack_received(self, request: SipRequest) -> None:
        """An ACK outside any transaction: the one for our 2xx, confirming the call."""
        key = (request.call_id, request.to.tag or "", request.from_.tag or "")
        call = self.calls.get(key)
        if call is None or call._retransmitter is None:
            return
        if request.cseq.number != call.invite.cseq.number:
            return
        if request.body:
            call.remote_sdp = request.body  # offer in INVITE-less 200/ACK exchange
        call._invite_pending = False
        self._stop_retransmitter(call)
        if not call.confirmed.is_set():
            call.confirmed.set()
            self._incoming_calls.put_nowait(call)

    def _stop_retransmitter(self, call: Call) -> None:
        retransmitter = call._retransmitter
        if retransmitter is None:
            return
        call._retransmitter = None
        self._runner.run(
            retransmitter,
            NullLink(),
            retransmitter.ack_received(),
            retransmitter.timer_fired,
            ignore,
            ignore,
            ignore,
        )

    # -- finding a dialog -------------------------------------------------------------------

    def call_for(self, request: SipRequest) -> Call | None:
        """The call an in-dialog request from the peer belongs to (our tag is its To tag)."""
        return self.calls.get((request.call_id, request.to.tag or "", request.from_.tag or ""))

    def server_subscription_for(self, request: SipRequest) -> ServerSubscription | None:
        """The subscription someone made with us that the in-dialog *request* belongs to."""
        for subscription in self.server_subscriptions:
            if subscription.dialog.matches(request):
                return subscription
        return None
