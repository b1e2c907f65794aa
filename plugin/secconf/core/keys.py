"""Conference key material, kept out of reprs and logs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .mikey.constants import PrfFunc
from .mikey.prf import prf
from .sdes import CryptoSuite, KeyParam, RandomBytes

__all__ = ["SUITE_KEY_CONSTANT", "GroupKey", "key_fingerprint", "suite_key"]


def key_fingerprint(key: bytes, salt: bytes) -> str:
    """Short SHA-256 fingerprint for logs and displays: tells keys apart, reveals nothing usable."""
    return hashlib.sha256(b"secconf-key-fp\0" + key + salt).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class GroupKey:
    """The SRTP master key and salt the focus sends with during one key epoch.

    R5: one group key protects what the focus sends to every participant in its
    suite, so the same crypto attribute appears in every such dialog; a leg in
    another suite gets :func:`suite_key` of it (docs/mikey-decisions.md #30).
    """

    epoch: int
    suite: CryptoSuite
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.epoch < 0:
            raise ValueError("epoch must not be negative")
        KeyParam(self.key, self.salt).check(self.suite)

    @classmethod
    def generate(cls, epoch: int, suite: CryptoSuite, random_bytes: RandomBytes) -> GroupKey:
        """A fresh key for *epoch* from the *random_bytes* source passed in."""
        material = random_bytes(suite.key_salt_length)
        if not isinstance(material, bytes) or len(material) != suite.key_salt_length:
            raise ValueError(f"random_bytes must return {suite.key_salt_length} bytes")
        return cls(epoch, suite, material[: suite.key_length], material[suite.key_length :])

    @property
    def key_param(self) -> KeyParam:
        return KeyParam(self.key, self.salt)

    @property
    def fingerprint(self) -> str:
        """See :func:`key_fingerprint`."""
        return key_fingerprint(self.key, self.salt)


#: PRF label constant of a per-suite key ("SUIT"; unlike RFC 3830 §4.1.3's and RFC 6043
#: Table 5.1's constants, so no MIKEY-derived key shares a label with it).
SUITE_KEY_CONSTANT = 0x53554954


def suite_key(key: GroupKey, suite: CryptoSuite) -> GroupKey:
    """The epoch's key for a leg in *suite* (docs/mikey-decisions.md #30).

    In the key's own suite, the key itself.  In another, PRF(key || salt,
    label) cut to the suite's key and salt lengths, with the PRF of RFC 3830
    §4.1.2 as RFC 6043 §6.1 updates it (HMAC-SHA-256) and label = constant ||
    epoch (32 bits) || the suite's RFC 4568 name: every suite's key of an
    epoch follows from the epoch's one secret, so nothing more is stored or
    sent to the focus's peers than the epoch's key.
    """
    if suite == key.suite:
        return key
    label = SUITE_KEY_CONSTANT.to_bytes(4, "big") + key.epoch.to_bytes(4, "big")
    material = prf(
        key.key + key.salt,
        label + suite.name.encode(),
        8 * suite.key_salt_length,
        PrfFunc.PRF_HMAC_SHA_256,
    )
    return GroupKey(key.epoch, suite, material[: suite.key_length], material[suite.key_length :])
