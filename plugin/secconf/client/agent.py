"""The KMS-mode participant: SIP calls keyed with MIKEY-TICKET, media over SRTP.

Calling (Initiator, RFC 6043 §4.2.2): ask the KMS for a ticket naming the
callee, put a TRANSFER_INIT into the offer's ``a=key-mgmt:mikey`` (RFC 4567),
INVITE, verify the TRANSFER_RESP in the answer, derive the SRTP keys.

Answering (Responder): take the TRANSFER_INIT from the offer, check it early,
resolve the ticket at the KMS, verify the TRANSFER_INIT with MPKi, answer
with a TRANSFER_RESP.  A refusal is the SIP status the MIKEY error carries
(403 for authentication and ticket failures, 488 for unusable media, 400 for
malformed input) and no call is set up.

Crypto session 1 is the caller's stream, crypto session 2 the callee's
(RFC 4567 §7.1); each has its own SRTP master key (R4).

Joining a conference (:meth:`ParticipantAgent.join_conference`): the same
TRANSFER_INIT, to the focus's identity, from a ticket that allows responder
keys (M flag); the focus's TRANSFER_RESP delivers the conference's group key
(TEK+SALT, SPI = key epoch), and the participant sends and receives with it
(KMS mode, DESIGN.md §1).  :meth:`ParticipantAgent.refer_body` makes the
``application/mikey`` body of a REFER to the focus.

Rekeys (:meth:`ParticipantAgent._answer_rekey`): the focus re-INVITEs a
member with a TRANSFER_INIT of its own (the focus is the Initiator, RFC 4567
§3) carrying a GTGK ticket of the new key epoch.  The member checks it comes
from the focus it joined, resolves it at the KMS as Responder, derives the
epoch's group key (:func:`secconf.core.mikey.group.group_key_of_transfer`),
answers with a TRANSFER_RESP and switches sending and receiving to the new key
right after its 200 OK goes out; the old receiving key stays for a grace
window (``rekey_grace``).

Called by the focus (:meth:`ParticipantAgent._answer_focus`): when the
focus dials a member out (a REFER target, a replacement call), its new
INVITE carries a TRANSFER_INIT of the focus like a rekey re-INVITE does (a
GTGK ticket of the epoch, one crypto session, SPI = the epoch).  The agent
takes it only from the focus identity it trusts (:attr:`dialout_focus`;
403 otherwise), resolves it at the KMS, derives the group key, answers with
a TRANSFER_RESP that adds its own SSRC to the map, sends and receives with
the group key, hands the call out on :attr:`answered` (``group_epoch``,
``group_key`` set) and follows the focus's later rekey re-INVITEs in it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.errors import (
    InsecureMedia,
    MikeyError,
    MikeyErrorNo,
    NotAcceptable,
    ProtocolError,
    ReplayedMessage,
    SecconfError,
    TicketRejected,
)
from ..core.keymgmt import key_mgmt_value, mikey_message
from ..core.mikey import GenericIdEntry, KeyData, KeyDataType, SpiValidity, SrtpSessionData
from ..core.mikey import group as mikey_group
from ..core.mikey import ticket as mikey_ticket
from ..core.mikey.keys import SrtpMasterKey
from ..core.mikey.srtp import policy_for_suite, suite_for_policy
from ..core.sdes import SUITES, CryptoSuite
from ..core.sdp import SessionDescription
from ..kms.async_client import KmsClient
from .conference_events import KmsSubscription
from .media import SrtpEndpoint
from .sip import Answer, Call, IncomingRequest, UserAgent

__all__ = [
    "AgentCall",
    "ParticipantAgent",
    "build_offer_sdp",
    "exchange_audio",
    "group_key_of",
]

log = logging.getLogger("secconf.client")

CALLER_CS, CALLEE_CS = 1, 2
POLICY_NO = 0
#: The header a secconf focus puts on its dial-out INVITEs (the conference's URI).
CONFERENCE_HEADER = "X-Secconf-Conference"


def build_offer_sdp(
    *, address: str, port: int, mikey: bytes, session_id: int, username: str = "secconf"
) -> bytes:
    """An audio-only RTP/SAVP description with the MIKEY message at media level."""
    text = (
        "v=0\r\n"
        f"o={username} {session_id} {session_id} IN IP4 {address}\r\n"
        "s=secconf\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtcp-mux\r\n"
        f"a=key-mgmt:{key_mgmt_value(mikey)}\r\n"
        "a=sendrecv\r\n"
    )
    SessionDescription.parse(text)  # never send what we would refuse
    return text.encode()


def _media_target(description: SessionDescription) -> tuple[str, int]:
    audio = next((m for m in description.media if m.media == "audio" and m.port), None)
    if audio is None:
        raise NotAcceptable("no live audio stream")
    if not audio.is_secure_rtp:
        raise InsecureMedia(f"audio uses {audio.proto}: SRTP only")
    connection = audio.connection or description.session.connection
    if connection is None:
        raise NotAcceptable("no connection address for the audio stream")
    return connection.address, audio.port


@dataclass
class AgentCall:
    """A keyed call: the SIP dialog, the SRTP endpoint and who is on the other end."""

    call: Call
    media: SrtpEndpoint
    peer: str  # authenticated identity of the other party
    suite: CryptoSuite
    tx_ssrc: int
    keys: dict[int, SrtpMasterKey] = field(repr=False)
    group_epoch: int | None = None  # conference calls: the epoch of the group key in use
    group_key: SrtpMasterKey | None = field(default=None, repr=False)  # ... and the key
    #: TRANSFER_INITs the focus sent in rekey re-INVITEs (public MIKEY messages), oldest first.
    rekey_transfers: list[bytes] = field(default_factory=list, repr=False)


def group_key_of(delivered: tuple[KeyData, ...]) -> tuple[bytes, bytes, int]:
    """The group key a focus delivered in its TRANSFER_RESP: key, salt, epoch.

    secconf's focus sends one TEK+SALT key data whose SPI is the key epoch
    (4 bytes, docs/kamailio.md); anything else is refused.
    """
    for key in delivered:
        if key.key_type == KeyDataType.TEK_SALT and key.salt is not None:
            epoch = 0
            if isinstance(key.validity, SpiValidity) and 1 <= len(key.validity.spi) <= 4:
                epoch = int.from_bytes(key.validity.spi, "big")
            return key.key, key.salt, epoch
    raise MikeyError("the focus delivered no group key (TEK+SALT) in its TRANSFER_RESP")


def _call_suite(result: mikey_ticket.TransferResult) -> CryptoSuite:
    """The suite both crypto sessions of a call run under, as the TRANSFER_RESP set it.

    The Responder may answer with a policy of its own (RFC 6043 §4.2.2.4);
    process_transfer_resp has checked it is one the media runs, and derived the
    keys at its lengths, so the media must use that suite, not the one offered.
    """
    suites = {suite_for_policy(result.policies[cs]) for cs in (CALLER_CS, CALLEE_CS)
              if cs in result.policies}  # fmt: skip
    if len(suites) != 1 or not {CALLER_CS, CALLEE_CS} <= result.srtp_keys.keys():
        raise MikeyError(
            "the answer does not key both crypto sessions under one SRTP suite",
            MikeyErrorNo.INVALID_SP,
        )
    return suites.pop()


@dataclass
class ParticipantAgent:
    """One participant: its identity, its KMS credentials, one SIP user agent."""

    identity: str
    kms: KmsClient
    ua: UserAgent
    media_host: str = "127.0.0.1"
    suite: CryptoSuite = SUITES["AES_CM_128_HMAC_SHA1_80"]
    clock: Callable[[], float] = time.time
    answered: asyncio.Queue[AgentCall] = field(default_factory=asyncio.Queue)
    #: Seconds the previous group key still decrypts after a rekey (DESIGN.md §2).
    rekey_grace: float = 2.0
    #: Mean SRTCP report interval of the agent's media (None: only on demand).
    rtcp_interval: float | None = 5.0
    #: The focus whose calls into a conference (dial-outs) this agent answers: a new
    #: INVITE whose TRANSFER_INIT carries a group epoch must have this IDRi (else 403).
    #: ``None``: no focus is trusted to call in.
    dialout_focus: str | None = None
    _seen_transfers: set[bytes] = field(default_factory=set)
    #: Conference calls by Call-ID, with the focus identity each was joined with.
    _conferences: dict[str, tuple[AgentCall, str]] = field(default_factory=dict)

    async def _keyed_invite(
        self,
        target_uri: str,
        responder: str,
        desired: mikey_ticket.DesiredPolicy,
        timeout: float,
        accept: Callable[[mikey_ticket.TransferResult], object],
    ) -> tuple[Call, SrtpEndpoint, mikey_ticket.TransferResult]:
        """Ticket, TRANSFER_INIT in the offer, INVITE, verified TRANSFER_RESP (RFC 6043 §4.2.2).

        *accept* checks the verified result and raises a ``ProtocolError`` to
        refuse it; on any refusal the call is hung up and the media closed.
        """
        issued = await self.kms.request_ticket(desired)
        media = await SrtpEndpoint.open(self.media_host, rtcp_interval=self.rtcp_interval)
        try:
            pending = mikey_ticket.build_transfer_init(
                issued,
                initiator=self.identity,
                responder=responder,
                sessions=[
                    GenericIdEntry.for_srtp(
                        CALLER_CS, [POLICY_NO], SrtpSessionData(media.ssrc, 0, 0)
                    )
                ],
                policies=[policy_for_suite(POLICY_NO, self.suite)],
                now=self.clock(),
                random_bytes=secrets.token_bytes,
            )
            host, port = media.local_address
            offer = build_offer_sdp(
                address=host, port=port, mikey=pending.data, session_id=secrets.randbits(31)
            )
            call = await self.ua.invite(target_uri, offer, timeout=timeout)
            try:
                answer = SessionDescription.parse(call.remote_sdp)
                remote = _media_target(answer)
                result = mikey_ticket.process_transfer_resp(
                    pending, mikey_message(answer, answer.media[0]), now=self.clock()
                )
                # RFC 6043 §5.5: the answering identity may differ from the one called
                # (a member of a group the ticket names) when the KMS vouched for it.
                if result.responder != responder and not result.kms_vouched:
                    raise MikeyError("answered by another identity than the one called")
                accept(result)
            except ProtocolError:
                await call.bye()
                raise
        except BaseException:
            await media.close(bye=False)
            raise
        media.set_remote(remote)
        return call, media, result

    async def call(
        self, target_uri: str, target_identity: str, *, timeout: float = 30.0
    ) -> AgentCall:
        """Call *target_uri*, whose KMS identity is *target_identity*; return the keyed call."""
        desired = mikey_ticket.DesiredPolicy(
            recipients=(target_identity,), valid_until=self.clock() + 3600
        )
        call, media, result = await self._keyed_invite(
            target_uri, target_identity, desired, timeout, _call_suite
        )
        suite = _call_suite(result)
        keys = result.srtp_keys
        media.set_keys(
            tx=(suite, keys[CALLER_CS].key, keys[CALLER_CS].salt),
            rx=(suite, keys[CALLEE_CS].key, keys[CALLEE_CS].salt),
        )
        log.info("call to %s keyed (MIKEY-TICKET, %s)", result.responder, suite.name)
        return AgentCall(call, media, result.responder, suite, media.ssrc, keys)

    async def join_conference(
        self,
        target_uri: str,
        focus_identity: str,
        *,
        allowed: tuple[str, ...] = (),
        timeout: float = 30.0,
    ) -> AgentCall:
        """INVITE the factory or a conference URI; send and receive with the delivered group key.

        The ticket names the focus (*focus_identity*) and, when creating, the
        identities *allowed* to join; it allows responder keys (M flag) so
        that the focus can deliver the group key in its TRANSFER_RESP.
        """
        desired = mikey_ticket.DesiredPolicy(
            recipients=(focus_identity, *allowed),
            valid_until=self.clock() + 3600,
            responder_keys=True,
        )
        call, media, result = await self._keyed_invite(
            target_uri,
            focus_identity,
            desired,
            timeout,
            # refused (and hung up) inside the INVITE path if no group key came
            lambda result: group_key_of(result.delivered_keys),
        )
        key, salt, epoch = group_key_of(result.delivered_keys)
        group = (self.suite, key, salt)
        media.set_keys(tx=group, rx=group)
        log.info("joined %s (group key epoch %d)", target_uri, epoch)
        agent_call = AgentCall(
            call, media, result.responder, self.suite, media.ssrc, result.srtp_keys, epoch,
            SrtpMasterKey(key, salt),
        )  # fmt: skip
        # In-dialog re-INVITEs from the focus (rekeys) come to _on_invite.
        self._conferences[call.dialog.call_id] = (agent_call, focus_identity)
        if self.ua.on_invite is None:
            self.ua.on_invite = self._on_invite
        return agent_call

    async def refer_body(self, focus_identity: str) -> tuple[bytes, mikey_ticket.PendingTransfer]:
        """The ``application/mikey`` body of a REFER to the focus: a fresh TRANSFER_INIT, base64.

        Returns the body and the pending transfer, to verify the focus's
        TRANSFER_RESP in the 202 with :func:`secconf.core.mikey.ticket.process_transfer_resp`.
        """
        pending = await self._focus_transfer(focus_identity, forking=True)
        return base64.b64encode(pending.data), pending

    async def subscription(self, focus_identity: str) -> KmsSubscription:
        """A KMS-mode SUBSCRIBE's exchange: a TRANSFER_INIT for the focus and its event key.

        The ticket names the focus alone and forks nothing (one recipient: nothing to
        keep apart), so the event key is known before the SUBSCRIBE leaves
        (docs/event-protection.md); pass it to ``ConferenceWatch.start(kms=...)``.
        """
        pending = await self._focus_transfer(focus_identity, forking=False)
        return KmsSubscription(pending, self.clock)

    async def _focus_transfer(
        self, focus_identity: str, *, forking: bool
    ) -> mikey_ticket.PendingTransfer:
        """A fresh ticket for *focus_identity* and a TRANSFER_INIT with no crypto session."""
        issued = await self.kms.request_ticket(
            mikey_ticket.DesiredPolicy(
                recipients=(focus_identity,), valid_until=self.clock() + 3600, forking=forking
            )
        )
        return mikey_ticket.build_transfer_init(
            issued,
            initiator=self.identity,
            responder=focus_identity,
            sessions=[],
            now=self.clock(),
            random_bytes=secrets.token_bytes,
        )

    def answer_calls(self) -> None:
        """Answer incoming INVITEs from now on; keyed calls arrive on :attr:`answered`."""
        self.ua.on_invite = self._on_invite

    async def _on_invite(self, incoming: IncomingRequest) -> Answer:
        try:
            if incoming.call is not None:
                conference = self._conferences.get(incoming.call.dialog.call_id)
                if conference is None:  # a p2p call: same keys, nothing to renegotiate here
                    return Answer(488, reason="Rekey by re-INVITE not supported by this agent")
                return await self._answer_rekey(incoming, *conference)
            return await self._answer(incoming)
        except SecconfError as exc:  # protocol refusals, and 503 when the KMS is away
            log.info("INVITE refused: %s %s", exc.status_code, exc.message)
            return Answer(exc.status_code, reason=exc.reason)

    async def _answer_rekey(
        self, incoming: IncomingRequest, agent_call: AgentCall, focus_identity: str
    ) -> Answer:
        """A rekey re-INVITE from the focus: TRANSFER_INIT resolved, TRANSFER_RESP answered.

        The Initiator must be the focus this conference was joined with
        (RFC 6043 §4.2.2.2 authenticates IDRi through the ticket and MPKi); the
        new epoch must be newer than the one in use.  Sending and receiving
        switch right after the 200 OK is sent (``call_soon``: the answer goes
        out first), the old receiving key kept for :attr:`rekey_grace` seconds.
        """
        offer = SessionDescription.parse(incoming.body)
        remote = _media_target(offer)
        audio = next(m for m in offer.media if m.media == "audio" and m.port)
        data = mikey_message(offer, audio)
        transfer = mikey_ticket.TransferInit.read(data)
        transfer.early_check(self.identity, now=self.clock())
        if transfer.initiator != focus_identity:
            raise TicketRejected("rekey TRANSFER_INIT is not from the focus this call joined")
        if transfer.replay_token in self._seen_transfers:
            raise ReplayedMessage("TRANSFER_INIT replayed")
        suite = agent_call.suite
        resolved = await self.kms.resolve(transfer)
        key, epoch = mikey_group.group_key_of_transfer(
            transfer, resolved, 8 * suite.key_length, 8 * suite.salt_length
        )
        if agent_call.group_epoch is not None and epoch <= agent_call.group_epoch:
            raise NotAcceptable(f"key epoch {epoch} is not newer than {agent_call.group_epoch}")
        self._seen_transfers.add(transfer.replay_token)
        agent_call.rekey_transfers.append(data)
        answer_data = self._rekey_transfer_resp(transfer, resolved)
        media = agent_call.media
        host, port = media.local_address
        answer_sdp = build_offer_sdp(
            address=host, port=port, mikey=answer_data, session_id=secrets.randbits(31)
        )

        def switch() -> None:
            group = (suite, key.key, key.salt)
            media.set_remote(remote)
            media.rekey(tx=group, rx=group, grace=self.rekey_grace)
            agent_call.group_epoch, agent_call.group_key = epoch, key
            log.info("rekeyed to group key epoch %d", epoch)

        asyncio.get_running_loop().call_soon(switch)
        return Answer(200, answer_sdp, "application/sdp")

    def _rekey_transfer_resp(
        self, transfer: mikey_ticket.TransferInit, resolved: mikey_ticket.ResolvedTicket
    ) -> bytes:
        """The TRANSFER_RESP answering a rekey (RFC 6043 §4.2.2.3): the focus's sessions echoed."""
        return self._group_transfer_resp(transfer, resolved, transfer.sessions)

    def _group_transfer_resp(
        self,
        transfer: mikey_ticket.TransferInit,
        resolved: mikey_ticket.ResolvedTicket,
        sessions: Sequence[GenericIdEntry],
    ) -> bytes:
        """The TRANSFER_RESP to a focus's group TRANSFER_INIT (RFC 6043 §4.2.2.3)."""
        data, _ = mikey_ticket.build_transfer_resp(
            transfer,
            resolved,
            responder=self.identity,
            sessions=sessions,
            now=self.clock(),
            random_bytes=secrets.token_bytes,
        )
        return data

    @staticmethod
    def _conference_call(incoming: IncomingRequest, transfer: mikey_ticket.TransferInit) -> bool:
        """A focus calling into a conference: its header, or a group epoch's map."""
        if incoming.request.get(CONFERENCE_HEADER) is not None:
            return True
        try:
            mikey_group.epoch_of_sessions(transfer.sessions)
        except MikeyError:
            return False
        return True

    async def _answer_focus(
        self,
        incoming: IncomingRequest,
        transfer: mikey_ticket.TransferInit,
        remote: tuple[str, int],
    ) -> Answer:
        """A focus dials us into its conference: answered like a rekey, as a new call.

        The Initiator must be :attr:`dialout_focus` (403 otherwise, before any
        KMS round trip); the KMS resolves the ticket (authenticating IDRi by
        the MAC under MPKi, RFC 6043 §4.2.2.2) and the group key is derived
        as on a rekey.  The TRANSFER_RESP echoes the focus's crypto session
        and adds ours (our SSRC, same CS ID and SPI), so the focus registers
        it (SSRCs are unique within a conference).  The call goes out on
        :attr:`answered` once ACKed, and later rekey re-INVITEs in it are
        followed (:meth:`_answer_rekey`).
        """
        focus = self.dialout_focus
        if focus is None or transfer.initiator != focus:
            raise TicketRejected("a conference call from a focus this agent does not trust")
        policies = transfer.security_policies
        suite = suite_for_policy(policies[0]) if policies else self.suite
        cs_id, _ = mikey_group.epoch_of_sessions(transfer.sessions)
        resolved = await self.kms.resolve(transfer)
        key, epoch = mikey_group.group_key_of_transfer(
            transfer, resolved, 8 * suite.key_length, 8 * suite.salt_length
        )
        self._seen_transfers.add(transfer.replay_token)
        media = await SrtpEndpoint.open(self.media_host, rtcp_interval=self.rtcp_interval)
        try:
            template = transfer.sessions[0]
            own = GenericIdEntry.for_srtp(
                cs_id, template.policies, SrtpSessionData(media.ssrc, 0, 0), template.spi
            )
            data = self._group_transfer_resp(transfer, resolved, [*transfer.sessions, own])
        except BaseException:
            await media.close(bye=False)
            raise
        host, port = media.local_address
        answer_sdp = build_offer_sdp(
            address=host, port=port, mikey=data, session_id=secrets.randbits(31)
        )
        group = (suite, key.key, key.salt)
        media.set_remote(remote)
        media.set_keys(tx=group, rx=group)
        log.info("called by %s into a conference (group key epoch %d)", focus, epoch)
        asyncio.get_running_loop().create_task(
            self._deliver(media, focus, suite, media.ssrc, {}, group=(epoch, key))
        )
        return Answer(200, answer_sdp, "application/sdp")

    async def _answer(self, incoming: IncomingRequest) -> Answer:
        offer = SessionDescription.parse(incoming.body)
        remote = _media_target(offer)
        audio = next(m for m in offer.media if m.media == "audio" and m.port)
        transfer = mikey_ticket.TransferInit.read(mikey_message(offer, audio))
        transfer.early_check(self.identity, now=self.clock())
        if transfer.replay_token in self._seen_transfers:
            raise ReplayedMessage("TRANSFER_INIT replayed")
        if self._conference_call(incoming, transfer):
            return await self._answer_focus(incoming, transfer, remote)
        policies = transfer.security_policies
        suite = suite_for_policy(policies[0]) if policies else self.suite
        resolved = await self.kms.resolve(transfer)
        self._seen_transfers.add(transfer.replay_token)
        media = await SrtpEndpoint.open(self.media_host, rtcp_interval=self.rtcp_interval)
        ssrc = media.ssrc
        sessions = [
            *(entry for entry in transfer.sessions if entry.cs_id == CALLER_CS),
            GenericIdEntry.for_srtp(CALLEE_CS, [POLICY_NO], SrtpSessionData(ssrc, 0, 0)),
        ]
        data, keys = mikey_ticket.build_transfer_resp(
            transfer,
            resolved,
            responder=self.identity,
            sessions=sessions,
            now=self.clock(),
            random_bytes=secrets.token_bytes,
        )
        host, port = media.local_address
        answer_sdp = build_offer_sdp(
            address=host, port=port, mikey=data, session_id=secrets.randbits(31)
        )
        media.set_remote(remote)
        media.set_keys(
            tx=(suite, keys[CALLEE_CS].key, keys[CALLEE_CS].salt),
            rx=(suite, keys[CALLER_CS].key, keys[CALLER_CS].salt),
        )
        asyncio.get_running_loop().create_task(
            self._deliver(media, transfer.initiator, suite, ssrc, keys)
        )
        return Answer(200, answer_sdp, "application/sdp")

    async def _deliver(
        self,
        media: SrtpEndpoint,
        peer: str,
        suite: CryptoSuite,
        ssrc: int,
        keys: dict[int, SrtpMasterKey],
        *,
        group: tuple[int, SrtpMasterKey] | None = None,
    ) -> None:
        """Hand the answered call out once ACKed; *group*: a focus's call (epoch, key)."""
        try:
            call = await self.ua.next_call(timeout=32.0)
        except TimeoutError:
            await media.close(bye=False)
            return
        agent_call = AgentCall(call, media, peer, suite, ssrc, keys)
        if group is not None:
            agent_call.group_epoch, agent_call.group_key = group
            # The focus's rekey re-INVITEs in this call come to _answer_rekey.
            self._conferences[call.dialog.call_id] = (agent_call, peer)
        await self.answered.put(agent_call)


async def exchange_audio(
    agent_call: AgentCall, *, tone: float, seconds: float, expect_tone: float | None
) -> dict[str, object]:
    """Send a *tone* for *seconds* while receiving; report what went and came.

    The report is computed from the packets themselves: counts from the SRTP
    endpoint's statistics, and the share of the received audio's energy at
    *expect_tone* (Goertzel), so a caller can tell real audio from noise.
    """
    from ..core.g711 import ToneGenerator, tone_ratio, ulaw_decode

    media = agent_call.media
    frames = int(seconds / 0.020)
    sent = await media.send_audio(ToneGenerator(tone).frames(frames), agent_call.tx_ssrc)
    await asyncio.sleep(0.2)  # let the last packets of the other side arrive
    received = media.drain()
    samples: list[int] = []
    for packet in received:
        samples.extend(ulaw_decode(packet.packet.payload))
    totals = media.totals
    return {
        "peer": agent_call.peer,
        "suite": agent_call.suite.name,
        "sent": sent,
        "received": len(received),
        "auth_failures": totals.auth_failures,
        "replays": totals.replays,
        "tone_ratio": tone_ratio(samples, expect_tone) if expect_tone and samples else None,
    }
