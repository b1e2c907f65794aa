"""How a request we sent can fail: a final non-2xx, no answer in time, or no transport."""

from __future__ import annotations

from secconf.core.errors import SecconfError
from secconf.core.sip.message import SipResponse

__all__ = ["SipRequestFailed", "SipTimeout", "SipTransportError"]


class SipRequestFailed(SecconfError):
    """A request we sent ended without a 2xx; ``status_code`` is the final status."""

    def __init__(self, status: int, reason: str, response: SipResponse | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status_code = status
        self.reason = reason
        self.response = response


class SipTimeout(SipRequestFailed):
    """No final response in time (Timer B/F, or the caller's timeout): 408."""

    def __init__(self, what: str) -> None:
        super().__init__(408, "Request Timeout")
        self.message = f"{what}: no final response in time"
        self.args = (self.message,)


class SipTransportError(SipRequestFailed):
    """The transport failed to carry the request (RFC 3261 §8.1.3.1: treated as 503)."""

    def __init__(self, what: str) -> None:
        super().__init__(503, "Service Unavailable")
        self.message = f"{what}: transport error"
        self.args = (self.message,)
