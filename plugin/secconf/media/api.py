"""The edge's control API (Starlette, JSON, loopback, bearer token): see docs/edge.md.

Request bodies are parsed and checked here; :class:`LegRoutes` and
:class:`ConferenceRoutes` hold the handlers of the two resources, which call
:class:`~secconf.media.service.EdgeService`; :func:`build_app` puts them behind
the bearer-token guard.

Every refusal is a JSON ``{"error": reason, "message": text}`` with 400, 401,
404, 409 or 503 and no state change.  Messages never hold key material.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from secconf.core.edge import RELAYED_SUITES, BadEdgeRequest, LegMode
from secconf.core.errors import SecconfError, ServiceUnavailable

from .keys import SrtpKey
from .metrics import render_metrics
from .service import EdgeService
from .views import conference_view, leg_view, new_leg_view

__all__ = ["MAX_BODY", "build_app"]

log = logging.getLogger("secconf.edge")

#: Control bodies are small; refuse before reading more.
MAX_BODY = 16 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def _status(error: SecconfError) -> int:
    if isinstance(error, ServiceUnavailable):
        return 503
    if error.status_code in (400, 404, 409):
        return error.status_code
    if error.status_code in (413, 488):
        return 400
    return 503 if error.status_code >= 500 else 400


def _error(status: int, reason: str, message: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": reason, "message": message}, status_code=status, headers=headers)


async def _json(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadEdgeRequest(f"body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadEdgeRequest(f"body over {MAX_BODY} bytes")
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadEdgeRequest("body is not JSON") from None
    if not isinstance(value, dict):
        raise BadEdgeRequest("body must be a JSON object")
    return value


def _int(value: Any, what: str, low: int = 0, high: int = 0xFFFFFFFF) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadEdgeRequest(f"{what} must be an integer {low}..{high}")
    return value


def _host(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise BadEdgeRequest(f"{what} needs a host")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise BadEdgeRequest(f"{what} must be an IP address") from None
    return value


def _remote(body: dict[str, Any]) -> tuple[str, int]:
    """``{host, port}``; ``{host, rtp_port}`` and ``{address, ports: [p]}`` are accepted too."""
    host = body.get("host", body.get("address"))
    port = body.get("port", body.get("rtp_port"))
    if port is None and isinstance(body.get("ports"), list) and body["ports"]:
        port = body["ports"][0]
    if host is None:
        raise BadEdgeRequest("remote needs a host")
    return _host(host, "host"), _int(port, "port", 1, 65535)


def _rtcp_remote(body: dict[str, Any], host: str) -> tuple[str, int] | None:
    """Optional ``rtcp_port`` (and ``rtcp_host``, default the RTP host) of a remote (a=rtcp)."""
    port = body.get("rtcp_port")
    if port is None:
        if body.get("rtcp_host") is not None:
            raise BadEdgeRequest("rtcp_host needs rtcp_port")
        return None
    rtcp_host = body.get("rtcp_host")
    if rtcp_host is not None:
        host = _host(rtcp_host, "rtcp_host")
    return host, _int(port, "rtcp_port", 1, 65535)


def _optional_remote(value: Any) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """A remote in the POST /v1/legs body, and its RTCP address if given."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadEdgeRequest("a remote must be an object")
    remote = _remote(value)
    return remote, _rtcp_remote(value, remote[0])


def _rtcp_mux(value: Any) -> tuple[bool, bool]:
    """``rtcp_mux``: true/false for both sides, or ``{participant, internal}`` (default true)."""
    if value is None:
        return True, True
    if isinstance(value, bool):
        return value, value
    if isinstance(value, dict) and not set(value) - {"participant", "internal"}:
        sides = (value.get("participant", True), value.get("internal", True))
        if all(isinstance(side, bool) for side in sides):
            return sides
    raise BadEdgeRequest("rtcp_mux must be true, false or {participant: bool, internal: bool}")


_CREATE_LEG_FIELDS = frozenset(
    {
        "conference", "leg", "mode", "participant", "crypto", "streams", "internal",
        "epoch", "participant_ssrcs", "participant_remote", "internal_remote", "rtcp_mux",
        "suite",
    }
)  # fmt: skip


def _participant_key(body: dict[str, Any]) -> SrtpKey | None:
    """An SDES leg's key: ``participant`` (JSON key), ``crypto`` or ``streams[0].crypto``
    (an a=crypto line); None if none is given."""
    if body.get("participant") is not None:
        return SrtpKey.from_json(body["participant"], "participant")
    if body.get("crypto") is not None:
        return SrtpKey.from_crypto_line(body["crypto"], "crypto")
    if body.get("streams") is not None:
        streams = body["streams"]
        if not isinstance(streams, list) or len(streams) != 1:
            raise BadEdgeRequest("one audio stream per leg is supported")
        stream = streams[0]
        if not isinstance(stream, dict):
            raise BadEdgeRequest("a stream must be an object")
        if stream.get("crypto") is not None:
            return SrtpKey.from_crypto_line(stream["crypto"], "streams[0].crypto")
    return None


def _internal_side(internal: Any, default: str) -> tuple[str, SrtpKey | None]:
    """``internal``: a mode, or ``{mode, asterisk_key}``; (mode, Asterisk's key or None)."""
    asterisk_key = None
    if isinstance(internal, dict):
        if set(internal) - {"mode", "asterisk_key"}:
            raise BadEdgeRequest("internal takes mode and asterisk_key")
        if internal.get("asterisk_key") is not None:
            asterisk_key = SrtpKey.from_json(internal["asterisk_key"], "asterisk_key")
        internal = internal.get("mode", default)
    if internal not in ("rtp", "srtp"):
        raise BadEdgeRequest("internal mode must be rtp or srtp")
    return internal, asterisk_key


def _epoch_param(request: Request) -> int:
    text = request.path_params["epoch"]
    if not text.isdigit() or len(text) > 10:
        raise BadEdgeRequest("epoch must be a decimal integer")
    return _int(int(text), "epoch")


class LegRoutes:
    """``/v1/legs``: create a leg, read it, set its remotes and keys, switch it, delete it."""

    def __init__(self, service: EdgeService) -> None:
        self.service = service

    async def create(self, request: Request) -> Response:
        body = await _json(request)
        unknown = set(body) - _CREATE_LEG_FIELDS
        if unknown:
            raise BadEdgeRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        try:
            mode = LegMode(body.get("mode", "sdes"))
        except ValueError:
            raise BadEdgeRequest("mode must be sdes or kms") from None
        participant_key = _participant_key(body)
        default = self.service.default_internal_mode
        internal, asterisk_key = _internal_side(body.get("internal", default), default)
        ssrcs = body.get("participant_ssrcs", [])
        if not isinstance(ssrcs, list) or len(ssrcs) > 16:
            raise BadEdgeRequest("participant_ssrcs must be a list of at most 16 SSRCs")
        epoch = body.get("epoch")
        suite = body.get("suite")
        if suite is not None and suite not in RELAYED_SUITES:
            raise BadEdgeRequest("suite: not one the edge relays")
        conference = body.get("conference")
        if not isinstance(conference, str):
            raise BadEdgeRequest("conference id missing")
        rtcp_mux = _rtcp_mux(body.get("rtcp_mux"))
        participant_remote, participant_rtcp = _optional_remote(body.get("participant_remote"))
        internal_remote, internal_rtcp = _optional_remote(body.get("internal_remote"))
        leg = await self.service.create_leg(
            conference,
            mode,
            participant_key=participant_key,
            internal_mode=internal,
            leg_id=body.get("leg"),
            epoch=None if epoch is None else _int(epoch, "epoch"),
            suite=suite,
            participant_ssrcs=[_int(s, "SSRC") for s in ssrcs],
            participant_remote=participant_remote,
            internal_remote=internal_remote,
            asterisk_key=asterisk_key,
            rtcp_mux=rtcp_mux,
            participant_rtcp_remote=participant_rtcp,
            internal_rtcp_remote=internal_rtcp,
        )
        return JSONResponse(new_leg_view(leg), status_code=201)

    async def get(self, request: Request) -> Response:
        return JSONResponse(leg_view(self.service.relay.leg(request.path_params["leg"])))

    async def delete(self, request: Request) -> Response:
        leg = await self.service.delete_leg(request.path_params["leg"])
        return JSONResponse({"leg": leg.id, "counters": leg.counters.as_dict()})

    def put_remote(self, side: str) -> Handler:
        """PUT /v1/legs/{leg}/participant-remote or /internal-remote."""

        async def put_remote(request: Request) -> Response:
            body = await _json(request)
            asterisk_key = None
            if side == "internal" and body.get("asterisk_key") is not None:
                asterisk_key = SrtpKey.from_json(body["asterisk_key"], "asterisk_key")
            remote = _remote(body)
            leg_id = request.path_params["leg"]
            # The module's 200 OK path in one round trip: where the mixer's media is, and
            # "send to the participant under this epoch from now on".  The epoch is checked
            # first, so a refused switch changes nothing.
            switch_epoch = None
            if side == "internal" and body.get("switch_epoch") is not None:
                switch_epoch = _int(body.get("switch_epoch"), "switch_epoch")
                self.service.relay.check_switch(leg_id, switch_epoch)
            leg = await self.service.set_remote(
                leg_id, side, remote, asterisk_key, _rtcp_remote(body, remote[0])
            )
            if switch_epoch is not None:
                await self.service.switch(leg_id, switch_epoch)
            return JSONResponse(leg_view(leg))

        return put_remote

    async def put_participant_key(self, request: Request) -> Response:
        key = SrtpKey.from_json(await _json(request), "participant key")
        leg = await self.service.set_participant_key(request.path_params["leg"], key)
        return JSONResponse(leg_view(leg))

    async def switch(self, request: Request) -> Response:
        body = await _json(request)
        epoch = _int(body.get("epoch"), "epoch")
        leg_id = request.path_params["leg"]
        changed = await self.service.switch(leg_id, epoch)
        leg = self.service.relay.leg(leg_id)
        return JSONResponse(
            {
                "leg": leg_id,
                "epoch": leg.state.tx_epoch,
                "changed": changed,
                "switch": leg.state.switch_state.value,
            }
        )


class ConferenceRoutes:
    """``/v1/conferences``: read or delete a conference, put or destroy its key epochs."""

    def __init__(self, service: EdgeService) -> None:
        self.service = service

    async def get(self, request: Request) -> Response:
        return JSONResponse(conference_view(self.service.relay, request.path_params["conference"]))

    async def delete(self, request: Request) -> Response:
        removed = await self.service.delete_conference(request.path_params["conference"])
        return JSONResponse({"removed_legs": removed})

    async def put_epoch(self, request: Request) -> Response:
        epoch = _epoch_param(request)
        key = SrtpKey.from_json(await _json(request), "group key")
        created = await self.service.put_epoch(request.path_params["conference"], epoch, key)
        return JSONResponse(
            {"epoch": epoch, "fingerprint": key.fingerprint, "created": created},
            status_code=201 if created else 200,
        )

    async def delete_epoch(self, request: Request) -> Response:
        epoch = _epoch_param(request)
        await self.service.drop_epoch(request.path_params["conference"], epoch)
        return JSONResponse({"epoch": epoch, "destroyed": True})


def _guarded(handler: Handler, expected: bytes) -> Handler:
    """*handler* behind the bearer token, its refusals as JSON errors."""

    async def endpoint(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            return _error(401, "Unauthorized", "missing or wrong bearer token")
        try:
            return await handler(request)
        except SecconfError as exc:
            status = _status(exc)
            log.info("%s %s refused: %d %s", request.method, request.url.path, status, exc.message)
            return _error(status, exc.reason, exc.message)

    return endpoint


def build_app(service: EdgeService, *, token: str) -> Starlette:
    """The ASGI app; every route but ``/healthz`` needs ``Authorization: Bearer <token>``."""
    if len(token) < 16:
        raise ValueError("the API token must have at least 16 characters")
    expected = f"Bearer {token}".encode()
    legs, conferences = LegRoutes(service), ConferenceRoutes(service)

    async def metrics(request: Request) -> Response:
        text = render_metrics(service.relay)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "legs": len(service.relay.legs)})

    leg, conference = "/v1/legs/{leg}", "/v1/conferences/{conference}"
    guarded: list[tuple[str, Handler, str]] = [
        ("/v1/legs", legs.create, "POST"),
        (leg, legs.get, "GET"),
        (leg, legs.delete, "DELETE"),
        (f"{leg}/participant-remote", legs.put_remote("participant"), "PUT"),
        (f"{leg}/internal-remote", legs.put_remote("internal"), "PUT"),
        (f"{leg}/participant-key", legs.put_participant_key, "PUT"),
        (f"{leg}/switch", legs.switch, "POST"),
        (conference, conferences.get, "GET"),
        (conference, conferences.delete, "DELETE"),
        (f"{conference}/epochs/{{epoch}}", conferences.put_epoch, "PUT"),
        (f"{conference}/epochs/{{epoch}}", conferences.delete_epoch, "DELETE"),
        ("/metrics", metrics, "GET"),
    ]
    routes = [Route(path, _guarded(h, expected), methods=[m]) for path, h, m in guarded]
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=routes)
