"""The demo's cast and stage: who is who, the focus's settings, and every service started.

:func:`start_services` starts, on loopback and on free ports, a throwaway CA, redis-server,
the KMS and its users, the media edge, Asterisk 22 ConfBridge from the cached Debian tree
and Kamailio with the secconf module (SIP over TLS towards participants), with a progress
display, and stops them all on the way out.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from ..client.agent import ParticipantAgent
from ..client.sip import UserAgent
from ..focus.settings import load_settings
from ..kms.async_client import KmsClient
from ..store import generate_key_file
from ..store.conferences import ConferenceStore, connect_blocking
from ..store.keywrap import KeyWrapper, load_key_file
from ..store.sip_users import SipUserStore
from .services.asterisk import AsteriskProcess, asterisk_tree_cached, restore_asterisk_tree
from .services.edge import EdgeProcess
from .services.kamailio import KamailioProcess
from .services.kms import KmsProcess
from .services.redis_server import RedisProcess
from .tlsca import TlsFiles, init_ca, participant_contexts

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "DAVE",
    "DOMAIN",
    "ERIN",
    "FOCUS",
    "KMS_ID",
    "MALLORY",
    "PREFIX",
    "Services",
    "agent",
    "start_services",
    "tls_ua",
]

DOMAIN = "example.com"
ALICE, BOB, CAROL, DAVE, ERIN, MALLORY = (
    f"sip:{name}@{DOMAIN}" for name in ("alice", "bob", "carol", "dave", "erin", "mallory")
)
FOCUS = "sip:focus@conf.demo.invalid"
KMS_ID = "sip:kms.demo.invalid"
PREFIX = "scdemo"
#: The participants who prove themselves by SIP digest (SDES phones), not by a ticket.
DIGEST_USERS = ("carol", "dave", "erin")

SETTINGS = """
[focus]
domain = "conf.demo.invalid"
server_name = "focus.demo"

[identity]
trusted_sources = []                 # nobody is believed on their word: tickets or digest

[policy]
creators = ["{alice}"]
allowed = ["{bob}", "{carol}", "{dave}", "{erin}"]
mixed_modes = true                   # SDES phones may join alice's KMS-mode conference

[upstream]
uri = "sip:127.0.0.1:9"              # SECCONF_UPSTREAM: Asterisk
# token_secret_file: SECCONF_MIXER_TOKEN_FILE (the secret shared with Asterisk)

[redis]
url = "redis://127.0.0.1:1/0"        # SECCONF_REDIS_URL
timeout = 0.5
prefix = "{prefix}"
kek_file = "{kek}"
kek_id = "demo-kek"

[edge]
timeout = 1.0

[kms]
url = "{kms_url}"
kms_identity = "{kms_identity}"
focus_identity = "{focus}"
psk_file = "{focus_psk}"
timeout = 1.0

[digest]
realm = "{domain}"
# MD5 only: baresip 1.0.0 gives up on any challenge that also offers SHA-256
# (docs/interop.md); over TLS the digest exchange itself is not exposed.
algorithms = ["MD5"]
"""


@dataclass
class Services:
    """Everything started for the story, on loopback."""

    workdir: Path
    tls: TlsFiles
    redis: RedisProcess
    kms: KmsProcess
    edge: EdgeProcess
    asterisk: AsteriskProcess
    kamailio: KamailioProcess
    psks: dict[str, Path]
    passwords: dict[str, str] = field(repr=False)

    def target(self, user: str) -> str:
        """A SIP URI at Kamailio's TLS listener."""
        return f"sip:{user}@127.0.0.1:{self.kamailio.tls_port};transport=tls"

    @property
    def registrar(self) -> str:
        return f"sip:127.0.0.1:{self.kamailio.tls_port};transport=tls"

    def store(self) -> ConferenceStore:
        settings = load_settings(self.kamailio.settings_path, env=self.kamailio.env)
        return ConferenceStore(
            connect_blocking(self.redis.url, timeout=1.0),
            KeyWrapper(load_key_file(settings.kek_file), settings.kek_id),
            PREFIX,
        )

    def running(self) -> list[str]:
        names = {
            "redis": self.redis.running,
            "kms": self.kms.process is not None and self.kms.process.poll() is None,
            "edge": self.edge.running,
            "asterisk": self.asterisk.running,
            "kamailio": self.kamailio.running,
        }
        return [name for name, alive in names.items() if alive]


class _Steps:
    """The progress display: one line per service, ticked off when it is up."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=False,
        )  # fmt: skip

    def started(self, description: str) -> TaskID:
        return self.progress.add_task(description, total=1)

    def done(self, task: TaskID, description: str) -> None:
        self.progress.update(task, completed=1, description=f"[green]✓[/green] {description}")


@contextlib.contextmanager
def start_services(console: Console, workdir: Path) -> Iterator[Services]:
    """Start everything (with a progress display); stop everything on the way out."""
    passwords = {name: secrets.token_urlsafe(12) for name in DIGEST_USERS}
    with contextlib.ExitStack() as stack:
        steps = _Steps(console)
        steps.progress.start()

        task = steps.started("throwaway CA for SIP over TLS")
        tls = init_ca(
            workdir / "tls", ["127.0.0.1", "localhost", "conf.demo.invalid"],
            clients=["alice", "bob", "carol", "dave", "mallory"],
        )  # fmt: skip
        steps.done(task, f"throwaway CA and certificates in {tls.directory}")

        task = steps.started("redis-server")
        redis = stack.enter_context(RedisProcess(workdir / "redis"))
        steps.done(task, f"redis-server on {redis.url}")

        task = steps.started("KMS (secconf kms serve) and its users")
        kms = stack.enter_context(KmsProcess(workdir / "kms", redis.url, identity=KMS_ID))
        psks = {who: kms.add_user(who) for who in (FOCUS, ALICE, BOB, MALLORY)}
        steps.done(task, f"KMS {KMS_ID} on {kms.url}; users: focus, alice, bob, mallory")

        task = steps.started("media edge (secconf edge serve)")
        edge = stack.enter_context(EdgeProcess(workdir / "edge"))
        steps.done(task, f"media edge, control API {edge.url}")

        asterisk = _start_asterisk(steps, stack, workdir)

        task = steps.started("Kamailio + secconf module")
        kek = workdir / "kek"
        generate_key_file(kek)
        kamailio = _kamailio(workdir, kek, tls, redis, kms, edge, asterisk, psks[FOCUS])
        stack.enter_context(kamailio)
        _add_digest_users(redis.url, kek, passwords)
        steps.done(
            task,
            f"Kamailio + secconf: SIP/TLS 127.0.0.1:{kamailio.tls_port} (participants), "
            f"udp {kamailio.port} (Asterisk); digest users carol, dave, erin",
        )
        steps.progress.stop()
        services = Services(workdir, tls, redis, kms, edge, asterisk, kamailio, psks, passwords)
        yield services


def _start_asterisk(steps: _Steps, stack: contextlib.ExitStack, workdir: Path) -> AsteriskProcess:
    """Restore the cached Asterisk tree (or build it, the first time) and start ConfBridge."""
    cached = asterisk_tree_cached()
    task = steps.started(
        "Asterisk 22 tree: "
        + ("restoring the cached Debian sid tree" if cached else "building it (first run)")
    )
    seconds = restore_asterisk_tree(workdir / "tree")
    steps.done(task, f"Asterisk 22 tree ready in {seconds:.1f} s")

    task = steps.started("Asterisk ConfBridge")
    asterisk = stack.enter_context(AsteriskProcess(workdir / "tree"))
    steps.done(
        task,
        f"Asterisk ConfBridge: SIP udp 127.0.0.1:{asterisk.sip_port}, AMI {asterisk.ami_port}",
    )
    return asterisk


def _kamailio(
    workdir: Path,
    kek: Path,
    tls: TlsFiles,
    redis: RedisProcess,
    kms: KmsProcess,
    edge: EdgeProcess,
    asterisk: AsteriskProcess,
    focus_psk: Path,
) -> KamailioProcess:
    """Kamailio with the module's settings for the story (not started), pointed at the rest."""
    settings = SETTINGS.format(
        alice=ALICE, bob=BOB, carol=CAROL, dave=DAVE, erin=ERIN, prefix=PREFIX, kek=kek,
        kms_url=kms.url, kms_identity=KMS_ID, focus=FOCUS, focus_psk=focus_psk,
        domain=DOMAIN,
    )  # fmt: skip
    kamailio = KamailioProcess(
        workdir / "kamailio",
        settings,
        env={
            "SECCONF_REDIS_URL": redis.url,
            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk.sip_port}",
            **edge.focus_env,
            **asterisk.focus_env,  # the join tokens' shared secret
        },
        tls_dir=tls.directory,
        children=4,
    )
    # Asterisk's kamailio-out endpoint (dial-out) was rendered with this port.
    kamailio.port = asterisk.kamailio_port
    return kamailio


def _add_digest_users(redis_url: str, kek: Path, passwords: dict[str, str]) -> None:
    """The SDES participants' digest credentials, stored in Redis under the focus's KEK."""
    client = connect_blocking(redis_url, timeout=1.0)
    users = SipUserStore(client, KeyWrapper(load_key_file(kek), "demo-kek"), PREFIX)
    for name, password in passwords.items():
        users.add(f"sip:{name}@{DOMAIN}", name, DOMAIN, password)
    client.close()


async def tls_ua(services: Services, identity: str, name: str) -> UserAgent:
    server, client = participant_contexts(services.tls, name)
    return await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip


async def agent(services: Services, identity: str, name: str) -> ParticipantAgent:
    ua = await tls_ua(services, identity, name)
    client = KmsClient(
        services.kms.url, KMS_ID, identity, load_key_file(services.psks[identity], "PSK")
    )
    return ParticipantAgent(identity, client, ua, rtcp_interval=0.3)
