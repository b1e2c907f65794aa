"""``make demo`` stage 2: a MIKEY-TICKET call through a real KMS and a real Redis.

Starts redis-server on a free loopback port and the KMS (the same Starlette
app ``secconf kms serve`` runs) on another, provisions three identities with
fresh PSKs, then: Alice asks the KMS for a ticket naming Bob and calls him
over SIP with the TRANSFER_INIT in her SDP; Bob resolves it at the KMS and
answers; both send a tone over SRTP and analyse what they receive.  Mallory,
holding a valid ticket for someone else, is refused.  Everything printed is
measured in this run; keys appear only as fingerprints.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.table import Table

from .client.agent import AgentCall, ParticipantAgent, exchange_audio
from .client.kms import KmsClient
from .client.sip import SipRequestFailed, UserAgent
from .core.keys import key_fingerprint
from .kms.app import build_app
from .kms.service import KmsService
from .services import RedisProcess
from .store import KeyWrapper, UserStore, connect, generate_key_file

KMS_ID = "sip:kms.demo.invalid"
ALICE = "sip:alice@demo.invalid"
BOB = "sip:bob@demo.invalid"
MALLORY = "sip:mallory@demo.invalid"
CAROL = "sip:carol@demo.invalid"


def _key_prints(call: AgentCall) -> dict[int, str]:
    return {cs: key_fingerprint(key.key, key.salt) for cs, key in sorted(call.keys.items())}


async def _run(console: Console, workdir: Path, redis: RedisProcess) -> bool:
    kek = generate_key_file(workdir / "kek")
    client = connect(redis.url, timeout=1.0)
    wrapper = KeyWrapper(kek, "demo-kek")
    service = KmsService.create(client, wrapper, identity=KMS_ID, prefix="demo")
    psks = {name: secrets.token_bytes(32) for name in (ALICE, BOB, MALLORY, CAROL)}
    users = UserStore(client, wrapper, "demo")
    for identity, psk in psks.items():
        await users.add(identity, psk)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(service), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve())
    agents: list[ParticipantAgent] = []
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        kms_url = f"http://127.0.0.1:{port}"
        console.print(f"Redis on {redis.url}, KMS {KMS_ID} on {kms_url}; users: "
                      + ", ".join(psks))  # fmt: skip

        async def agent(identity: str) -> ParticipantAgent:
            ua = await UserAgent.start("127.0.0.1", identity=identity)
            made = ParticipantAgent(
                identity, KmsClient(kms_url, KMS_ID, identity, psks[identity]), ua
            )
            agents.append(made)
            return made

        alice, bob, mallory = await agent(ALICE), await agent(BOB), await agent(MALLORY)
        bob.answer_calls()
        bob_uri = f"sip:bob@127.0.0.1:{bob.ua.local_port}"
        alice_call = await alice.call(bob_uri, BOB)
        bob_call = await asyncio.wait_for(bob.answered.get(), 10)
        alice_report, bob_report = await asyncio.gather(
            exchange_audio(alice_call, tone=1000.0, seconds=2.0, expect_tone=600.0),
            exchange_audio(bob_call, tone=600.0, seconds=2.0, expect_tone=1000.0),
        )
        await alice_call.call.bye()
        for call in (alice_call, bob_call):
            await call.media.close()

        table = Table(title="MIKEY-TICKET call Alice -> Bob (RFC 6043 via the KMS, SRTP media)")
        for column in ("side", "authenticated peer", "SRTP keys CS1 / CS2 (fingerprints)",
                       "sent", "received", "auth failures", "tone heard"):  # fmt: skip
            table.add_column(column)
        for name, call, report, tone in (
            ("Alice", alice_call, alice_report, "600 Hz"),
            ("Bob", bob_call, bob_report, "1000 Hz"),
        ):
            prints = _key_prints(call)
            ratio = report["tone_ratio"]
            heard = f"{tone}: {ratio:.3f}" if isinstance(ratio, float) else "nothing"
            table.add_row(name, str(report["peer"]), f"{prints[1]} / {prints[2]}",
                          str(report["sent"]), str(report["received"]),
                          str(report["auth_failures"]), heard)  # fmt: skip
        console.print(table)
        same_keys = _key_prints(alice_call) == _key_prints(bob_call)
        both_heard = all(
            isinstance(r["tone_ratio"], float) and r["tone_ratio"] > 0.9
            for r in (alice_report, bob_report)
        )
        console.print(
            f"both sides derived the same keys: {same_keys}; "
            f"each heard the other's tone: {both_heard}"
        )

        # Mallory has a valid ticket, but it names Carol; she dials Bob with it.
        try:
            await mallory.call(bob_uri, CAROL)
            refused = "NOT refused"
        except SipRequestFailed as exc:
            refused = f"refused by Bob: {exc.status_code} {exc.reason}"
        console.print(f"Mallory calling Bob with a ticket issued for Carol: {refused}")
        return same_keys and both_heard and refused.startswith("refused")
    finally:
        for made in agents:
            await made.ua.close()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await client.aclose()


def run_mikey_stage(console: Console) -> bool:
    """Run stage 2; True when every check held."""
    console.rule("[bold]stage 2: a MIKEY-TICKET call through a real KMS and Redis")
    with tempfile.TemporaryDirectory() as folder, RedisProcess(Path(folder)) as redis:
        return asyncio.run(_run(console, Path(folder), redis))
