"""Rekeying a conference from outside Kamailio: ``rekey(conference_id)``.

An operator (``secconf focus rekey ID``) and the tests call this; the roster watcher
keeps one :class:`~.epochs.EpochMinter` for its lifetime instead.  It mints the conference's next key epoch (from the KMS, a GTGK
ticket naming the current members, when the conference has KMS-mode legs;
else from the local CSPRNG), stores it wrapped with the KEK in Redis and puts
it to the media edge, with the
settings Kamailio's module uses (``$SECCONF_KAMAILIO_CONFIG``).  The legs then
switch one by one: the mixer sends a re-INVITE in each conference dialog
(``PJSIP_SEND_SESSION_REFRESH``), the module puts the new epoch's key into it
and switches the edge leg when the participant's 200 OK passes.  Refusals end
up on ``<prefix>:conf:{<id>}:rekey-failed``.
"""

from __future__ import annotations

from .settings import Settings, load_settings
from .wiring import build_minter, close_minter, load_kek

__all__ = ["rekey"]


def rekey(
    conference_id: str, settings: Settings | None = None, *, include: tuple[str, ...] = ()
) -> int:
    """Mint, store and publish the conference's next key epoch; return its number.

    *include*: identities to name in a KMS epoch's ticket besides the current
    members (a dial-out target, before :meth:`~.kms_keying.KmsKeying.group_transfer_init`).
    Raises ``ConferenceNotFound`` (no such active conference),
    ``ServiceUnavailable`` (Redis, the KMS or the edge down, or the KMS
    refused the group ticket: nothing changed).
    """
    settings = settings or load_settings(mixer_token=False)  # no INVITE to the mixer here
    minter = build_minter(settings, load_kek(settings))
    try:
        return minter.mint(conference_id, include)
    finally:
        close_minter(minter)
