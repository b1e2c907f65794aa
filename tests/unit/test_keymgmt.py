"""RFC 4567 key-mgmt in SDP and the MIKEY SRTP policy <-> suite mapping."""

from __future__ import annotations

import base64

import pytest

from secconf.core.errors import MalformedMikey, NotAcceptable, UnsupportedMikey
from secconf.core.keymgmt import key_mgmt_value, mikey_message
from secconf.core.mikey import PolicyParam, SecurityPolicy, SrtpParam
from secconf.core.mikey.srtp import policy_for_suite, suite_for_policy
from secconf.core.sdes import SUITES
from secconf.core.sdp import SessionDescription
from tests.conftest import SDP_DIR


def _sdp(session_line: str = "", media_line: str = "") -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
        + session_line
        + "m=audio 5004 RTP/SAVP 0\r\n"
        + media_line
    )


def test_media_level_overrides_session_level() -> None:
    session = f"a=key-mgmt:{key_mgmt_value(b'session')}\r\n"
    media = f"a=key-mgmt:{key_mgmt_value(b'media')}\r\n"
    described = _sdp(session, media)
    assert mikey_message(described, described.media[0]) == b"media"
    only_session = _sdp(session)
    assert mikey_message(only_session, only_session.media[0]) == b"session"


def test_other_protocols_are_skipped_and_absence_is_488() -> None:
    described = _sdp(media_line="a=key-mgmt:keyp1 AAAA\r\n")
    with pytest.raises(NotAcceptable) as caught:
        mikey_message(described, described.media[0])
    assert caught.value.status_code == 488


def test_bad_base64_is_malformed() -> None:
    described = _sdp(media_line="a=key-mgmt:mikey !!!notbase64\r\n")
    with pytest.raises(MalformedMikey):
        mikey_message(described, described.media[0])


def test_the_rfc4567_example_offer_yields_its_mikey_message() -> None:
    described = SessionDescription.parse((SDP_DIR / "rfc4567-s5.1-mikey-offer.sdp").read_bytes())
    message = mikey_message(described, described.media[0])
    assert message[0] == 1  # MIKEY version 1 (RFC 3830 §6.1)
    assert key_mgmt_value(message).split(" ", 1)[1] == base64.b64encode(message).decode()


@pytest.mark.parametrize(
    "name",
    [
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
        "AES_256_CM_HMAC_SHA1_80",
        "AES_256_CM_HMAC_SHA1_32",
    ],
)
def test_policy_round_trip(name: str) -> None:
    assert suite_for_policy(policy_for_suite(3, SUITES[name])) is SUITES[name]


@pytest.mark.parametrize(
    ("tag", "name"), [(10, "AES_256_CM_HMAC_SHA1_80"), (4, "AES_256_CM_HMAC_SHA1_32")]
)
def test_an_aes_cm_policy_with_a_256_bit_key_is_rfc_6188_s_suite(tag: int, name: str) -> None:
    # RFC 3830 §6.10.1: AES-CM (1) with session encr. key length 32 and salt 14 (RFC 6188
    # Tables 3-4); the tag length picks the suite.  Absent parameters take the defaults.
    policy = SecurityPolicy(
        0,
        params=(
            PolicyParam.of_int(SrtpParam.ENCR_ALG, 1),
            PolicyParam.of_int(SrtpParam.SESSION_ENCR_KEY_LENGTH, 32),
            PolicyParam.of_int(SrtpParam.AUTH_TAG_LENGTH, tag),
        ),
    )
    assert suite_for_policy(policy) is SUITES[name]


def test_an_empty_policy_means_rfc3830_defaults() -> None:
    assert suite_for_policy(SecurityPolicy(0)) is SUITES["AES_CM_128_HMAC_SHA1_80"]


@pytest.mark.parametrize(
    "param",
    [
        PolicyParam.of_int(SrtpParam.SRTP_ENCRYPTION, 0),  # R3: no clear media
        PolicyParam.of_int(SrtpParam.SRTP_AUTHENTICATION, 0),
        PolicyParam.of_int(SrtpParam.ENCR_ALG, 2),  # AES-f8
        PolicyParam.of_int(SrtpParam.AUTH_TAG_LENGTH, 8),
        PolicyParam.of_int(SrtpParam.SESSION_ENCR_KEY_LENGTH, 24),  # AES-192-CM: not run
        PolicyParam.of_int(SrtpParam.SESSION_SALT_KEY_LENGTH, 12),  # salt not RFC 6188's
    ],
)
def test_policies_we_do_not_run_are_refused(param: PolicyParam) -> None:
    with pytest.raises(UnsupportedMikey):
        suite_for_policy(SecurityPolicy(0, params=(param,)))
    with pytest.raises(UnsupportedMikey):
        policy_for_suite(0, SUITES["AEAD_AES_128_GCM"])
