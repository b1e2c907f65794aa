"""One wiring of the real stack for the end-to-end tests: Redis, the edge, Kamailio + module, Asterisk.

Each test module keeps its own module TOML (with ``@KEK@`` where the key-encryption
key's path goes) and uses :func:`running_stack` in its fixture; the session's
Asterisk is shared, so a stack that restarts it (``dialout``: ``kamailio-out`` must
point at this Kamailio) puts it back as it was, running, at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from secconf.asterisk.ami import AmiSettings
from secconf.asterisk.watcher_settings import WatcherSettings
from secconf.core.roster import RekeyPolicy
from secconf.focus.settings import Settings, load_settings
from secconf.store import generate_key_file
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from secconf.store.sip_users import SipUserStore
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory, RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory, KamailioServer
from tests.fixtures.redis_server import RedisServer

KEK = "@KEK@"


@dataclasses.dataclass
class Stack:
    """The running services of one end-to-end module."""

    redis: RedisServer
    edge: RunningEdge
    kamailio: KamailioServer
    asterisk: AsteriskServer
    kek: Path

    def focus_settings(self) -> Settings:
        return load_settings(self.kamailio.settings_path, env=self.kamailio.extra_env)

    def target(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.kamailio.port}"

    def store(self) -> ConferenceStore:
        settings = self.focus_settings()
        client = connect_blocking(self.redis.url, timeout=1.0)
        wrapper = KeyWrapper(load_key_file(settings.kek_file), settings.kek_id)
        return ConferenceStore(client, wrapper, settings.redis_prefix)

    def conference(self, conference: str) -> dict[str, Any]:
        """The edge's view of *conference* (legs with counters, epochs, verdicts)."""
        return self.edge.get(f"/v1/conferences/{conference}")  # type: ignore[no-any-return]

    def add_sip_user(self, identity: str, user: str, realm: str, password: str) -> None:
        """What ``secconf focus user add`` stores: HA1 values wrapped with the KEK."""
        settings = self.focus_settings()
        client = connect_blocking(self.redis.url, timeout=1.0)
        try:
            wrapper = KeyWrapper(load_key_file(settings.kek_file), settings.kek_id)
            SipUserStore(client, wrapper, settings.redis_prefix).add(
                identity, user, realm, password
            )
        finally:
            client.close()

    def watcher_settings(self, watcher_id: str = "e2e", **changes: Any) -> WatcherSettings:
        """A watcher on this Asterisk and focus: joins do not rekey (the scenarios are about
        leaves), 0.5 s debounce, quick polling; *changes* override any field."""
        base = WatcherSettings(
            ami=AmiSettings(
                port=self.asterisk.ami_port,
                username=self.asterisk.ami_user,
                secret=self.asterisk.ami_secret,
            ),
            focus=self.focus_settings(),
            policy=RekeyPolicy(debounce=0.5, rekey_on_join=False),
            watcher_id=watcher_id,
            refresh_timeout=5.0,
            verify_timeout=8.0,
            poll_interval=0.02,
            dialout_timeout=5.0,
            dialout_poll=0.05,
        )
        return dataclasses.replace(base, **changes)


@contextmanager
def running_stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    workdir: Path,
    settings_toml: str,
    *,
    dialout: bool = False,
    tls: bool = False,
) -> Iterator[Stack]:
    """Start the edge and Kamailio (upstream: the session's Asterisk) on a fresh KEK.

    *dialout*: Asterisk is restarted with ``kamailio-out`` pointing at this Kamailio
    (its port is known only now) and restored at the end.
    """
    redis_server.ensure_ready()
    edge = edge_factory.start()
    kek = workdir / "kek"
    generate_key_file(kek)
    kamailio = kamailio_factory.start(
        settings_toml.replace(KEK, str(kek)),
        env={
            "SECCONF_REDIS_URL": redis_server.url,
            # Asterisk identifies Kamailio by its address (pjsip.conf [kamailio-identify]).
            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk_server.sip_port}",
            **edge.focus_env,
            # The join tokens: the module and the dialplan share this Asterisk's secret.
            **asterisk_server.focus_env,
        },
        tls=tls,
    )
    previous = asterisk_server.kamailio_port
    if dialout:
        asterisk_server.kamailio_port = kamailio.port
        asterisk_server.stop()
        asterisk_server.start()
    try:
        yield Stack(redis_server, edge, kamailio, asterisk_server, kek)
    finally:
        redis_server.ensure_ready()
        kamailio.stop()
        edge.stop()
        if dialout:
            # Other modules use the session's Asterisk: as it was, and running.
            asterisk_server.kamailio_port = previous
            asterisk_server.stop()
            asterisk_server.start()
