"""The join token on every INVITE the focus relays to the mixer (docs/asterisk.md, "Join tokens").

:meth:`Admission._relay <secconf.focus.admission.Admission._relay>` adds
:func:`token_header` to the create or join it relays to Asterisk, after removing
any ``X-Secconf-Token`` the participant sent (:data:`HEADER` in the relay's
``remove_headers``): Asterisk's dialplan bridges the call only with a token that
this module made for that conference and that Call-ID, and only until it expires.
The MAC itself is :mod:`secconf.core.mixer_token` (sans-IO); this module adds the
settings and the clock.  The token is never logged.
"""

from __future__ import annotations

from secconf.core.errors import ServiceUnavailable
from secconf.core.mixer_token import HEADER, make_token

from .settings import Settings

__all__ = ["HEADER", "token_header"]


def token_header(
    settings: Settings, conference_id: str, call_id: str, now: float
) -> tuple[str, str]:
    """``(X-Secconf-Token, <expiry>.<mac>)`` for one leg, valid ``[upstream] token_ttl`` s.

    Settings without the secret (never from :func:`~.settings.load_settings`, which
    requires it) fail closed: 503, nothing relayed.
    """
    if settings.mixer_token is None:
        raise ServiceUnavailable("no mixer token secret configured ([upstream] token_secret_file)")
    token = make_token(settings.mixer_token, conference_id, call_id, now, settings.mixer_token_ttl)
    return HEADER, token
