"""The participant's KMS client: the asyncio (httpx) transport of :mod:`secconf.kms.client`.

What is sent where and what each answer means is :class:`~secconf.kms.client.KmsExchanges`'s,
shared with the focus's blocking transport; this module only carries the
bytes, so that httpx is loaded by the participant and never by Kamailio workers.
Every call has a timeout; a KMS that does not answer (or answers 5xx) is
``ServiceUnavailable``; a KMS refusal is a :class:`KmsRefused` carrying the MIKEY
error number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from secconf.core.errors import MikeyError, SecconfError
from secconf.core.mikey import ticket as mikey_ticket
from secconf.keepalive import HttpAnswer

from .client import (
    MAX_ANSWER_BYTES,
    MIKEY_CONTENT_TYPE,
    REQUEST_PATH,
    RESOLVE_PATH,
    KmsExchanges,
    kms_unavailable,
)

__all__ = ["KmsClient", "KmsRefused"]


class KmsRefused(MikeyError):
    """The KMS answered with an error; ``error_no`` is the MIKEY error it named."""

    status_code = 403
    reason = "Forbidden"


def _refused(status: int, error_no: int) -> SecconfError:
    return KmsRefused(f"KMS refused with HTTP {status}, MIKEY error {error_no}", error_no)


@dataclass
class KmsClient:
    """The participant at the KMS, as one identity (*psk* is that identity's pre-shared key).

    A refusal is :class:`KmsRefused` with the MIKEY error number; a KMS that
    does not answer within *timeout*, ``ServiceUnavailable``.
    """

    base_url: str
    kms_identity: str
    identity: str
    psk: bytes = field(repr=False)
    timeout: float = 5.0
    clock: Callable[[], float] = time.time

    def _exchanges(self) -> KmsExchanges:
        return KmsExchanges(self.identity, self.kms_identity, self.psk, clock=self.clock)

    async def _post(self, path: str, body: bytes) -> HttpAnswer:
        """One POST to the KMS, bounded by *timeout*; at most MAX_ANSWER_BYTES + 1 read."""
        url = self.base_url.rstrip("/") + path
        headers = {"content-type": MIKEY_CONTENT_TYPE}
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout) as http,
                http.stream("POST", url, content=body, headers=headers) as response,
            ):
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > MAX_ANSWER_BYTES:
                        break
        except httpx.HTTPError as exc:
            raise kms_unavailable(exc) from None
        return response.status_code, bytes(content)

    async def request_ticket(
        self, desired: mikey_ticket.DesiredPolicy
    ) -> mikey_ticket.IssuedTicket:
        """REQUEST_INIT_PSK -> REQUEST_RESP, verified (RFC 6043 §4.2.1)."""
        exchanges = self._exchanges()
        pending = exchanges.request_init(desired)
        answer = await self._post(REQUEST_PATH, pending.data)
        return exchanges.request_resp(pending, answer, _refused)

    async def resolve(self, transfer: mikey_ticket.TransferInit) -> mikey_ticket.ResolvedTicket:
        """RESOLVE_INIT_PSK -> RESOLVE_RESP, verified, TRANSFER_INIT checked (§4.2.3)."""
        exchanges = self._exchanges()
        pending = exchanges.resolve_init(transfer)
        answer = await self._post(RESOLVE_PATH, pending.data)
        return exchanges.resolve_resp(pending, transfer, answer, _refused)
