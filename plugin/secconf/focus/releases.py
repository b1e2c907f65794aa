"""A dialog leaves its conference: BYE, a failed or cancelled INVITE, or an unkeyable answer.

Whatever the cause, the store releases the record (roster, SSRCs, the conference's end
with its last dialog), then the creator's count, the edge leg and, with the conference,
the edge's conference state go.  The edge and the count are undone on a best-effort
basis: a failure there is logged, the release stands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.confinfo import DisconnectionMethod
from secconf.core.errors import SecconfError
from secconf.media.control_client import EdgeControl
from secconf.store.conferences import ConferenceStore, Released

from .reinvite import ReInvites
from .state import TransactionState

__all__ = ["Releases"]


@dataclass
class Releases:
    """Releases dialogs and what they hold at the edge (``FocusService.releases``)."""

    store: ConferenceStore
    edge: EdgeControl
    reinvites: ReInvites
    log: Callable[[str, str], None] = field(repr=False)

    def on_failure(self, call_id: str, state_json: str | None, status: int = 0) -> None:
        """The INVITE failed (or was cancelled): release the roster entry and the edge leg.

        A failed re-INVITE releases nothing: the leg stays on its epoch, and a
        refused rekey is reported on ``P:conf:{<id>}:rekey-failed``.
        """
        state = None if state_json is None else TransactionState.from_json(state_json)
        if state is not None and state.kind == "reinvite":
            self.reinvites.report_failure(call_id, state, status, "re-INVITE refused")
            return
        if state is None:
            self.log("err", "secconf: failed INVITE without its transaction state: not released")
            return
        self.release(state.conference_id, call_id, state.leg)

    def release(
        self,
        conference_id: str,
        call_id: str,
        leg: str | None,
        method: DisconnectionMethod = DisconnectionMethod.FAILED,
    ) -> None:
        """Release the dialog; its departure says *method* (RFC 4575 §5.7.6).

        A relayed INVITE that failed or was cancelled, or an answer the focus could not
        key: ``failed``.  A BYE's release, ``departed`` (the member's) or ``booted`` (the
        mixer's), is the store's ``release_from``; a request refused after its record was
        written is :meth:`withdraw`.
        """
        self._release(conference_id, call_id, leg, method)

    def withdraw(self, conference_id: str, call_id: str, leg: str | None) -> None:
        """Undo the dialog a refused request recorded: no departure (it never left the focus)."""
        self._release(conference_id, call_id, leg, None)

    def _release(
        self,
        conference_id: str,
        call_id: str,
        leg: str | None,
        method: DisconnectionMethod | None,
    ) -> None:
        released = None
        try:
            released = self.store.dialogs.release(conference_id, call_id, method)
        except SecconfError as exc:
            self.log("err", f"secconf: release of a dialog failed: {exc.message}")
        self.finish_release(call_id, released, leg)

    def finish_release(
        self, call_id: str, released: Released | None, leg: str | None = None
    ) -> None:
        """After the store released a dialog: the creator's count, the edge leg, the end."""
        if released is not None and released.dialog.identity and released.dialog.creator:
            try:
                self.store.identity_dialogs.drop(released.dialog.identity, "factory", call_id)
            except SecconfError as exc:
                self.log("err", f"secconf: dialog count not released: {exc.message}")
        leg = leg or (released.dialog.leg if released is not None else None)
        if leg is not None:
            try:
                self.edge.delete_leg(leg)
            except SecconfError as exc:
                self.log("err", f"secconf: edge leg release failed: {exc.message}")
        if released is not None and released.conference_ended:
            self.log("info", f"secconf: conference {released.dialog.conference_id} ended")
            self.forget_conference(released.dialog.conference_id)

    def forget_conference(self, conference_id: str) -> None:
        """The conference's state at the edge goes (its last leg went, or it never started)."""
        try:
            self.edge.delete_conference(conference_id)
        except SecconfError as exc:
            self.log("err", f"secconf: edge conference release failed: {exc.message}")
