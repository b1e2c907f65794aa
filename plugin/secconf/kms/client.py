"""The KMS's client: Ticket Request and Ticket Resolve (RFC 6043 §4.2.1, §4.2.3) over HTTP.

One place, :class:`KmsExchanges`, builds every request and reads every answer
of secconf's HTTP binding (docs/kms.md): the paths, the content type, the
status-to-error mapping, the bound on an answer's size, and the MIKEY messages
themselves (built and verified by :mod:`secconf.core.mikey.ticket`).  Two
transports carry them:

* :class:`HttpKmsResolver`, **blocking**, the focus's: Kamailio workers have no
  event loop, so it keeps one keep-alive connection per worker
  (:class:`secconf.keepalive.KeepAliveHttp`, opened lazily after the fork),
  every call bounded by ``[kms] timeout`` (0.5 s by default): a KMS that is
  down or hangs costs a worker at most that long and the INVITE gets 503.
* :class:`secconf.kms.async_client.KmsClient`, **asyncio** (httpx), the
  participant's; a module of its own so that Kamailio workers never load httpx.

Errors, the same for both: a KMS that does not answer in time or answers 5xx
is ``ServiceUnavailable``; any other answer than 200 is a refusal carrying the
MIKEY error number of the ERR payload in its body.  What a refusal means
depends on who asked, so each caller names its refusal: the focus's
:class:`KmsRefusedTicket` (403 to the INVITE) and :class:`KmsRefusedRequest`
(503 to the rekey), the participant's
:class:`~secconf.kms.async_client.KmsRefused`.
"""

from __future__ import annotations

import http.client
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from secconf.core.errors import (
    Forbidden,
    MikeyError,
    MikeyErrorNo,
    MikeyTooLarge,
    SecconfError,
    ServiceUnavailable,
)
from secconf.core.mikey import ticket as mikey_ticket
from secconf.keepalive import HttpAnswer, KeepAliveHttp

__all__ = [
    "MAX_ANSWER_BYTES", "MIKEY_CONTENT_TYPE", "REQUEST_PATH", "RESOLVE_PATH", "HttpKmsResolver",
    "KmsAccount", "KmsExchanges", "KmsRefusedRequest", "KmsRefusedTicket", "Refusal",
    "TicketResolver", "answer_content", "kms_unavailable",
]  # fmt: skip

MIKEY_CONTENT_TYPE = "application/mikey"
#: REQUEST_INIT_PSK -> REQUEST_RESP (RFC 6043 §4.2.1).
REQUEST_PATH = "/mikey/v1/request"
#: RESOLVE_INIT_PSK -> RESOLVE_RESP (RFC 6043 §4.2.3).
RESOLVE_PATH = "/mikey/v1/resolve"
#: The MIKEY codec's own limit (``MAX_MESSAGE_SIZE``): a longer answer is no MIKEY message,
#: so the asyncio transport stops reading there and nothing longer is parsed.
MAX_ANSWER_BYTES = 64 * 1024


class KmsRefusedTicket(Forbidden):
    """The KMS would not resolve the ticket (forged, expired, revoked, not for us): 403."""


class KmsRefusedRequest(ServiceUnavailable):
    """The KMS would not issue the focus a ticket (policy, unknown recipient, focus revoked).

    503 to the caller of a rekey: the epoch cannot be minted, nothing changed.
    """


#: Builds the error a refusal raises from the HTTP status and the MIKEY error number.
Refusal = Callable[[int, int], SecconfError]


def kms_unavailable(exc: BaseException) -> ServiceUnavailable:
    """No answer from the KMS (connect, timeout, broken connection): 503."""
    return ServiceUnavailable(f"KMS unavailable ({type(exc).__name__})")


def _error_no(content: bytes) -> int:
    """The first MIKEY error number of an Error message body (RFC 6043 §5.4)."""
    try:
        numbers = mikey_ticket.read_error(content)
    except MikeyError:  # an unreadable error body: the status says enough
        return MikeyErrorNo.UNSPECIFIED
    return numbers[0] if numbers else MikeyErrorNo.UNSPECIFIED


def answer_content(answer: HttpAnswer, refusal: Refusal) -> bytes:
    """The MIKEY message of a 200 answer; 5xx is ServiceUnavailable, any other a *refusal*."""
    status, content = answer
    if status >= 500:
        raise ServiceUnavailable(f"KMS answered {status}")
    if status != 200:
        raise refusal(status, _error_no(content))
    if len(content) > MAX_ANSWER_BYTES:
        raise MikeyTooLarge(f"KMS answer of {len(content)} bytes exceeds {MAX_ANSWER_BYTES}")
    return content


@dataclass(frozen=True)
class KmsExchanges:
    """One identity's exchanges with one KMS, without the transport (*psk* is that identity's)."""

    identity: str
    kms_identity: str
    psk: bytes = field(repr=False)
    skew: float = mikey_ticket.DEFAULT_SKEW
    clock: Callable[[], float] = time.time
    random_bytes: mikey_ticket.RandomBytes = secrets.token_bytes

    def request_init(self, desired: mikey_ticket.DesiredPolicy) -> mikey_ticket.PendingRequest:
        """The REQUEST_INIT_PSK to POST to :data:`REQUEST_PATH` (RFC 6043 §4.2.1.1-2)."""
        return mikey_ticket.build_request_init(
            initiator=self.identity,
            kms=self.kms_identity,
            psk=self.psk,
            desired=desired,
            now=self.clock(),
            random_bytes=self.random_bytes,
        )

    def request_resp(
        self, pending: mikey_ticket.PendingRequest, answer: HttpAnswer, refusal: Refusal
    ) -> mikey_ticket.IssuedTicket:
        """The ticket and keys of the KMS's answer, verified (RFC 6043 §4.2.1.6)."""
        content = answer_content(answer, refusal)
        return mikey_ticket.process_request_resp(
            pending, content, psk=self.psk, now=self.clock(), skew=self.skew
        )

    def resolve_init(self, transfer: mikey_ticket.TransferInit) -> mikey_ticket.PendingResolve:
        """The RESOLVE_INIT_PSK to POST to :data:`RESOLVE_PATH` (RFC 6043 §4.2.3.1-2)."""
        return mikey_ticket.build_resolve_init(
            transfer,
            responder=self.identity,
            kms=self.kms_identity,
            psk=self.psk,
            now=self.clock(),
            random_bytes=self.random_bytes,
        )

    def resolve_resp(
        self,
        pending: mikey_ticket.PendingResolve,
        transfer: mikey_ticket.TransferInit,
        answer: HttpAnswer,
        refusal: Refusal,
    ) -> mikey_ticket.ResolvedTicket:
        """The ticket's keys, verified, then the TRANSFER_INIT under MPKi (RFC 6043 §4.2.3.6)."""
        content = answer_content(answer, refusal)
        return mikey_ticket.process_resolve_resp(
            pending, content, transfer, psk=self.psk, now=self.clock(), skew=self.skew
        )


# -- The focus's blocking transport ------------------------------------------------------------


class KmsAccount(Protocol):
    """Who the client is at the KMS and how it reaches it (the focus's ``[kms]`` settings)."""

    @property
    def url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def kms_identity(self) -> str: ...
    @property
    def focus_identity(self) -> str: ...
    @property
    def psk(self) -> bytes: ...
    @property
    def skew(self) -> float: ...


class TicketResolver(Protocol):
    def resolve(self, transfer: mikey_ticket.TransferInit) -> mikey_ticket.ResolvedTicket: ...

    def request_ticket(self, desired: mikey_ticket.DesiredPolicy) -> mikey_ticket.IssuedTicket: ...


def _ticket_refused(status: int, error_no: int) -> SecconfError:
    return KmsRefusedTicket(f"ticket refused by the KMS (HTTP {status}, MIKEY error {error_no})")


def _request_refused(status: int, error_no: int) -> SecconfError:
    return KmsRefusedRequest(
        f"the KMS refused the focus a ticket (HTTP {status}, MIKEY error {error_no})"
    )


class HttpKmsResolver:
    """The focus at the KMS: RESOLVE_INIT_PSK (participants' tickets) and REQUEST_INIT_PSK
    (group-key tickets for rekeys), both as the focus identity; ServiceUnavailable (503)
    when the KMS does not answer within ``[kms] timeout``."""

    def __init__(
        self,
        settings: KmsAccount,
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._settings = settings
        self._exchanges = KmsExchanges(
            settings.focus_identity,
            settings.kms_identity,
            settings.psk,
            skew=settings.skew,
            clock=clock,
            random_bytes=random_bytes,
        )
        self._http = KeepAliveHttp(settings.url, timeout=settings.timeout)

    def __repr__(self) -> str:
        return f"HttpKmsResolver({self._settings.url!r})"

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, data: bytes) -> HttpAnswer:
        """One POST to the KMS, bounded by ``[kms] timeout``."""
        try:
            return self._http.request("POST", path, data, content_type=MIKEY_CONTENT_TYPE)
        except (OSError, http.client.HTTPException) as exc:
            raise kms_unavailable(exc) from None

    def request_ticket(self, desired: mikey_ticket.DesiredPolicy) -> mikey_ticket.IssuedTicket:
        """REQUEST_INIT_PSK -> REQUEST_RESP as the focus (RFC 6043 §4.2.1), verified.

        A refusal by the KMS is :class:`KmsRefusedRequest` (503 for the rekey:
        no key can be minted); no answer within the timeout, ``ServiceUnavailable``.
        """
        pending = self._exchanges.request_init(desired)
        answer = self._post(REQUEST_PATH, pending.data)
        return self._exchanges.request_resp(pending, answer, _request_refused)

    def resolve(self, transfer: mikey_ticket.TransferInit) -> mikey_ticket.ResolvedTicket:
        """RESOLVE_INIT_PSK -> RESOLVE_RESP as the focus (RFC 6043 §4.2.3), verified.

        A refusal by the KMS is :class:`KmsRefusedTicket` (403 to the INVITE).
        """
        pending = self._exchanges.resolve_init(transfer)
        answer = self._post(RESOLVE_PATH, pending.data)
        return self._exchanges.resolve_resp(pending, transfer, answer, _ticket_refused)
