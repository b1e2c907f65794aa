"""SDES: the RFC 4568 ``a=crypto`` attribute.

Grammar (RFC 4568 §9.1)::

    a=crypto:<tag> 1*WSP <crypto-suite> 1*WSP <key-params> *(1*WSP <session-param>)
    key-param  = "inline:" key-salt ["|" lifetime] ["|" mki-value ":" mki-length]
    lifetime   = ["2^"] 1*DIGIT
    mki-length = 1*3DIGIT                 ; 1..128 bytes

Parsed attributes are fully validated (RFC 4568 §6.1-§6.3): a
:class:`CryptoAttribute` that exists is one we could use.  ``str()`` returns
the exact text that was parsed (whitespace, base64 padding, ``2^n`` spelling and
all); an attribute built from values is written in canonical form.

``str()`` is the wire form and contains the key: log ``repr()``, never ``str()``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import InvalidCryptoAttribute, UnsupportedCryptoSuite, redact_line

__all__ = [
    "MAX_CRYPTO_VALUE",
    "SUITES",
    "CryptoAttribute",
    "CryptoSuite",
    "KeyParam",
    "Mki",
    "RandomBytes",
    "SessionParam",
]

#: Longest ``a=crypto`` value accepted (a dozen key-params with MKIs fit easily).
MAX_CRYPTO_VALUE = 4096

#: A source of key bytes, passed in (the core has no randomness of its own):
#: called with a byte count, it must return exactly that many unpredictable bytes.
RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class CryptoSuite:
    """An SRTP crypto suite as RFC 4568 §6.2 (and RFC 6188, RFC 7714 §14.2) define it.

    Lengths are in bytes.
    """

    name: str
    key_length: int
    salt_length: int
    srtp_auth_tag_length: int
    srtcp_auth_tag_length: int
    srtp_lifetime_max: int
    srtcp_lifetime_max: int

    @property
    def key_salt_length(self) -> int:
        """Length of the decoded ``inline:`` value (master key || master salt)."""
        return self.key_length + self.salt_length


def _suite(name: str, key: int, salt: int, rtp_tag: int, rtcp_tag: int) -> CryptoSuite:
    return CryptoSuite(name, key, salt, rtp_tag, rtcp_tag, 2**48, 2**31)


#: Every suite registered for SDES that this module can validate.  Which of
#: them a deployment accepts is policy (Asterisk 22 takes only the first two).
SUITES: Mapping[str, CryptoSuite] = {
    suite.name: suite
    for suite in (
        _suite("AES_CM_128_HMAC_SHA1_80", 16, 14, 10, 10),  # RFC 4568 §6.2.1
        _suite("AES_CM_128_HMAC_SHA1_32", 16, 14, 4, 10),  # RFC 4568 §6.2.2
        _suite("F8_128_HMAC_SHA1_80", 16, 14, 10, 10),  # RFC 4568 §6.2.3
        _suite("AES_192_CM_HMAC_SHA1_80", 24, 14, 10, 10),  # RFC 6188 §7.1
        _suite("AES_192_CM_HMAC_SHA1_32", 24, 14, 4, 10),  # RFC 6188 §7.2
        _suite("AES_256_CM_HMAC_SHA1_80", 32, 14, 10, 10),  # RFC 6188 §7.3
        _suite("AES_256_CM_HMAC_SHA1_32", 32, 14, 4, 10),  # RFC 6188 §7.4
        _suite("AEAD_AES_128_GCM", 16, 12, 16, 16),  # RFC 7714 §14.2
        _suite("AEAD_AES_256_GCM", 32, 12, 16, 16),  # RFC 7714 §14.2
    )
}

_WSP = re.compile(r"[ \t]+")
_DIGITS = re.compile(r"^[0-9]+$")
_SUITE_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # RFC 4568 §9.2 srtp-crypto-suite / ext
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_MAX_DIGITS = 320  # enough for a 128-byte MKI value; stops pathological int() work


def _number(text: str, what: str) -> int:
    if not _DIGITS.match(text) or len(text) > _MAX_DIGITS:
        raise InvalidCryptoAttribute(f"{what} {redact_line(text)!r} is not a decimal number")
    return int(text)


@dataclass(frozen=True, slots=True)
class Mki:
    """A master key identifier (RFC 3711 §3.1): *value* sent in *length* bytes."""

    value: int
    length: int

    def __post_init__(self) -> None:
        # RFC 4568 §6.1: the MKI length is 1..128 bytes; the value must fit in it.
        if not 1 <= self.length <= 128:
            raise InvalidCryptoAttribute(f"MKI length {self.length} is not in 1..128")
        if not 0 <= self.value < 1 << (8 * self.length):
            raise InvalidCryptoAttribute(f"MKI value does not fit in {self.length} bytes")

    def __bytes__(self) -> bytes:
        return self.value.to_bytes(self.length, "big")

    def __str__(self) -> str:
        return f"{self.value}:{self.length}"


@dataclass(frozen=True, slots=True)
class KeyParam:
    """One ``inline:`` key-param: master key and salt, optional lifetime and MKI."""

    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    lifetime: int | None = None
    mki: Mki | None = None
    _source: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lifetime is not None and self.lifetime < 1:
            raise InvalidCryptoAttribute("key lifetime must be at least 1 packet")

    @classmethod
    def parse(cls, text: str, suite: CryptoSuite) -> KeyParam:
        """Parse one ``inline:key-salt[|lifetime][|mki:len]`` key-param (RFC 4568 §9.1).

        *suite* gives the key and salt lengths the decoded value is split by.
        """
        method, colon, info = text.partition(":")
        if not colon or method.lower() != "inline":
            # "inline" is the only key method defined (RFC 4568 §6.1).
            raise InvalidCryptoAttribute("key-param is not of the form inline:<key||salt>")
        fields = info.split("|")
        if len(fields) > 3:
            raise InvalidCryptoAttribute("key-param has more than key, lifetime and MKI")
        key_salt = _decode_key_salt(fields[0])
        if len(key_salt) != suite.key_salt_length:
            # RFC 4568 §6.1: a key||salt of the wrong length makes the attribute invalid.
            raise InvalidCryptoAttribute(
                f"key||salt is {len(key_salt)} bytes, {suite.name} needs {suite.key_salt_length}"
            )
        lifetime: int | None = None
        mki: Mki | None = None
        rest = fields[1:]
        if rest and ":" not in rest[0]:
            lifetime = _parse_lifetime(rest.pop(0))
        if rest:
            mki_value, mki_colon, mki_length = rest.pop(0).partition(":")
            if not mki_colon:
                raise InvalidCryptoAttribute("MKI is not of the form <value>:<length>")
            mki = Mki(_number(mki_value, "MKI value"), _number(mki_length, "MKI length"))
        if rest:
            raise InvalidCryptoAttribute("key-param fields are out of order")
        param = cls(key_salt[: suite.key_length], key_salt[suite.key_length :], lifetime, mki)
        param.check(suite)
        object.__setattr__(param, "_source", text)
        return param

    def check(self, suite: CryptoSuite) -> None:
        """Raise unless this key-param fits *suite* (RFC 4568 §6.1, §6.2)."""
        if len(self.key) != suite.key_length or len(self.salt) != suite.salt_length:
            raise InvalidCryptoAttribute(
                f"{suite.name} needs a {suite.key_length}-byte key and {suite.salt_length}-byte salt"
            )
        if self.lifetime is not None and self.lifetime > suite.srtp_lifetime_max:
            raise InvalidCryptoAttribute(f"key lifetime exceeds the {suite.name} maximum")

    def __str__(self) -> str:
        if self._source is not None:
            return self._source
        text = "inline:" + base64.b64encode(self.key + self.salt).decode("ascii")
        if self.lifetime is not None:
            exponent = self.lifetime.bit_length() - 1
            is_power = self.lifetime == 1 << exponent and exponent > 0
            text += f"|2^{exponent}" if is_power else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki}"
        return text


def _decode_key_salt(text: str) -> bytes:
    # Several implementations drop base64 padding; RFC 4568 §9.2 uses RFC 4648
    # base64, whose decoder we run with the padding restored.
    if not text or not _BASE64.match(text) or len(text) > 2 * MAX_CRYPTO_VALUE:
        raise InvalidCryptoAttribute("key||salt is not base64")
    padded = text.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise InvalidCryptoAttribute("key||salt is not valid base64") from None


def _parse_lifetime(text: str) -> int:
    if text.startswith("2^"):
        exponent = _number(text[2:], "lifetime exponent")
        if exponent > 64:
            raise InvalidCryptoAttribute("key lifetime exceeds every suite's maximum")
        return 1 << exponent
    return _number(text, "lifetime")


#: Session parameters of RFC 4568 §6.3 and whether each needs a value.
_SESSION_PARAMS: Mapping[str, bool] = {
    "KDR": True,
    "UNENCRYPTED_SRTP": False,
    "UNENCRYPTED_SRTCP": False,
    "UNAUTHENTICATED_SRTP": False,
    "FEC_ORDER": True,
    "FEC_KEY": True,
    "WSH": True,
}


@dataclass(frozen=True, slots=True)
class SessionParam:
    """One SRTP session parameter (RFC 4568 §6.3), e.g. ``KDR=10`` or ``-X-ext``."""

    name: str
    value: str | None = field(default=None, repr=False)

    @property
    def is_extension(self) -> bool:
        """True for ``-``-prefixed parameters, which a receiver may ignore (§6.3.7)."""
        return self.name.startswith("-")

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"

    def __repr__(self) -> str:
        shown = "<redacted>" if self.name == "FEC_KEY" else self.value
        return f"SessionParam({self.name!r}, {shown!r})"


def _parse_session_param(text: str, suite: CryptoSuite) -> SessionParam:
    if text.startswith("-"):
        if len(text) < 2:
            raise InvalidCryptoAttribute("empty session extension parameter")
        return SessionParam(text)
    name, equals, value = text.partition("=")
    if name not in _SESSION_PARAMS:
        # §6.3.7: an unknown parameter without "-" makes the attribute invalid.
        raise InvalidCryptoAttribute(f"unknown session parameter {redact_line(name)!r}")
    if _SESSION_PARAMS[name] != bool(equals):
        raise InvalidCryptoAttribute(f"session parameter {name} has a wrong form")
    if not equals:
        return SessionParam(name)
    if name == "KDR":
        # ABNF: 1*2DIGIT, 0..24 (the §6.3.1 prose says 1..24); accept the ABNF.
        if len(value) > 2 or _number(value, "KDR") > 24:
            raise InvalidCryptoAttribute("KDR must be 0..24")
    elif name == "WSH":
        if _number(value, "WSH") < 64:  # §6.3.6: at least 64
            raise InvalidCryptoAttribute("WSH must be at least 64")
    elif name == "FEC_ORDER":
        if value not in ("FEC_SRTP", "SRTP_FEC"):
            raise InvalidCryptoAttribute("FEC_ORDER must be FEC_SRTP or SRTP_FEC")
    elif name == "FEC_KEY":
        _parse_key_params(value, suite)
    return SessionParam(name, value)


def _parse_key_params(text: str, suite: CryptoSuite) -> tuple[KeyParam, ...]:
    params = tuple(KeyParam.parse(part, suite) for part in text.split(";"))
    _check_key_params(params)
    return params


def _check_key_params(params: tuple[KeyParam, ...]) -> None:
    if not params:
        raise InvalidCryptoAttribute("no key-params")
    if len(params) > 1:
        # RFC 4568 §6.1: several keys in one attribute all carry MKIs of one length.
        lengths = {p.mki.length if p.mki else None for p in params}
        if None in lengths or len(lengths) != 1:
            raise InvalidCryptoAttribute("several keys need MKIs of equal length")
        if len({p.mki.value for p in params if p.mki}) != len(params):
            raise InvalidCryptoAttribute("MKI values must differ between keys")
        if len({p.key + p.salt for p in params}) != len(params):
            raise InvalidCryptoAttribute("master keys in one attribute must differ")


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One ``a=crypto`` value (without the ``crypto:`` name)."""

    tag: int
    suite: CryptoSuite
    key_params: tuple[KeyParam, ...]
    session_params: tuple[SessionParam, ...] = ()
    _source: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:  # 1*9DIGIT
            raise InvalidCryptoAttribute(f"tag {self.tag} is not 1 to 9 digits")
        for param in self.key_params:
            param.check(self.suite)
        _check_key_params(self.key_params)

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an ``a=crypto:`` line.

        Raises :class:`InvalidCryptoAttribute` for anything RFC 4568 calls
        invalid and :class:`UnsupportedCryptoSuite` for a well-formed attribute
        whose suite is not in :data:`SUITES`.
        """
        if len(value) > MAX_CRYPTO_VALUE:
            raise InvalidCryptoAttribute(f"crypto attribute longer than {MAX_CRYPTO_VALUE}")
        if any(ch in value for ch in "\r\n\0"):
            raise InvalidCryptoAttribute("crypto attribute contains CR, LF or NUL")
        fields = _WSP.split(value)
        if len(fields) < 3 or fields[0] == "":
            raise InvalidCryptoAttribute(
                f"crypto attribute {redact_line(value)!r} is not '<tag> <suite> <key-params>'"
            )
        tag_text, suite_name, key_text, *session_texts = fields
        if len(tag_text) > 9:
            raise InvalidCryptoAttribute("tag is longer than 9 digits")
        tag = _number(tag_text, "tag")
        if not _SUITE_NAME.match(suite_name):
            raise InvalidCryptoAttribute(f"crypto suite {redact_line(suite_name)!r} is malformed")
        suite = SUITES.get(suite_name.upper())
        if suite is None:
            raise UnsupportedCryptoSuite(f"unsupported crypto suite {suite_name!r}")
        if session_texts and session_texts[-1] == "":
            session_texts.pop()  # trailing whitespace
        key_params = _parse_key_params(key_text, suite)
        session_params = tuple(_parse_session_param(text, suite) for text in session_texts)
        attribute = cls(tag, suite, key_params, session_params)
        object.__setattr__(attribute, "_source", value)
        return attribute

    @classmethod
    def generate(
        cls,
        tag: int,
        suite: CryptoSuite,
        random_bytes: RandomBytes,
        *,
        lifetime: int | None = None,
        mki: Mki | None = None,
    ) -> CryptoAttribute:
        """A new attribute with a fresh master key and salt drawn from *random_bytes*."""
        material = random_bytes(suite.key_salt_length)
        if not isinstance(material, bytes) or len(material) != suite.key_salt_length:
            raise ValueError(f"random_bytes must return {suite.key_salt_length} bytes")
        key_param = KeyParam(
            material[: suite.key_length], material[suite.key_length :], lifetime, mki
        )
        return cls(tag, suite, (key_param,))

    @property
    def key(self) -> bytes:
        """Master key of the first key-param."""
        return self.key_params[0].key

    @property
    def salt(self) -> bytes:
        """Master salt of the first key-param."""
        return self.key_params[0].salt

    def __str__(self) -> str:
        if self._source is not None:
            return self._source
        parts = [str(self.tag), self.suite.name, ";".join(map(str, self.key_params))]
        parts.extend(map(str, self.session_params))
        return " ".join(parts)

    def __repr__(self) -> str:
        params = " ".join(map(str, (p.name for p in self.session_params)))
        return (
            f"CryptoAttribute(tag={self.tag}, suite={self.suite.name}, "
            f"keys={len(self.key_params)}, params=[{params}])"
        )
