"""``secconf client``: the participant agent (KMS tickets, MIKEY-TICKET calls)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .common import Commands


def _kms_client(args: argparse.Namespace) -> Any:
    from ..kms.async_client import KmsClient
    from ..store import load_key_file

    return KmsClient(
        args.kms_url,
        kms_identity=args.kms_identity,
        identity=args.identity,
        psk=load_key_file(args.psk_file, "PSK"),
        timeout=args.timeout,
    )


def _cmd_client_ticket(args: argparse.Namespace) -> int:
    import time

    from ..core.mikey.ticket import DesiredPolicy

    desired = DesiredPolicy(
        recipients=tuple(args.recipient),
        valid_until=time.time() + args.lifetime,
        forking=not args.no_forking,
    )
    issued = asyncio.run(_kms_client(args).request_ticket(desired))
    policy = issued.policy
    print(f"ticket {issued.ticket_id.hex()}")
    print(f"  initiator   {policy.initiator}")
    print(f"  recipients  {', '.join(policy.recipients)}")
    print(f"  valid until {policy.valid_until:.0f} (unix time)")
    print(f"  flags       {policy.flags!r}")
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host else (text, 0)


async def _agent(args: argparse.Namespace) -> Any:
    from ..client.agent import ParticipantAgent
    from ..client.sip import UserAgent

    host, port = _host_port(args.sip_listen)
    ua = await UserAgent.start(host, port, identity=args.identity)
    return ParticipantAgent(
        args.identity,
        _kms_client(args),
        ua,
        media_host=host,
        dialout_focus=getattr(args, "dialout_focus", None),
    )


def _cmd_client_call(args: argparse.Namespace) -> int:
    import json

    from ..client.agent import exchange_audio

    async def main() -> dict[str, object]:
        agent = await _agent(args)
        try:
            keyed = await agent.call(args.target, args.target_identity, timeout=args.timeout)
            try:
                report = await exchange_audio(
                    keyed, tone=args.tone, seconds=args.seconds, expect_tone=args.expect_tone
                )
            finally:
                await keyed.call.bye()
                await keyed.media.close()
            return report
        finally:
            await agent.ua.close()

    print(json.dumps(asyncio.run(main())))
    return 0


def _cmd_client_answer(args: argparse.Namespace) -> int:
    import json

    from ..client.agent import exchange_audio

    async def main() -> dict[str, object]:
        agent = await _agent(args)
        agent.answer_calls()
        print(f"secconf client answering on {agent.ua.local_host}:{agent.ua.local_port}",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            keyed = await asyncio.wait_for(agent.answered.get(), args.wait)
            try:
                report = await exchange_audio(
                    keyed, tone=args.tone, seconds=args.seconds, expect_tone=args.expect_tone
                )
                await keyed.call.wait_ended(timeout=args.seconds + 30)
            finally:
                await keyed.media.close()
            return report
        finally:
            await agent.ua.close()

    print(json.dumps(asyncio.run(main())))
    return 0


def _add_kms_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kms-url", required=True, help="e.g. http://127.0.0.1:8444")
    parser.add_argument("--kms-identity", required=True, help="the KMS's SIP URI")
    parser.add_argument("--identity", required=True, help="your SIP URI, as the KMS knows it")
    parser.add_argument("--psk-file", required=True, help="your pre-shared key file (0600)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per KMS call")


def add_commands(commands: Commands) -> None:
    client = commands.add_parser("client", help="the participant agent")
    client_commands = client.add_subparsers(dest="client_command", required=True)
    ticket_request = client_commands.add_parser("ticket", help="request a ticket from the KMS")
    _add_kms_client_options(ticket_request)
    ticket_request.add_argument(
        "--recipient", action="append", required=True, help="allowed responder (repeatable)"
    )
    ticket_request.add_argument("--lifetime", type=float, default=3600.0, help="seconds")
    ticket_request.add_argument("--no-forking", action="store_true", help="ticket without I flag")
    ticket_request.set_defaults(handler=_cmd_client_ticket)

    call = client_commands.add_parser("call", help="call a participant with MIKEY-TICKET keys")
    answer = client_commands.add_parser("answer", help="answer one MIKEY-TICKET call")
    for sub in (call, answer):
        _add_kms_client_options(sub)
        sub.add_argument("--sip-listen", default="127.0.0.1:0", help="HOST[:PORT] for SIP/UDP")
        sub.add_argument("--tone", type=float, default=1000.0, help="Hz of the tone to send")
        sub.add_argument("--expect-tone", type=float, help="Hz of the tone expected back")
        sub.add_argument("--seconds", type=float, default=3.0, help="how long to send audio")
    call.add_argument("--target", required=True, help="SIP URI to send the INVITE to")
    call.add_argument("--target-identity", required=True, help="the callee's KMS identity")
    call.set_defaults(handler=_cmd_client_call)
    answer.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a call")
    answer.add_argument(
        "--dialout-focus",
        help="the focus identity whose calls into a conference (dial-outs) are answered",
    )
    answer.set_defaults(handler=_cmd_client_answer)
