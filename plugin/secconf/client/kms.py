"""The participant's KMS client: Ticket Request and Ticket Resolve over HTTP.

Every call has a timeout; a KMS that does not answer is ``ServiceUnavailable``;
a KMS refusal is a :class:`KmsRefused` carrying the MIKEY error number.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from ..core.errors import MikeyError, MikeyErrorNo, ServiceUnavailable
from ..core.mikey import ticket as mikey_ticket

__all__ = ["KmsClient", "KmsRefused"]

MIKEY_CONTENT_TYPE = "application/mikey"


class KmsRefused(MikeyError):
    """The KMS answered with an error; ``error_no`` is the MIKEY error it named."""

    status_code = 403
    reason = "Forbidden"


@dataclass
class KmsClient:
    """Talks to one KMS as one identity (*psk* is that identity's pre-shared key)."""

    base_url: str
    kms_identity: str
    identity: str
    psk: bytes = field(repr=False)
    timeout: float = 5.0
    clock: Callable[[], float] = time.time

    async def _post(self, path: str, body: bytes) -> bytes:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                response = await http.post(
                    self.base_url.rstrip("/") + path,
                    content=body,
                    headers={"content-type": MIKEY_CONTENT_TYPE},
                )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"KMS at {self.base_url} unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code == 503:
            raise ServiceUnavailable("KMS answered 503")
        if response.status_code != 200:
            error_no: int = MikeyErrorNo.UNSPECIFIED
            try:
                numbers = mikey_ticket.read_error(response.content)
                error_no = numbers[0] if numbers else error_no
            except MikeyError:
                pass
            raise KmsRefused(
                f"KMS refused with HTTP {response.status_code}, MIKEY error {error_no}", error_no
            )
        return response.content

    async def request_ticket(
        self, desired: mikey_ticket.DesiredPolicy
    ) -> mikey_ticket.IssuedTicket:
        """REQUEST_INIT_PSK -> REQUEST_RESP, verified (RFC 6043 §4.2.1)."""
        pending = mikey_ticket.build_request_init(
            initiator=self.identity,
            kms=self.kms_identity,
            psk=self.psk,
            desired=desired,
            now=self.clock(),
            random_bytes=secrets.token_bytes,
        )
        answer = await self._post("/mikey/v1/request", pending.data)
        return mikey_ticket.process_request_resp(pending, answer, psk=self.psk, now=self.clock())

    async def resolve(self, transfer: mikey_ticket.TransferInit) -> mikey_ticket.ResolvedTicket:
        """RESOLVE_INIT_PSK -> RESOLVE_RESP, verified, TRANSFER_INIT checked (§4.2.3)."""
        pending = mikey_ticket.build_resolve_init(
            transfer,
            responder=self.identity,
            kms=self.kms_identity,
            psk=self.psk,
            now=self.clock(),
            random_bytes=secrets.token_bytes,
        )
        answer = await self._post("/mikey/v1/resolve", pending.data)
        return mikey_ticket.process_resolve_resp(
            pending, answer, transfer, psk=self.psk, now=self.clock()
        )
