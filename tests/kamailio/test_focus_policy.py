"""The pure focus policy (secconf.core.focus), without Kamailio or Redis."""

from __future__ import annotations

import re

import pytest

from secconf.core.errors import Forbidden, InsecureMedia, MalformedSdp, NotAcceptable
from secconf.core.focus import (
    TargetKind,
    answer_to_participant,
    authenticated_identity,
    check_offer,
    classify_target,
    offer_ssrcs,
    offer_to_upstream,
    rejected_answer,
    warning_header,
)
from secconf.core.gate import Flow
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES, CryptoAttribute
from secconf.core.sdp import SessionDescription

from .conftest import UPSTREAM_ANSWER, crypto_line, offer

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
FACTORY = re.compile("conf-factory")
CONFERENCE = re.compile("conf-(?P<id>[0-9a-f]{16})")


def test_classify_target() -> None:
    assert classify_target("conf-factory", FACTORY, CONFERENCE).kind is TargetKind.FACTORY
    target = classify_target("conf-0123456789abcdef", FACTORY, CONFERENCE)
    assert (target.kind, target.conference_id) == (TargetKind.CONFERENCE, "0123456789abcdef")
    assert classify_target("bob", FACTORY, CONFERENCE).kind is TargetKind.OTHER
    assert classify_target(None, FACTORY, CONFERENCE).kind is TargetKind.OTHER


def test_identity_only_from_a_trusted_source() -> None:
    # RFC 3325 §5: trusted elements are named by transport, address and port.
    trusted = frozenset({"udp:10.0.0.1:5060", "tls:10.0.0.3:*"})
    proxy = Flow.of("udp", "10.0.0.1", 5060)
    assert (
        authenticated_identity(proxy, trusted, '"A" <sip:Alice@Example.COM:5060;x=1>')
        == "sip:Alice@example.com"
    )
    assert authenticated_identity(Flow.of("tls", "10.0.0.3", 40000), trusted, "<sip:a@b>")
    for stranger in (
        Flow.of("udp", "10.0.0.2", 5060),  # another host
        Flow.of("udp", "10.0.0.1", 5061),  # another process on the proxy's host
        Flow.of("tcp", "10.0.0.1", 5060),  # another transport
        Flow.of("udp", "10.0.0.3", 40000),
    ):
        with pytest.raises(Forbidden):
            authenticated_identity(stranger, trusted, "<sip:alice@example.com>")
    with pytest.raises(Forbidden):
        authenticated_identity(proxy, trusted, None)
    with pytest.raises(Forbidden):
        authenticated_identity(proxy, trusted, "<tel:+123>")


def test_offer_checks() -> None:
    _, streams = check_offer(
        offer(crypto=[crypto_line(1, "AES_256_CM_HMAC_SHA1_80"), crypto_line(7)]), SUITE
    )
    assert [(s.index, s.proto, s.tag) for s in streams] == [(0, "RTP/SAVP", 7)]
    with pytest.raises(InsecureMedia):
        check_offer(offer(proto="RTP/AVP", crypto=[]), SUITE)
    with pytest.raises(NotAcceptable):
        check_offer(offer(crypto=[]), SUITE)
    with pytest.raises(MalformedSdp):
        check_offer(b"garbage", SUITE)


def test_upstream_gets_no_key_and_participant_gets_the_group_key() -> None:
    description, streams = check_offer(offer(crypto=[crypto_line(3)]), SUITE)
    upstream = offer_to_upstream(description, streams, address="10.1.1.1", ports=[7000])
    text = str(upstream)
    assert "a=crypto" not in text
    assert "m=audio 7000 RTP/AVP 0" in text
    assert "10.1.1.1" in text
    key = GroupKey(4, SUITE, bytes(range(16)), bytes(range(14)))
    answer = answer_to_participant(UPSTREAM_ANSWER, streams, key, address="10.2.2.2", ports=[9000])
    section = answer.media[0]
    assert section.proto == "RTP/SAVP"
    assert section.port == 9000
    crypto = CryptoAttribute.parse(section.attributes("crypto")[0] or "")
    assert crypto.tag == 3
    assert crypto.key_params[0].key == key.key
    assert "a=sendrecv" in str(answer)  # everything else kept


def test_rejected_answer_and_ssrcs_and_warning() -> None:
    body = rejected_answer([("audio", "RTP/SAVP", "0"), ("video", "RTP/SAVP", "96")])
    assert [m.port for m in SessionDescription.parse(body).media] == [0, 0]
    assert offer_ssrcs(SessionDescription.parse(offer(extra="a=ssrc:7 cname:x"))) == (7,)
    warning = warning_header("h", Forbidden('a "b"\r\n'))
    assert warning == '399 h "a \\"b\\"  "'


# -- KMS mode ------------------------------------------------------------------------

KMS_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=key-mgmt:mikey AQID\r\n"
)


def test_kms_offer_is_recognised_and_checked() -> None:
    from secconf.core.focus import OfferMode, check_offer_kms, offer_mode, offered_remote

    description = SessionDescription.parse(KMS_OFFER)
    assert offer_mode(description) is OfferMode.KMS
    assert offer_mode(SessionDescription.parse(offer())) is OfferMode.SDES
    streams, mikey = check_offer_kms(description)
    assert mikey == b"\x01\x02\x03"
    assert [(s.index, s.proto) for s in streams] == [(0, "RTP/SAVP")]
    assert offered_remote(description, streams) == ("127.0.0.1", (30000,))
    clear = SessionDescription.parse(KMS_OFFER.replace(b"RTP/SAVP", b"RTP/AVP"))
    with pytest.raises(InsecureMedia):
        check_offer_kms(clear)


def test_kms_answer_carries_the_transfer_resp_and_no_key_reaches_the_mixer() -> None:
    from secconf.core.focus import answer_to_participant_kms, check_offer_kms

    description = SessionDescription.parse(KMS_OFFER)
    streams, _ = check_offer_kms(description)
    upstream = bytes(offer_to_upstream(description, streams, address="10.0.0.1", ports=[4000]))
    assert b"key-mgmt" not in upstream
    assert b"RTP/AVP" in upstream
    answer = answer_to_participant_kms(
        UPSTREAM_ANSWER, streams, b"\x01resp", address="192.0.2.1", ports=[5000]
    )
    section = answer.media[0]
    assert section.proto == "RTP/SAVP"
    assert section.port == 5000
    assert section.attributes("key-mgmt") == ["mikey AXJlc3A="]
    assert section.attributes("crypto") == []


def test_answered_crypto_of_a_reinvite_answer() -> None:
    from secconf.core.focus import OfferedStream, answered_crypto

    streams = (OfferedStream(0, "RTP/SAVP", 2),)
    good = SessionDescription.parse(offer(crypto=[crypto_line(2)]))
    (attribute,) = answered_crypto(good, streams, SUITE)
    assert attribute.tag == 2
    cases = [
        (offer(crypto=[crypto_line(1)]), NotAcceptable),  # another tag than offered
        (offer(crypto=[crypto_line(2), crypto_line(3)]), NotAcceptable),  # two lines
        (offer(crypto=[crypto_line(2, "AES_CM_128_HMAC_SHA1_32")]), NotAcceptable),
        (offer(proto="RTP/AVP", crypto=[]), InsecureMedia),  # downgrade
        (offer(port=0), NotAcceptable),  # stream rejected
    ]
    for body, error in cases:
        with pytest.raises(error):
            answered_crypto(SessionDescription.parse(body), streams, SUITE)
