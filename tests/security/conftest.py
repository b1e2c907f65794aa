"""The real stack under attack: Redis, the edge, Kamailio + module (TLS, digest), Asterisk.

Defaults as shipped where it matters: no trusted source for asserted identities, SDES only
over TLS (no ``[lab]``), digest for everybody.  Alice creates and Bob joins over TLS, for
real, through the real ConfBridge; :meth:`SecureStack.state` is everything an attack must
not change: every Redis key under the module's prefix (DUMP), the edge's legs and epochs,
the bridge's members (AMI ConfbridgeList).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from secconf.asterisk.ami import AmiClient, AmiSettings
from secconf.client.sip import Call, UserAgent
from secconf.lab.tlsca import participant_contexts
from secconf.store.conferences import connect_blocking
from tests.asterisk.stack import Stack, running_stack
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.media import SdesParticipant

PREFIX = "scsec"
REALM = "sec.test"
ALICE, BOB, CAROL = (f"sip:{name}@{REALM}" for name in ("alice", "bob", "carol"))
PASSWORDS = {name: secrets.token_urlsafe(9) for name in ("alice", "bob", "carol")}

SETTINGS = f"""
[focus]
domain = "conf.{REALM}"
server_name = "focus.sec"

[identity]
trusted_sources = []

[limits]
# Low, so that tests/security/test_limits.py reaches them with a few calls.
dialogs_per_identity = 3
refers_per_minute = 3

[digest]
realm = "{REALM}"
algorithms = ["SHA-256", "MD5"]

[policy]
creators = ["{ALICE}"]
allowed = ["{BOB}", "{CAROL}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "{PREFIX}"
kek_file = "@KEK@"
kek_id = "sec-kek"

[edge]
timeout = 1.0
"""


@dataclass
class Member:
    """A legitimate participant's call, and what an attacker could learn of its dialog."""

    phone: SdesParticipant
    call: Call

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def tag(self) -> str:  # the participant's tag (it called: From)
        return self.call.dialog.local_tag

    @property
    def mixer_tag(self) -> str:
        return self.call.dialog.remote_tag

    @property
    def routes(self) -> list[str]:
        return list(self.call.dialog.route_set)


@dataclass
class SecureStack:
    stack: Stack
    loop: asyncio.AbstractEventLoop
    conference: str = ""
    alice: Member | None = None
    bob: Member | None = None

    @property
    def udp(self) -> tuple[str, int]:
        return ("127.0.0.1", self.stack.kamailio.port)

    @property
    def tls(self) -> tuple[str, int]:
        return ("127.0.0.1", self.stack.kamailio.tls_port)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def redis_state(self) -> dict[bytes, bytes]:
        client = connect_blocking(self.stack.redis.url, timeout=1.0)
        try:
            return {key: client.dump(key) for key in client.scan_iter(match=f"{PREFIX}:*")}
        finally:
            client.close()

    def edge_state(self) -> list[tuple[Any, ...]]:
        """Each leg's identity, epochs and addresses (not its packet counters)."""
        legs = self.stack.conference(self.conference)["legs"]
        keep = ("leg", "epoch", "internal", "internal_remote", "external", "remote", "mode")
        return sorted(tuple(repr(leg.get(name)) for name in keep) for leg in legs)

    def bridge_members(self) -> list[str]:
        return self.run(self.bridge_members_async())  # type: ignore[no-any-return]

    async def bridge_members_async(self) -> list[str]:
        """The bridge's channels, from Asterisk itself (AMI ConfbridgeList)."""
        server = self.stack.asterisk
        ami = AmiClient(AmiSettings(port=server.ami_port, username=server.ami_user,
                                    secret=server.ami_secret, connect_timeout=2.0,
                                    action_timeout=2.0))  # fmt: skip
        await ami.start()
        try:
            listed = await ami.confbridge_list(self.conference)
            return sorted(entry.get("Channel", "") for entry in listed)
        finally:
            await ami.close()

    def state(self) -> tuple[Any, ...]:
        return (self.redis_state(), self.edge_state(), self.bridge_members())

    def refusal(self, call_id: str) -> str:
        return self.stack.kamailio.refusal(call_id)


async def tls_phone(stack: Stack, identity: str) -> SdesParticipant:
    server, client = participant_contexts(stack.kamailio_tls_files, "participant")
    ua = await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip
    return await SdesParticipant.start(identity, ua)


@pytest.fixture(scope="module")
def secure(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecureStack]:
    """The stack with a live conference: Alice (creator) and Bob, SDES over TLS, digest."""
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("security"), SETTINGS, tls=True,
    ) as stack:  # fmt: skip
        stack.kamailio_tls_files = kamailio_factory.tls  # type: ignore[attr-defined]
        for name, password in PASSWORDS.items():
            stack.add_sip_user(f"sip:{name}@{REALM}", name, REALM, password)
        loop = asyncio.new_event_loop()
        secure = SecureStack(stack, loop)
        tls_target = f"127.0.0.1:{stack.kamailio.tls_port};transport=tls"

        async def setup() -> None:
            alice = await tls_phone(stack, ALICE)
            call = await alice.invite(
                f"sip:conf-factory@{tls_target}", credentials=("alice", PASSWORDS["alice"])
            )
            header = call.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            assert header is not None
            secure.conference = header.split("conf-", 1)[1].split("@", 1)[0]
            secure.alice = Member(alice, call)
            bob = await tls_phone(stack, BOB)
            call_b = await bob.invite(
                f"sip:conf-{secure.conference}@{tls_target}",
                credentials=("bob", PASSWORDS["bob"]),
            )
            secure.bob = Member(bob, call_b)

        loop.run_until_complete(setup())
        for _ in range(100):  # both channels in the bridge
            if len(secure.bridge_members()) == 2:
                break
            loop.run_until_complete(asyncio.sleep(0.05))
        else:
            raise AssertionError("Alice and Bob never both reached the bridge")
        try:
            yield secure
        finally:

            async def teardown() -> None:
                for member in (secure.alice, secure.bob):
                    if member is not None:
                        with contextlib.suppress(Exception):
                            await member.call.bye(timeout=2)
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(member.phone.close(), 5)

            loop.run_until_complete(teardown())
            loop.close()
