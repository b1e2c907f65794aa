"""SIP digest authentication (RFC 3261 §22, RFC 7616), sans-IO.

Both sides of the exchange, for the focus (challenge, verify) and for the
participant agent (respond).  Nothing here reads a clock or draws random
numbers: the time, the server secret and the client nonce are passed in.

Server side:

* :func:`make_nonce` — ``<timestamp hex>.<salt hex>.<HMAC-SHA256(secret, timestamp,
  salt, binding)>``: any Kamailio worker or node with the secret can check it
  without state, bound to what the caller chooses — the focus binds it to the
  Call-ID and to the client's flow (:func:`flow_binding`: source address,
  port and transport), so a captured response neither starts another dialog
  nor works from another address; the salt (random, drawn by the caller)
  makes every challenge's nonce new, even twice in one second for one flow;
* :func:`challenge` — the ``Proxy-Authenticate`` / ``WWW-Authenticate`` value,
  ``qop="auth"``, one per algorithm (RFC 7616 §3.7: SHA-256 first, MD5 for
  old phones);
* :func:`check_nonce` — ``"ok"``, ``"stale"`` (well-formed, ours, too old:
  answer a new challenge with ``stale=true``) or ``"bad"``;
* :func:`verify` — the response against a stored HA1, constant-time;
* :func:`nonce_count` — a credentials' ``nc`` as a number, for the
  replay check the caller keeps in shared state (``secconf.store.nonces``):
  each nonce is usable once per nonce-count value, the count strictly
  increasing per nonce.

Client side: :func:`parse_challenge` and :func:`respond`.

Only ``qop=auth`` is accepted (no ``auth-int``); credentials without ``qop``
(RFC 2069 style, which carry no ``nc`` and so cannot be told from their
replay) are refused as malformed; ``-sess`` algorithms and ``userhash`` are
not supported.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from .errors import MalformedMessage

__all__ = [
    "ALGORITHMS",
    "MAX_NONCE_COUNT",
    "NONCE_SALT_BYTES",
    "DigestChallenge",
    "DigestCredentials",
    "challenge",
    "check_nonce",
    "compute_ha1",
    "flow_binding",
    "make_nonce",
    "nonce_count",
    "parse_challenge",
    "parse_credentials",
    "respond",
    "verify",
]

#: RFC 7616 §3.7 algorithm names and their hash; preference order for challenges.
ALGORITHMS: Final = {"SHA-256": "sha256", "MD5": "md5"}
_MAX_HEADER: Final = 4096
_PARAM_RE: Final = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]+)\s*(?:,|$)')
_NONCE_RE: Final = re.compile(r"^([0-9a-f]{1,16})\.([0-9a-f]{16,64})\.([0-9a-f]{64})$")
#: Bytes of randomness in a nonce (RFC 7616 §5.12: nonces from a strong random source).
NONCE_SALT_BYTES: Final = 12
_MIN_SALT, _MAX_SALT = 8, 32
#: Largest nonce-count (``nc`` is 8 hex digits, RFC 7616 §3.4).
MAX_NONCE_COUNT: Final = 0xFFFFFFFF


def _hash(algorithm: str, text: str) -> str:
    name = ALGORITHMS.get(algorithm.upper())
    if name is None:
        raise MalformedMessage(f"digest algorithm {algorithm!r} not supported")
    return hashlib.new(name, text.encode("utf-8")).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2), lower-case hex."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def flow_binding(call_id: str, source_ip: str, source_port: int, transport: str) -> str:
    """What a focus nonce is bound to: the Call-ID and the client's flow.

    RFC 7616 §5.5 (Replay Attacks): "if [the nonce] contains a digest of the
    client IP, a timestamp, the resource ETag, and a private server key (as
    recommended above), then a replay attack is not simple."  The flow is the
    source address, port and transport (``$si``, ``$sp``, ``$pr``) of the
    request the challenge answers: a phone retries from the same UDP socket or
    over the same TLS/TCP connection, an attacker elsewhere cannot.  The
    address is normalised (``[::1]`` and ``::1`` are one flow); every part is
    length-prefixed, so no two flows give the same text.
    """
    text = source_ip.strip().strip("[]")
    try:
        address = ipaddress.ip_address(text).compressed
    except ValueError:
        address = text.lower()
    parts = (call_id, address, str(int(source_port)), transport.strip().lower())
    return "".join(f"{len(part)}:{part}" for part in parts)


def _nonce_mac(secret: bytes, timestamp: int, salt: str, binding: str) -> str:
    message = f"{timestamp:x}\0{salt}\0{binding}".encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def make_nonce(secret: bytes, timestamp: int, binding: str, salt: bytes) -> str:
    """A nonce the server can check later without state: timestamp, salt, their HMAC.

    *binding* is what the nonce is valid for (:func:`flow_binding`); *salt*
    8 to 32 random bytes drawn by the caller (:data:`NONCE_SALT_BYTES`).
    """
    if timestamp < 0 or timestamp >= 1 << 64:
        raise ValueError("timestamp out of range")
    if not _MIN_SALT <= len(salt) <= _MAX_SALT:
        raise ValueError(f"the nonce salt has {_MIN_SALT} to {_MAX_SALT} bytes")
    salt_hex = bytes(salt).hex()
    return f"{timestamp:x}.{salt_hex}.{_nonce_mac(secret, timestamp, salt_hex, binding)}"


def check_nonce(secret: bytes, nonce: str, now: int, lifetime: int, binding: str) -> str:
    """``"ok"``, ``"stale"`` (ours but older than *lifetime* seconds) or ``"bad"``.

    ``"bad"``: not ours, or minted for another *binding* (another call or
    flow), or from the future.  Statelessly ``"ok"`` is not "accept": the
    caller must still check the nonce-count (:func:`nonce_count`) against
    what it recorded for this nonce.
    """
    match = _NONCE_RE.match(nonce)
    if match is None:
        return "bad"
    timestamp = int(match.group(1), 16)
    expected = _nonce_mac(secret, timestamp, match.group(2), binding)
    if not hmac.compare_digest(match.group(3), expected):
        return "bad"
    if timestamp > now + 1:  # minted in the future: not by us
        return "bad"
    return "stale" if now - timestamp > lifetime else "ok"


def nonce_count(nc: str) -> int:
    """A credentials' nonce-count (``nc``, 8 hex digits) as a number, 1 to 2**32 - 1.

    RFC 7616 §3.4, ``nc``: "The nc value is the hexadecimal count of the
    number of requests (including the current request) that the client has
    sent with the nonce value in this request. [...] The purpose of this
    parameter is to allow the server to detect request replays by maintaining
    its own copy of this count -- if the same nc value is seen twice, then the
    request is a replay."  The first request with a nonce sends
    ``nc=00000001``: a zero count is malformed.
    """
    if not re.fullmatch(r"[0-9a-fA-F]{8}", nc):
        raise MalformedMessage("digest nc must be 8 hex digits")
    count = int(nc, 16)
    if not 1 <= count <= MAX_NONCE_COUNT:
        raise MalformedMessage("digest nc must be at least 00000001")
    return count


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
    if "qop" not in params:
        # Decision (docs/kamailio.md, "Digest authentication"): RFC 2069 style credentials
        # carry no nc, so a replay cannot be told apart: refused, never accepted even once.
        raise MalformedMessage("digest credentials without qop (RFC 2069 style) are not accepted")
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
