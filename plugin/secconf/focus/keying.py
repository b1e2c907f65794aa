"""How a leg is keyed, behind one interface: SDES (``a=crypto``) or KMS (MIKEY-TICKET).

Each flow of the focus that keys a leg — the answer to a join, the mixer's re-INVITE
towards a participant and its 2xx, a dial-out and its 2xx — is written once
(:mod:`.service`, :mod:`.dialout`) and asks the leg's :class:`Keying` for the steps
that depend on its mode (the dialog record's, the transaction's or the offer's
``mode``, see :func:`secconf.focus.service.FocusService.keying`):

* :class:`SdesKeying` — the conference's group key from the store goes to the
  participant in ``a=crypto`` (:func:`~secconf.core.focus.answer_to_participant`); the
  participant's own key comes back in its ``a=crypto`` answer and goes to the edge.
* :class:`~.kms_keying.KmsKeying` — the focus is the MIKEY Initiator towards the
  participant (a group TRANSFER_INIT carrying the epoch's GTGK ticket, RFC 6043
  §4.2.2.1), or the Responder to a join's TRANSFER_INIT (the TRANSFER_RESP made when
  the join was admitted); the participant's TRANSFER_RESP must verify at its 2xx.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from secconf.core.errors import NotAcceptable
from secconf.core.focus import (
    OfferedStream,
    OfferMode,
    answer_to_participant,
    answered_crypto,
    offer_ssrcs,
    offer_to_upstream,
)
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES, CryptoAttribute, KeyParam
from secconf.core.sdp import SessionDescription
from secconf.media.control_client import EdgeControl, LegAddresses, LegPlan
from secconf.store.conferences import ConferenceStore, DialogRecord

from .epochs import leg_group_key
from .settings import Settings
from .state import TransactionState

__all__ = [
    "OFFER_TAG",
    "KeyedAnswer",
    "KeyedOffer",
    "Keying",
    "OfferTo",
    "SdesKeying",
    "clear_to_mixer",
    "keyed_to_participant",
]

#: The crypto tag of the focus's own SDES offer (a dial-out's).
OFFER_TAG = 1


def clear_to_mixer(
    description: SessionDescription,
    streams: Sequence[OfferedStream],
    internal: LegAddresses | None,
) -> bytes:
    """An SDP body as the mixer gets it: clear RTP, no keys, at the edge's *internal* side."""
    return bytes(
        offer_to_upstream(
            description,
            streams,
            address=None if internal is None else internal.address,
            ports=None if internal is None else internal.ports,
        )
    )


def keyed_to_participant(
    body: bytes, streams: Sequence[OfferedStream], key: GroupKey, external: LegAddresses | None
) -> bytes:
    """The mixer's SDP body as an SDES participant gets it: *key* in ``a=crypto``, via the edge."""
    return bytes(
        answer_to_participant(
            body,
            streams,
            key,
            address=None if external is None else external.address,
            ports=None if external is None else external.ports,
        )
    )


@dataclass(frozen=True, slots=True)
class KeyedOffer:
    """An offer to a participant keyed for *epoch* (no key in the clear but in ``a=crypto``)."""

    body: bytes = field(repr=False)
    epoch: int
    transfer_init: str | None = None  # KMS: the focus's base64 TRANSFER_INIT, checked at the 2xx
    edge_ssrc: int | None = None  # KMS: the edge's SSRC the TRANSFER_INIT names


@dataclass(frozen=True, slots=True)
class KeyedAnswer:
    """A participant's answer to a keyed offer, accepted: what the edge and Redis learn."""

    answer: SessionDescription = field(repr=False)
    epoch: int
    participant_key: str | None  # SDES: the participant's sending ``a=crypto`` for the edge
    ssrcs: tuple[int, ...]  # the participant's SSRCs (a=ssrc, and a TRANSFER_RESP's map)


@dataclass(frozen=True, slots=True)
class OfferTo:
    """Where a keyed offer goes: a leg of *conference_id*, admitted as *identity*.

    *external*: the edge's participant-facing side the offer points at; *epoch*:
    the epoch to carry (``None``: the current one); *ssrcs*: what the epoch's key
    will protect in this call (the edge's, the participant's when known), and
    *edge_ssrc* the edge's own.
    """

    conference_id: str
    identity: str
    streams: tuple[OfferedStream, ...]
    external: LegAddresses | None
    epoch: int | None
    ssrcs: Sequence[int] = ()
    edge_ssrc: int | None = None
    suite: str = ""  # the leg's SRTP suite ("": the conference's), #30


class Keying(Protocol):
    """The mode-dependent steps of the focus's flows for one kind of leg."""

    #: the leg's mode, as the dialog record and the transaction state write it
    mode: OfferMode
    #: before a flow's name in the log ("" or "KMS ")
    label: str

    def join_answer(
        self, body: bytes, state: TransactionState, group_key: GroupKey
    ) -> tuple[bytes, int]:
        """The mixer's answer to a join as the participant gets it, and the leg's epoch."""
        ...

    def answered_epoch(self, state: TransactionState) -> int | None:
        """The epoch a join's 2xx records for the leg (``None``: the conference's current)."""
        ...

    def rekey_epoch(self, record: DialogRecord, current: int) -> int | None:
        """The epoch a re-INVITE from the mixer carries to *record*'s leg (``None``: current)."""
        ...

    def offer(self, body: bytes, to: OfferTo) -> KeyedOffer:
        """The mixer's clear offer keyed for *to*'s participant, pointed at the edge."""
        ...

    def accept(self, body: bytes, state: TransactionState, what: str) -> KeyedAnswer:
        """The participant's answer to :meth:`offer`, checked; raises when it cannot be used."""
        ...

    def dialout_epoch(self, conference_id: str, target: str, recorded: int) -> int:
        """The epoch a dial-out to *target* is keyed with (*recorded*: the current one)."""
        ...

    def dialout_leg(self, conference_id: str, leg: str, media: str, epoch: int) -> LegPlan | None:
        """The edge leg of a dial-out (before the phone's answer)."""
        ...

    def require_transport(self, secure: bool, what: str) -> None:
        """Raises (488) when *what* is not over a transport its keys may cross."""
        ...

    def answer_transport(self, secure: bool) -> None:
        """Raises when an answer arrived over a transport its keys must not cross."""
        ...

    def epoch_note(self, epoch: int) -> str:
        """What a log line about an answered dial-out says about its epoch."""
        ...


@dataclass
class SdesKeying:
    """SDES mode (RFC 4568): the group key in the focus's ``a=crypto``, the leg's key in the answer.

    The keys travel in the SDP, so only over TLS (``[lab] sdes_over_udp`` aside).
    """

    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    random_bytes: Callable[[int], bytes] = field(repr=False)
    phase: Callable[[str], AbstractContextManager[None]] = field(repr=False)
    mode: OfferMode = OfferMode.SDES
    label: str = ""

    def join_answer(
        self, body: bytes, state: TransactionState, group_key: GroupKey
    ) -> tuple[bytes, int]:
        if state.suite and state.suite != group_key.suite.name:
            group_key = leg_group_key(
                self.store, self.edge, state.conference_id, group_key.epoch, state.suite
            )
        with self.phase("rewrite"):
            answer = keyed_to_participant(body, state.streams, group_key, state.external)
        return answer, group_key.epoch

    def answered_epoch(self, state: TransactionState) -> int | None:
        return None

    def rekey_epoch(self, record: DialogRecord, current: int) -> int | None:
        return None  # the current one, read with its key

    def offer(self, body: bytes, to: OfferTo) -> KeyedOffer:
        """``a=crypto`` under each stream's tag carrying the group key of *to*'s epoch."""
        key = leg_group_key(self.store, self.edge, to.conference_id, to.epoch, to.suite)
        return KeyedOffer(keyed_to_participant(body, to.streams, key, to.external), key.epoch)

    def accept(self, body: bytes, state: TransactionState, what: str) -> KeyedAnswer:
        """Exactly one usable ``a=crypto`` per stream in the suite (RFC 4568 §7.1.3)."""
        if state.epoch is None:
            raise NotAcceptable(f"{what} state without its epoch")
        answer = SessionDescription.parse(body)
        suite = SUITES.get(state.suite, self.settings.suite)
        crypto = answered_crypto(answer, state.streams, suite)
        key = str(crypto[0]) if crypto else None
        return KeyedAnswer(answer, state.epoch, key, offer_ssrcs(answer))

    def dialout_epoch(self, conference_id: str, target: str, recorded: int) -> int:
        return recorded

    def dialout_leg(self, conference_id: str, leg: str, media: str, epoch: int) -> LegPlan | None:
        """An ``sdes`` leg with a throw-away participant key (the phone's is in its answer)."""
        suite = self.settings.suite
        material = self.random_bytes(suite.key_length + suite.salt_length)
        placeholder = CryptoAttribute(
            OFFER_TAG,
            suite,
            (KeyParam(material[: suite.key_length], material[suite.key_length :]),),
        )
        return self.edge.create_leg(conference_id, leg, [media], [str(placeholder)], mode="sdes")

    def require_transport(self, secure: bool, what: str) -> None:
        """RFC 4568 §8.3: SDES keys travel only over TLS; fail closed."""
        if not secure and not self.settings.sdes_over_udp:
            raise NotAcceptable(f"{what} without TLS: SDES keys travel only over TLS")

    def answer_transport(self, secure: bool) -> None:
        if not secure and not self.settings.sdes_over_udp:
            raise NotAcceptable("an SDES answer arrived without TLS: the group key stays off it")

    def epoch_note(self, epoch: int) -> str:
        return ""
