"""A 2xx to a focus INVITE: the answer keyed for its participant, or every stream refused.

One entry for the three kinds of transaction (the transaction state's ``kind``): a join
or create (here), a re-INVITE (:class:`~.reinvite.ReInvites`) and a dial-out
(:func:`~.dialout.dialout_answered`).  Fail closed: an answer that cannot be keyed is
replaced by one rejecting every stream (:meth:`Answers.unkeyed_answer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.errors import NotAcceptable, SecconfError
from secconf.core.focus import rejected_answer
from secconf.core.gate import DialogPeers, Peer
from secconf.media.control_client import EdgeControl, switch_at_answer
from secconf.store.conferences import ConferenceStore

from .keying import Keying
from .messages import ReplyView
from .peer_cache import PeerCache
from .reinvite import ReInvites
from .releases import Releases
from .state import CONFERENCE_HEADER, TransactionState, dialog_media, media_remote
from .timing import PhaseTimer

__all__ = ["Answers"]

#: A keyed answer: its body and the headers to add.
Answer = tuple[bytes, tuple[tuple[str, str], ...]]


@dataclass
class Answers:
    """The answers to the focus's INVITEs (``FocusService.answers``)."""

    store: ConferenceStore
    edge: EdgeControl
    keying: Callable[[str], Keying] = field(repr=False)
    reinvites: ReInvites = field(repr=False)
    releases: Releases = field(repr=False)
    #: the phone's 2xx to a dial-out (dialout.dialout_answered, bound to the focus)
    dialout_answered: Callable[[ReplyView, TransactionState], bytes] = field(repr=False)
    peer_cache: PeerCache = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)
    timer: PhaseTimer | None = None

    def on_reply(
        self,
        reply: ReplyView,
        state_json: str | None,
        request_body: Callable[[], bytes] = lambda: b"",
    ) -> Answer | None:
        """A 2xx to a focus INVITE: the participant's answer (body, headers to add).

        ``None`` when the reply is not ours to change.  Raises when the answer
        cannot be keyed: the caller must then drop the reply (fail closed: the
        mixer's clear answer never reaches a participant).
        """
        if self.timer is None:
            return self._on_reply(reply, state_json, request_body)
        with self.timer.phase("reply"):
            result = self._on_reply(reply, state_json, request_body)
        if result is not None:
            self.timer.invite_done()
        return result

    def _on_reply(
        self,
        reply: ReplyView,
        state_json: str | None,
        request_body: Callable[[], bytes],
    ) -> Answer | None:
        if state_json is None or reply.method != "INVITE" or not 200 <= reply.status < 300:
            return None
        state = TransactionState.from_json(state_json)
        if state.kind == "reinvite":
            return self.reinvites.answered(reply, state, request_body), ()
        if state.kind == "dialout":
            return self.dialout_answered(reply, state), ()
        if state.peer is None or reply.flow is None or not reply.to_tag:
            raise NotAcceptable("a 2xx without the dialog's peers: not recorded, not keyed")
        peers = DialogPeers(
            participant=state.peer, mixer=Peer(reply.to_tag, reply.flow, reply.contact)
        )
        keying = self.keying(state.mode)
        answered = self.store.dialogs.answered(
            state.conference_id,
            reply.call_id,
            media=dialog_media(
                state.streams, state.external, state.internal, state.edge_ssrc, state.suite
            ),
            epoch=keying.answered_epoch(state),
            peers=peers,
        )
        self.peer_cache.remember(reply.call_id, peers)
        body, epoch = keying.join_answer(reply.body, state, answered.group_key)
        switch_at_answer(self.edge, state.leg, media_remote(reply.body, state.streams), epoch)
        headers = ((CONFERENCE_HEADER, f"<{state.conference_uri}>"),)
        return body, headers

    def unkeyed_answer(
        self, call_id: str, state_json: str | None, reply: ReplyView | None = None
    ) -> bytes:
        """The body replacing an answer that could not be keyed.

        An initial INVITE's dialog is released (roster, SSRCs, edge leg), and only its peers
        are kept (:meth:`~secconf.store.conference_dialogs.ConferenceDialogs.closing`) so that
        the ACK and BYE of the stream-less call still pass between its two sides; a
        re-INVITE's dialog is kept (its leg stays on the epoch it had) and the failure is
        reported.
        """
        state = None if state_json is None else TransactionState.from_json(state_json)
        if state is not None and state.kind == "reinvite":
            self.reinvites.report_failure(call_id, state, 200, "answer could not be keyed")
        else:
            self.releases.on_failure(call_id, state_json)
            if state is not None and reply is not None:
                self._keep_closing(call_id, state, reply)
        return rejected_answer(() if state is None else state.sections)

    def _keep_closing(self, call_id: str, state: TransactionState, reply: ReplyView) -> None:
        if state.peer is None or reply.flow is None or not reply.to_tag:
            return
        answerer = Peer(reply.to_tag, reply.flow, reply.contact)
        if state.kind == "dialout":
            peers = DialogPeers(participant=answerer, mixer=state.peer)
        else:
            peers = DialogPeers(participant=state.peer, mixer=answerer)
        try:
            self.store.dialogs.closing(state.conference_id, call_id, peers)
            self.peer_cache.remember(call_id, peers)
        except SecconfError as exc:
            self.log("err", f"secconf: closing dialog not recorded: {exc.message}")
