"""Answering a Digest challenge (RFC 3261 §22.2, RFC 7616: SHA-256 preferred, MD5).

One rule for INVITE, REFER, REGISTER and SUBSCRIBE: a 401/407 is answered once; a
second challenge only if it says ``stale=true`` (the nonce expired, the
password was right).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from secconf.core import digest
from secconf.core.errors import SecconfError
from secconf.core.sip.headers import RandomBytes
from secconf.core.sip.message import SipRequest, SipResponse

__all__ = ["authorization", "best_challenge", "with_digest"]


def best_challenge(response: SipResponse, status: int) -> digest.DigestChallenge | None:
    """The best Digest challenge of a 401/407 (SHA-256 before MD5), or ``None``."""
    name = "proxy-authenticate" if status == 407 else "www-authenticate"
    found: list[digest.DigestChallenge] = []
    for value in response.get_all(name):
        try:
            found.append(digest.parse_challenge(value))
        except SecconfError:
            continue
    usable = [c for c in found if c.algorithm in digest.ALGORITHMS and "auth" in c.qop]
    order = list(digest.ALGORITHMS)
    usable.sort(key=lambda c: order.index(c.algorithm))
    return usable[0] if usable else None


def authorization(
    response: SipResponse,
    credentials: tuple[str, str] | None,
    *,
    method: str,
    uri: str,
    random_bytes: RandomBytes,
    answered: int = 0,
) -> tuple[str, str] | None:
    """The (Proxy-)Authorization header answering *response*, or ``None`` to give up.

    *answered* counts the challenges of this request answered so far: the
    first is answered, the second only if stale, none after that.
    """
    status = response.status
    if credentials is None or status not in (401, 407) or answered >= 2:
        return None
    chosen = best_challenge(response, status)
    if chosen is None or (answered == 1 and not chosen.stale):
        return None
    value = digest.respond(
        chosen,
        username=credentials[0],
        password=credentials[1],
        method=method,
        uri=uri,
        cnonce=random_bytes(12).hex(),
    )
    return ("Proxy-Authorization" if status == 407 else "Authorization"), value


async def with_digest(
    transact: Callable[[SipRequest, float], Awaitable[SipResponse]],
    attempt: Callable[[int, list[tuple[str, str]]], SipRequest],
    credentials: tuple[str, str] | None,
    method: str,
    uri: str,
    random_bytes: RandomBytes,
    timeout: float,
) -> tuple[SipRequest, SipResponse]:
    """Send ``attempt(cseq, authorization headers)`` for a request outside any dialog.

    The first 401/407 is answered with *credentials*, a second only if stale; each retry
    is ``attempt`` with the next CSeq (its Call-ID and From tag are the caller's to keep,
    RFC 3261 §22.2, §10.2.4).  Returns the last request and its final response.
    """
    cseq, answered = 1, 0
    headers: list[tuple[str, str]] = []
    while True:
        request = attempt(cseq, headers)
        response = await transact(request, timeout)
        header = authorization(
            response, credentials, method=method, uri=uri, random_bytes=random_bytes,
            answered=answered,
        )  # fmt: skip
        if header is None:
            return request, response
        answered += 1
        headers = [header]
        cseq += 1
