"""Running the edge: configuration in; relay, tick loop and control API on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager

import uvicorn

from ..config_files import read_token
from ..httpguard import guarded_config
from ..store import KeyWrapper, connect, load_key_file
from ..store.edge_state import EdgeRecords
from ..store.redis import AsyncClient
from .api import build_app
from .config import EdgeConfig, EdgeConfigError
from .relay import EdgeRelay
from .service import EdgeService
from .sockets import PortAllocator
from .state import EdgeStore

__all__ = ["Edge", "run", "serve"]

log = logging.getLogger("secconf.edge")


class _Server(uvicorn.Server):
    """uvicorn, announcing the bound address on stderr (the port may have been 0)."""

    def __init__(self, config: uvicorn.Config, *, signals: bool) -> None:
        super().__init__(config)
        self.bound: tuple[str, int] | None = None
        self.signals = signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.bound = (host, port)
                print(f"secconf edge listening on {host}:{port}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self.signals:
            with super().capture_signals():
                yield
        else:  # an edge embedded in a test or a benchmark leaves signals alone
            yield


class Edge:
    """One running edge: service (relay + store) and, optionally, the HTTP API server."""

    def __init__(
        self,
        config: EdgeConfig,
        service: EdgeService,
        token: str,
        *,
        redis: AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.token = token
        self.app = build_app(service, token=token)
        self.server: _Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        #: the client under the service's store, closed with the edge
        self._redis = redis

    @classmethod
    async def create(cls, config: EdgeConfig, *, token: str | None = None) -> Edge:
        if token is None:
            if config.token_file is None:
                raise EdgeConfigError("token_file is required: the control API needs a token")
            token = read_token(config.token_file, error=EdgeConfigError)
        relay = EdgeRelay(
            participant_host=config.participant_host,
            internal_host=config.internal_host,
            ports=PortAllocator(config.port_min, config.port_max),
            grace=config.grace,
            policy=config.verify,
            internal_suite=config.internal_suite,
            advertise=config.advertise,
        )
        store = None
        client = None
        if config.redis is not None:
            wrapper = KeyWrapper(load_key_file(config.redis.kek_file), config.redis.kek_id)
            client = connect(config.redis.url, timeout=config.redis.timeout)
            store = EdgeStore(EdgeRecords(client, config.redis.prefix, config.edge_id), wrapper)
        service = EdgeService(
            relay, store, tick=config.tick, default_internal_mode=config.internal_mode
        )
        edge = cls(config, service, token, redis=client)
        try:
            await service.restore()
        except BaseException:
            await edge.close()
            raise
        service.start()
        return edge

    async def start_api(self, *, embedded: bool = True) -> tuple[str, int]:
        """Serve the API on this loop; returns the bound (host, port)."""
        self.server = _Server(
            guarded_config(
                self.app,
                host=self.config.listen,
                port=self.config.port,
                limits=self.config.http,
                log=log,
                reserve_fds=self.config.media_fds,
            ),
            signals=not embedded,
        )
        self._serve_task = asyncio.get_running_loop().create_task(self.server.serve())
        while not self.server.started:
            if self._serve_task.done():
                self._serve_task.result()
                raise RuntimeError("the control API did not start")
            await asyncio.sleep(0.01)
        if self.server.bound is None:
            raise RuntimeError("the control API has no socket")
        return self.server.bound

    async def close(self) -> None:
        if self.server is not None and self._serve_task is not None:
            self.server.should_exit = True
            try:
                await asyncio.wait_for(self._serve_task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._serve_task.cancel()
        await self.service.close()
        if self._redis is not None:
            await self._redis.aclose()


@asynccontextmanager
async def running(config: EdgeConfig, *, token: str | None = None) -> AsyncIterator[Edge]:
    edge = await Edge.create(config, token=token)
    try:
        yield edge
    finally:
        await edge.close()


async def serve(config: EdgeConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    edge = await Edge.create(config)
    try:
        await edge.start_api(embedded=False)
        if edge._serve_task is not None:
            await edge._serve_task
    finally:
        await edge.close()


def run(config: EdgeConfig) -> None:
    asyncio.run(serve(config))
