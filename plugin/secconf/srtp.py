"""SRTP through libsrtp (pylibsrtp): the suites secconf runs and how libsrtp says "no".

Shared by the media edge (secconf.media) and the participant's endpoint (secconf.client),
which must never import each other ("the edge is no participant",
../shared/architecture.json): one table of what the SRTP layer runs, one factory of
sessions (:func:`srtp_session`), one reading of libsrtp's errors.  Nothing outside this
module touches pylibsrtp's profiles or policies.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from collections.abc import Callable
from typing import Any, Final

import pylibsrtp

from secconf.core.errors import UnsupportedCryptoSuite
from secconf.core.sdes import SUITES, CryptoSuite

__all__ = [
    "AUTH_ERRORS",
    "RECV_SIZE",
    "REPLAY_ERRORS",
    "SUPPORTED_SUITES",
    "srtp_session",
    "supported_suite",
]

log = logging.getLogger(__name__)

#: Datagram receive size: an MTU-sized SRTP packet with room to spare.
RECV_SIZE: Final = 2048

#: SDES suite name -> pylibsrtp profile, for the suites pylibsrtp 1.0 exposes itself.
_PROFILES: Final[dict[str, int]] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}

#: pylibsrtp's error texts for a replayed or too old packet (RFC 3711 §3.3.2: dropped quietly):
#: srtp_err_status_replay_fail, replay_old, pkt_idx_old.
REPLAY_ERRORS: Final = frozenset(pylibsrtp.ERRORS[i] for i in (9, 10, 26))
#: ... and for a packet whose authentication tag does not verify (srtp_err_status_auth_fail).
AUTH_ERRORS: Final = frozenset(pylibsrtp.ERRORS[i] for i in (7,))


# -- AES_256_CM_HMAC_SHA1_80/_32 (RFC 6188) through pylibsrtp's private parts -----------------
#
# Why: libsrtp runs AES-256-CM (srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80/_32), but
# pylibsrtp (written for 1.0.0, the version requirements.lock pins) offers only profiles, and
# libsrtp has no DTLS-SRTP profile for AES-256-CM; its cffi declarations keep
# srtp_crypto_policy_t opaque and do not declare those setters.  Its compiled module
# (_binding.abi3.so, libsrtp linked in statically) exports them, so ctypes calls them on the
# ``rtp`` / ``rtcp`` crypto policies of a pylibsrtp.Policy built for AES-CM-128 (same
# authentication, a key buffer checked only for being *at least* 30 bytes, so the 46-byte
# key || salt fits), before the Session copies the policy.  The private parts used:
# ``Policy._policy`` (the srtp_policy_t) and the module ``pylibsrtp._binding`` (its file, its
# ffi).  If any of that changes, :func:`_self_test` fails and the two suites are simply not
# offered (UnsupportedCryptoSuite, as before): fail closed, never a wrong cipher.

#: SRTP and SRTCP setters per suite: RFC 6188 Tables 3/4 — SRTCP's tag is 80 bits in both.
_AES_256_CM: Final = {
    "AES_256_CM_HMAC_SHA1_80": ("aes_cm_256_hmac_sha1_80", "aes_cm_256_hmac_sha1_80"),
    "AES_256_CM_HMAC_SHA1_32": ("aes_cm_256_hmac_sha1_32", "aes_cm_256_hmac_sha1_80"),
}
_CryptoPolicySetter = Callable[[int], None]


def _binding() -> Any:
    """pylibsrtp's compiled cffi module (no stubs; ImportError if another pylibsrtp lacks it)."""
    return importlib.import_module("pylibsrtp._binding")


def _load_setters() -> dict[str, _CryptoPolicySetter]:
    library = ctypes.CDLL(_binding().__file__)
    setters: dict[str, _CryptoPolicySetter] = {}
    for name in {n for pair in _AES_256_CM.values() for n in pair}:
        function = getattr(library, f"srtp_crypto_policy_set_{name}")
        function.argtypes, function.restype = [ctypes.c_void_p], None  # void f(crypto_policy *)
        setters[name] = function
    return setters


def _aes_256_cm_policy(
    suite: str, key_and_salt: bytes, ssrc_type: int, setters: dict[str, _CryptoPolicySetter]
) -> pylibsrtp.Policy:
    """A pylibsrtp.Policy for an RFC 6188 AES-256-CM suite (the one place reaching inside it)."""
    ffi = _binding().ffi
    if ffi.sizeof("srtp_crypto_policy_t") != 24:  # 6 ints in libsrtp 2.x/3.x; else unknown
        raise RuntimeError("unexpected srtp_crypto_policy_t layout")
    policy = pylibsrtp.Policy(
        key=key_and_salt,
        ssrc_type=ssrc_type,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    rtp_setter, rtcp_setter = _AES_256_CM[suite]
    for field, setter in (("rtp", rtp_setter), ("rtcp", rtcp_setter)):
        address = ffi.addressof(policy._policy, field)
        setters[setter](int(ffi.cast("uintptr_t", address)))
    return policy


#: Known answer: RFC 6188 §7.2's master key and salt, an RTP packet (SSRC 0xDECAFBAD, seq
#: 0x1234, 16 bytes of 0xAB) protected as RFC 3711 §4.1.1/§4.2/§4.3 and RFC 6188 §2-§3 say
#: (tests/unit/test_rfc6188.py recomputes it from the RFC text with pyca/cryptography's AES).
_SELF_TEST_KEY: Final = bytes.fromhex(
    "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b63b04803de51ee7c96423ab5b78d2"
)
_SELF_TEST_RTP: Final = bytes.fromhex("80001234000000a0decafbad") + b"\xab" * 16
_SELF_TEST_SRTP: Final = {
    "AES_256_CM_HMAC_SHA1_80": bytes.fromhex(
        "80001234000000a0decafbad326512356ac6f6c82e7d80c886028169c7a821a50c89e7b0fae9"
    ),
    "AES_256_CM_HMAC_SHA1_32": bytes.fromhex(
        "80001234000000a0decafbad326512356ac6f6c82e7d80c886028169c7a821a5"
    ),
}


def _self_test() -> dict[str, _CryptoPolicySetter]:
    """The setters if libsrtp protects the known answer exactly, else empty (logged)."""
    try:
        setters = _load_setters()
        for suite, expected in _SELF_TEST_SRTP.items():
            outbound = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            sender = pylibsrtp.Session(_aes_256_cm_policy(suite, _SELF_TEST_KEY, outbound, setters))
            inbound = pylibsrtp.Policy.SSRC_ANY_INBOUND
            receiver = pylibsrtp.Session(
                _aes_256_cm_policy(suite, _SELF_TEST_KEY, inbound, setters)
            )
            if sender.protect(_SELF_TEST_RTP) != expected:
                raise RuntimeError(f"{suite}: libsrtp's output differs from RFC 6188's")
            if receiver.unprotect(expected) != _SELF_TEST_RTP:
                raise RuntimeError(f"{suite}: libsrtp does not open RFC 6188's packet")
    except (
        AttributeError,
        ImportError,
        KeyError,
        OSError,
        RuntimeError,
        TypeError,
        ValueError,
        pylibsrtp.Error,
    ) as exc:
        log.warning(
            "AES_256_CM_HMAC_SHA1_80/_32 disabled: pylibsrtp %s failed the RFC 6188 self-test (%s)",
            pylibsrtp.__version__,
            exc,
        )
        return {}
    return setters


_AES_256_CM_SETTERS: Final = _self_test()

#: The suites this SRTP layer runs (a subset of :data:`secconf.core.sdes.SUITES`).
SUPPORTED_SUITES: Final[tuple[str, ...]] = tuple(_PROFILES) + (
    tuple(_AES_256_CM) if _AES_256_CM_SETTERS else ()
)


def supported_suite(suite: CryptoSuite | str) -> CryptoSuite:
    """The :class:`CryptoSuite` named by *suite* if the SRTP layer runs it, else UnsupportedCryptoSuite."""
    name = suite.name if isinstance(suite, CryptoSuite) else suite
    known = SUITES.get(name)
    if known is None or name not in SUPPORTED_SUITES:
        raise UnsupportedCryptoSuite(
            f"crypto suite {name!r} is not supported by the SRTP endpoint "
            f"(supported: {', '.join(SUPPORTED_SUITES)})"
        )
    return known


def srtp_session(
    suite: CryptoSuite | str, key: bytes, salt: bytes, *, inbound: bool
) -> pylibsrtp.Session:
    """A pylibsrtp session for any SSRC (inbound or outbound) under *suite*, *key*, *salt*.

    A key or salt of the wrong length is a ValueError (naming the lengths, never the bytes):
    libsrtp would read as many bytes as the suite needs, whatever the buffer holds.
    """
    known = supported_suite(suite)
    if len(key) != known.key_length or len(salt) != known.salt_length:
        raise ValueError(
            f"{known.name} needs a {known.key_length}-byte key and {known.salt_length}-byte salt"
        )
    key_and_salt = bytes(key) + bytes(salt)  # RFC 4568 §6.1 order: master key || master salt
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    if known.name in _AES_256_CM:
        policy = _aes_256_cm_policy(known.name, key_and_salt, ssrc_type, _AES_256_CM_SETTERS)
    else:
        policy = pylibsrtp.Policy(
            key=key_and_salt, ssrc_type=ssrc_type, srtp_profile=_PROFILES[known.name]
        )
    return pylibsrtp.Session(policy)
