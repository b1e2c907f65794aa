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

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from secconf.asterisk.watcher_settings import WatcherSettings
from secconf.core.roster import FailurePolicy
from secconf.lab.tlsca import TlsFiles
from tests.asterisk.stack import Stack, running_stack
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
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

[lab]
# The test UAs send SDES over UDP (tests/security checks the TLS-only default).
sdes_over_udp = true

[identity]
trusted_sources = ["udp:127.0.0.1", "tls:127.0.0.1"]

[limits]
# Functional tests and benchmarks hold many dialogs per identity (tests/security checks the limit).
dialogs_per_identity = 1000
refers_per_minute = 600

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
kek_file = "@KEK@"
kek_id = "interop-kek"

[edge]
timeout = 1.0
"""


@dataclass
class InteropStack(Stack):
    """The end-to-end stack (tests/asterisk/stack.py) with Kamailio's TLS listener too."""

    tls: TlsFiles | None = None  # the CA of Kamailio's certificate, and a client certificate

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

    def watcher_settings(self, watcher_id: str = "interop", **changes: Any) -> WatcherSettings:
        """Real phones report every ~5 s: verification waits above the edge's 12 s deadline,
        and a phone that does not follow a rekey is hung up and called back."""
        options: dict[str, Any] = {
            "verify_timeout": 15.0,
            "poll_interval": 0.05,
            "on_failure": FailurePolicy.REPLACE,
            "dialout_timeout": 10.0,
        }
        return super().watcher_settings(watcher_id, **{**options, **changes})


@pytest.fixture(scope="package")
def interop(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InteropStack]:
    # Participants may come over TLS too (the mixer side stays UDP); the focus calls
    # registered phones back (dial-out), so kamailio-out points at this Kamailio.
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("interop"), SETTINGS, dialout=True, tls=True,
    ) as running:  # fmt: skip
        for user, password in PHONE_USERS.items():
            running.add_sip_user(f"sip:{user}@{REALM}", user, REALM, password)
        fields = {f.name: getattr(running, f.name) for f in dataclasses.fields(running)}
        yield InteropStack(**fields, tls=kamailio_factory.tls)
