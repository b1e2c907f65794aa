"""The dialog peers of fresh 2xx answers in Kamailio's shared memory, for their ACKs.

:class:`~secconf.focus.peer_cache.PeerCache` kept in a Kamailio ``htable``.

The gate (docs/security.md) relays an in-dialog request only from a recorded peer to the
other one. The peers are recorded in Redis at the 2xx and never change during a dialog, and
the ACK of that 2xx follows within a few seconds (RFC 3261 §13.2.2.4; its retransmissions
stop after 64*T1 = 32 s, §13.3.1.4). So the node that records a dialog's peers also keeps
them, for that window only, in an ``htable`` of its shared memory, and an ACK that finds them
there is checked without a Redis round trip (about half of the gate's cost per call,
docs/performance.md). Everything else in a dialog (BYE, INFO, OPTIONS, re-INVITE, REFER,
and an ACK on another node or after the window) is checked against Redis as before, so a
released dialog is never served from here beyond the ACK it was answered with.

The table holds tags, flows and Contact URIs (no key material), keyed by the Call-ID. Kamailio's configuration declares it::

    loadmodule "htable.so"
    modparam("htable", "htable", "secconf_peers=>size=14;autoexpire=32;")

Without the module or the table the cache says so once in the log and stays empty; nothing
is refused because of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secconf.core.gate import AckHops, DialogPeers

__all__ = ["HtablePeerCache"]


class HtablePeerCache:
    """:class:`~secconf.focus.peer_cache.PeerCache` in a Kamailio ``htable`` (shared by every worker of the node).

    Keyed by Call-ID alone: an entry only ever lets through a request whose flow and tags
    are the recorded ones (:meth:`AckHops.next_hop`); anything else, including the ACK of
    another dialog that reused the Call-ID, is left to the whole gate (Route MAC, Redis).
    """

    def __init__(self, htable: Any, table: str, log: Callable[[str, str], None]) -> None:
        self._htable = htable
        self._table = table
        self._log = log
        self._working = True

    def remember(self, call_id: str, peers: DialogPeers) -> None:
        if not self._working:
            return
        if self._htable.sht_sets(self._table, call_id, peers.hops.encode()) < 0:
            self._working = False
            self._log(
                "err",
                f"secconf: htable {self._table!r} not writable: ACKs are checked in Redis "
                "(docs/kamailio.md, the peer cache)",
            )

    def recall(self, call_id: str) -> AckHops | None:
        if not self._working:
            return None
        value = self._htable.sht_get(self._table, call_id)
        if not isinstance(value, str) or not value:
            return None
        return AckHops.decode(value)
