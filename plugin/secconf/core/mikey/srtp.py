"""SRTP security policies in MIKEY (RFC 3830 §6.10.1) for the SDES suites secconf runs.

MIKEY names SRTP parameters one by one; SDP-era code names suites.  These two
functions translate for the suites the media path supports (AES-CM with a 128-bit
key, RFC 4568 §6.2.1-§6.2.2, or a 256-bit key, RFC 6188 §7.3-§7.4; HMAC-SHA1 with
an 80- or 32-bit tag), refusing everything else with ERR "Invalid SPpar".
"""

from __future__ import annotations

from ..errors import MikeyErrorNo, UnsupportedMikey
from ..sdes import SUITES, CryptoSuite
from .constants import SrtpAuthAlg, SrtpEncrAlg, SrtpParam
from .payloads import PolicyParam, SecurityPolicy

__all__ = ["DEFAULT_SRTP_SUITE", "policy_for_suite", "policy_key_lengths", "suite_for_policy"]

#: (session encryption key length in bytes, SRTP auth tag length in bytes) -> suite.  RFC 3830
#: §6.10.1 has one encryption algorithm value for AES-CM (1) whatever the key length; type 1
#: (session encr. key length) tells AES_CM_128 (16) from RFC 6188's AES_256_CM (32).
_SUITES_BY_LENGTHS = {
    (16, 10): "AES_CM_128_HMAC_SHA1_80",
    (16, 4): "AES_CM_128_HMAC_SHA1_32",
    (32, 10): "AES_256_CM_HMAC_SHA1_80",
    (32, 4): "AES_256_CM_HMAC_SHA1_32",
}
#: The suite RFC 3830 §6.10.1's defaults amount to (AES-CM, 128-bit key, 112-bit salt,
#: HMAC-SHA-1, 80-bit tag): what a Responder answers for a crypto session offered
#: with no policy (RFC 6043 §6.1.1: "a security profile MUST be provided").
DEFAULT_SRTP_SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]


def policy_for_suite(policy_no: int, suite: CryptoSuite) -> SecurityPolicy:
    """The SP payload describing *suite* (RFC 3830 Table 6.10.1.a parameters)."""
    if suite.name not in _SUITES_BY_LENGTHS.values():
        raise UnsupportedMikey(f"{suite.name} has no MIKEY policy here", MikeyErrorNo.INVALID_SPPAR)
    return SecurityPolicy(
        policy_no,
        params=(
            PolicyParam.of_int(SrtpParam.ENCR_ALG, SrtpEncrAlg.AES_CM),
            PolicyParam.of_int(SrtpParam.SESSION_ENCR_KEY_LENGTH, suite.key_length),
            PolicyParam.of_int(SrtpParam.AUTH_ALG, SrtpAuthAlg.HMAC_SHA_1),
            PolicyParam.of_int(SrtpParam.SESSION_AUTH_KEY_LENGTH, 20),
            PolicyParam.of_int(SrtpParam.SESSION_SALT_KEY_LENGTH, suite.salt_length),
            PolicyParam.of_int(SrtpParam.SRTP_ENCRYPTION, 1),
            PolicyParam.of_int(SrtpParam.SRTCP_ENCRYPTION, 1),
            PolicyParam.of_int(SrtpParam.SRTP_AUTHENTICATION, 1),
            PolicyParam.of_int(SrtpParam.AUTH_TAG_LENGTH, suite.srtp_auth_tag_length),
        ),
    )


def policy_key_lengths(policy: SecurityPolicy) -> tuple[int, int]:
    """(master key, master salt) lengths in bytes an SRTP policy asks the TEK derivation for.

    RFC 3830 §4.1.3 derives the TEK and salt "of the length the security
    protocol needs"; the policy says it (Table 6.10.1.a, types 1 and 4), absent
    parameters taking the defaults (16 and 14 bytes).  A Responder that changes
    the policy to AES-CM with a 256-bit key (RFC 6188) changes this.
    """
    if policy.prot_type != 0:
        raise UnsupportedMikey("security protocol is not SRTP", MikeyErrorNo.INVALID_SP)
    key = policy.get(SrtpParam.SESSION_ENCR_KEY_LENGTH)
    salt = policy.get(SrtpParam.SESSION_SALT_KEY_LENGTH)
    key_bytes = 16 if key is None else key.int_value
    salt_bytes = 14 if salt is None else salt.int_value
    if not (0 < key_bytes <= 64 and 0 <= salt_bytes <= 64):
        raise UnsupportedMikey("SRTP key or salt length out of range", MikeyErrorNo.INVALID_SPPAR)
    return key_bytes, salt_bytes


def suite_for_policy(policy: SecurityPolicy) -> CryptoSuite:
    """The suite an SP payload amounts to; absent parameters take RFC 3830 §6.10.1 defaults."""

    def value(param: SrtpParam, default: int) -> int:
        found = policy.get(param)
        return default if found is None else found.int_value

    if policy.prot_type != 0:
        raise UnsupportedMikey("security protocol is not SRTP", MikeyErrorNo.INVALID_SP)
    # RFC 3830 §6.10.1 defaults: AES-CM, 128-bit keys, HMAC-SHA-1, 112-bit salt, tag 80 bits,
    # SRTP/SRTCP encryption and SRTP authentication on.  A 256-bit key (RFC 6188) keeps the
    # 112-bit salt (Tables 3-4).
    key_length = value(SrtpParam.SESSION_ENCR_KEY_LENGTH, 16)
    wanted = (
        value(SrtpParam.ENCR_ALG, SrtpEncrAlg.AES_CM) == SrtpEncrAlg.AES_CM
        and value(SrtpParam.AUTH_ALG, SrtpAuthAlg.HMAC_SHA_1) == SrtpAuthAlg.HMAC_SHA_1
        and value(SrtpParam.SESSION_AUTH_KEY_LENGTH, 20) == 20
        and value(SrtpParam.SESSION_SALT_KEY_LENGTH, 14) == 14
        and value(SrtpParam.SRTP_ENCRYPTION, 1) == 1
        and value(SrtpParam.SRTCP_ENCRYPTION, 1) == 1
        and value(SrtpParam.SRTP_AUTHENTICATION, 1) == 1
    )
    suite = _SUITES_BY_LENGTHS.get((key_length, value(SrtpParam.AUTH_TAG_LENGTH, 10)))
    if not wanted or suite is None:
        # R3: no policy that switches protection off, no algorithm we do not run.
        raise UnsupportedMikey("SRTP policy not supported", MikeyErrorNo.INVALID_SPPAR)
    return SUITES[suite]
