"""A REFER to the focus (RFC 3515): checked, queued for the dial-out watcher, answered 202."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.errors import Forbidden, MalformedMessage, MessageTooLarge, NotAcceptable
from secconf.core.focus import normalize_identity
from secconf.store.conferences import ConferenceStore

from .authenticator import Authenticator
from .kms_keying import KmsAuth, KmsKeying
from .messages import Reply, RequestView
from .offers import MIKEY_CONTENT_TYPE
from .settings import Settings

__all__ = ["Refers"]


@dataclass
class Refers:
    """REFERs to the focus, in or out of a dialog (``FocusService.refers``)."""

    settings: Settings
    store: ConferenceStore
    auth: Authenticator
    kms_keying: KmsKeying
    clock: Callable[[], float] = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)

    def on_refer(
        self, request: RequestView, conference_id: str | None, dialog_identity: str | None
    ) -> Reply:
        """A REFER to the focus (RFC 3515): check it, queue it for the dial-out watcher, 202.

        *conference_id* comes from the Request-URI (out of dialog) or from the
        referrer's dialog record (in dialog, then *dialog_identity* is the
        identity that dialog was admitted with, and the REFER must come from
        it).  The referrer is authenticated like an INVITE: in KMS mode by an
        ``application/mikey`` body holding a TRANSFER_INIT built with the
        referrer's ticket for the focus (answered by a TRANSFER_RESP in the
        202, so the focus authenticates itself too); in SDES mode by the
        asserted identity of a trusted source.  The referrer must have a
        dialog in the conference, the Refer-To target must be in the allowed
        set; then one Lua script appends the request to ``P:conf:{<id>}:refer``.
        No implicit subscription (RFC 4488 ``Refer-Sub: false``): Kamailio
        cannot send NOTIFYs in a dialog it does not own.
        """
        if conference_id is None:
            raise MalformedMessage("REFER without a conference")
        refer_to = request.headers.get("Refer-To")
        if not refer_to:
            raise MalformedMessage("REFER without Refer-To")
        try:
            target = normalize_identity(refer_to.split(",", 1)[0].strip())
        except MalformedMessage:
            raise MalformedMessage("Refer-To is not a SIP URI with a user") from None
        limit = self.settings.max_body
        if request.content_length > limit or len(request.body) > limit:
            raise MessageTooLarge(f"body over {limit} bytes")
        identity, auth, replay_key = self._referrer(request)
        if dialog_identity is not None and identity != dialog_identity:
            raise Forbidden("the REFER is not from the identity of its dialog")
        mode = "kms" if auth is not None else "sdes"
        kms_settings = self.settings.kms
        entry = self.store.refer_stream.add(
            conference_id,
            referrer=identity,
            target=target,
            fields=(
                ("conference", conference_id),
                ("uri", self.settings.conference_uri(conference_id)),
                ("mode", mode),
                ("refer_to", refer_to[:512]),
                ("call_id", request.call_id[:256]),
                ("time", repr(float(self.clock()))),
            ),
            replay_key=replay_key,
            per_minute=self.settings.refers_per_minute,
            replay_ttl=2 * kms_settings.skew if kms_settings is not None else 0.0,
            mode=None if self.settings.mixed_modes else mode,
        )
        self.log(
            "info", f"secconf: REFER by {identity} to {target} in {conference_id} queued ({entry})"
        )
        headers = (("Refer-Sub", "false"),)
        if auth is None:
            return Reply(202, "Accepted", headers)
        body = base64.b64encode(self.kms_keying.transfer_resp(auth, None, None))
        return Reply(202, "Accepted", headers, body, MIKEY_CONTENT_TYPE)

    def _referrer(self, request: RequestView) -> tuple[str, KmsAuth | None, str | None]:
        """Who sent the REFER: its identity, its KMS authentication, its replay-cache key."""
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if content_type == MIKEY_CONTENT_TYPE and self.settings.kms_mode:
            auth, replay_key = self.auth.mikey_request(request)
            return auth.identity, auth, replay_key
        if request.body:
            raise NotAcceptable("a REFER to the focus carries no body, or application/mikey")
        return self.auth.identity(request), None, None
