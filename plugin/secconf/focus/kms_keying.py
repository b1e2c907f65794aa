"""KMS mode (MIKEY-TICKET, RFC 6043): how the focus keys a leg through the KMS.

The focus is the MIKEY Responder to a participant's TRANSFER_INIT (a join, a
REFER: :meth:`KmsKeying.transfer_resp` delivers the group key in its KEMAC) and
the Initiator of every INVITE it keys itself (a rekey re-INVITE, a dial-out:
:meth:`KmsKeying.group_transfer_init` carries the epoch's GTGK ticket, whose
TRANSFER_RESP :meth:`KmsKeying.verify_group_transfer_resp` checks).  A
conference with KMS-mode legs takes its epochs from the KMS
(:class:`~.epochs.GroupEpochs`: a GTGK ticket naming the current members).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from secconf.core import cms
from secconf.core.errors import (
    InsecureMedia,
    MikeyError,
    NotAcceptable,
    SecconfError,
    TicketRejected,
)
from secconf.core.focus import (
    ConferenceNotFound,
    OfferMode,
    answer_to_participant_kms,
    offer_ssrcs,
)
from secconf.core.keymgmt import mikey_message
from secconf.core.keys import GroupKey
from secconf.core.mikey import (
    GenericIdEntry,
    KeyData,
    KeyDataType,
    SpiValidity,
    SrtpSessionData,
)
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import CryptoSuite
from secconf.core.sdp import SessionDescription
from secconf.kms.client import TicketResolver
from secconf.media.control_client import EdgeControl, LegPlan
from secconf.store.conferences import ConferenceStore, DialogRecord
from secconf.store.errors import Conflict

from .epochs import leg_group_key
from .keying import KeyedAnswer, KeyedOffer, OfferTo
from .settings import KmsSettings, Settings
from .state import TransactionState

__all__ = ["GROUP_KEY_TYPE", "POLICY_NO", "KmsAuth", "KmsKeying", "SubscriptionGrant"]

#: The group key goes to KMS-mode participants as TEK+SALT, its SPI the epoch (4 bytes).
GROUP_KEY_TYPE = KeyDataType.TEK_SALT
#: Policy number of the conference's SRTP policy in our TRANSFER_RESP sessions.
POLICY_NO = 0


@dataclass(frozen=True, slots=True)
class KmsAuth:
    """A TRANSFER_INIT verified through the KMS: who sent it, and what to answer it with."""

    identity: str
    transfer: mikey_ticket.TransferInit = field(repr=False)
    resolved: mikey_ticket.ResolvedTicket = field(repr=False)


@dataclass(frozen=True, slots=True)
class SubscriptionGrant:
    """A KMS-mode SUBSCRIBE accepted by its TRANSFER_INIT: who, the 2xx's body, the key.

    *answer* is the TRANSFER_RESP (base64, ``application/mikey``) for the 2xx;
    *event_key* protects every NOTIFY of the subscription (CMS KEK, key id
    ``0x02 || CSB ID``; docs/event-protection.md) and is stored only wrapped;
    *replay_key* is the replay cache's key for the TRANSFER_INIT, to be set by the
    same script that records the subscription (a refused SUBSCRIBE remembers nothing).
    """

    identity: str
    answer: bytes
    event_key: cms.EventKey = field(repr=False)
    replay_key: str | None


@dataclass
class KmsKeying:
    """KMS mode: TRANSFER_RESPs, group TRANSFER_INITs, and the epochs' GTGK tickets.

    *mint* mints and publishes a conference's next epoch naming extra identities
    (:meth:`~.service.FocusService.rekey` with ``include``): a dial-out's target
    must be a recipient of its epoch's ticket.
    """

    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    kms: TicketResolver | None
    clock: Callable[[], float] = field(repr=False)
    random_bytes: Callable[[int], bytes] = field(repr=False)
    mint: Callable[[str, tuple[str, ...]], int] = field(repr=False)
    mode: OfferMode = OfferMode.KMS
    label: str = "KMS "

    def _kms_settings(self) -> KmsSettings:
        kms_settings = self.settings.kms
        if kms_settings is None:
            raise NotAcceptable("KMS mode is not configured on this focus")
        return kms_settings

    # -- the focus as the Responder (joins, REFERs) ----------------------------------

    def transfer_resp(self, auth: KmsAuth, key: GroupKey | None, edge_ssrc: int | None) -> bytes:
        """TRANSFER_RESP from the focus (RFC 6043 §4.2.2.3) delivering *key* in its KEMAC."""
        kms_settings = self._kms_settings()  # checked by the authentication already
        sessions = list(auth.transfer.sessions)
        responder_keys: list[KeyData] = []
        if key is not None:
            used = {entry.cs_id for entry in sessions}
            cs_id = next(n for n in range(1, 256) if n not in used)
            # RFC 6043 §6.1.1: every crypto session of a response names one policy.
            sessions.append(
                GenericIdEntry.for_srtp(cs_id, [POLICY_NO], SrtpSessionData(edge_ssrc or 0, 0, 0))
            )
            responder_keys.append(
                KeyData(
                    GROUP_KEY_TYPE, key.key, key.salt, SpiValidity(key.epoch.to_bytes(4, "big"))
                )
            )
        data, _ = mikey_ticket.build_transfer_resp(
            auth.transfer,
            auth.resolved,
            responder=kms_settings.focus_identity,
            sessions=sessions,
            now=self.clock(),
            random_bytes=self.random_bytes,
            responder_keys=responder_keys,
            # Without the Initiator's SP, the focus states the conference's suite itself
            # (the core's default would be AES_CM_128_HMAC_SHA1_80 whatever the suite).
            policies=[]
            if auth.transfer.security_policies or key is None
            else [policy_for_suite(POLICY_NO, key.suite)],
        )
        return data

    def subscription_grant(self, auth: KmsAuth, replay_key: str | None) -> SubscriptionGrant:
        """A SUBSCRIBE's TRANSFER_INIT (``Authenticator.mikey_request``) answered.

        The TRANSFER_RESP carries no key (RFC 6043 §4.2.2.3; the focus authenticates
        itself by its MAC); the event KEK is derived by both sides from the exchange's
        TGK (:func:`secconf.core.cms.event_key_of_transfer`), never sent.
        """
        answer = base64.b64encode(self.transfer_resp(auth, None, None))
        event_key = cms.event_key_of_transfer(auth.transfer, auth.resolved)
        return SubscriptionGrant(auth.identity, answer, event_key, replay_key)

    def join_transfer_resp(self, auth: KmsAuth, key: GroupKey, plan: LegPlan | None) -> str:
        """A join's TRANSFER_RESP (base64, for the transaction state) naming the edge's SSRC."""
        data = self.transfer_resp(auth, key, None if plan is None else plan.ssrc)
        return base64.b64encode(data).decode("ascii")

    def join_answer(
        self, body: bytes, state: TransactionState, group_key: GroupKey
    ) -> tuple[bytes, int]:
        """``a=key-mgmt:mikey`` with the TRANSFER_RESP made when the join was admitted."""
        if state.transfer_resp is None or state.epoch is None:
            raise NotAcceptable("KMS-mode dialog without its TRANSFER_RESP")
        external = state.external
        answer = answer_to_participant_kms(
            body,
            state.streams,
            base64.b64decode(state.transfer_resp),
            address=None if external is None else external.address,
            ports=None if external is None else external.ports,
        )
        # The epoch delivered in the TRANSFER_RESP.
        return bytes(answer), state.epoch

    def answered_epoch(self, state: TransactionState) -> int | None:
        return state.epoch

    # -- the focus as the Initiator (rekey re-INVITEs, dial-outs) ----------------------

    def rekey_epoch(self, record: DialogRecord, current: int) -> int | None:
        """The current epoch; refused (488) when the leg is on it already (nothing to carry)."""
        if record.epoch is not None and current <= record.epoch:
            raise NotAcceptable("the KMS-mode leg is already on the current key epoch")
        return current

    def offer(self, body: bytes, to: OfferTo) -> KeyedOffer:
        """RFC 4567 §3: the offerer carries the key management, a TRANSFER_INIT to *to*.

        Naming *to.ssrcs*; its identity not a recipient of the epoch's ticket:
        ``TicketRejected`` (403).
        """
        if not to.ssrcs:
            raise NotAcceptable("no SSRC to name in the focus's TRANSFER_INIT")
        epoch = self._epoch_number(to.conference_id) if to.epoch is None else to.epoch
        # The leg's suite (#30): the member derives the TEK from the GTGK at its lengths,
        # and the edge must hold the same key for the leg to switch to.
        suite = self.settings.suite
        if to.suite not in ("", suite.name):
            suite = leg_group_key(self.store, self.edge, to.conference_id, epoch, to.suite).suite
        pending = self.group_transfer_init(
            to.conference_id, to.identity, to.ssrcs, epoch=epoch, suite=suite
        )
        external = to.external
        offer = answer_to_participant_kms(
            body,
            to.streams,
            pending.data,
            address=None if external is None else external.address,
            ports=None if external is None else external.ports,
        )
        transfer_init = base64.b64encode(pending.data).decode("ascii")
        return KeyedOffer(bytes(offer), epoch, transfer_init, to.edge_ssrc)

    def accept(self, body: bytes, state: TransactionState, what: str) -> KeyedAnswer:
        """RFC 6043 §4.2.2.4: the answer's TRANSFER_RESP verifies, on SRTP.

        Its SSRCs are the answer's ``a=ssrc`` and the TRANSFER_RESP's map, minus the edge's.
        """
        epoch, transfer_init = state.epoch, state.transfer_init
        if epoch is None or transfer_init is None or not state.streams:
            raise NotAcceptable(f"KMS {what} state without its epoch")
        answer = SessionDescription.parse(body)
        index = state.streams[0].index
        section = answer.media[index] if index < len(answer.media) else None
        if section is None or section.port == 0:
            raise NotAcceptable("the participant rejected the stream")
        if not section.is_secure_rtp:
            raise InsecureMedia(f"the participant answered {section.proto}: SRTP only")
        try:
            transfer_resp = mikey_message(answer, section)
        except SecconfError:
            raise NotAcceptable("the participant's answer carries no TRANSFER_RESP") from None
        result = self.verify_group_transfer_resp(
            state.conference_id,
            epoch,
            state.identity,
            base64.b64decode(transfer_init),
            transfer_resp,
        )
        ssrcs = set(offer_ssrcs(answer))
        for entry in result.sessions:
            try:
                session = entry.srtp_session()
            except MikeyError:
                continue
            if session is not None:
                ssrcs.add(session.ssrc)
        if state.edge_ssrc is not None:
            ssrcs.discard(state.edge_ssrc)
        return KeyedAnswer(answer, epoch, None, tuple(sorted(ssrcs)))

    def dialout_leg(self, conference_id: str, leg: str, media: str, epoch: int) -> LegPlan | None:
        """A ``kms`` leg on *epoch* (it receives and sends under the group key)."""
        return self.edge.create_leg(conference_id, leg, [media], [], mode="kms", epoch=epoch)

    def require_transport(self, secure: bool, what: str) -> None:
        """MIKEY carries no key in the clear: any transport."""

    def answer_transport(self, secure: bool) -> None:
        """A TRANSFER_RESP carries no key in the clear: any transport."""

    def epoch_note(self, epoch: int) -> str:
        return f" on epoch {epoch}"

    def group_transfer_init(
        self,
        conference_id: str,
        identity: str,
        ssrcs: Sequence[int],
        *,
        epoch: int | None = None,
        suite: CryptoSuite | None = None,
    ) -> mikey_ticket.PendingTransfer:
        """A TRANSFER_INIT from the focus to *identity* carrying the conference's current epoch.

        The builder for every INVITE the focus keys in KMS mode (rekey
        re-INVITEs; dial-out, RFC 6043 §4.2.2.1 with the focus as Initiator):
        the epoch's GTGK ticket (stored wrapped under the KEK by the rekey), its
        fixed CSB ID and RANDRi, IDRi = ``kms.focus_identity``, IDRr =
        *identity*, one GENERIC-ID entry per SSRC in *ssrcs* (the participant's
        and the edge's; SPI = the epoch number) and the conference's SRTP
        policy (*suite*: the leg's, default the focus's).  Keep the returned
        ``PendingTransfer`` (or its ``data``:
        :meth:`verify_group_transfer_resp` rebuilds it) to verify the
        TRANSFER_RESP.  *epoch* defaults to the current one.

        Raises ``NotAcceptable`` (488) when KMS mode is off or the epoch was not
        minted by the KMS (epoch 1, or an SDES-only conference: rekey first,
        e.g. ``rekey(conference_id, include=(identity,))`` for a dial-out target),
        ``TicketRejected`` (403) when *identity* is not a recipient of the
        epoch's ticket, ``ConferenceNotFound`` (404).
        """
        kms_settings = self._kms_settings()
        if epoch is None:
            epoch = self._epoch_number(conference_id)
        group_epoch = self._group_epoch(conference_id, epoch)
        return mikey_group.build_group_transfer_init(
            group_epoch,
            initiator=kms_settings.focus_identity,
            responder=identity,
            ssrcs=ssrcs,
            policies=[policy_for_suite(POLICY_NO, suite or self.settings.suite)],
            now=self.clock(),
            random_bytes=self.random_bytes,
        )

    def _epoch_number(self, conference_id: str) -> int:
        info = self.store.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        return info.epoch

    def _group_epoch(self, conference_id: str, epoch: int) -> mikey_group.GroupEpochTicket:
        stored = self.store.epoch_ticket(conference_id, epoch)
        if stored is None:
            raise NotAcceptable(f"key epoch {epoch} was not minted by the KMS")
        return mikey_group.GroupEpochTicket.from_bytes(stored)

    def verify_group_transfer_resp(
        self,
        conference_id: str,
        epoch: int,
        identity: str,
        transfer_init: bytes,
        transfer_resp: bytes,
    ) -> mikey_ticket.TransferResult:
        """Verify *identity*'s TRANSFER_RESP to the focus's *transfer_init* of *epoch*.

        RFC 6043 §4.2.2.4: the MAC under the responder's forked MPKr', the
        timestamp, the responder among the ticket's recipients; it must also be
        the identity the TRANSFER_INIT was addressed to.  Raises a
        ``MikeyError`` (403/400) when it does not verify.
        """
        kms_settings = self._kms_settings()
        group_epoch = self._group_epoch(conference_id, epoch)
        pending = mikey_ticket.PendingTransfer(
            transfer_init,
            group_epoch.csb_id,
            group_epoch.randri,
            kms_settings.focus_identity,
            identity,
            group_epoch.issued(),
        )
        result = mikey_ticket.process_transfer_resp(
            pending, transfer_resp, now=self.clock(), skew=kms_settings.skew
        )
        if result.responder != identity:
            raise TicketRejected("the TRANSFER_RESP is from another identity than the dialog's")
        return result

    # -- epochs from the KMS -----------------------------------------------------------

    def dialout_epoch(self, conference_id: str, target: str, recorded: int) -> int:
        """The epoch a KMS-mode dial-out to *target* is keyed with (minted if need be).

        RFC 6043 §4.2.2.1: the focus's TRANSFER_INIT carries the epoch's GTGK
        ticket, so *target* must be one of its recipients.  The current epoch
        is used when it came from the KMS, its ticket names *target* (a
        replacement call of a member, or someone named when it was minted) and
        stays valid for at least ``2 * kms.skew`` more seconds; otherwise a new
        epoch is minted from the KMS naming the current members and *target*
        (*mint*: Redis and the edge).  The other members stay on their epoch
        until their next re-INVITE (the edge keys each leg under its own
        epoch).  A concurrent rekey that took the epoch number first (409) is
        retried once on top of it.  KMS down or refusing: 503, nothing written.
        """
        try:
            return self._dialout_epoch(conference_id, target)
        except Conflict:  # a rekey took the next number meanwhile: once more, on top of it
            return self._dialout_epoch(conference_id, target)

    def _dialout_epoch(self, conference_id: str, identity: str) -> int:
        kms_settings = self._kms_settings()
        epoch = self._epoch_number(conference_id)
        stored = self.store.epoch_ticket(conference_id, epoch)
        if stored is not None:
            current = mikey_group.GroupEpochTicket.from_bytes(stored)
            until = current.valid_until
            fresh = until is None or until > self.clock() + 2 * kms_settings.skew
            if identity in current.recipients and fresh:
                return epoch
        return self.mint(conference_id, (identity,))
