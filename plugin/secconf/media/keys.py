"""SRTP key material of the edge's legs, and pylibsrtp sessions made from it.

Suites and sessions come from :mod:`secconf.srtp` (:func:`~secconf.srtp.supported_suite`,
:func:`~secconf.srtp.srtp_session`): one table of what the SRTP layer runs.
Keys never appear in ``repr()``; the JSON form (``{"suite", "key", "salt"}``,
key and salt in base64) is only parsed here, never written back except where
the API hands the edge's own internal-leg key to the Kamailio module.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp

from secconf.core.edge import BadEdgeRequest
from secconf.core.errors import SecconfError, UnsupportedCryptoSuite
from secconf.core.keys import GroupKey, key_fingerprint
from secconf.core.sdes import CryptoAttribute, RandomBytes
from secconf.srtp import srtp_session, supported_suite

__all__ = ["SrtpKey", "session"]


@dataclass(frozen=True, slots=True)
class SrtpKey:
    """Suite, master key and salt of one SRTP sender (a participant, Asterisk, the edge)."""

    suite: str
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)

    def __post_init__(self) -> None:
        try:
            known = supported_suite(self.suite)
        except UnsupportedCryptoSuite as exc:
            raise BadEdgeRequest(exc.message) from None
        if len(self.key) != known.key_length or len(self.salt) != known.salt_length:
            raise BadEdgeRequest(
                f"{known.name} needs a {known.key_length}-byte key and "
                f"{known.salt_length}-byte salt"
            )

    @classmethod
    def from_json(cls, value: Any, what: str) -> SrtpKey:
        """``{"suite": NAME, "key": BASE64, "salt": BASE64}``; 400 (no key bytes quoted) otherwise."""
        if not isinstance(value, dict) or set(value) != {"suite", "key", "salt"}:
            raise BadEdgeRequest(f"{what} must be an object with exactly suite, key and salt")
        suite, key, salt = value["suite"], value["key"], value["salt"]
        if not all(isinstance(v, str) and len(v) <= 128 for v in (suite, key, salt)):
            raise BadEdgeRequest(f"{what}: suite, key and salt must be short strings")
        try:
            raw_key = base64.b64decode(key, validate=True)
            raw_salt = base64.b64decode(salt, validate=True)
        except (binascii.Error, ValueError):
            raise BadEdgeRequest(f"{what}: key and salt must be base64") from None
        try:
            known = supported_suite(suite)
        except UnsupportedCryptoSuite as exc:
            raise BadEdgeRequest(f"{what}: {exc.message}") from None
        if len(raw_key) != known.key_length or len(raw_salt) != known.salt_length:
            raise BadEdgeRequest(
                f"{what}: {known.name} needs a {known.key_length}-byte key and "
                f"{known.salt_length}-byte salt"
            )
        return cls(known.name, raw_key, raw_salt)

    @classmethod
    def from_crypto_line(cls, value: Any, what: str) -> SrtpKey:
        """The value of an SDP ``a=crypto:`` line (RFC 4568), as the Kamailio module has it."""
        if not isinstance(value, str):
            raise BadEdgeRequest(f"{what} must be a string")
        try:
            attribute = CryptoAttribute.parse(value.removeprefix("a=").removeprefix("crypto:"))
        except SecconfError as exc:
            raise BadEdgeRequest(f"{what}: {exc.message}") from None
        if attribute.session_params or len(attribute.key_params) != 1:
            raise BadEdgeRequest(f"{what}: session parameters and several keys are not supported")
        return cls(attribute.suite.name, attribute.key, attribute.salt)

    @classmethod
    def generate(cls, suite: str, random_bytes: RandomBytes) -> SrtpKey:
        known = supported_suite(suite)
        raw = random_bytes(known.key_salt_length)
        return cls(known.name, raw[: known.key_length], raw[known.key_length :])

    @classmethod
    def from_group_key(cls, group: GroupKey) -> SrtpKey:
        return cls(group.suite.name, group.key, group.salt)

    def to_json(self) -> dict[str, str]:
        """The wire form; holds the key.  Only for handing the edge's own key out."""
        return {
            "suite": self.suite,
            "key": base64.b64encode(self.key).decode(),
            "salt": base64.b64encode(self.salt).decode(),
        }

    def packed(self) -> bytes:
        """key || salt (for wrapping at rest)."""
        return self.key + self.salt

    @classmethod
    def unpacked(cls, suite: str, raw: bytes) -> SrtpKey:
        known = supported_suite(suite)
        return cls(known.name, raw[: known.key_length], raw[known.key_length :])

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key, self.salt)


def session(key: SrtpKey, *, inbound: bool) -> pylibsrtp.Session:
    """A pylibsrtp session for any SSRC (inbound or outbound) under *key*."""
    return srtp_session(key.suite, key.key, key.salt, inbound=inbound)
