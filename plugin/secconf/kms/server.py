"""Running the KMS: configuration in, uvicorn serving the app until stopped."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn

from ..httpguard import guarded_config
from ..store import KeyWrapper, connect, load_key_file
from .app import build_app
from .config import KmsConfig
from .service import KmsService

__all__ = ["serve"]

log = logging.getLogger("secconf.kms")


class _Server(uvicorn.Server):
    """uvicorn, announcing the bound address on stderr (the port may have been 0)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                print(f"secconf kms listening on {host}:{port}", file=sys.stderr, flush=True)


async def serve(config: KmsConfig) -> None:
    """Serve until SIGINT/SIGTERM; Redis is connected lazily and closed at the end."""
    wrapper = KeyWrapper(load_key_file(config.kek_file), config.kek_id)
    client = connect(config.redis_url, timeout=config.redis_timeout)
    service = KmsService.create(
        client,
        wrapper,
        identity=config.identity,
        prefix=config.redis_prefix,
        clock_skew=config.clock_skew,
        max_ticket_lifetime=config.max_ticket_lifetime,
        max_tickets_per_user=config.max_tickets_per_user,
        max_tickets_per_identity=config.max_tickets_per_identity,
        ticket_record_margin=config.ticket_record_margin,
    )
    exceptions = len(config.max_tickets_per_identity)
    log.info(
        "tickets: at most %d live per user (%d identit%s with a limit of its own), "
        "records kept %g s after expiry",
        config.max_tickets_per_user,
        exceptions,
        "y" if exceptions == 1 else "ies",
        config.ticket_record_margin,
    )
    server = _Server(
        guarded_config(
            build_app(service), host=config.listen, port=config.port, limits=config.http, log=log
        )
    )
    try:
        await server.serve()
    finally:
        await client.aclose()


def run(config: KmsConfig) -> None:
    asyncio.run(serve(config))
