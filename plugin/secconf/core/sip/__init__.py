"""Sans-IO SIP (RFC 3261) for the secconf participant: codec, transactions, dialogs.

Nothing in this package touches a socket, a clock or a random source: the
asyncio driver in :mod:`secconf.client.sip` feeds it bytes and timer events,
and passes randomness in as a :data:`~secconf.core.sip.headers.RandomBytes`.
"""

from __future__ import annotations
