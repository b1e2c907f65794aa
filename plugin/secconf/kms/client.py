"""The KMS's blocking client: the focus as a KMS user resolves participants' tickets, with a short timeout.

Kamailio workers have no event loop, so this is a **blocking** keep-alive
connection (:class:`secconf.keepalive.KeepAliveHttp`, one per worker,
opened lazily after the fork), every call bounded by ``[kms] timeout`` (0.5 s by default): a KMS that is down or
hangs costs a worker at most that long and the INVITE gets 503.

The exchange is RFC 6043 §4.2.3 (RESOLVE_INIT_PSK → RESOLVE_RESP) over
secconf's HTTP binding (docs/kms.md); the verification of the RESOLVE_RESP
and then of the TRANSFER_INIT with MPKi is
:func:`secconf.core.mikey.ticket.process_resolve_resp`.
"""

from __future__ import annotations

import http.client
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from secconf.core.errors import Forbidden, MikeyError, MikeyErrorNo, ServiceUnavailable
from secconf.core.mikey import ticket as mikey_ticket
from secconf.keepalive import HttpAnswer, KeepAliveHttp

__all__ = [
    "HttpKmsResolver", "KmsAccount", "KmsRefusedRequest", "KmsRefusedTicket", "TicketResolver",
]  # fmt: skip

MIKEY_CONTENT_TYPE = "application/mikey"


class KmsRefusedTicket(Forbidden):
    """The KMS would not resolve the ticket (forged, expired, revoked, not for us): 403."""


class KmsRefusedRequest(ServiceUnavailable):
    """The KMS would not issue the focus a ticket (policy, unknown recipient, focus revoked).

    503 to the caller of a rekey: the epoch cannot be minted, nothing changed.
    """


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
        self._clock = clock
        self._random_bytes = random_bytes
        self._http = KeepAliveHttp(settings.url, timeout=settings.timeout)

    def __repr__(self) -> str:
        return f"HttpKmsResolver({self._settings.url!r})"

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, data: bytes) -> HttpAnswer:
        """One POST to the KMS, bounded by ``[kms] timeout``; 5xx and no answer: 503."""
        try:
            status, content = self._http.request(
                "POST", path, data, content_type=MIKEY_CONTENT_TYPE
            )
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnavailable(f"KMS unavailable ({type(exc).__name__})") from None
        if status >= 500:
            raise ServiceUnavailable(f"KMS answered {status}")
        return status, content

    @staticmethod
    def _error_no(content: bytes) -> int:
        try:
            numbers = mikey_ticket.read_error(content)
        except MikeyError:  # an unreadable error body: the status says enough
            return MikeyErrorNo.UNSPECIFIED
        return numbers[0] if numbers else MikeyErrorNo.UNSPECIFIED

    def request_ticket(self, desired: mikey_ticket.DesiredPolicy) -> mikey_ticket.IssuedTicket:
        """REQUEST_INIT_PSK -> REQUEST_RESP as the focus (RFC 6043 §4.2.1), verified.

        A refusal by the KMS is :class:`KmsRefusedRequest` (503 for the rekey:
        no key can be minted); no answer within the timeout, ``ServiceUnavailable``.
        """
        settings = self._settings
        pending = mikey_ticket.build_request_init(
            initiator=settings.focus_identity,
            kms=settings.kms_identity,
            psk=settings.psk,
            desired=desired,
            now=self._clock(),
            random_bytes=self._random_bytes,
        )
        status, content = self._post("/mikey/v1/request", pending.data)
        if status != 200:
            raise KmsRefusedRequest(
                f"the KMS refused the focus a ticket (HTTP {status}, "
                f"MIKEY error {self._error_no(content)})"
            )
        return mikey_ticket.process_request_resp(
            pending, content, psk=settings.psk, now=self._clock(), skew=settings.skew
        )

    def resolve(self, transfer: mikey_ticket.TransferInit) -> mikey_ticket.ResolvedTicket:
        settings = self._settings
        pending = mikey_ticket.build_resolve_init(
            transfer,
            responder=settings.focus_identity,
            kms=settings.kms_identity,
            psk=settings.psk,
            now=self._clock(),
            random_bytes=self._random_bytes,
        )
        status, content = self._post("/mikey/v1/resolve", pending.data)
        if status != 200:
            raise KmsRefusedTicket(
                f"ticket refused by the KMS (HTTP {status}, MIKEY error {self._error_no(content)})"
            )
        return mikey_ticket.process_resolve_resp(
            pending,
            content,
            transfer,
            psk=settings.psk,
            now=self._clock(),
            skew=settings.skew,
        )
