"""Every Redis key the store writes is named here: the names' validation and the keys.

``P`` is the prefix (``redis.prefix``); ``{...}`` a Redis Cluster hash tag (the keys one
script or MULTI touches share one)::

    P:conf:{<id>}[:<part>]            the conference store (ConferenceKeys; parts listed in
                                      secconf.store.conferences), its REFER stream included,
                                      its events counter ``P:conf:{<id>}:events`` too
    P:ident:{<hash>}                  an identity's conference dialogs
    P:subnode:<node>[:wake]           the conference subscriptions a Kamailio node sends for
                                      (and the counter its workers bump after an input)
    P:dialout:<c>  P:rekeys:<c>       the watcher's journal streams
    P:watcher-lease:<c>  P:roster:<c> the watcher's lease and roster of a bridge
    P:edge:{<edge id>}:...            one media edge's records (EdgeKeys)
    P:{users}  P:{users}:user:<id>    the KMS's user index and users
    P:ticket:{<id>}  P:ticket-revoked:{<id>}  P:ticket-index:<initiator>
                                      the KMS's tickets, revocations, per-initiator index
    P:kms:tpk:<id>  P:kms:tpk-current the KMS's ticket protection keys
    P:replay:<sha256>                 the replay cache (KMS and Kamailio)
    P:nonce:{<hash>}                  digest nonces (Kamailio)
    P:sipuser:<identity>              SIP digest credentials
    P:timing                          the focus's phase timings (benchmarks)

What each key holds is documented with the store that writes it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, TypeGuard

from .errors import InvalidRecord

MAX_IDENTITY_LENGTH: Final = 256
MAX_PREFIX_LENGTH: Final = 64
_CONFERENCE_ID_RE: Final = re.compile(r"^[0-9a-z]{1,64}$")


def check_prefix(prefix: object) -> str:
    """*prefix* if it is usable as the first part of every key (printable ASCII, no spaces)."""
    if (
        not isinstance(prefix, str)
        or not 0 < len(prefix) <= MAX_PREFIX_LENGTH
        or not prefix.isascii()
        or not prefix.isprintable()
        or " " in prefix
    ):
        raise ValueError(
            f"the key prefix must be 1 to {MAX_PREFIX_LENGTH} printable ASCII characters, no spaces"
        )
    return prefix


def is_identity(identity: object) -> TypeGuard[str]:
    """True if *identity* is a non-empty printable string of at most 256 characters."""
    return (
        isinstance(identity, str)
        and 0 < len(identity) <= MAX_IDENTITY_LENGTH
        and identity.isprintable()
    )


def check_identity(identity: object, what: str = "identity") -> str:
    """*identity* if :func:`is_identity`, else :class:`InvalidRecord` naming *what*."""
    if not is_identity(identity):
        raise InvalidRecord(
            f"{what} must be a non-empty printable string of at most "
            f"{MAX_IDENTITY_LENGTH} characters"
        )
    return identity


def check_conference_id(conference_id: object) -> None:
    """:class:`InvalidRecord` unless *conference_id* is 1 to 64 lower-case letters or digits."""
    if not isinstance(conference_id, str) or not _CONFERENCE_ID_RE.match(conference_id):
        raise InvalidRecord("conference id must be 1 to 64 lower-case letters or digits")


def dialog_id(call_id: str) -> str:
    """The id of a dialog's record: hex SHA-256 of its Call-ID (any length, any bytes)."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).hexdigest()


def conference_key(prefix: str, conference_id: str, part: str = "") -> str:
    """``P:conf:{<id>}`` or ``P:conf:{<id>}:<part>``: a key of one conference (one slot)."""
    check_conference_id(conference_id)
    suffix = f":{part}" if part else ""
    return f"{prefix}:conf:{{{conference_id}}}{suffix}"


def events_key(prefix: str, conference_id: str) -> str:
    """``P:conf:{<id>}:events``: the conference's change counter (docs/event-package.md).

    Every change a subscriber of the conference event package must see increments it
    (the focus's scripts, the watcher's roster writes); the notifier polls it.
    """
    return conference_key(prefix, conference_id, "events")


def refer_stream_key(prefix: str, conference_id: str) -> str:
    """``P:conf:{<id>}:refer``: the REFERs the focus accepted, which the dial-out watcher reads."""
    return conference_key(prefix, conference_id, "refer")


def dialout_stream_key(prefix: str, conference: str) -> str:
    """``P:dialout:<c>``: the dial-outs the watcher made (its own single-key stream)."""
    return f"{prefix}:dialout:{conference}"


def rekey_report_key(prefix: str, conference: str) -> str:
    """``P:rekeys:<c>``: the watcher's rekey reports."""
    return f"{prefix}:rekeys:{conference}"


def watcher_lease_key(prefix: str, conference: str) -> str:
    """``P:watcher-lease:<c>``: the token of the watcher that may rekey *conference*."""
    return f"{prefix}:watcher-lease:{conference}"


def roster_key(prefix: str, conference: str) -> str:
    """``P:roster:<c>``: who is in the bridge, as the watcher follows it over AMI."""
    return f"{prefix}:roster:{conference}"


def roster_pattern(prefix: str) -> str:
    """The ``SCAN`` pattern of every roster under *prefix*."""
    return roster_key(prefix, "*")


def replay_key(prefix: str, token: bytes) -> str:
    """``P:replay:<hex SHA-256 of the token>``: the replay cache's record of *token*."""
    return f"{prefix}:replay:{hashlib.sha256(bytes(token)).hexdigest()}"


def nonce_key(prefix: str, nonce: str) -> str:
    """``P:nonce:{<hash>}``: the record of *nonce* (its SHA-256, 128 bits of it, as tag)."""
    digest = hashlib.sha256(nonce.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{check_prefix(prefix)}:nonce:{{{digest}}}"


def sip_user_key(prefix: str, identity: str) -> str:
    """``P:sipuser:<identity>``: a user's wrapped digest credentials."""
    return f"{prefix}:sipuser:{check_identity(identity)}"


def user_index_key(prefix: str) -> bytes:
    """``P:{users}``: the set of every KMS identity (one slot with the users)."""
    return f"{prefix}:{{users}}".encode("ascii")


def user_key(prefix: str, identity: str) -> bytes:
    """``P:{users}:user:<identity>``: a KMS user's wrapped PSK and state."""
    return f"{prefix}:{{users}}:user:{identity}".encode()


def ticket_key(prefix: str, hex_id: str) -> bytes:
    """``P:ticket:{<id>}``: an issued ticket's record."""
    return f"{prefix}:ticket:{{{hex_id}}}".encode("ascii")


def ticket_revoked_key(prefix: str, hex_id: str) -> bytes:
    """``P:ticket-revoked:{<id>}``: a ticket's revocation marker (its record's slot)."""
    return f"{prefix}:ticket-revoked:{{{hex_id}}}".encode("ascii")


def ticket_index_key(prefix: str, initiator: str) -> bytes:
    """``P:ticket-index:<initiator>``: the initiator's live tickets."""
    return f"{prefix}:ticket-index:{check_identity(initiator)}".encode()


def tpk_key(prefix: str, tpk_id: bytes) -> str:
    """``P:kms:tpk:<id hex>``: a wrapped ticket protection key."""
    return f"{prefix}:kms:tpk:{tpk_id.hex()}"


def tpk_current_key(prefix: str) -> str:
    """``P:kms:tpk-current``: the id of the TPK new tickets are protected with."""
    return f"{prefix}:kms:tpk-current"


def timing_key(prefix: str) -> str:
    """``P:timing``: the focus's phase timings."""
    return f"{prefix}:timing"


class EdgeKeys:
    """One media edge's keys, ``P:edge:{<edge id>}:...`` (one slot: its MULTIs span them)."""

    __slots__ = ("base",)

    def __init__(self, prefix: str, edge_id: str) -> None:
        self.base = f"{prefix}:edge:{{{edge_id}}}"

    def conferences(self) -> str:
        """``...:conferences``: the set of the edge's conference ids."""
        return f"{self.base}:conferences"

    def epochs(self, conference: str) -> str:
        """``...:conf:<c>:epochs``: epoch -> JSON epoch record."""
        return f"{self.base}:conf:{conference}:epochs"

    def ssrcs(self, conference: str) -> str:
        """``...:conf:<c>:ssrcs``: SSRC -> JSON SSRC record."""
        return f"{self.base}:conf:{conference}:ssrcs"

    def legs(self) -> str:
        """``...:legs``: leg id -> JSON leg record."""
        return f"{self.base}:legs"


class ConferenceKeys:
    """The keys of the conference store under one prefix (docs: :mod:`.conferences`).

    One instance is shared by the store's parts, so each key name is built in one place.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"ConferenceKeys(prefix={self.prefix!r})"

    def conference(self, conference_id: str, part: str = "") -> str:
        """``P:conf:{<id>}`` or one of its parts (``allowed``, ``members``, ``epochs``, ...)."""
        return conference_key(self.prefix, conference_id, part)

    def dialog(self, conference_id: str, call_id: str) -> str:
        """``P:conf:{<id>}:dialog:<sha256 of the Call-ID>``: one dialog of a conference."""
        return self.conference(conference_id, f"dialog:{dialog_id(call_id)}")

    def dialogs(self, conference_id: str) -> str:
        """``P:conf:{<id>}:dialogs``: the set of the conference's dialog ids (pending or up)."""
        return self.conference(conference_id, "dialogs")

    def events(self, conference_id: str) -> str:
        """``P:conf:{<id>}:events``: the change counter (:func:`events_key`)."""
        return events_key(self.prefix, conference_id)

    def departures(self, conference_id: str) -> str:
        """``P:conf:{<id>}:departures``: the latest dialogs released, JSON, newest last."""
        return self.conference(conference_id, "departures")

    def refer_stream(self, conference_id: str) -> str:
        """``P:conf:{<id>}:refer``: the REFERs accepted for a conference (the watcher reads it)."""
        return refer_stream_key(self.prefix, conference_id)

    def rekey_failed(self, conference_id: str) -> str:
        """``P:conf:{<id>}:rekey-failed``: re-INVITEs with a new epoch that a participant refused."""
        return self.conference(conference_id, "rekey-failed")

    def subscription(self, conference_id: str, sub_id: str) -> str:
        """``P:conf:{<id>}:sub:<sub id>``: one conference event subscription."""
        return self.conference(conference_id, f"sub:{sub_id}")

    def subscriptions(self, conference_id: str) -> str:
        """``P:conf:{<id>}:subs``: sub id -> identity, the conference's subscriptions."""
        return self.conference(conference_id, "subs")

    def subscription_node(self, node: str) -> str:
        """``P:subnode:<node>``: the subscriptions whose flow a Kamailio node holds."""
        return f"{self.prefix}:subnode:{check_identity(node, 'node id')}"

    def subscription_node_wake(self, node: str) -> str:
        """``P:subnode:<node>:wake``: bumped by a worker after each input for the node's timer."""
        return f"{self.subscription_node(node)}:wake"

    def identity(self, identity: str) -> str:
        """``P:ident:{<hash>}``: the conference dialogs an identity holds (its own slot)."""
        return f"{self.prefix}:ident:{{{dialog_id(identity)}}}"
