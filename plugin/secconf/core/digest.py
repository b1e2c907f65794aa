"""SIP digest authentication (RFC 3261 §22, RFC 7616), sans-IO.

Both sides of the exchange, for the focus (challenge, verify) and for the
participant agent (respond).  Nothing here reads a clock or draws random
numbers: the time, the server secret and the client nonce are passed in.

Server side:

* :func:`make_nonce` — ``<timestamp hex>.<HMAC-SHA256(secret, timestamp, binding)>``:
  stateless (any Kamailio worker or node with the secret can check it), bound
  to what the caller chooses (the focus binds it to the Call-ID, so a
  captured response cannot start another dialog);
* :func:`challenge` — the ``Proxy-Authenticate`` / ``WWW-Authenticate`` value,
  ``qop="auth"``, one per algorithm (RFC 7616 §3.7: SHA-256 first, MD5 for
  old phones);
* :func:`check_nonce` — ``"ok"``, ``"stale"`` (well-formed, ours, too old:
  answer a new challenge with ``stale=true``) or ``"bad"``;
* :func:`verify` — the response against a stored HA1, constant-time.

Client side: :func:`parse_challenge` and :func:`respond`.

Only ``qop=auth`` is accepted (no ``auth-int``, no RFC 2069 responses
without qop); ``-sess`` algorithms and ``userhash`` are not supported.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Final

from .errors import MalformedMessage

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "DigestCredentials",
    "challenge",
    "check_nonce",
    "compute_ha1",
    "make_nonce",
    "parse_challenge",
    "parse_credentials",
    "respond",
    "verify",
]

#: RFC 7616 §3.7 algorithm names and their hash; preference order for challenges.
ALGORITHMS: Final = {"SHA-256": "sha256", "MD5": "md5"}
_MAX_HEADER: Final = 4096
_PARAM_RE: Final = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]+)\s*(?:,|$)')
_NONCE_RE: Final = re.compile(r"^([0-9a-f]{1,16})\.([0-9a-f]{64})$")


def _hash(algorithm: str, text: str) -> str:
    name = ALGORITHMS.get(algorithm.upper())
    if name is None:
        raise MalformedMessage(f"digest algorithm {algorithm!r} not supported")
    return hashlib.new(name, text.encode("utf-8")).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2), lower-case hex."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def _nonce_mac(secret: bytes, timestamp: int, binding: str) -> str:
    message = f"{timestamp:x}\0{binding}".encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def make_nonce(secret: bytes, timestamp: int, binding: str = "") -> str:
    """A nonce the server can check later without state: timestamp plus its HMAC."""
    if timestamp < 0 or timestamp >= 1 << 64:
        raise ValueError("timestamp out of range")
    return f"{timestamp:x}.{_nonce_mac(secret, timestamp, binding)}"


def check_nonce(secret: bytes, nonce: str, now: int, lifetime: int, binding: str = "") -> str:
    """``"ok"``, ``"stale"`` (ours but older than *lifetime* seconds) or ``"bad"``."""
    match = _NONCE_RE.match(nonce)
    if match is None:
        return "bad"
    timestamp = int(match.group(1), 16)
    if not hmac.compare_digest(match.group(2), _nonce_mac(secret, timestamp, binding)):
        return "bad"
    if timestamp > now + 1:  # minted in the future: not by us
        return "bad"
    return "stale" if now - timestamp > lifetime else "ok"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, algorithm: str, *, stale: bool = False) -> str:
    """The challenge header value (RFC 7616 §3.3) for one algorithm."""
    if algorithm.upper() not in ALGORITHMS:
        raise ValueError(f"digest algorithm {algorithm!r} not supported")
    parts = [
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"algorithm={algorithm.upper()}",
        'qop="auth"',
    ]
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def _params(value: str) -> dict[str, str]:
    if len(value) > _MAX_HEADER:
        raise MalformedMessage("digest header too long")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise MalformedMessage("not a Digest header")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if match is None:
            raise MalformedMessage("malformed digest parameters")
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in params:
            raise MalformedMessage(f"digest parameter {name} repeated")
        params[name] = raw
        position = match.end()
    return params


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """An ``Authorization`` / ``Proxy-Authorization`` header (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str = field(repr=False)
    algorithm: str
    qop: str
    nc: str
    cnonce: str
    opaque: str | None = None


def parse_credentials(value: str) -> DigestCredentials:
    """Read a credentials header; ``MalformedMessage`` (400) when unusable."""
    params = _params(value)
    try:
        credentials = DigestCredentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=params["qop"].lower(),
            nc=params["nc"].lower(),
            cnonce=params["cnonce"],
            opaque=params.get("opaque"),
        )
    except KeyError as exc:
        raise MalformedMessage(f"digest credentials without {exc.args[0]}") from None
    if credentials.qop != "auth":
        raise MalformedMessage("digest qop must be auth")
    if credentials.algorithm not in ALGORITHMS:
        raise MalformedMessage(f"digest algorithm {credentials.algorithm} not supported")
    if not re.fullmatch(r"[0-9a-f]{8}", credentials.nc):
        raise MalformedMessage("digest nc must be 8 hex digits")
    return credentials


def _response(
    algorithm: str, ha1: str, nonce: str, nc: str, cnonce: str, qop: str, method: str, uri: str
) -> str:
    ha2 = _hash(algorithm, f"{method}:{uri}")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def verify(credentials: DigestCredentials, ha1: str, method: str) -> bool:
    """Whether the response matches *ha1* for *method* (RFC 7616 §3.4.1), constant-time."""
    expected = _response(
        credentials.algorithm,
        ha1,
        credentials.nonce,
        credentials.nc,
        credentials.cnonce,
        credentials.qop,
        method,
        credentials.uri,
    )
    return hmac.compare_digest(expected.encode(), credentials.response.encode())


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    realm: str
    nonce: str
    algorithm: str
    qop: tuple[str, ...]
    stale: bool
    opaque: str | None


def parse_challenge(value: str) -> DigestChallenge:
    """Read a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (client side)."""
    params = _params(value)
    try:
        return DigestChallenge(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()),
            stale=params.get("stale", "").lower() == "true",
            opaque=params.get("opaque"),
        )
    except KeyError as exc:
        raise MalformedMessage(f"digest challenge without {exc.args[0]}") from None


def respond(
    chosen: DigestChallenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The credentials header value answering *chosen* (qop=auth)."""
    if "auth" not in chosen.qop:
        raise MalformedMessage("challenge does not offer qop=auth")
    ha1 = compute_ha1(username, chosen.realm, password, chosen.algorithm)
    count = f"{nc:08x}"
    response = _response(chosen.algorithm, ha1, chosen.nonce, count, cnonce, "auth", method, uri)
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(chosen.realm)}",
        f"nonce={_quote(chosen.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={chosen.algorithm}",
        "qop=auth",
        f"nc={count}",
        f"cnonce={_quote(cnonce)}",
    ]
    if chosen.opaque is not None:
        parts.append(f"opaque={_quote(chosen.opaque)}")
    return "Digest " + ", ".join(parts)
