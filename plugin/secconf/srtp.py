"""SRTP through libsrtp (pylibsrtp): the profiles secconf uses and how libsrtp says "no".

Shared by the media edge (secconf.media) and the participant's endpoint (secconf.client),
which must never import each other ("the edge is no participant",
../shared/architecture.json): one table of what pylibsrtp offers, one reading of its errors.
"""

from __future__ import annotations

from typing import Final

import pylibsrtp

from secconf.core.errors import UnsupportedCryptoSuite
from secconf.core.sdes import SUITES, CryptoSuite

__all__ = ["AUTH_ERRORS", "PROFILES", "RECV_SIZE", "REPLAY_ERRORS", "profile_for"]

#: Datagram receive size: an MTU-sized SRTP packet with room to spare.
RECV_SIZE: Final = 2048

#: SDES suite name -> pylibsrtp profile, for the suites pylibsrtp 1.0 exposes.
PROFILES: Final[dict[str, int]] = {
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


def profile_for(suite: CryptoSuite | str) -> tuple[CryptoSuite, int]:
    """The :class:`CryptoSuite` and pylibsrtp profile for *suite*, or UnsupportedCryptoSuite."""
    name = suite.name if isinstance(suite, CryptoSuite) else suite
    known = SUITES.get(name)
    profile = PROFILES.get(name)
    if known is None or profile is None:
        raise UnsupportedCryptoSuite(
            f"crypto suite {name!r} is not supported by the SRTP endpoint "
            f"(pylibsrtp offers {', '.join(PROFILES)})"
        )
    return known, profile
