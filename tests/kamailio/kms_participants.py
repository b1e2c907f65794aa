"""KMS-mode participants against the focus: KMS clients, agents, TRANSFER_INIT offers, refusals.

Participants are :class:`~secconf.client.agent.ParticipantAgent`\\ s of the real KMS; the
helpers create a conference, build (or forge) a TRANSFER_INIT offer, send an INVITE and
check a refusal left the focus's Redis keys unchanged.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

from secconf.client.agent import AgentCall, ParticipantAgent, build_offer_sdp
from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.mikey import GenericIdEntry, SecurityPolicy, SrtpSessionData
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import SUITES
from secconf.kms.async_client import KmsClient
from secconf.store.keywrap import load_key_file

from .conftest import ALICE, BOB, CAROL, FOCUS_IDENTITY, KmsFocus, MixingUpstream, Upstream
from .media import ratio, talk
from .support import TONE_A, TONE_B

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
WARNINGS: list[str] = []  # the logged reason of each refusal, newest last


def _kms_client(focus: KmsFocus, identity: str) -> KmsClient:
    assert focus.kms is not None
    return KmsClient(
        focus.kms.url, focus.kms.identity, identity, load_key_file(focus.psk(identity), "PSK")
    )


async def _agent(
    focus: KmsFocus, identity: str, sip_identity: str | None = None
) -> ParticipantAgent:
    ua = await UserAgent.start("127.0.0.1", identity=sip_identity or identity)
    return ParticipantAgent(identity, _kms_client(focus, identity), ua)


def _conference_id(header: str | None) -> str:
    assert header is not None
    return header.split("conf-", 1)[1].split("@", 1)[0]


async def _offer(
    focus: KmsFocus,
    identity: str,
    *,
    recipients: tuple[str, ...] = (FOCUS_IDENTITY,),
    responder_keys: bool = True,
    valid_until: float | None = None,
    forge: str | None = None,
    initiator: str | None = None,
    issued: mikey_ticket.IssuedTicket | None = None,
    policy: SecurityPolicy | None = None,
) -> tuple[bytes, mikey_ticket.PendingTransfer]:
    """An SDP offer with a TRANSFER_INIT from *identity*'s ticket (or a forged variant).

    *policy*: the SRTP policy offered (default: :data:`SUITE`'s).
    """
    if issued is None:
        issued = await _kms_client(focus, identity).request_ticket(
            mikey_ticket.DesiredPolicy(
                recipients=recipients,
                valid_until=valid_until or time.time() + 3600,
                responder_keys=responder_keys,
            )
        )
    if forge == "ticket":  # one bit of the Ticket Data (its MAC) changed
        data = bytearray(issued.ticket.ticket_data)
        data[-1] ^= 1
        issued = replace(issued, ticket=replace(issued.ticket, ticket_data=bytes(data)))
    if forge == "mac":  # the ticket as issued, the TRANSFER_INIT keyed without its MPKs
        issued = replace(issued, mpki=secrets.token_bytes(32), mpkr=secrets.token_bytes(32))
    pending = mikey_ticket.build_transfer_init(
        issued,
        initiator=initiator or identity,
        responder=FOCUS_IDENTITY,
        sessions=[GenericIdEntry.for_srtp(1, [0], SrtpSessionData(secrets.randbits(32), 0, 0))],
        policies=[policy or policy_for_suite(0, SUITE)],
        now=time.time(),
        random_bytes=secrets.token_bytes,
    )
    return _sdp(pending.data), pending


def _sdp(mikey: bytes) -> bytes:
    return build_offer_sdp(address="127.0.0.1", port=40000 + secrets.randbelow(1000),
                           mikey=mikey, session_id=1)  # fmt: skip


def _invite(
    focus: KmsFocus,
    target: str,
    body: bytes,
    *,
    sip_identity: str,
    headers=(),  # type: ignore[no-untyped-def]
) -> int:
    """Send *body* to *target*; the final status (200 answered calls are hung up)."""

    async def scenario(upstream: Upstream) -> int:
        ua = await UserAgent.start("127.0.0.1", identity=sip_identity)
        try:
            try:
                call = await ua.invite(
                    focus.target(target), body, extra_headers=list(headers), timeout=5
                )
            except SipRequestFailed as exc:
                response = exc.response
                assert response is not None
                # The reason is logged (a Warning only for an authenticated sender).
                WARNINGS.append(focus.server.refusal(response.get("Call-ID") or ""))
                return exc.status_code
            await call.bye(timeout=5)
            return 200
        finally:
            await ua.close()

    return focus.run(scenario, MixingUpstream(focus.upstream_port))


def _create(focus: KmsFocus) -> str:
    """A KMS-mode conference created by Alice, Bob and Carol allowed (her call stays up)."""

    async def scenario(upstream: Upstream) -> str:
        alice = await _agent(focus, ALICE)
        try:
            call = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            await call.media.close(bye=False)
            return _conference_id(call.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
        finally:
            await alice.ua.close()

    return focus.run(scenario, MixingUpstream(focus.upstream_port))


def _refused(focus: KmsFocus, target: str, body: bytes, sip_identity: str, status: int,
             why: str, headers=()) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    before = focus.snapshot(ours_only=True)
    assert _invite(focus, target, body, sip_identity=sip_identity, headers=headers) == status
    assert why in WARNINGS[-1], WARNINGS[-1]
    assert focus.snapshot(ours_only=True) == before


async def _hear_each_other(a: AgentCall, b: AgentCall) -> None:
    a.media.drain()
    b.media.drain()
    heard_a, heard_b = await talk([a.media, b.media], [TONE_A, TONE_B], 1.0)
    assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
    assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)
