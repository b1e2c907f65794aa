"""The whole chain for the interop tests: Redis, edge, Kamailio + module (SDES, digest), Asterisk.

``interop`` (package: one stack for every interop test)
    an :class:`InteropStack`: real Redis, a real media edge (``secconf edge
    serve``), real Kamailio 5.6 with the secconf module (SDES mode;
    P-Asserted-Identity trusted from 127.0.0.1 for the secconf participants and
    sipp, digest authentication for phones that cannot assert an identity),
    whose upstream is the real Asterisk 22 ConfBridge; Kamailio listens for
    SIP over TLS too (``tls_target``, ``tls_registrar``; its certificate from
    the session's throwaway CA, ``tls``).  Digest users are
    provisioned in Redis like ``secconf focus user add`` does
    (:class:`secconf.store.sip_users.SipUserStore`); they may REGISTER
    (``[digest] realm``, usrloc in Kamailio's memory), so the focus can call
    them (dial-out, replacement calls): Asterisk is restarted on its ports
    with its ``kamailio-out`` endpoint pointing at this Kamailio's real port.
    ``watcher_settings(...)`` gives settings for a roster watcher on that
    Asterisk and Redis (policy ``replace``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from secconf.asterisk.ami import AmiSettings
from secconf.asterisk.watcher import WatcherSettings
from secconf.core.roster import FailurePolicy, RekeyPolicy
from secconf.kamailio.settings import load_settings
from secconf.store import generate_key_file
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from secconf.store.sip_users import SipUserStore
from secconf.tlsca import TlsFiles
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory, RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory, KamailioServer
from tests.fixtures.redis_server import RedisServer

PREFIX = "scinterop"
REALM = "conf.test.invalid"
ALICE, CAROL = "sip:alice@example.com", "sip:carol@example.com"
SIPP = "sip:sipp@example.com"
#: digest users (the phones): username -> password
PHONE_USERS = {"lin": "linphone-secret-1", "bs": "baresip-secret-1"}

SETTINGS = f"""
[focus]
domain = "{REALM}"
server_name = "focus.interop"

[identity]
trusted_sources = ["127.0.0.1"]

[policy]
creators = ["{ALICE}"]
allowed = ["{CAROL}", "{SIPP}", {", ".join(f'"sip:{user}@{REALM}"' for user in PHONE_USERS)}]

[digest]
realm = "{REALM}"
# baresip 1.0.0 (libre 1.1.0) ends the call ("Function not implemented") when any
# Proxy-Authenticate of a 407 names an algorithm other than MD5, even with an MD5 one
# beside it: a focus serving these phones challenges with MD5 only.
algorithms = ["MD5"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "{PREFIX}"
kek_file = "KEK"
kek_id = "interop-kek"

[edge]
timeout = 1.0
"""


@dataclass
class InteropStack:
    redis: RedisServer
    edge: RunningEdge
    kamailio: KamailioServer
    asterisk: AsteriskServer
    tls: TlsFiles  # the CA of Kamailio's certificate, and a client certificate

    def target(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.kamailio.port}"

    def tls_target(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.kamailio.tls_port};transport=tls"

    @property
    def tls_registrar(self) -> str:
        """Kamailio as the phones' registrar over TLS."""
        return f"sip:127.0.0.1:{self.kamailio.tls_port};transport=tls"

    @property
    def registrar(self) -> str:
        """Kamailio as the phones' registrar (UDP)."""
        return f"sip:127.0.0.1:{self.kamailio.port}"

    def store(self) -> ConferenceStore:
        settings = load_settings(self.kamailio.settings_path, env=self.kamailio.extra_env)
        client = connect_blocking(self.redis.url, timeout=1.0)
        wrapper = KeyWrapper(load_key_file(settings.kek_file), settings.kek_id)
        return ConferenceStore(client, wrapper, PREFIX)

    def conference(self, conference: str) -> dict:  # type: ignore[type-arg]
        """The edge's view of *conference* (legs with counters, epochs, verdicts)."""
        return self.edge.get(f"/v1/conferences/{conference}")  # type: ignore[no-any-return]

    def watcher_settings(self, watcher_id: str = "interop", **options: object) -> WatcherSettings:
        return WatcherSettings(
            ami=AmiSettings(
                port=self.asterisk.ami_port,
                username=self.asterisk.ami_user,
                secret=self.asterisk.ami_secret,
            ),
            focus=load_settings(self.kamailio.settings_path, env=self.kamailio.extra_env),
            # Joins do not rekey: the scenarios are about a leave.
            policy=RekeyPolicy(debounce=0.5, rekey_on_join=False),
            watcher_id=watcher_id,
            refresh_timeout=5.0,
            verify_timeout=15.0,  # above the edge's 12 s deadline; phones report every ~5 s
            poll_interval=0.05,
            # A phone that does not follow a rekey is hung up and called back.
            on_failure=FailurePolicy.REPLACE,
            dialout_timeout=10.0,
            dialout_poll=0.05,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="package")
def interop(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InteropStack]:
    redis_server.ensure_ready()
    edge = edge_factory.start()
    kek = tmp_path_factory.mktemp("interop") / "kek"
    generate_key_file(kek)
    kamailio = kamailio_factory.start(
        SETTINGS.replace('kek_file = "KEK"', f'kek_file = "{kek}"'),
        env={
            "SECCONF_REDIS_URL": redis_server.url,
            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk_server.sip_port}",
            "SECCONF_EDGE_URL": edge.url,
            "SECCONF_EDGE_TOKEN_FILE": str(edge.token_file),
        },
        tls=True,  # participants may come over TLS too (the mixer side stays UDP)
    )
    # kamailio-out's outbound_proxy must be Kamailio's real port, known only now:
    # render Asterisk's config again and restart it on its own ports.
    previous = asterisk_server.kamailio_port
    asterisk_server.kamailio_port = kamailio.port
    asterisk_server.stop()
    asterisk_server.start()
    stack = InteropStack(redis_server, edge, kamailio, asterisk_server, kamailio_factory.tls)
    # `secconf focus user add sip:USER@REALM`: HA1 values (MD5, SHA-256) wrapped with the KEK.
    store = stack.store()
    users = SipUserStore(store.client, KeyWrapper(load_key_file(kek), "interop-kek"), PREFIX)
    for user, password in PHONE_USERS.items():
        users.add(f"sip:{user}@{REALM}", user, REALM, password)
    store.client.close()
    yield stack
    kamailio.stop()
    edge.stop()
    asterisk_server.kamailio_port = previous
    asterisk_server.stop()
    asterisk_server.start()
