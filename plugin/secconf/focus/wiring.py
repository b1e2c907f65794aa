"""One place where a :class:`~secconf.focus.service.FocusService` is put together.

Kamailio's module (one service per worker) gets it from :func:`build_service`: its Redis
client and stores, the edge's and the KMS's clients, the secrets derived from the KEK, and,
when ``[focus] timing`` is on, the phase timer.  Who only mints epochs — the roster
watcher (one minter for its lifetime) and ``secconf focus rekey`` — gets an
:class:`~.epochs.EpochMinter` from :func:`build_minter`, with the same store and clients
and nothing else.  The connections open lazily, on first use, in the process that uses
them; each has a timeout.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from secconf.kms.client import HttpKmsResolver
from secconf.media.control_client import EdgeControl, HttpEdgeControl, NoEdge
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.counters import TimingCounters
from secconf.store.keywrap import KeyWrapper, load_key_file
from secconf.store.nonces import DigestNonces
from secconf.store.replay import BlockingReplayCache
from secconf.store.sip_users import SipUserStore

from .authenticator import digest_secret
from .epochs import EpochMinter, GroupEpochs
from .peer_cache import NoPeerCache, PeerCache
from .service import FocusService, route_secret
from .settings import Settings
from .timing import PhaseTimer, Timed

__all__ = ["build_minter", "build_service", "close_minter", "close_service", "load_kek"]

Log = Callable[[str, str], None]


def load_kek(settings: Settings) -> bytes:
    """The key-encryption key (``[redis] kek_file``); a missing or bad file stops the caller."""
    return load_key_file(settings.kek_file)


def build_service(
    settings: Settings,
    kek: bytes,
    *,
    log: Log = lambda level, message: None,
    peer_cache: PeerCache | None = None,
) -> FocusService:
    """The focus with every collaborator its settings ask for (nothing connects yet)."""
    client = connect_blocking(settings.redis_url, timeout=settings.redis_timeout)
    wrapper = KeyWrapper(kek, settings.kek_id)
    prefix = settings.redis_prefix
    store: Any = ConferenceStore(client, wrapper, prefix)
    edge: Any = _edge(settings)
    replay: Any = BlockingReplayCache(client, prefix)
    kms: Any = None if settings.kms is None else HttpKmsResolver(settings.kms)
    timer = None
    if settings.timing:
        counters = TimingCounters(client, prefix)

        def flush(totals: dict[str, int]) -> None:
            if not counters.add(totals):
                log("warn", "secconf: timing counters not written")

        timer = PhaseTimer(flush)
        store, edge, replay = (
            Timed(store, timer, "redis", parts=ConferenceStore.PARTS),
            Timed(edge, timer, "edge"),
            Timed(replay, timer, "redis"),
        )
        kms = None if kms is None else Timed(kms, timer, "kms")
    return FocusService(
        settings,
        store,
        edge,
        log=log,
        kms=kms,
        replay=replay,
        sip_users=SipUserStore(client, wrapper, prefix),
        digest_key=digest_secret(kek),
        route_key=route_secret(kek),
        nonces=DigestNonces(client, prefix),
        timer=timer,
        peer_cache=peer_cache or NoPeerCache(),
    )


def build_minter(
    settings: Settings, kek: bytes, *, log: Log = lambda level, message: None
) -> EpochMinter:
    """What mints a conference's epochs: its store, the edge's and the KMS's clients.

    Its clients hold one connection each and are not thread-safe: call it from one
    thread at a time (the watcher gives it a thread of its own).
    """
    client = connect_blocking(settings.redis_url, timeout=settings.redis_timeout)
    store = ConferenceStore(client, KeyWrapper(kek, settings.kek_id), settings.redis_prefix)
    kms = None if settings.kms is None else HttpKmsResolver(settings.kms)
    group_epochs = GroupEpochs(settings.kms, kms, store, time.time, secrets.token_bytes)
    return EpochMinter(store, _edge(settings), group_epochs, secrets.token_bytes, log)


def close_minter(minter: EpochMinter) -> None:
    """Close what :func:`build_minter` opened."""
    _close(minter.edge, minter.group_epochs.kms)
    minter.store.client.close()


def _close(*parts: object) -> None:
    for part in parts:
        close = getattr(part, "close", None)
        if close is not None:
            close()


def _edge(settings: Settings) -> EdgeControl:
    if not settings.edge_url:
        return NoEdge()
    return HttpEdgeControl(
        settings.edge_url, timeout=settings.edge_timeout, token=settings.edge_token
    )


def close_service(service: FocusService) -> None:
    """Close what :func:`build_service` opened."""
    _close(service.edge, service.kms)
    service.store.client.close()
