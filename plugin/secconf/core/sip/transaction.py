"""RFC 3261 §17 transactions as sans-IO state machines, transitions as tables.

Four machines, one per figure of §17: INVITE client (Figure 5), non-INVITE
client (Figure 6), INVITE server (Figure 7) and non-INVITE server (Figure 8),
with the RFC 6026 "Accepted" state for INVITE transactions that ended in a
2xx (RFC 6026 §7.1, §7.2: timers L and M; it fixes the 2xx-retransmission and
ACK races of the original figures).

The driver feeds events (a message, a timer that fired, a transport error, a
response from the TU) and carries out the returned actions, in order:

    >>> txn = ClientTransaction(invite, reliable=False)
    >>> txn.start()
    [Send(data=b'INVITE ...'), StartTimer(timer=<Timer.A>, seconds=0.5), StartTimer(<Timer.B>, 32.0)]
    >>> txn.timer_fired(Timer.A)
    [Send(data=b'INVITE ...'), StartTimer(timer=<Timer.A>, seconds=1.0)]

Each table row reads ``(state, input) -> (next state, steps)``; a step is a
small instruction the interpreter turns into actions.  A message input with no
row is absorbed silently (e.g. a 1xx after the final response, §17.1.1.2);
a TU input with no row is a programming error (``ValueError``).

On reliable transports the retransmission timers (A, E, G) are never started
and the wait timers D, I, J, K are zero: the machine passes straight to
Terminated instead of starting a zero timer (§17.1.1.2, §17.1.2.2, §17.2.1,
§17.2.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .builders import build_ack_for_non2xx, build_response
from .headers import MAGIC_COOKIE
from .message import SipMessage, SipRequest, SipResponse

__all__ = [
    "Action",
    "CancelTimer",
    "ClientTransaction",
    "DeliverToTU",
    "Send",
    "ServerTransaction",
    "StartTimer",
    "State",
    "Terminated",
    "TimedOut",
    "Timer",
    "TimerConfig",
    "TransactionKey",
    "TransportFailed",
    "client_key",
    "server_key",
]


class Timer(enum.Enum):
    """RFC 3261 Table 4 timers, RFC 6026 timers L and M, and the UAS 2xx timers (§13.3.1.4)."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    RETRANSMIT_2XX = "2xx-retransmit"
    ACK_WAIT = "2xx-ack-wait"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2, T4 of RFC 3261 §17.1.1.1 / Table 4 (seconds)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L, M (§17, RFC 6026 §8)."""
        return 64 * self.t1


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


# -- actions (outputs) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Hand these bytes to the transport, towards the transaction's peer."""

    data: bytes

    def __repr__(self) -> str:
        first_line = self.data.split(b"\r\n", 1)[0][:60]
        return f"Send({first_line!r}..., {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class StartTimer:
    """(Re)start *timer* to fire after *seconds*; starting a running timer replaces it."""

    timer: Timer
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class DeliverToTU:
    """Pass *message* up to the transaction user (UA core)."""

    message: SipMessage


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The transaction gave up (Timer B, F or H, or the 2xx ACK wait): tell the TU."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported an error (§17.1.1.2, §17.2.4): tell the TU."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The machine reached Terminated: forget the transaction."""


Action = Send | StartTimer | CancelTimer | DeliverToTU | TimedOut | TransportFailed | Terminated


# -- inputs and steps --------------------------------------------------------


class Input(enum.Enum):
    START = "start"
    R1XX = "1xx received"
    R2XX = "2xx received"
    R3456 = "300-699 received"
    RETRANSMISSION = "request retransmission received"
    ACK = "ACK received"
    TU_1XX = "TU sends 1xx"
    TU_2XX = "TU sends 2xx"
    TU_3456 = "TU sends 300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TRANSPORT_ERROR = "transport error"


class Step(enum.Enum):
    SEND_REQUEST = "send the request (again)"
    SEND_ACK = "build and send the ACK for a non-2xx"
    RESEND_ACK = "send the same ACK again"
    SEND_100 = "send 100 Trying"
    SEND_RESPONSE = "send the TU's response and keep it"
    RESEND_RESPONSE = "send the last response again"
    DELIVER = "deliver the message to the TU"
    START_RETRANSMIT = "start the retransmit timer at T1"
    BACKOFF = "restart the retransmit timer, doubled (capped at T2 for E and G)"
    RETRANSMIT_AT_T2 = "restart Timer E at T2 (§17.1.2.2 Proceeding)"
    START_TIMEOUT = "start the 64*T1 timer"
    START_WAIT = "start the wait timer (D, I, J, K, L, M)"
    CANCEL_TIMERS = "cancel every running timer"
    TIMEOUT = "tell the TU the transaction timed out"
    TRANSPORT_FAILED = "tell the TU the transport failed"


S = State
I = Input  # noqa: E741
P = Step
Row = tuple[State, tuple[Step, ...]]

#: INVITE client transaction, RFC 3261 §17.1.1.2 (Figure 5) with RFC 6026 §8.4.
INVITE_CLIENT: dict[tuple[State, Input], Row] = {
    (S.CALLING, I.START): (S.CALLING, (P.SEND_REQUEST, P.START_RETRANSMIT, P.START_TIMEOUT)),
    (S.CALLING, I.TIMER_A): (S.CALLING, (P.SEND_REQUEST, P.BACKOFF)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (P.TIMEOUT,)),
    (S.CALLING, I.R1XX): (S.PROCEEDING, (P.CANCEL_TIMERS, P.DELIVER)),
    (S.CALLING, I.R2XX): (S.ACCEPTED, (P.CANCEL_TIMERS, P.DELIVER, P.START_WAIT)),
    (S.CALLING, I.R3456): (S.COMPLETED, (P.CANCEL_TIMERS, P.SEND_ACK, P.DELIVER, P.START_WAIT)),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.PROCEEDING, I.R1XX): (S.PROCEEDING, (P.DELIVER,)),
    (S.PROCEEDING, I.R2XX): (S.ACCEPTED, (P.DELIVER, P.START_WAIT)),
    (S.PROCEEDING, I.R3456): (S.COMPLETED, (P.SEND_ACK, P.DELIVER, P.START_WAIT)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.COMPLETED, I.R3456): (S.COMPLETED, (P.RESEND_ACK,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, ()),
    (S.ACCEPTED, I.R2XX): (S.ACCEPTED, (P.DELIVER,)),  # RFC 6026 §8.4: TU re-ACKs
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, ()),
}

#: Non-INVITE client transaction, RFC 3261 §17.1.2.2 (Figure 6).
NON_INVITE_CLIENT: dict[tuple[State, Input], Row] = {
    (S.TRYING, I.START): (S.TRYING, (P.SEND_REQUEST, P.START_RETRANSMIT, P.START_TIMEOUT)),
    (S.TRYING, I.TIMER_E): (S.TRYING, (P.SEND_REQUEST, P.BACKOFF)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (P.TIMEOUT,)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.TRYING, I.R1XX): (S.PROCEEDING, (P.DELIVER,)),
    (S.TRYING, I.R2XX): (S.COMPLETED, (P.CANCEL_TIMERS, P.DELIVER, P.START_WAIT)),
    (S.TRYING, I.R3456): (S.COMPLETED, (P.CANCEL_TIMERS, P.DELIVER, P.START_WAIT)),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (P.SEND_REQUEST, P.RETRANSMIT_AT_T2)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (P.TIMEOUT,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.PROCEEDING, I.R1XX): (S.PROCEEDING, (P.DELIVER,)),
    (S.PROCEEDING, I.R2XX): (S.COMPLETED, (P.CANCEL_TIMERS, P.DELIVER, P.START_WAIT)),
    (S.PROCEEDING, I.R3456): (S.COMPLETED, (P.CANCEL_TIMERS, P.DELIVER, P.START_WAIT)),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, ()),
}

#: INVITE server transaction, RFC 3261 §17.2.1 (Figure 7) with RFC 6026 §7.1.
INVITE_SERVER: dict[tuple[State, Input], Row] = {
    (S.PROCEEDING, I.START): (S.PROCEEDING, (P.SEND_100, P.DELIVER)),
    (S.PROCEEDING, I.RETRANSMISSION): (S.PROCEEDING, (P.RESEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (P.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.ACCEPTED, (P.SEND_RESPONSE, P.START_WAIT)),
    (S.PROCEEDING, I.TU_3456): (
        S.COMPLETED,
        (P.SEND_RESPONSE, P.START_RETRANSMIT, P.START_TIMEOUT),
    ),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.COMPLETED, I.RETRANSMISSION): (S.COMPLETED, (P.RESEND_RESPONSE,)),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (P.RESEND_RESPONSE, P.BACKOFF)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (P.TIMEOUT,)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, (P.CANCEL_TIMERS, P.START_WAIT)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.RETRANSMISSION): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, ()),
    (S.ACCEPTED, I.RETRANSMISSION): (S.ACCEPTED, ()),  # RFC 6026 §7.1: absorbed
    (S.ACCEPTED, I.ACK): (S.ACCEPTED, (P.DELIVER,)),
    (S.ACCEPTED, I.TU_2XX): (S.ACCEPTED, (P.SEND_RESPONSE,)),  # TU's 2xx retransmissions
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, ()),
}

#: Non-INVITE server transaction, RFC 3261 §17.2.2 (Figure 8).
NON_INVITE_SERVER: dict[tuple[State, Input], Row] = {
    (S.TRYING, I.START): (S.TRYING, (P.DELIVER,)),
    (S.TRYING, I.RETRANSMISSION): (S.TRYING, ()),
    (S.TRYING, I.TU_1XX): (S.PROCEEDING, (P.SEND_RESPONSE,)),
    (S.TRYING, I.TU_2XX): (S.COMPLETED, (P.SEND_RESPONSE, P.START_WAIT)),
    (S.TRYING, I.TU_3456): (S.COMPLETED, (P.SEND_RESPONSE, P.START_WAIT)),
    (S.PROCEEDING, I.RETRANSMISSION): (S.PROCEEDING, (P.RESEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (P.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.COMPLETED, (P.SEND_RESPONSE, P.START_WAIT)),
    (S.PROCEEDING, I.TU_3456): (S.COMPLETED, (P.SEND_RESPONSE, P.START_WAIT)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.COMPLETED, I.RETRANSMISSION): (S.COMPLETED, (P.RESEND_RESPONSE,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (P.TRANSPORT_FAILED,)),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, ()),
}

_TIMER_INPUTS = {
    Timer.A: I.TIMER_A, Timer.B: I.TIMER_B, Timer.D: I.TIMER_D, Timer.E: I.TIMER_E,
    Timer.F: I.TIMER_F, Timer.G: I.TIMER_G, Timer.H: I.TIMER_H, Timer.I: I.TIMER_I,
    Timer.J: I.TIMER_J, Timer.K: I.TIMER_K, Timer.L: I.TIMER_L, Timer.M: I.TIMER_M,
}  # fmt: skip


def _response_input(status: int, tu: bool) -> Input:
    if status < 200:
        return I.TU_1XX if tu else I.R1XX
    if status < 300:
        return I.TU_2XX if tu else I.R2XX
    return I.TU_3456 if tu else I.R3456


# -- matching (§17.1.3, §17.2.3) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionKey:
    """What identifies a transaction: branch, sent-by (server side only), method."""

    branch: str
    method: str
    sent_by: tuple[str, int] | None = None


def client_key(message: SipMessage) -> TransactionKey:
    """Key of the client transaction a request starts or a response belongs to (§17.1.3).

    The top Via branch and the CSeq method: a response to a CANCEL never
    matches the INVITE it cancelled.
    """
    branch = message.top_via.branch or ""
    return TransactionKey(branch, message.cseq.method.upper())


def server_key(request: SipRequest) -> TransactionKey:
    """Key of the server transaction *request* belongs to (§17.2.3).

    Branch (with the magic cookie), sent-by and method, where an ACK matches
    its INVITE.  Branches of RFC 2543 peers (no cookie) are replaced by a
    composite of Request-URI, From tag, Call-ID, CSeq number and top Via; ACKs
    of such peers then match only if they repeat the INVITE's Request-URI.
    """
    via = request.top_via
    method = "INVITE" if request.method.upper() == "ACK" else request.method.upper()
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        parts = (request.uri, request.from_.tag or "", request.call_id, str(request.cseq.number))
        branch = "rfc2543|" + "|".join(parts) + "|" + str(via)
    return TransactionKey(branch, method, via.sent_by)


# -- the machines -------------------------------------------------------------------


class _Machine:
    table: dict[tuple[State, Input], Row]
    retransmit_timer: Timer | None
    timeout_timer: Timer | None
    retransmit_cap: bool

    def __init__(self, request: SipRequest, *, reliable: bool, timers: TimerConfig) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.state = self._initial_state()
        self.last_response: SipResponse | None = None
        self._request_bytes = bytes(request)
        self._response_bytes: bytes | None = None
        self._ack_bytes: bytes | None = None
        self._interval = timers.t1
        self._running: set[Timer] = set()
        self._started = False

    def _initial_state(self) -> State:
        raise NotImplementedError

    def _wait_timer(self, state: State) -> tuple[Timer, float]:
        raise NotImplementedError

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def start(self) -> list[Action]:
        """Begin: send the request (client) or deliver it to the TU (server)."""
        if self._started:
            raise ValueError("transaction already started")
        self._started = True
        return self._apply(I.START, None)

    def timer_fired(self, timer: Timer) -> list[Action]:
        """*timer* fired; a timer not running (cancelled meanwhile) is ignored."""
        if timer not in self._running:
            return []
        self._running.discard(timer)
        return self._apply(_TIMER_INPUTS[timer], None)

    def transport_error(self) -> list[Action]:
        return self._apply(I.TRANSPORT_ERROR, None)

    def _apply(self, event: Input, message: SipMessage | None) -> list[Action]:
        row = self.table.get((self.state, event))
        if row is None:
            if event in (I.TU_1XX, I.TU_2XX, I.TU_3456):
                raise ValueError(f"cannot send a response in state {self.state.value}")
            return []
        next_state, steps = row
        actions: list[Action] = []
        self.state = next_state
        for step in steps:
            actions.extend(self._step(step, message))
        if self.state is State.TERMINATED:
            actions.extend(CancelTimer(timer) for timer in sorted(self._running, key=str))
            self._running.clear()
            actions.append(Terminated())
        return actions

    def _start(self, timer: Timer, seconds: float) -> list[Action]:
        self._running.add(timer)
        return [StartTimer(timer, seconds)]

    def _step(self, step: Step, message: SipMessage | None) -> list[Action]:
        if step is P.SEND_REQUEST:
            return [Send(self._request_bytes)]
        if step is P.SEND_ACK:
            if not isinstance(message, SipResponse):
                return []
            self._ack_bytes = bytes(build_ack_for_non2xx(self.request, message))
            return [Send(self._ack_bytes)]
        if step is P.RESEND_ACK:
            return [Send(self._ack_bytes)] if self._ack_bytes is not None else []
        if step is P.SEND_100:
            trying = build_response(self.request, 100)
            self.last_response = trying
            self._response_bytes = bytes(trying)
            return [Send(self._response_bytes)]
        if step is P.SEND_RESPONSE:
            if not isinstance(message, SipResponse):
                return []
            self.last_response = message
            self._response_bytes = bytes(message)
            return [Send(self._response_bytes)]
        if step is P.RESEND_RESPONSE:
            return [Send(self._response_bytes)] if self._response_bytes is not None else []
        if step is P.DELIVER:
            return [DeliverToTU(message if message is not None else self.request)]
        if step is P.START_RETRANSMIT:
            self._interval = self.timers.t1
            if self.reliable or self.retransmit_timer is None:
                return []
            return self._start(self.retransmit_timer, self._interval)
        if step in (P.BACKOFF, P.RETRANSMIT_AT_T2):
            if self.retransmit_timer is None:
                return []
            if step is P.RETRANSMIT_AT_T2:
                self._interval = self.timers.t2
            else:
                self._interval *= 2
                if self.retransmit_cap:
                    self._interval = min(self._interval, self.timers.t2)
            return self._start(self.retransmit_timer, self._interval)
        if step is P.START_TIMEOUT:
            if self.timeout_timer is None:
                return []
            return self._start(self.timeout_timer, self.timers.timeout)
        if step is P.START_WAIT:
            timer, seconds = self._wait_timer(self.state)
            if seconds <= 0:
                # Reliable transport: the wait is zero, go to Terminated at once.
                self.state = State.TERMINATED
                return []
            return self._start(timer, seconds)
        if step is P.CANCEL_TIMERS:
            cancelled: list[Action] = [
                CancelTimer(timer) for timer in sorted(self._running, key=str)
            ]
            self._running.clear()
            return cancelled
        if step is P.TIMEOUT:
            timer = self.timeout_timer if self.timeout_timer is not None else Timer.B
            return [TimedOut(timer)]
        return [TransportFailed()]  # P.TRANSPORT_FAILED


class ClientTransaction(_Machine):
    """An INVITE (§17.1.1) or non-INVITE (§17.1.2) client transaction.

    Feed it :meth:`receive` for every response that matches its
    :attr:`key`, and :meth:`timer_fired` when a timer it started fires.
    """

    def __init__(
        self, request: SipRequest, *, reliable: bool, timers: TimerConfig | None = None
    ) -> None:
        if request.method.upper() == "ACK":
            raise ValueError("ACK has no client transaction (RFC 3261 §17.1)")
        self.invite = request.method.upper() == "INVITE"
        if self.invite:
            self.table = INVITE_CLIENT
            self.retransmit_timer, self.timeout_timer = Timer.A, Timer.B
            self.retransmit_cap = False  # Timer A doubles without cap (§17.1.1.2)
        else:
            self.table = NON_INVITE_CLIENT
            self.retransmit_timer, self.timeout_timer = Timer.E, Timer.F
            self.retransmit_cap = True  # Timer E is capped at T2 (§17.1.2.2)
        super().__init__(request, reliable=reliable, timers=timers or TimerConfig())
        self.key = client_key(request)

    def _initial_state(self) -> State:
        return State.CALLING if self.invite else State.TRYING

    def _wait_timer(self, state: State) -> tuple[Timer, float]:
        if state is State.ACCEPTED:
            return Timer.M, self.timers.timeout  # RFC 6026 §8.4
        if self.invite:
            # §17.1.1.2: Timer D at least 32 s for unreliable transports, zero for reliable.
            return Timer.D, 0.0 if self.reliable else max(32.0, self.timers.timeout)
        return Timer.K, 0.0 if self.reliable else self.timers.t4  # §17.1.2.2

    def receive(self, response: SipResponse) -> list[Action]:
        """A response matching this transaction arrived."""
        if not self._started:
            raise ValueError("transaction not started")
        self.last_response = response
        return self._apply(_response_input(response.status, tu=False), response)


class ServerTransaction(_Machine):
    """An INVITE (§17.2.1) or non-INVITE (§17.2.2) server transaction.

    :meth:`start` delivers the request to the TU (and for an INVITE sends
    100 Trying at once, §17.2.1); :meth:`respond` sends the TU's responses;
    :meth:`receive` takes retransmissions of the request and, for an
    INVITE, the ACK.
    """

    def __init__(
        self, request: SipRequest, *, reliable: bool, timers: TimerConfig | None = None
    ) -> None:
        method = request.method.upper()
        if method in ("ACK",):
            raise ValueError("ACK has no server transaction of its own (RFC 3261 §17.2)")
        self.invite = method == "INVITE"
        if self.invite:
            self.table = INVITE_SERVER
            self.retransmit_timer, self.timeout_timer = Timer.G, Timer.H
            self.retransmit_cap = True  # Timer G: min(2*T, T2) (§17.2.1)
        else:
            self.table = NON_INVITE_SERVER
            self.retransmit_timer, self.timeout_timer = None, None
            self.retransmit_cap = True
        super().__init__(request, reliable=reliable, timers=timers or TimerConfig())
        self.key = server_key(request)

    def _initial_state(self) -> State:
        return State.PROCEEDING if self.invite else State.TRYING

    def _wait_timer(self, state: State) -> tuple[Timer, float]:
        if state is State.ACCEPTED:
            return Timer.L, self.timers.timeout  # RFC 6026 §7.1
        if self.invite:
            return Timer.I, 0.0 if self.reliable else self.timers.t4  # §17.2.1
        return Timer.J, 0.0 if self.reliable else self.timers.timeout  # §17.2.2

    def receive(self, request: SipRequest) -> list[Action]:
        """A retransmission of the request, or (INVITE) an ACK, matching :attr:`key`."""
        if not self._started:
            raise ValueError("transaction not started")
        event = I.ACK if request.method.upper() == "ACK" else I.RETRANSMISSION
        return self._apply(event, request)

    def respond(self, response: SipResponse) -> list[Action]:
        """The TU sends *response*; ``ValueError`` once a final response went out."""
        if not self._started:
            raise ValueError("transaction not started")
        return self._apply(_response_input(response.status, tu=True), response)
