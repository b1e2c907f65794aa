"""A conference INVITE's offer, checked, and what the offer or its ticket lets the creator name.

Pure functions of the settings and the request (no I/O): the create and join flows
(:mod:`.admission`) parse the offer here, and take the allowed set a creator named (an
RFC 5366 URI list, or a KMS ticket's recipients) and the SSRCs the leg will use.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from secconf.core.errors import (
    Forbidden,
    MalformedMessage,
    MalformedMikey,
    MikeyError,
    NotAcceptable,
    NoUsableKey,
)
from secconf.core.focus import (
    OfferedStream,
    OfferMode,
    check_offer,
    check_offer_kms,
    normalize_identity,
    offer_mode,
    offer_ssrcs,
)
from secconf.core.mikey.srtp import suite_for_policy
from secconf.core.sdes import CryptoSuite
from secconf.core.sdp import SessionDescription
from secconf.core.urilist import split_offer

from .kms_keying import KmsAuth
from .messages import RequestView, require_offer
from .settings import Settings

__all__ = [
    "MIKEY_CONTENT_TYPE",
    "Offer",
    "check_offer_suites",
    "decode_mikey_body",
    "kms_allowed",
    "kms_leg_suite",
    "leg_ssrcs",
    "parse_offer",
    "uri_list_allowed",
]

MIKEY_CONTENT_TYPE: Final = "application/mikey"


@dataclass(frozen=True, slots=True)
class Offer:
    description: SessionDescription
    streams: tuple[OfferedStream, ...]
    mode: OfferMode
    ssrcs: tuple[int, ...]
    mikey: bytes | None = field(default=None, repr=False)
    uris: tuple[str, ...] | None = None  # RFC 5366 URI list (multipart create), normalised
    suite: CryptoSuite | None = None  # SDES: the leg's suite, chosen from the offer (#30)


def decode_mikey_body(body: bytes) -> bytes:
    """An ``application/mikey`` body: the base64 text of the message (as in ``a=key-mgmt``).

    Kamailio's KEMI hands bodies over as strings (no NUL bytes), so secconf
    sends MIKEY bodies base64-encoded; a raw binary body (first byte 0x01, the
    MIKEY version) is accepted too when it survived the trip.
    """
    data = body.strip()
    if not data:
        raise MalformedMikey("empty application/mikey body")
    if data[:1] == b"\x01":
        return data
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMikey("application/mikey body is neither MIKEY nor base64") from None


def parse_offer(settings: Settings, request: RequestView) -> Offer:
    """The checked offer; a ``multipart/mixed`` body also yields its RFC 5366 URI list."""
    limit = settings.max_body
    require_offer(request, limit, "INVITE")
    split = split_offer(
        request.content_type,
        request.body,
        max_bytes=limit,
        max_entries=settings.uri_list_max,
    )
    description = SessionDescription.parse(split.sdp)
    if offer_mode(description) is OfferMode.KMS and settings.kms_mode:
        if split.uris is not None:
            raise NotAcceptable(
                "a URI list with a MIKEY-TICKET offer: the ticket names the allowed set"
            )
        streams, mikey = check_offer_kms(description)
        return Offer(description, streams, OfferMode.KMS, offer_ssrcs(description), mikey)
    description, streams, suite = check_offer_suites(split.sdp, settings.leg_suites)
    return Offer(
        description, streams, OfferMode.SDES, offer_ssrcs(description), uris=split.uris,
        suite=suite,
    )  # fmt: skip


def check_offer_suites(
    body: bytes, suites: Sequence[CryptoSuite]
) -> tuple[SessionDescription, tuple[OfferedStream, ...], CryptoSuite]:
    """The offer checked in the first of *suites* (the focus's preference) it offers a key in.

    RFC 4568 §7.1.3: the answerer accepts one of the offered ``a=crypto`` lines;
    the leg then runs that suite both ways (docs/mikey-decisions.md #30).  Only
    "no usable key in this suite" moves on to the next suite; an offer refused
    for anything else (plain RTP, no live stream, bad SDP) is refused as is.
    With no suite left: 488 naming the suites the focus allows.
    """
    for suite in suites:
        try:
            description, streams = check_offer(body, suite)
        except NoUsableKey:
            if len(suites) == 1:
                raise  # one suite allowed: its own precise message, as before
            continue
        return description, streams, suite
    names = ", ".join(suite.name for suite in suites)
    raise NotAcceptable(f"offers no usable key in a suite this focus allows ({names})")


def kms_leg_suite(auth: KmsAuth, settings: Settings) -> CryptoSuite:
    """A KMS leg's suite: its TRANSFER_INIT's policy's, else the conference's (#30).

    The authenticator refused a policy in a suite the focus does not allow; this
    is checked again here so that no caller can key a leg outside the policy.
    """
    for policy in auth.transfer.security_policies[:1]:
        suite = suite_for_policy(policy)
        if suite not in settings.leg_suites:
            raise NotAcceptable(f"SRTP suite {suite.name} is not allowed on this focus")
        return suite
    return settings.suite


def uri_list_allowed(settings: Settings, offer: Offer, creator: str) -> list[str]:
    """The allowed set a creator named with an RFC 5366 URI list, after policy.

    ``policy.uri_list = false``: any list is refused (403).  Names outside
    ``policy.allowed`` are refused (403, ``policy.uri_list_outside =
    "refuse"``, the default: a list can only narrow the deployment's set)
    or accepted (``"accept"``: the creator's list is the set).  The
    creator is added by the store in any case.
    """
    uris = [uri for uri in offer.uris or () if uri != creator]
    if not settings.uri_list:
        raise Forbidden("URI lists are not accepted on this focus")
    if settings.uri_list_outside == "refuse":
        outside = [uri for uri in uris if uri not in settings.allowed]
        if outside:
            raise Forbidden(f"{len(outside)} URI list entries are not allowed by policy")
    return sorted(set(uris))


def kms_allowed(settings: Settings, auth: KmsAuth) -> list[str]:
    """The allowed set of a KMS-mode conference: the ticket's recipients but the focus."""
    focus = settings.kms.focus_identity if settings.kms else ""
    allowed: set[str] = set()
    for recipient in auth.transfer.policy.recipients:
        try:
            identity = normalize_identity(recipient)
        except MalformedMessage:
            continue  # not a SIP identity: can never be authenticated on a join anyway
        if identity not in (focus, auth.identity):
            allowed.add(identity)
    # A ticket names the allowed set like a URI list does, and is bounded the same way:
    # with policy.uri_list_outside = "refuse" (the default) it can only narrow
    # policy.allowed (issue 12: tickets were not bounded at all).
    if settings.uri_list_outside == "refuse":
        outside = sorted(allowed - settings.allowed)
        if outside:
            raise Forbidden(f"{len(outside)} ticket recipients are not allowed by policy")
    return sorted(allowed)


def leg_ssrcs(offer: Offer, auth: KmsAuth | None) -> tuple[int, ...]:
    """The SSRCs a leg registers: the offer's ``a=ssrc`` and, in KMS mode, its crypto sessions'."""
    found = set(offer.ssrcs)
    if auth is not None:
        for entry in auth.transfer.sessions:
            try:
                session = entry.srtp_session()
            except MikeyError:
                continue
            if session is not None:
                found.add(session.ssrc)
    return tuple(sorted(found))
