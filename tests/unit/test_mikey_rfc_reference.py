"""secconf's MIKEY-TICKET against a second implementation written from the RFC text alone.

Issue 14: the codecs agreed byte for byte with another implementation, yet
the exchanges did not interoperate.  Each test here puts one side of an
exchange in the hands of :mod:`tests.fixtures.mikey_reference`, which shares
no code with secconf and follows RFC 3830 / RFC 6043 literally: a Vi copied
from the TRANSFER_INIT's V with its Next payload 0, a Responder that changes
the security policy, a group member answering for a ticket that names its
group, crypto sessions with and without an SPI.  The test plays the KMS's
part where the other implementation's KMS would be (forking MPKr and the TGK
for the identity it vouches for, RFC 6043 §5.1.1).
"""

from __future__ import annotations

import pytest

from secconf.core.errors import (
    AuthenticationFailed,
    MikeyError,
    MikeyErrorNo,
    TicketRejected,
    UnsupportedMikey,
)
from secconf.core.mikey import GenericIdEntry, SrtpSessionData
from secconf.core.mikey import ticket as mt
from secconf.core.mikey.srtp import policy_for_suite, suite_for_policy
from secconf.core.sdes import SUITES
from tests.fixtures import mikey_reference as ref
from tests.fixtures.mikey_world import (
    ALICE,
    BOB,
    FACTORY,
    KMS,
    NOW,
    PSKS,
    CountingRandom,
    Kms,
    _desired,
    _issue,
    _respond,
)

SUPPORT = "sip:support@example.com"  # a group the ticket names
CAROL = "sip:carol@example.com"  # one of its members
RANDRI = bytes(range(32))
RANDRR = bytes(range(100, 132))
RANDRKMS = bytes(range(200, 232))
#: RFC 3830 Table 6.10.1.a parameters of AES-CM with a 256-bit key (RFC 6188 §4: AES_256_CM,
#: 112-bit salt, HMAC-SHA-1, 80-bit tag): encr alg 1, key length 32, auth alg 1,
#: auth key length 20, salt length 14, tag length 10.
AES_256_CM_80 = ((0, 1), (1, 32), (2, 1), (3, 20), (4, 14), (11, 10))
AES_128_CM_80 = ((0, 1), (1, 16), (2, 1), (3, 20), (4, 14), (11, 10))
#: ... and with a 192-bit key (RFC 6188 AES_192_CM): a policy secconf does not run.
AES_192_CM_80 = ((0, 1), (1, 24), (2, 1), (3, 20), (4, 14), (11, 10))


def _reference_request(kms: Kms, **policy: object) -> tuple[ref.RequestInit, ref.Ticket]:
    request = ref.request_init(
        initiator=ALICE.encode(), kms=KMS.encode(), psk=PSKS[ALICE], csb_id=0x01020304,
        randri=RANDRI, now=NOW, flags=str(policy.pop("flags", "DEFGHINO")),
        recipients=[r.encode() for r in policy.pop("recipients", (FACTORY, BOB))],  # type: ignore[attr-defined]
        valid_until=NOW + 600, **policy,  # type: ignore[arg-type]
    )  # fmt: skip
    return request, ref.read_request_resp(request, kms.request(request.data))


# -- 3. Vi copied literally, and 1. SPI/#P in the response --------------------------------


@pytest.mark.parametrize("literal_vi", [True, False], ids=["vi-next-0", "vi-next-9"])
@pytest.mark.parametrize("spi", [b"", b"\x0a\x0b"], ids=["spi-absent", "spi-present"])
def test_a_reference_initiator_is_resolved_and_answered_as_the_rfc_asks(
    literal_vi: bool, spi: bytes
) -> None:
    kms = Kms(CountingRandom(b"kms-ref"))
    _, ticket = _reference_request(kms)
    assert "I" in ticket.flags  # key forking: the TICKET carries Initiator Data Vi, Vr
    # No SP, #P = 0 and maybe no SPI: all allowed in an initial message (RFC 6043 §6.1.1).
    init = ref.transfer_init(
        ticket, initiator=ALICE.encode(), responder=FACTORY.encode(), csb_id=0x0A0B0C0D,
        randri=RANDRI, now=NOW, blocks=[ref.CsBlock(1, (), 0x11111111, spi)],
        literal_vi=literal_vi,
    )  # fmt: skip
    answer = _respond(kms, init.data)  # secconf: read, resolve at the KMS, verify, answer

    # The reference Initiator verifies the answer under MPKr' forked for the IDRr sent.
    parsed = ref.parse(answer.data)
    id_data = next(p[5:] for p in parsed.all(ref.IDR) if p[1] == ref.ROLE_R)
    randrkms = next(p[3:] for p in parsed.all(ref.RANDR) if p[1] == ref.ROLE_KMS)
    assert ticket.mpkr is not None
    mpkr_forked = ref.fork(ticket.mpkr, ref.C_MPKR_FORK, id_data, randrkms)
    ref.verify_transfer_resp(init, answer.data, mpkr_forked)
    # §6.1.1: in a response every crypto session names exactly one policy, defined by an
    # SP payload, and carries an SPI; an SPI the Initiator gave is kept.
    defined = {p[1] for p in parsed.all(ref.SP)}
    assert [b.cs_id for b in parsed.blocks] == [1, 2]
    for block in parsed.blocks:
        assert len(block.policies) == 1
        assert block.policies[0] in defined
        assert block.spi
    assert parsed.blocks[0].spi == (spi or ticket.traffic[0][2])
    # The policy secconf states for them is RFC 3830's default SRTP policy, written out.
    (policy,) = parsed.all(ref.SP)
    assert dict(AES_128_CM_80).items() <= ref.sp_params(policy).items()
    # Both sides derive the same SRTP master keys (RFC 6043 §5.1.3, TGK forked §5.1.1).
    tgk_forked = ref.fork(ticket.traffic[0][1], ref.C_TGK_FORK, id_data, randrkms)
    randrr = next(p[3:] for p in parsed.all(ref.RANDR) if p[1] == ref.ROLE_R)
    for cs_id in (1, 2):
        key, salt = ref.srtp_master(tgk_forked, cs_id, RANDRI, randrr, 128)
        assert (answer.keys[cs_id].key, answer.keys[cs_id].salt) == (key, salt)


# -- 2. a Responder-generated security policy -------------------------------------------


def _secconf_transfer(issued: mt.IssuedTicket, responder: str = FACTORY) -> mt.PendingTransfer:
    """secconf's Initiator offers AES_CM_128_HMAC_SHA1_80 (SP 0) for crypto session 1."""
    return mt.build_transfer_init(
        issued, initiator=ALICE, responder=responder,
        sessions=[GenericIdEntry.for_srtp(1, [0], SrtpSessionData(0x11111111, 0, 0))],
        policies=[policy_for_suite(0, SUITES["AES_CM_128_HMAC_SHA1_80"])],
        now=NOW, random_bytes=CountingRandom(b"transfer"),
    )  # fmt: skip


def _reference_answer(
    pending: mt.PendingTransfer,
    *,
    identity: str,
    policies: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = (),
    blocks: tuple[ref.CsBlock, ...],
    key_bits: dict[int, int] | None = None,
    forked_for: str | None = None,
) -> ref.TransferResp:
    """The other Responder's TRANSFER_RESP, with the keys its KMS would have given it.

    With key forking the KMS forks MPKr and the TGK for *forked_for* (default:
    the identity answering), RFC 6043 §5.1.1; without, the Responder has MPKi.
    """
    issued = pending.issued
    ticket_payload = ref.parse(pending.data).all(ref.TICKET)[0]
    flags = ref.ticket_flags(ticket_payload)
    tgk = issued.traffic_keys[0].key
    if "I" in flags:
        assert issued.mpkr is not None
        id_data = (forked_for or identity).encode()
        mpk = ref.fork(issued.mpkr, ref.C_MPKR_FORK, id_data, RANDRKMS)
        tgk = ref.fork(tgk, ref.C_TGK_FORK, id_data, RANDRKMS)
        randrkms: bytes | None = RANDRKMS
    else:
        mpk, randrkms = issued.mpki, None
    return ref.transfer_resp(
        pending.data, flags=flags, mpk=mpk, tgk=tgk, responder=identity.encode(),
        randrr=RANDRR if "G" in flags else None, randrkms=randrkms, blocks=blocks,
        policies=policies, key_bits=key_bits, now=NOW,
    )  # fmt: skip


_CHANGED_TO_256 = {
    "policies": ((1, AES_256_CM_80),),
    "blocks": (
        ref.CsBlock(1, (1,), 0x11111111, b"\x01"),
        ref.CsBlock(2, (1,), 0x22222222, b"\x01"),
    ),
    "key_bits": {1: 256, 2: 256},
}


def test_a_policy_the_responder_changed_is_applied_at_its_key_length() -> None:
    # RFC 6043 §4.2.2.4: the Initiator checks Responder-generated policies and applies
    # them.  Here it accepts AES-CM-256: the SRTP master keys are 256 bits, the same the
    # Responder derived (before issue 14 the Initiator silently derived 128 bits).
    pending = _secconf_transfer(_issue(Kms(CountingRandom(b"kms-sp"))))
    answer = _reference_answer(pending, identity=FACTORY, **_CHANGED_TO_256)  # type: ignore[arg-type]
    # The default check (suite_for_policy) accepts it: secconf runs AES_256_CM_HMAC_SHA1_80.
    result = mt.process_transfer_resp(pending, answer.data, now=NOW)
    for cs_id in (1, 2):
        assert len(result.srtp_keys[cs_id].key) == 32
        assert (result.srtp_keys[cs_id].key, result.srtp_keys[cs_id].salt) == answer.srtp[cs_id]
        assert result.policies[cs_id].get(1).int_value == 32  # type: ignore[union-attr]
        assert suite_for_policy(result.policies[cs_id]).name == "AES_256_CM_HMAC_SHA1_80"


def test_a_policy_the_responder_changed_to_one_secconf_does_not_run_is_refused() -> None:
    # ... or refuses it: ERR 10 "Invalid SPpar" (RFC 3830 §6.12), never a silent mismatch.
    # AES-CM with a 192-bit key (RFC 6188 AES_192_CM): libsrtp could, secconf does not.
    pending = _secconf_transfer(_issue(Kms(CountingRandom(b"kms-sp"))))
    changed = {**_CHANGED_TO_256, "policies": ((1, AES_192_CM_80),), "key_bits": {1: 192, 2: 192}}
    answer = _reference_answer(pending, identity=FACTORY, **changed)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedMikey) as caught:
        mt.process_transfer_resp(pending, answer.data, now=NOW)
    assert caught.value.error_no == MikeyErrorNo.INVALID_SPPAR


def test_the_offered_policy_chosen_by_number_and_spi_absent_or_present_is_accepted() -> None:
    # The Responder picks the Initiator's SP 0 by number (no SP of its own); the SPI
    # of crypto session 2 is omitted (secconf is liberal there), that of 1 present.
    pending = _secconf_transfer(_issue(Kms(CountingRandom(b"kms-sp"))))
    blocks = (ref.CsBlock(1, (0,), 0x11111111, b"\x01"), ref.CsBlock(2, (0,), 0x22222222))
    answer = _reference_answer(pending, identity=FACTORY, blocks=blocks)
    result = mt.process_transfer_resp(pending, answer.data, now=NOW)
    assert {cs: (k.key, k.salt) for cs, k in result.srtp_keys.items()} == answer.srtp


@pytest.mark.parametrize(
    ("blocks", "what"),
    [
        ((ref.CsBlock(1, (), 0x11111111, b"\x01"),), "names 0 policies"),
        ((ref.CsBlock(1, (0, 0), 0x11111111, b"\x01"),), "names 2 policies"),
        ((ref.CsBlock(1, (7,), 0x11111111, b"\x01"),), "no SP payload defines"),
    ],
)
def test_a_response_must_name_exactly_one_defined_policy_per_crypto_session(
    blocks: tuple[ref.CsBlock, ...], what: str
) -> None:
    pending = _secconf_transfer(_issue(Kms(CountingRandom(b"kms-sp"))))
    answer = _reference_answer(pending, identity=FACTORY, blocks=blocks)
    with pytest.raises(MikeyError, match=what) as caught:
        mt.process_transfer_resp(pending, answer.data, now=NOW)
    assert caught.value.error_no == MikeyErrorNo.INVALID_SP


# -- 5. a group member answering -------------------------------------------------------


def test_a_group_member_the_kms_forked_keys_for_is_accepted() -> None:
    # RFC 6043 §5.5: Identity_r in TRANSFER_RESP "MAY differ from that appearing in
    # TRANSFER_INIT (e.g., IT-support@example.com)".  With key forking, the MAC under
    # MPKr' forked for that identity is the KMS's word that it resolved the ticket.
    kms = Kms(CountingRandom(b"kms-group"))
    pending = _secconf_transfer(_issue(kms, _desired(recipients=(SUPPORT, BOB))), SUPPORT)
    blocks = (ref.CsBlock(1, (0,), 0x11111111, b"\x01"), ref.CsBlock(2, (0,), 0x33333333, b"\x01"))
    answer = _reference_answer(pending, identity=CAROL, blocks=blocks)
    result = mt.process_transfer_resp(pending, answer.data, now=NOW)
    assert (result.responder, result.kms_vouched) == (CAROL, True)
    assert {cs: (k.key, k.salt) for cs, k in result.srtp_keys.items()} == answer.srtp


def test_a_member_claiming_an_identity_the_kms_did_not_fork_for_is_refused() -> None:
    kms = Kms(CountingRandom(b"kms-group"))
    pending = _secconf_transfer(_issue(kms, _desired(recipients=(SUPPORT, BOB))), SUPPORT)
    blocks = (ref.CsBlock(1, (0,), 0x11111111, b"\x01"),)
    answer = _reference_answer(pending, identity=CAROL, blocks=blocks, forked_for=BOB)
    with pytest.raises(AuthenticationFailed):
        mt.process_transfer_resp(pending, answer.data, now=NOW)


def test_an_unnamed_identity_is_refused_without_key_forking() -> None:
    # Without forking every recipient holds MPKi: nothing shows the KMS vouched.
    kms = Kms(CountingRandom(b"kms-group"))
    issued = _issue(kms, _desired(recipients=(SUPPORT, BOB), forking=False))
    pending = _secconf_transfer(issued, SUPPORT)
    blocks = (ref.CsBlock(1, (0,), 0x11111111, b"\x01"),)
    answer = _reference_answer(pending, identity=CAROL, blocks=blocks)
    with pytest.raises(TicketRejected, match="not among the ticket's recipients"):
        mt.process_transfer_resp(pending, answer.data, now=NOW)
    # ... while the recipient it names is accepted, as before.
    named = _reference_answer(pending, identity=SUPPORT, blocks=blocks)
    assert mt.process_transfer_resp(pending, named.data, now=NOW).kms_vouched is False


# -- 4. the KMS grants TRr, IDRapp and the requested key length, or says it changed them --


def _granted_tp_data(ticket: ref.Ticket) -> bytes:
    body = ticket.ticket_payload
    return body[10 : 10 + int.from_bytes(body[8:10], "big")]


def test_the_kms_grants_the_rekey_interval_applications_and_a_128_bit_tgk() -> None:
    kms = Kms(CountingRandom(b"kms-tp"))
    _, ticket = _reference_request(
        kms, rekey_seconds=300, applications=[b"app-1", b"app-2"],
        requested_keys=[(ref.TGK, 16, None)],
    )  # fmt: skip
    tp_data = _granted_tp_data(ticket)
    assert ref.tr(0, ref.TR_REKEY, ref.NTP_UTC_32, (300).to_bytes(4, "big"))[1:] in tp_data
    for app in (b"app-1", b"app-2"):
        assert ref.idr(0, ref.ROLE_APP, app, id_type=2)[1:] in tp_data
    assert [(kt, len(k)) for kt, k, _ in ticket.traffic] == [(ref.TGK, 16)]
    assert "K" not in ticket.flags  # nothing changed


@pytest.mark.parametrize(
    ("requested", "granted_bytes"),
    [
        ([(ref.TGK, 24, None)], 32),  # 192 bits: not issued, 256 instead
        ([(ref.TGK, 32, None), (ref.TEK, 16, None)], None),  # TEK: refused (ERR 15)
    ],
)
def test_the_kms_sets_k_when_it_changes_the_desired_kemac(
    requested: list[tuple[int, int, bytes | None]], granted_bytes: int | None
) -> None:
    kms = Kms(CountingRandom(b"kms-tp"))
    if granted_bytes is None:
        with pytest.raises(MikeyError) as caught:
            _reference_request(kms, requested_keys=requested)
        assert caught.value.error_no == MikeyErrorNo.INVALID_TPPAR
        return
    _, ticket = _reference_request(kms, requested_keys=requested)
    assert [len(k) for _, k, _ in ticket.traffic] == [granted_bytes]
    assert "K" in ticket.flags


def test_the_kms_grants_a_requested_spi() -> None:
    kms = Kms(CountingRandom(b"kms-tp"))
    _, ticket = _reference_request(kms, requested_keys=[(ref.TGK, 32, b"\x42\x43")])
    assert ticket.traffic[0][2] == b"\x42\x43"
    assert "K" not in ticket.flags


# -- 6. a traffic key type outside the profile: ERR 15, as the docs say -------------------


def test_a_tek_in_a_request_resp_is_refused_with_invalid_tppar() -> None:
    # A KMS (the reference) that puts a TEK among the traffic keys of the REQUEST_RESP.
    kms = Kms(CountingRandom(b"kms-tek"))
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS, psk=PSKS[ALICE], desired=_desired(), now=NOW,
        random_bytes=CountingRandom(b"alice"),
    )  # fmt: skip
    genuine = ref.parse(kms.request(pending.data))
    request = ref.RequestInit(pending.data, pending.csb_id, pending.randri, PSKS[ALICE])
    keys = [
        (ref.MPK, bytes(32), b"\x00"),
        (ref.MPK, bytes(32), b"\x00"),
        (ref.TEK, bytes(16), b"\x01"),
    ]
    data = ref.request_resp(
        request, genuine.all(ref.TICKET)[0][1:], keys, kms=KMS.encode(), now=NOW
    )
    with pytest.raises(UnsupportedMikey) as caught:
        mt.process_request_resp(pending, data, psk=PSKS[ALICE], now=NOW)
    assert caught.value.error_no == MikeyErrorNo.INVALID_TPPAR
