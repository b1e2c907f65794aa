"""The Kamailio module's view of the media edge: a small interface and its HTTP client.

The edge (``secconf edge serve``, built in parallel) terminates SRTP towards
participants with the conference's group keys and gives the mixer a clear
internal leg.  The module needs five things from it, one HTTP call each
(JSON bodies; the paths are the edge's control API as planned):

=========================================  =======================================================
``POST /v1/legs``                          a leg for a dialog: the participant's own crypto
                                           line(s); answers the external (participant-facing)
                                           and internal (mixer-facing) address and ports
``PUT /v1/legs/{leg}/internal-remote``     where the mixer's media for this leg is (its answer)
``PUT /v1/conferences/{id}/epochs/{n}``    a group key epoch (suite, key, salt in base64)
``POST /v1/legs/{leg}/switch``             send to this leg under epoch *n* from now on
``PUT /v1/legs/{leg}/participant-key``     SDES re-INVITE: the participant's (new) sending key
``DELETE /v1/legs/{leg}``                  the dialog ended
``DELETE /v1/conferences/{id}``            the conference ended (or its creation was undone)
=========================================  =======================================================

Every call carries ``Authorization: Bearer <token>`` when a token is
configured (the real edge requires one, docs/edge.md).

Every call has a short timeout (Kamailio workers must never hang); any
failure is :class:`~secconf.core.errors.ServiceUnavailable` (503).  The HTTP
connection is per worker process (created lazily after the fork), kept alive
(:class:`secconf.keepalive.KeepAliveHttp`, stdlib ``http.client``).

The roster watcher (asyncio) reads the edge's view of a conference
(``GET /v1/conferences/{id}``: its epochs and each leg's switch) with
:class:`AsyncHttpEdgeControl`: httpx on the event loop, with the same paths,
``Authorization`` header, timeout and failure mapping, built and parsed by the
same functions as the blocking client's calls.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from secconf.core.errors import ServiceUnavailable
from secconf.core.keys import GroupKey
from secconf.core.sdes import CryptoAttribute
from secconf.keepalive import KeepAliveHttp

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncHttpEdgeControl", "EdgeControl", "HttpEdgeControl", "LegAddresses", "LegPlan", "NoEdge",
    "switch_at_answer",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class LegAddresses:
    address: str
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LegPlan:
    """What the edge allocated for one leg (*ssrc*: the edge's outbound SSRC, if it said)."""

    external: LegAddresses
    internal: LegAddresses
    ssrc: int | None = None


class EdgeControl(Protocol):
    def create_leg(
        self,
        conference_id: str,
        leg: str,
        media: Sequence[str],
        crypto: Sequence[str],
        *,
        mode: str = "sdes",
        remote: LegAddresses | None = None,
        ssrcs: Sequence[int] = (),
        rtcp_mux: bool = True,
        epoch: int | None = None,
        suite: str | None = None,
    ) -> LegPlan | None: ...

    def set_internal_remote(
        self, leg: str, remote: LegAddresses, *, switch_epoch: int | None = None
    ) -> None: ...

    def put_epoch(self, conference_id: str, key: GroupKey) -> None: ...

    def switch(self, leg: str, epoch: int) -> None: ...

    def set_participant_key(self, leg: str, crypto: str) -> None: ...

    def delete_leg(self, leg: str) -> None: ...

    def delete_conference(self, conference_id: str) -> None: ...

    def set_participant_remote(self, leg: str, remote: LegAddresses) -> None: ...


class NoEdge:
    """No media edge: SDP addresses pass unchanged (tests and benchmarks of signalling only).

    Not for production: the mixer cannot send under a group key itself.
    """

    def create_leg(
        self,
        conference_id: str,
        leg: str,
        media: Sequence[str],
        crypto: Sequence[str],
        *,
        mode: str = "sdes",
        remote: LegAddresses | None = None,
        ssrcs: Sequence[int] = (),
        rtcp_mux: bool = True,
        epoch: int | None = None,
        suite: str | None = None,
    ) -> LegPlan | None:
        return None

    def set_internal_remote(
        self, leg: str, remote: LegAddresses, *, switch_epoch: int | None = None
    ) -> None:
        return None

    def put_epoch(self, conference_id: str, key: GroupKey) -> None:
        return None

    def switch(self, leg: str, epoch: int) -> None:
        return None

    def set_participant_key(self, leg: str, crypto: str) -> None:
        return None

    def delete_leg(self, leg: str) -> None:
        return None

    def delete_conference(self, conference_id: str) -> None:
        return None

    def set_participant_remote(self, leg: str, remote: LegAddresses) -> None:
        return None


def switch_at_answer(edge: EdgeControl, leg: str, remote: LegAddresses | None, epoch: int) -> None:
    """A participant's 200 OK passed: the mixer's media address (if the answer gave one)
    and the switch of the leg's outbound key to *epoch*, in one round trip."""
    if remote is None:
        edge.switch(leg, epoch)
    else:
        edge.set_internal_remote(leg, remote, switch_epoch=epoch)


def _addresses(value: Any, what: str) -> LegAddresses:
    try:
        address = value["address"]
        ports = tuple(int(p) for p in value["ports"])
    except (KeyError, TypeError, ValueError):
        raise ServiceUnavailable(f"media edge answered an unusable {what}") from None
    if not isinstance(address, str) or not all(0 < p < 65536 for p in ports):
        raise ServiceUnavailable(f"media edge answered an unusable {what}")
    return LegAddresses(address, ports)


# -- what both clients share: the request's headers and body, the answer's meaning -------------


def _headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def _body(body: object | None) -> bytes | None:
    return None if body is None else json.dumps(body).encode()


def _conference_path(conference_id: str) -> str:
    return f"/v1/conferences/{conference_id}"


def _unavailable(exc: Exception) -> ServiceUnavailable:
    """A call that got no answer (connect, timeout, reset): the edge is unavailable."""
    return ServiceUnavailable(f"media edge unavailable ({type(exc).__name__})")


def _answer(method: str, status: int, content: bytes) -> Any:
    """The JSON of an answer, ``None`` for an empty one; a refusal is ``ServiceUnavailable``.

    A 404 to a ``DELETE`` (already gone) or a ``GET`` (the edge has no such
    thing) is an answer, ``None``, not a failure.
    """
    if status == 404 and method in ("DELETE", "GET"):
        return None
    if status >= 300:
        raise ServiceUnavailable(f"media edge refused {method} ({status})")
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        raise ServiceUnavailable("media edge answered something that is not JSON") from None


class HttpEdgeControl:
    """:class:`EdgeControl` over the edge's HTTP control API, every call bounded by *timeout*."""

    def __init__(self, base_url: str, *, timeout: float, token: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        # Opened lazily, in the worker that uses it (after Kamailio forked).
        self._http = KeepAliveHttp(self._base, timeout=timeout, headers=_headers(token))

    def __repr__(self) -> str:
        return f"HttpEdgeControl({self._base!r})"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: object | None = None) -> Any:
        try:
            status, content = self._http.request(method, path, _body(body))
        except (OSError, http.client.HTTPException) as exc:
            raise _unavailable(exc) from exc
        return _answer(method, status, content)

    def create_leg(
        self,
        conference_id: str,
        leg: str,
        media: Sequence[str],
        crypto: Sequence[str],
        *,
        mode: str = "sdes",
        remote: LegAddresses | None = None,
        ssrcs: Sequence[int] = (),
        rtcp_mux: bool = True,
        epoch: int | None = None,
        suite: str | None = None,
    ) -> LegPlan:
        """*suite*: a KMS leg's participant-side suite (default: the epoch's first; an SDES
        leg's is its crypto's), docs/mikey-decisions.md #30."""
        body: dict[str, Any] = {"conference": conference_id, "leg": leg}
        if mode == "sdes":
            body["streams"] = [
                {"media": m, "crypto": c} for m, c in zip(media, crypto, strict=True)
            ]
        else:
            body["mode"] = mode
            if suite is not None:
                body["suite"] = suite
        if remote is not None and remote.ports:
            body["participant_remote"] = {"host": remote.address, "port": remote.ports[0]}
        if ssrcs:
            body["participant_ssrcs"] = list(ssrcs)
        if epoch is not None:
            # A KMS dial-out's leg starts on the epoch its TRANSFER_INIT carries, even if a
            # newer one was put meanwhile (default: the conference's newest).
            body["epoch"] = epoch
        if not rtcp_mux:
            # The participant did not offer a=rtcp-mux (linphone, baresip): its RTCP
            # comes from and goes to RTP port + 1 (RFC 3550 §11).  The mixer's side stays muxed.
            body["rtcp_mux"] = {"participant": False}
        answer = self._call("POST", "/v1/legs", body)
        if not isinstance(answer, dict):
            raise ServiceUnavailable("media edge answered an unusable leg")
        ssrc = answer.get("outbound_ssrc")
        plan = LegPlan(
            _addresses(answer.get("external"), "external leg"),
            _addresses(answer.get("internal"), "internal leg"),
            ssrc if isinstance(ssrc, int) and not isinstance(ssrc, bool) else None,
        )
        if len(plan.external.ports) != len(media) or len(plan.internal.ports) != len(media):
            raise ServiceUnavailable("media edge answered the wrong number of ports")
        return plan

    def set_internal_remote(
        self, leg: str, remote: LegAddresses, *, switch_epoch: int | None = None
    ) -> None:
        """Where the mixer's media for *leg* is; with *switch_epoch* also the leg's switch
        (the edge checks the epoch first, so a refused switch changes nothing)."""
        body: dict[str, Any] = {"address": remote.address, "ports": list(remote.ports)}
        if switch_epoch is not None:
            body["switch_epoch"] = switch_epoch
        self._call("PUT", f"/v1/legs/{leg}/internal-remote", body)

    def put_epoch(self, conference_id: str, key: GroupKey) -> None:
        self._call(
            "PUT",
            f"{_conference_path(conference_id)}/epochs/{key.epoch}",
            {
                "suite": key.suite.name,
                "key": base64.b64encode(key.key).decode(),
                "salt": base64.b64encode(key.salt).decode(),
            },
        )

    def switch(self, leg: str, epoch: int) -> None:
        self._call("POST", f"/v1/legs/{leg}/switch", {"epoch": epoch})

    def set_participant_key(self, leg: str, crypto: str) -> None:
        """*crypto*: the participant's ``a=crypto`` value (its sending key after a re-INVITE).

        The edge ignores a key it already has (same fingerprint) and tries the
        previous one for its grace window otherwise.
        """
        attribute = CryptoAttribute.parse(crypto)
        param = attribute.key_params[0]
        self._call(
            "PUT",
            f"/v1/legs/{leg}/participant-key",
            {
                "suite": attribute.suite.name,
                "key": base64.b64encode(param.key).decode(),
                "salt": base64.b64encode(param.salt).decode(),
            },
        )

    def delete_leg(self, leg: str) -> None:
        self._call("DELETE", f"/v1/legs/{leg}")

    def set_participant_remote(self, leg: str, remote: LegAddresses) -> None:
        """Where the participant's media is (a dial-out learns it from the phone's answer)."""
        self._call(
            "PUT",
            f"/v1/legs/{leg}/participant-remote",
            {"address": remote.address, "ports": list(remote.ports)},
        )

    def delete_conference(self, conference_id: str) -> None:
        self._call("DELETE", _conference_path(conference_id))


class AsyncHttpEdgeControl:
    """The edge's control API for asyncio callers (the roster watcher), every call bounded by
    *timeout*: what the watcher needs of it, on one kept-alive httpx connection pool.

    httpx is imported when the first client is made: the Kamailio workers, which
    import this module for :class:`HttpEdgeControl`, never load it.
    """

    def __init__(self, base_url: str, *, timeout: float, token: str | None = None) -> None:
        import httpx

        self._base = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self._base, headers=_headers(token), timeout=timeout, trust_env=False
        )
        self._failures: tuple[type[Exception], ...] = (httpx.HTTPError, OSError)

    def __repr__(self) -> str:
        return f"AsyncHttpEdgeControl({self._base!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str) -> Any:
        try:
            response: httpx.Response = await self._http.request(method, path)
        except self._failures as exc:
            raise _unavailable(exc) from exc
        return _answer(method, response.status_code, response.content)

    async def describe_conference(self, conference_id: str) -> dict[str, Any] | None:
        """``GET /v1/conferences/{id}``: the edge's epochs and legs (each leg's epoch and
        switch state) of *conference_id*; ``None`` if the edge has no such conference."""
        described = await self._call("GET", _conference_path(conference_id))
        if described is not None and not isinstance(described, dict):
            raise ServiceUnavailable("media edge answered an unusable conference")
        return described
