"""The focus's request handling with its I/O (Redis, the media edge) but without KSR.

:class:`FocusService` takes plain values (:class:`~.adapter.RequestView`,
:class:`~.adapter.ReplyView`) and returns what to do (:class:`~.adapter.Reply`,
:class:`~.adapter.Relay`, a new reply body).  The decisions that need no I/O
are in :mod:`secconf.core.focus`.  Refusals are raised as
:class:`~secconf.core.errors.SecconfError` and turned into a SIP answer by
:meth:`FocusService.refusal`; nothing is left in Redis or at the edge by a
refused request.

SDES mode only so far (see docs/kamailio.md for what is not built yet).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.errors import (
    Forbidden,
    MalformedMessage,
    MessageTooLarge,
    NotAcceptable,
    SecconfError,
)
from secconf.core.focus import (
    OfferedStream,
    TargetKind,
    answer_to_participant,
    authenticated_identity,
    check_offer,
    classify_target,
    offer_ssrcs,
    offer_to_upstream,
    offered_crypto,
    offered_sections,
    rejected_answer,
    warning_header,
)
from secconf.core.keys import GroupKey
from secconf.core.sdp import SessionDescription
from secconf.store.conferences import ConferenceExists, ConferenceStore, DialogExists, dialog_id

from .adapter import Relay, Reply, ReplyView, RequestView
from .edge_control import EdgeControl, LegAddresses, LegPlan
from .settings import Settings

__all__ = ["ON_FAILURE", "ON_REPLY", "FocusService", "TransactionState"]

ON_REPLY = "ksr_onreply_secconf"
ON_FAILURE = "ksr_failure_secconf"
CONFERENCE_HEADER = "X-Secconf-Conference"


class Retransmission(SecconfError):
    """The dialog is already recorded: a retransmitted INVITE that tm did not absorb."""


@dataclass(frozen=True, slots=True)
class TransactionState:
    """What the reply and failure routes need, kept in an AVP (no key material)."""

    conference_id: str
    leg: str
    streams: tuple[OfferedStream, ...]
    external: LegAddresses | None
    conference_uri: str
    created: bool
    sections: tuple[tuple[str, str, str], ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "c": self.conference_id,
                "l": self.leg,
                "s": [[s.index, s.proto, s.tag] for s in self.streams],
                "x": None
                if self.external is None
                else [self.external.address, list(self.external.ports)],
                "u": self.conference_uri,
                "n": self.created,
                "m": [list(section) for section in self.sections],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> TransactionState:
        data = json.loads(text)
        external = data["x"]
        return cls(
            data["c"],
            data["l"],
            tuple(OfferedStream(int(i), str(p), int(t)) for i, p, t in data["s"]),
            None if external is None else LegAddresses(external[0], tuple(external[1])),
            data["u"],
            bool(data["n"]),
            tuple((str(m), str(p), str(f)) for m, p, f in data.get("m", [])),
        )


@dataclass
class FocusService:
    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    random_hex: Callable[[int], str] = field(default=secrets.token_hex)
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes)
    log: Callable[[str, str], None] = field(default=lambda level, message: None)

    # -- requests -----------------------------------------------------------------

    def header_names(self) -> tuple[str, ...]:
        return (self.settings.asserted_header,)

    def on_request(self, request: RequestView) -> Reply | Relay:
        """A request outside a dialog (or a CANCEL): what the focus does with it."""
        target = classify_target(request.ruri_user, self.settings.factory, self.settings.conference)
        if target.kind is TargetKind.OTHER:
            if self.settings.relay_other:
                return Relay(record_route=False)
            return Reply(404, "Not Found")
        method = request.method
        if method == "OPTIONS":
            return Reply(200, "OK")
        if method == "SUBSCRIBE":
            raise Forbidden("conference event package not offered for secure conferences yet")
        if method == "REFER":
            raise Forbidden("REFER to the focus is not supported yet")
        if method != "INVITE":
            return Reply(
                405, "Method Not Allowed", (("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),)
            )
        if target.kind is TargetKind.FACTORY:
            return self._create(request)
        if target.conference_id is None:
            raise MalformedMessage("conference id missing")
        return self._join(request, target.conference_id)

    def _offer(self, request: RequestView) -> tuple[SessionDescription, tuple[OfferedStream, ...]]:
        limit = self.settings.max_body
        if request.content_length > limit or len(request.body) > limit:
            raise MessageTooLarge(f"body over {limit} bytes")
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if not request.body:
            raise NotAcceptable(
                "INVITE without an SDP offer (no late offer in a secure conference)"
            )
        if content_type != "application/sdp":
            raise NotAcceptable("only application/sdp bodies are accepted")
        return check_offer(request.body, self.settings.suite)

    def _identity(self, request: RequestView) -> str:
        return authenticated_identity(
            request.source_ip,
            self.settings.trusted_sources,
            request.headers.get(self.settings.asserted_header),
        )

    def _create(self, request: RequestView) -> Reply | Relay:
        identity = self._identity(request)
        if self.settings.creators and identity not in self.settings.creators:
            raise Forbidden("not allowed to create a conference")
        description, streams = self._offer(request)
        ssrcs = offer_ssrcs(description)
        group_key = GroupKey.generate(1, self.settings.suite, self.random_bytes)
        for _attempt in range(3):
            conference_id = self.random_hex(8)
            leg = self._leg(conference_id, request.call_id)
            try:
                self.store.create(
                    conference_id,
                    creator=identity,
                    uri=self.settings.conference_uri(conference_id),
                    group_key=group_key,
                    call_id=request.call_id,
                    leg=leg,
                    allowed=sorted(self.settings.allowed),
                    ssrcs=ssrcs,
                )
            except ConferenceExists:
                continue
            except DialogExists:
                raise Retransmission("dialog already recorded") from None
            break
        else:
            raise SecconfError("could not mint a free conference id")
        self.log("info", f"secconf: conference {conference_id} created by {identity}")
        plan = self._edge_leg(request, conference_id, leg, description, streams, group_key)
        return self._relay(request, conference_id, leg, description, streams, plan, created=True)

    def _join(self, request: RequestView, conference_id: str) -> Reply | Relay:
        identity = self._identity(request)
        description, streams = self._offer(request)
        leg = self._leg(conference_id, request.call_id)
        try:
            self.store.join(
                conference_id,
                identity=identity,
                call_id=request.call_id,
                leg=leg,
                ssrcs=offer_ssrcs(description),
            )
        except DialogExists:
            raise Retransmission("dialog already recorded") from None
        self.log("info", f"secconf: {identity} joining conference {conference_id}")
        plan = self._edge_leg(request, conference_id, leg, description, streams, None)
        return self._relay(request, conference_id, leg, description, streams, plan, created=False)

    @staticmethod
    def _leg(conference_id: str, call_id: str) -> str:
        return f"{conference_id}-{dialog_id(call_id)[:16]}"

    def _edge_leg(
        self,
        request: RequestView,
        conference_id: str,
        leg: str,
        description: SessionDescription,
        streams: tuple[OfferedStream, ...],
        group_key: GroupKey | None,
    ) -> LegPlan | None:
        """Ask the edge for the leg; on failure undo the Redis record and refuse (503)."""
        try:
            plan = self.edge.create_leg(
                conference_id,
                leg,
                [description.media[s.index].media for s in streams],
                [str(offered_crypto(description, s)) for s in streams],
            )
            if group_key is not None:
                self.edge.put_epoch(conference_id, group_key)
        except SecconfError:
            self._release(request.call_id, leg)
            raise
        return plan

    def _relay(
        self,
        request: RequestView,
        conference_id: str,
        leg: str,
        description: SessionDescription,
        streams: tuple[OfferedStream, ...],
        plan: LegPlan | None,
        *,
        created: bool,
    ) -> Relay:
        upstream = offer_to_upstream(
            description,
            streams,
            address=None if plan is None else plan.internal.address,
            ports=None if plan is None else plan.internal.ports,
        )
        state = TransactionState(
            conference_id,
            leg,
            streams,
            None if plan is None else plan.external,
            self.settings.conference_uri(conference_id),
            created,
            offered_sections(description),
        )
        return Relay(
            uri=self.settings.upstream_uri(conference_id),
            body=bytes(upstream),
            state=state.to_json(),
            on_reply=ON_REPLY,
            on_failure=ON_FAILURE,
        )

    # -- replies ------------------------------------------------------------------

    def on_reply(
        self, reply: ReplyView, state_json: str | None
    ) -> tuple[bytes, tuple[tuple[str, str], ...]] | None:
        """A 2xx to a focus INVITE: the participant's answer (body, headers to add).

        ``None`` when the reply is not ours to change.  Raises when the answer
        cannot be keyed: the caller must then drop the reply (fail closed: the
        mixer's clear answer never reaches a participant).
        """
        if state_json is None or reply.method != "INVITE" or not 200 <= reply.status < 300:
            return None
        state = TransactionState.from_json(state_json)
        answered = self.store.answered(reply.call_id)
        external = state.external
        body = answer_to_participant(
            reply.body,
            state.streams,
            answered.group_key,
            address=None if external is None else external.address,
            ports=None if external is None else external.ports,
        )
        remote = _media_remote(reply.body, state.streams)
        if remote is not None:
            self.edge.set_internal_remote(state.leg, remote)
        self.edge.switch(state.leg, answered.group_key.epoch)
        headers = ((CONFERENCE_HEADER, f"<{state.conference_uri}>"),)
        return bytes(body), headers

    def unkeyed_answer(self, call_id: str, state_json: str | None) -> bytes:
        """The body replacing an answer that could not be keyed; the dialog is released."""
        self.on_failure(call_id, state_json)
        sections = () if state_json is None else TransactionState.from_json(state_json).sections
        return rejected_answer(sections)

    def on_failure(self, call_id: str, state_json: str | None) -> None:
        """The INVITE failed (or was cancelled): release the roster entry and the edge leg."""
        leg = None if state_json is None else TransactionState.from_json(state_json).leg
        self._release(call_id, leg)

    def on_bye(self, call_id: str) -> None:
        self._release(call_id, None)

    def _release(self, call_id: str, leg: str | None) -> None:
        released = None
        try:
            released = self.store.release(call_id)
        except SecconfError as exc:
            self.log("err", f"secconf: release of a dialog failed: {exc.message}")
        leg = leg or (released.dialog.leg if released is not None else None)
        if leg is not None:
            try:
                self.edge.delete_leg(leg)
            except SecconfError as exc:
                self.log("err", f"secconf: edge leg release failed: {exc.message}")
        if released is not None and released.conference_ended:
            self.log("info", f"secconf: conference {released.dialog.conference_id} ended")

    # -- refusals -----------------------------------------------------------------

    def refusal(self, error: SecconfError) -> Reply:
        """The SIP answer for *error*, with a Warning (RFC 3261 §20.43) naming the reason."""
        status = error.status_code if 300 <= error.status_code < 700 else 500
        headers: list[tuple[str, str]] = []
        if status != 500:
            headers.append(("Warning", warning_header(self.settings.server_name, error)))
        if status == 503:
            headers.append(("Retry-After", "1"))
        return Reply(status, error.reason, tuple(headers))


def _media_remote(body: bytes, streams: tuple[OfferedStream, ...]) -> LegAddresses | None:
    """Where the mixer's answer says its media is (for the edge's internal leg)."""
    try:
        answer = SessionDescription.parse(body)
    except SecconfError:
        return None
    address: str | None = None
    ports: list[int] = []
    for stream in streams:
        section = answer.media[stream.index]
        connection = section.connection or answer.session.connection
        if connection is None:
            return None
        address = address or connection.address
        ports.append(section.port)
    return None if address is None else LegAddresses(address, tuple(ports))
