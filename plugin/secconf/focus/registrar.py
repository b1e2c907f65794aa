"""REGISTER to the focus: digest as a registrar (401), contacts in Kamailio's usrloc.

The focus reaches a REFER target (``sip:dave@example.com``) only if it knows
where that identity's phone is.  Phones register with Kamailio itself
(RFC 3261 §10): the module authenticates the REGISTER with digest as a
**registrar** — ``401 Unauthorized`` with one ``WWW-Authenticate`` per
configured algorithm, the answer in ``Authorization`` (RFC 3261 §22.2,
§10.3 step 3; RFC 7616) — and only then hands the request to Kamailio's own
``registrar`` module (``save("location")``, contacts kept in memory by
``usrloc``, ``db_mode=0``).  The dial-out path looks the target up with
``lookup("location")`` (:mod:`secconf.kamailio.handler`).

Who may register (fail closed): only a **known user**, i.e. one whose HA1 is
stored (``secconf focus user add``) and who proved it; the address of record
(the To URI, RFC 3261 §10.3 step 5) must be exactly the authenticated identity
``sip:<username>@<realm>`` (403 otherwise: nobody registers contacts for
someone else).  Without ``[digest]`` the focus has no way to authenticate a
REGISTER and refuses every one (403).  Nothing here writes state: a refusal
answers before ``save`` runs.
"""

from __future__ import annotations

from secconf.core.digest import challenge
from secconf.core.errors import Forbidden, MalformedMessage, ProtocolError, SecconfError
from secconf.core.focus import normalize_identity

from .messages import Reply, RequestView
from .service import FocusService

__all__ = ["REGISTER_HEADERS", "RegistrationRequired", "register_identity", "register_refusal"]

#: Headers the REGISTER path reads (besides the service's own).
REGISTER_HEADERS = ("Authorization", "To")


class RegistrationRequired(ProtocolError):
    """No (usable, fresh) credentials on a REGISTER: 401 with a new challenge (RFC 3261 §22.2).

    *nonce* is the new challenge's, minted for the REGISTER's Call-ID and flow.
    """

    status_code = 401
    reason = "Unauthorized"

    def __init__(self, message: str, *, nonce: str, stale: bool = False, call_id: str = "") -> None:
        super().__init__(message)
        self.nonce = nonce
        self.stale = stale
        self.call_id = call_id


def register_identity(service: FocusService, request: RequestView) -> str:
    """The identity a REGISTER is accepted for, or a refusal (nothing written).

    RFC 3261 §10.3: step 3 authentication (digest, ``Authorization``; 401
    when missing, for another realm or algorithm, with a nonce that is not
    ours or not for this Call-ID and flow, or a replay: a nonce-count not
    above the last one accepted with that nonce; ``stale=true`` when
    expired), step 4
    authorisation (the To URI must be the authenticated identity, 403), and
    the digest ``uri`` must be the Request-URI (403).  Wrong password and
    unknown user both give 403 "digest authentication failed" (no user
    enumeration).
    """
    settings = service.settings
    digest = settings.digest
    if digest is None or service.sip_users is None:
        raise Forbidden("registration needs digest authentication ([digest] realm)")
    identity = service.auth.digest_identity(
        request, header="Authorization", challenge_with=RegistrationRequired
    )
    to = request.headers.get("To")
    if not to:
        raise MalformedMessage("REGISTER without To")
    try:
        aor = normalize_identity(to)
    except MalformedMessage:
        raise MalformedMessage("To is not a SIP URI with a user") from None
    if aor != identity:
        raise Forbidden("the address of record is not the authenticated identity")
    return identity


def register_refusal(service: FocusService, error: SecconfError) -> Reply:
    """The service's refusal (status, Warning) plus ``WWW-Authenticate`` challenges for a 401."""
    reply = service.refusal(error)
    digest = service.settings.digest
    if not isinstance(error, RegistrationRequired) or digest is None:
        return reply
    challenges = tuple(
        ("WWW-Authenticate", challenge(digest.realm, error.nonce, algorithm, stale=error.stale))
        for algorithm in digest.algorithms
    )
    return Reply(reply.status, reply.reason, reply.headers + challenges)
