"""Re-INVITEs in a conference dialog: the rekey trigger from the mixer, hold from a participant.

From the mixer (DESIGN.md §2) the offer goes to the participant keyed by the
leg's :class:`~.keying.Keying` with the conference's **current** epoch (a newer
one than the leg's makes it a rekey); from an SDES participant (hold, a new
sending key) its offer is checked like a join's and goes to the mixer clear.
The edge switches the leg at the 2xx (:meth:`ReInvites.answered`).  A
re-INVITE carrying a newer epoch that fails leaves the leg on its old one and is
reported on ``P:conf:{<id>}:rekey-failed`` (:meth:`ReInvites.report_failure`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from secconf.core.errors import (
    NotAcceptable,
    SecconfError,
    TicketRejected,
)
from secconf.core.focus import (
    ConferenceNotFound,
    OfferMode,
    check_offer,
    offered_crypto,
    offered_sections,
)
from secconf.core.sdp import SessionDescription
from secconf.media.control_client import EdgeControl, LegAddresses, switch_at_answer
from secconf.store.conferences import ConferenceStore, DialogRecord

from .epochs import leg_group_key
from .keying import Keying, OfferTo, clear_to_mixer, keyed_to_participant
from .messages import Relay, ReplyView, RequestView, require_offer
from .settings import Settings
from .state import (
    ON_FAILURE,
    ON_REPLY,
    TransactionState,
    dialog_edge_ssrc,
    dialog_suite,
    media_remote,
    parse_dialog_media,
)

__all__ = ["ReInvites"]


@dataclass
class ReInvites:
    """The re-INVITE flow of the focus, written once for both modes."""

    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    keying: Callable[[str], Keying] = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)
    clock: Callable[[], float] = field(repr=False)

    def offer(self, request: RequestView, record: DialogRecord, *, from_participant: bool) -> Relay:
        """A re-INVITE in a conference dialog: its offer rewritten, never relayed clear.

        The leg's mode is the dialog record's.  A KMS-mode participant's own
        re-INVITE is refused (488).  Nothing is written here.
        """
        if record.state != "up" or not record.media:
            raise NotAcceptable("re-INVITE before the dialog was answered")
        info = self.store.get(record.conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        leg_mode = record.mode or info.mode
        if leg_mode == OfferMode.KMS.value and from_participant:
            raise NotAcceptable("a participant's re-INVITE in a KMS-mode dialog is not supported")
        require_offer(request, self.settings.max_body, "re-INVITE")
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if content_type != "application/sdp":
            raise NotAcceptable("only application/sdp bodies are accepted")
        streams, external, internal = parse_dialog_media(record.media)
        base = TransactionState(
            record.conference_id,
            record.leg,
            streams,
            external,
            self.settings.conference_uri(record.conference_id),
            False,
            mode=leg_mode,
            internal=internal,
            kind="reinvite",
            previous=record.epoch,
            identity=record.identity,
            suite=dialog_suite(record.media),
        )
        if from_participant:
            state, body = self._from_participant(request, base)
        else:
            state, body = self._from_mixer(request, record, base, info.epoch)
        if state.epoch != record.epoch:
            self.log(
                "info",
                f"secconf: {self.keying(leg_mode).label}rekey re-INVITE for {record.identity} "
                f"in {record.conference_id}: epoch {record.epoch} -> {state.epoch}",
            )
        return Relay(
            body=body,
            state=state.to_json(),
            record_route=False,
            on_reply=ON_REPLY,
            on_failure=ON_FAILURE,
        )

    def _from_mixer(
        self, request: RequestView, record: DialogRecord, base: TransactionState, current: int
    ) -> tuple[TransactionState, bytes]:
        """The offer to the participant, keyed by its leg's mode with the current epoch.

        KMS: the focus is the MIKEY initiator (RFC 4567 §3, RFC 6043 §4.2.2.1);
        the participant's identity not a recipient of the epoch's ticket (it
        joined after the ticket was issued): 403, reported.
        """
        keying = self.keying(base.mode)
        epoch = keying.rekey_epoch(record, current)
        edge_ssrc = dialog_edge_ssrc(record.media)
        state = replace(
            base,
            sections=offered_sections(SessionDescription.parse(request.body)),
            epoch=epoch,
            remote=media_remote(request.body, base.streams),
        )
        try:
            keyed = keying.offer(
                request.body,
                OfferTo(
                    record.conference_id,
                    record.identity,
                    base.streams,
                    base.external,
                    epoch,
                    [*record.ssrcs, *(() if edge_ssrc is None else (edge_ssrc,))],
                    edge_ssrc,
                    base.suite,
                ),
            )
        except TicketRejected as exc:
            self.report_failure(request.call_id, state, 403, exc.message)
            raise
        state = replace(
            state, epoch=keyed.epoch, edge_ssrc=keyed.edge_ssrc, transfer_init=keyed.transfer_init
        )
        return state, keyed.body

    def _from_participant(
        self, request: RequestView, base: TransactionState
    ) -> tuple[TransactionState, bytes]:
        """An SDES participant's offer, checked like a join's, to the mixer clear."""
        key = leg_group_key(self.store, self.edge, base.conference_id, None, base.suite)
        # The leg keeps its suite: its edge leg runs it (#30).
        description, offered = check_offer(request.body, key.suite)
        if [s.index for s in offered] != [s.index for s in base.streams]:
            raise NotAcceptable("a re-INVITE keeps the conference's streams")
        body = clear_to_mixer(description, offered, base.internal)
        state = replace(
            base,
            streams=offered,
            sections=offered_sections(description),
            epoch=key.epoch,
            downstream=True,
        )
        return state, body

    def answered(
        self, reply: ReplyView, state: TransactionState, request_body: Callable[[], bytes]
    ) -> bytes:
        """The 2xx of a re-INVITE: the answer rewritten, the edge leg switched to its epoch.

        The edge switches the leg's outbound key exactly now (linphone switches
        its receive key when it sends this 200 OK); a participant's sending key
        from its answer (or its offer: *request_body* reads the transaction's
        request, ``$T_req($rb)``) goes to the edge, which keeps trying the old
        one for its grace window; the old epoch stays acceptable inbound for
        the edge's grace window.  Raises when the answer cannot be used (the
        caller then sends a body rejecting every stream and reports it; the leg
        stays on its old epoch).
        """
        if state.downstream:
            return self._participant_answered(reply, state, request_body)
        accepted = self.keying(state.mode).accept(reply.body, state, "re-INVITE")
        body = clear_to_mixer(accepted.answer, state.streams, state.internal)
        if accepted.participant_key is not None:
            self.edge.set_participant_key(state.leg, accepted.participant_key)
        self._switch(reply, state, state.remote, accepted.epoch)
        return body

    def _participant_answered(
        self, reply: ReplyView, state: TransactionState, request_body: Callable[[], bytes]
    ) -> bytes:
        """The mixer's answer to an SDES participant's re-INVITE, keyed with the group key."""
        if state.epoch is None:
            raise NotAcceptable("re-INVITE state without its epoch")
        offered_body = request_body()
        offer = SessionDescription.parse(offered_body) if offered_body else None
        key = leg_group_key(self.store, self.edge, state.conference_id, state.epoch, state.suite)
        body = keyed_to_participant(reply.body, state.streams, key, state.external)
        crypto = [str(offered_crypto(offer, s)) for s in state.streams] if offer is not None else []
        if crypto:
            self.edge.set_participant_key(state.leg, crypto[0])
        self._switch(reply, state, media_remote(reply.body, state.streams), state.epoch)
        return body

    def _switch(
        self, reply: ReplyView, state: TransactionState, remote: LegAddresses | None, epoch: int
    ) -> None:
        switch_at_answer(self.edge, state.leg, remote, epoch)
        self.store.dialogs.switched(state.conference_id, reply.call_id, epoch)

    def report_failure(self, call_id: str, state: TransactionState, status: int, what: str) -> None:
        """A re-INVITE carrying a newer epoch failed: the leg keeps its old one; tell the watcher."""
        if state.epoch is None or state.previous is None or state.epoch <= state.previous:
            return
        self.log(
            "warn",
            f"secconf: rekey of {state.identity} in {state.conference_id} to epoch "
            f"{state.epoch} failed ({status} {what}); the leg stays on epoch {state.previous}",
        )
        try:
            self.store.rekey_failed(
                state.conference_id,
                (
                    ("leg", state.leg),
                    ("identity", state.identity),
                    ("call_id", call_id[:256]),
                    ("status", str(status)),
                    ("reason", what),
                    ("epoch", str(state.epoch)),
                    ("leg_epoch", str(state.previous)),
                    ("direction", "participant" if state.downstream else "mixer"),
                    ("time", repr(float(self.clock()))),
                ),
            )
        except SecconfError as exc:
            self.log("err", f"secconf: could not report a failed rekey: {exc.message}")
