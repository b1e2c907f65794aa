"""The in-dialog gate of the focus (docs/security.md, "In-dialog requests").

Default deny: a request with a To tag passes only if our Record-Route names its
conference with a valid MAC (checked before any Redis read), its dialog is recorded and
answered, and its sender is the recorded peer of one side.  The decisions without I/O are
:mod:`secconf.core.gate`'s; this class adds the store reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secconf.core.errors import CallDoesNotExist, Forbidden, NotAcceptable
from secconf.core.gate import (
    DialogPeers,
    Direction,
    body_allowed,
    in_dialog_direction,
    in_dialog_method_allowed,
    route_mac_ok,
)
from secconf.store.conferences import ConferenceStore, DialogRecord

from .messages import RequestView
from .releases import Releases

__all__ = ["Admitted", "InDialogGate"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A re-INVITE or REFER through the gate: its dialog, the dialog's peers, who sent it."""

    record: DialogRecord
    peers: DialogPeers
    direction: Direction


@dataclass
class InDialogGate:
    """Who may send what in a conference dialog, and where it goes (``FocusService.gate``)."""

    store: ConferenceStore
    releases: Releases
    route_key: bytes = field(repr=False)  # the Record-Route MAC (service.route_secret)

    def routed(
        self, conference_id: str | None, mac: str | None, call_id: str, tags: tuple[str, str | None]
    ) -> str:
        """Our Route's conference, its MAC checked (403 before any Redis read)."""
        if conference_id is None:
            raise Forbidden("not a conference dialog of this focus")
        if not route_mac_ok(self.route_key, conference_id, call_id, tags, mac):
            raise Forbidden("Record-Route not issued by this focus for this dialog")
        return conference_id

    def pass_in_dialog(
        self, conference_id: str, call_id: str, fingerprint: str, method: str
    ) -> tuple[str, str]:
        """ACK, BYE, INFO, UPDATE, OPTIONS from a recorded peer: the other side's hop.

        One script: the sender's *fingerprint* (flow and tags) must be one side's (403), the
        dialog answered (481); a BYE's release is in the same script. A refused call
        (``closing``) passes only its ACK and BYE. Returns the Request-URI and destination.
        """
        if method == "BYE":
            _, hop, released = self.store.dialogs.release_from(conference_id, call_id, fingerprint)
            self.releases.finish_release(call_id, released)
            return hop
        _, hop, state = self.store.dialogs.sender(conference_id, call_id, fingerprint)
        if state == "closing" and method != "ACK":
            raise CallDoesNotExist("the conference call was refused: only its ACK and BYE pass")
        return hop

    def admit(self, conference_id: str, request: RequestView, method: str) -> Admitted:
        """The gate for a re-INVITE or REFER: the whole record and who sent it, or refused."""
        record = self.store.dialog(conference_id, request.call_id)
        if record is None or record.state != "up" or not record.peers:
            raise CallDoesNotExist("no such conference dialog")
        peers = DialogPeers.from_json(record.peers)
        direction = in_dialog_direction(peers, request.flow, request.from_tag, request.to_tag)
        if not in_dialog_method_allowed(direction, method):
            raise Forbidden(f"{method} is not sent by this side of a conference dialog")
        if not body_allowed(method, request.content_type, len(request.body)):
            raise NotAcceptable(f"an SDP body in {method}: media changes go by re-INVITE only")
        return Admitted(record, peers, direction)
