"""``secconf client``: the participant agent (KMS tickets, MIKEY-TICKET calls, the roster)."""

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


def _tls_contexts(args: argparse.Namespace) -> tuple[Any, Any]:
    """(server, client) contexts from --ca-file/--cert-file/--key-file, as the lab's phones use.

    The client context verifies the focus's chain and name; the server one (in-dialog
    requests come back over a connection to our Contact) presents the same certificate.
    """
    import ssl

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(args.cert_file, args.key_file)
    client = ssl.create_default_context(cafile=args.ca_file)
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.load_cert_chain(args.cert_file, args.key_file)
    return server, client


async def _kms_subscription(args: argparse.Namespace, ua: Any) -> Any:
    """KMS mode: a TRANSFER_INIT for the focus, made with a ticket from the KMS."""
    from ..client.agent import ParticipantAgent

    return await ParticipantAgent(args.identity, _kms_client(args), ua).subscription(
        args.focus_identity
    )


async def subscribe_and_print(args: argparse.Namespace, out: Any = None) -> int:
    """``secconf client subscribe``: print the roster on each change until the watch ends."""
    from ..client.conference_events import (
        ConferenceWatch,
        Protection,
        WatchTiming,
        format_rows,
        roster_rows,
    )
    from ..client.sip import UserAgent

    out = out or sys.stdout
    host, port = _host_port(args.sip_listen)
    server_ctx, client_ctx = _tls_contexts(args) if args.ca_file else (None, None)
    ua = await UserAgent.start(
        host, port, "tls" if args.ca_file else "udp", server_ctx,
        identity=args.identity, client_ssl_context=client_ctx,
    )  # fmt: skip
    credentials = None
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as handle:
            credentials = (args.username, handle.readline().rstrip("\r\n"))
    try:
        protection = Protection(args.mode)
        watch = await ConferenceWatch.start(
            ua,
            args.target,
            protection=protection,
            kms=await _kms_subscription(args, ua) if protection is Protection.KMS else None,
            credentials=credentials,
            timing=WatchTiming(expires=args.expires),
        )
        try:
            async with asyncio.timeout(args.seconds):
                async for view in watch.views():
                    print(f"-- {args.target} version {view.version}", file=out)
                    for line in format_rows(roster_rows(view)):
                        print(line, file=out)
                    print(file=out, flush=True)
        except TimeoutError:
            pass
        await watch.close()
        print(f"-- ended: {watch.end_reason}", file=out, flush=True)
    finally:
        await ua.close()
    return 0


def _cmd_client_subscribe(args: argparse.Namespace) -> int:
    if args.mode == "kms":
        missing = [f"--{name.replace('_', '-')}" for name in _KMS_SUBSCRIBE_OPTIONS
                   if not getattr(args, name)]  # fmt: skip
        if missing:
            raise SystemExit(f"secconf: KMS mode needs {', '.join(missing)}")
    if args.mode == "sdes" and not args.ca_file:
        raise SystemExit("secconf: SDES mode sends the roster in the clear: TLS only (--ca-file)")
    if args.ca_file and not (args.cert_file and args.key_file):
        raise SystemExit("secconf: TLS (--ca-file) needs --cert-file and --key-file")
    if args.password_file and not args.username:
        raise SystemExit("secconf: --password-file needs --username")
    try:
        return asyncio.run(subscribe_and_print(args))
    except KeyboardInterrupt:
        return 130


#: What a KMS-mode subscription needs: a ticket for the focus from the KMS.
_KMS_SUBSCRIBE_OPTIONS = ("kms_url", "kms_identity", "psk_file", "focus_identity")


def _add_subscribe_command(client_commands: Commands) -> None:
    sub = client_commands.add_parser(
        "subscribe", help="watch a conference's roster (RFC 4575 event package)"
    )
    sub.add_argument("--target", required=True, help="the conference URI to SUBSCRIBE to")
    sub.add_argument("--identity", required=True, help="your SIP URI (From)")
    sub.add_argument("--mode", choices=("kms", "sdes"), required=True,
                     help="kms: CMS-protected bodies; sdes: plain XML, over TLS only")  # fmt: skip
    sub.add_argument("--sip-listen", default="127.0.0.1:0", help="HOST[:PORT] to listen on")
    sub.add_argument("--ca-file", help="CA to verify the focus with (TLS; SDES mode needs it)")
    sub.add_argument("--cert-file", help="your certificate (TLS)")
    sub.add_argument("--key-file", help="your certificate's key (TLS)")
    sub.add_argument("--username", help="digest user name, if the focus challenges")
    sub.add_argument("--password-file", help="file whose first line is the digest password")
    sub.add_argument("--kms-url", help="KMS mode: e.g. http://127.0.0.1:8444")
    sub.add_argument("--kms-identity", help="KMS mode: the KMS's SIP URI")
    sub.add_argument("--psk-file", help="KMS mode: your pre-shared key with the KMS (0600)")
    sub.add_argument("--focus-identity", help="KMS mode: the focus's identity at the KMS")
    sub.add_argument("--timeout", type=float, default=5.0, help="seconds per KMS call")
    sub.add_argument("--expires", type=int, default=600, help="subscription duration asked")
    sub.add_argument("--seconds", type=float, default=None, help="stop after this long")
    sub.set_defaults(handler=_cmd_client_subscribe)


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
    _add_subscribe_command(client_commands)
