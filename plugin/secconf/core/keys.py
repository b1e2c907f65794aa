"""Conference key material, kept out of reprs and logs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .sdes import CryptoSuite, KeyParam, RandomBytes

__all__ = ["GroupKey", "key_fingerprint"]


def key_fingerprint(key: bytes, salt: bytes) -> str:
    """Short SHA-256 fingerprint for logs and displays: tells keys apart, reveals nothing usable."""
    return hashlib.sha256(b"secconf-key-fp\0" + key + salt).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class GroupKey:
    """The SRTP master key and salt the focus sends with during one key epoch.

    R5: one group key protects what the focus sends to every participant, so
    the same crypto attribute appears in every dialog of the conference.
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
