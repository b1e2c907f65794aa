"""An asyncio SIP user agent for the secconf participant (RFC 3261 over UDP or TLS).

The protocol work is all in the sans-IO :mod:`secconf.core.sip`; this package
only moves bytes, runs timers and waits.  Every wait has a timeout.

    ua = await UserAgent.start("127.0.0.1", identity="sip:alice@example.com")
    call = await ua.invite("sip:conf@127.0.0.1:5060", sdp_offer)   # INVITE/200/ACK
    await call.reinvite(new_offer)                                 # re-INVITE/200/ACK
    await ua.refer(call, "sip:carol@example.com", body=mikey, content_type="application/mikey")
    await call.bye()
    await ua.close()

Incoming requests go to async handlers that return an :class:`Answer`
(``ua.on_invite``, ``ua.on_refer``, ``ua.on_subscribe``); established
incoming calls are also queued for :meth:`UserAgent.next_call`.

The modules, bottom up: :mod:`.transport` (UDP socket, TLS connections,
destinations), :mod:`.runner` (performs the sans-IO machines' actions and
timers), :mod:`.transactions` (client and server transactions, matching),
:mod:`.dialogs` (the calls and subscriptions, the 2xx/ACK rules),
:mod:`.call` and :mod:`.subscription` (the handles the application holds),
:mod:`.uas` (answering incoming requests), :mod:`.auth` (Digest), and
:mod:`.user_agent` (lifecycle and the requests the application starts).
"""

from .call import Call, OutgoingCall
from .errors import SipRequestFailed, SipTimeout, SipTransportError
from .handlers import Answer, IncomingRequest
from .subscription import NotifyHandler, ServerSubscription, Subscription
from .user_agent import UserAgent

__all__ = [
    "Answer",
    "Call",
    "IncomingRequest",
    "NotifyHandler",
    "OutgoingCall",
    "ServerSubscription",
    "SipRequestFailed",
    "SipTimeout",
    "SipTransportError",
    "Subscription",
    "UserAgent",
]
