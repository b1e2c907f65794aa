"""The KMS's HTTP binding (Starlette, served by uvicorn).

``POST /mikey/v1/request``  REQUEST_INIT_PSK  -> REQUEST_RESP
``POST /mikey/v1/resolve``  RESOLVE_INIT_PSK  -> RESOLVE_RESP
``GET  /healthz``           200 when Redis answers, else 503

Bodies are ``application/mikey`` (the raw MIKEY message).  A refusal is an
HTTP error status with a MIKEY Error message as body (HDR, T, ERR) and the
header ``Secconf-Mikey-Error: <error no>``; docs/kms.md has the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.errors import (
    MalformedMikey,
    MessageTooLarge,
    MikeyError,
    MikeyErrorNo,
    SecconfError,
    ServiceUnavailable,
)
from ..core.mikey.ticket import build_error
from ..store import KeyUnwrapError
from ..store.redis import ping
from .service import KmsService

__all__ = ["MAX_BODY", "MIKEY_CONTENT_TYPE", "build_app", "http_status"]

log = logging.getLogger("secconf.kms")

MIKEY_CONTENT_TYPE = "application/mikey"
#: MIKEY messages are refused above 64 KiB by the codec; refuse before reading more.
MAX_BODY = 64 * 1024


def http_status(error: SecconfError) -> int:
    """The HTTP status for a refusal: SIP's 488 has no HTTP twin, so it becomes 400."""
    if isinstance(error, ServiceUnavailable):
        return 503
    if error.status_code == 488:
        return 400
    if error.status_code in (400, 403, 413):
        return error.status_code
    return 500


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise MessageTooLarge(f"MIKEY body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise MessageTooLarge(f"MIKEY body over {MAX_BODY} bytes")
    return bytes(body)


def _refusal(error: SecconfError, body: bytes, clock: Callable[[], float]) -> Response:
    error_no = error.error_no if isinstance(error, MikeyError) else MikeyErrorNo.UNSPECIFIED
    status = http_status(error)
    headers = {"Secconf-Mikey-Error": str(int(error_no))}
    if status == 503:
        headers["Retry-After"] = "1"
    return Response(
        build_error(body, [error_no], now=clock()),
        status_code=status,
        media_type=MIKEY_CONTENT_TYPE,
        headers=headers,
    )


def _mikey_endpoint(
    handler: Callable[[bytes], Awaitable[bytes]], what: str, clock: Callable[[], float]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body = b""
        try:
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type != MIKEY_CONTENT_TYPE:
                return Response(
                    f"expected {MIKEY_CONTENT_TYPE}\n", status_code=415, media_type="text/plain"
                )
            body = await _read_body(request)
            if not body:
                raise MalformedMikey("empty body")
            answer = await handler(body)
        except KeyUnwrapError:
            # A stored key that does not open is our fault, never the peer's.
            log.error("%s: a stored key did not unwrap under the configured KEK", what)
            return _refusal(ServiceUnavailable("key store inconsistent"), body, clock)
        except SecconfError as exc:
            peer = request.client.host if request.client else "?"
            log.info("%s from %s refused: %s %s", what, peer, type(exc).__name__, exc.message)
            return _refusal(exc, body, clock)
        return Response(answer, media_type=MIKEY_CONTENT_TYPE)

    return endpoint


def build_app(service: KmsService, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI application serving *service*."""

    async def healthz(request: Request) -> Response:
        try:
            await ping(service.client)
        except ServiceUnavailable:
            return JSONResponse({"status": "redis unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "identity": service.identity})

    routes = [
        Route(
            "/mikey/v1/request",
            _mikey_endpoint(service.handle_request, "REQUEST_INIT", clock),
            methods=["POST"],
        ),
        Route(
            "/mikey/v1/resolve",
            _mikey_endpoint(service.handle_resolve, "RESOLVE_INIT", clock),
            methods=["POST"],
        ),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes)
