"""Where the focus keeps the peers of a dialog it just answered, for that dialog's ACK.

The ACK of a 2xx follows within seconds and its dialog's peers never change, so a SIP
server that can keep a little shared memory per node lets the focus pass that ACK without a
Redis read (secconf.kamailio.peer_cache: Kamailio's ``htable``; docs/kamailio.md, "The
peer cache"). Without one, :class:`NoPeerCache`: every ACK is checked in Redis.
"""

from __future__ import annotations

from typing import Protocol

from secconf.core.gate import AckHops, DialogPeers

__all__ = ["NoPeerCache", "PeerCache"]


class PeerCache(Protocol):
    """Where the focus keeps the peers of a dialog it just answered, for its ACK."""

    def remember(self, call_id: str, peers: DialogPeers) -> None: ...

    def recall(self, call_id: str) -> AckHops | None: ...


class NoPeerCache:
    """No cache: every ACK is checked against Redis."""

    def remember(self, call_id: str, peers: DialogPeers) -> None:
        return None

    def recall(self, call_id: str) -> AckHops | None:
        return None
