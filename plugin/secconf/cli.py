"""The one ``secconf`` command, for every service and for operators."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .core.errors import SecconfError

# -- demo and SDP ----------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.captures is not None:
        from .lab.demo import run_demo

        return run_demo(Path(args.captures))
    from rich.console import Console

    from .lab.demo_story import run_story

    return run_story(Console(), Path(args.timeline))


def _cmd_sdp_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .lab.sdp_view import describe_sdp

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    Console().print(describe_sdp(data))
    return 0


# -- KMS -------------------------------------------------------------------------------------


def _kms_config(args: argparse.Namespace) -> Any:
    from .kms.config import load_config

    return load_config(args.config)


def _cmd_kms_serve(args: argparse.Namespace) -> int:
    from .kms.server import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(_kms_config(args))
    return 0


def _cmd_kms_init_kek(args: argparse.Namespace) -> int:
    from .store import generate_key_file

    generate_key_file(args.path)
    print(f"wrote a new key-encryption key to {args.path} (mode 0600)")
    return 0


def _with_store(args: argparse.Namespace, action: Callable[[Any, Any], Awaitable[int]]) -> int:
    """Run *action(users, tickets)* against the configured Redis, closing it after."""
    from .store import KeyWrapper, TicketStore, UserStore, connect, load_key_file

    config = _kms_config(args)

    async def main() -> int:
        client = connect(config.redis_url, timeout=config.redis_timeout)
        try:
            wrapper = KeyWrapper(load_key_file(config.kek_file), config.kek_id)
            users = UserStore(client, wrapper, config.redis_prefix)
            tickets = TicketStore(client, config.redis_prefix)
            return await action(users, tickets)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _cmd_kms_user_add(args: argparse.Namespace) -> int:
    from .store import generate_key_file, load_key_file

    psk_file = Path(args.psk_file)
    if psk_file.exists():
        psk = load_key_file(psk_file, "PSK")
        origin = f"read from {psk_file}"
    else:
        psk = generate_key_file(psk_file, "PSK")
        origin = f"new, written to {psk_file} (mode 0600): hand it to the user's client"

    async def add(users: Any, tickets: Any) -> int:
        await users.add(args.identity, psk, replace=args.replace)
        return 0

    result = _with_store(args, add)
    print(f"user {args.identity} added; PSK {origin}")
    return result


def _cmd_kms_user_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    async def show(users: Any, tickets: Any) -> int:
        table = Table(title="KMS users")
        for column in ("identity", "created", "state"):
            table.add_column(column)
        for info in await users.list():
            created = f"{info.created:.0f}"
            table.add_row(info.identity, created, "revoked" if info.revoked else "active")
        Console().print(table)
        return 0

    return _with_store(args, show)


def _cmd_kms_user_change(args: argparse.Namespace) -> int:
    async def change(users: Any, tickets: Any) -> int:
        await getattr(users, args.action)(args.identity)
        return 0

    result = _with_store(args, change)
    print(f"user {args.identity}: {args.action} done")
    return result


def _cmd_kms_ticket_revoke(args: argparse.Namespace) -> int:
    try:
        ticket_id = bytes.fromhex(args.ticket_id)
    except ValueError:
        print("ticket id must be hex", file=sys.stderr)
        return 2

    async def revoke(users: Any, tickets: Any) -> int:
        await tickets.revoke(ticket_id)
        return 0

    result = _with_store(args, revoke)
    print(f"ticket {args.ticket_id} revoked")
    return result


# -- media edge ------------------------------------------------------------------------------


def _cmd_edge_serve(args: argparse.Namespace) -> int:
    from .media.config import load_config
    from .media.server import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(load_config(args.config))
    return 0


# -- TLS (throwaway CA) ---------------------------------------------------------------------


def _cmd_tls_init(args: argparse.Namespace) -> int:
    from .lab.tlsca import CaError, fingerprint, init_ca

    try:
        files = init_ca(
            Path(args.directory),
            args.host,
            clients=args.client or (),
            days=args.days,
            replace=args.force,
        )
    except CaError as exc:
        print(f"secconf tls init: {exc}", file=sys.stderr)
        return 1
    print(f"CA certificate   {files.ca_cert}  SHA-256 {fingerprint(files.ca_cert.read_bytes())}")
    print(f"server cert/key  {files.server_cert} {files.server_key} (key mode 0600)")
    for name, (cert, key) in files.clients.items():
        print(f"client {name:<9} {cert} {key} (key mode 0600)")
    return 0


def _cmd_edge_init_token(args: argparse.Namespace) -> int:
    import os
    import secrets

    path = Path(args.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{path} exists; not overwritten", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    print(f"wrote a new control API token to {path} (mode 0600)")
    return 0


# -- roster watcher (Asterisk) -----------------------------------------------------------------


def _cmd_watcher_serve(args: argparse.Namespace) -> int:
    from .asterisk.watcher import load_watcher_settings, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(load_watcher_settings(args.config))
    return 0


# -- participant client ----------------------------------------------------------------------


def _kms_client(args: argparse.Namespace) -> Any:
    from .client.kms import KmsClient
    from .store import load_key_file

    return KmsClient(
        args.kms_url,
        kms_identity=args.kms_identity,
        identity=args.identity,
        psk=load_key_file(args.psk_file, "PSK"),
        timeout=args.timeout,
    )


def _cmd_client_ticket(args: argparse.Namespace) -> int:
    import time

    from .core.mikey.ticket import DesiredPolicy

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
    from .client.agent import ParticipantAgent
    from .client.sip import UserAgent

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

    from .client.agent import exchange_audio

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

    from .client.agent import exchange_audio

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


# -- the parser ------------------------------------------------------------------------------


def _focus_settings(args: argparse.Namespace) -> Any:
    from secconf.kamailio.settings import load_settings

    # Redis, the KEK, the edge: the mixer's join-token secret is the module's alone.
    return load_settings(args.config, mixer_token=False)


def _cmd_focus_rekey(args: argparse.Namespace) -> int:
    from secconf.kamailio.rekey import rekey

    epoch = rekey(args.conference, _focus_settings(args))
    print(f"conference {args.conference}: epoch {epoch}")
    return 0


def _cmd_focus_user_add(args: argparse.Namespace) -> int:
    from .core.focus import normalize_identity
    from .core.sip.uri import SipUri
    from .store import KeyWrapper, load_key_file
    from .store.conferences import connect_blocking
    from .store.sip_users import SipUserStore

    settings = _focus_settings(args)
    if settings.digest is None:
        print("secconf: the module's configuration has no [digest] realm", file=sys.stderr)
        return 2
    identity = normalize_identity(args.identity)
    uri = SipUri.parse(identity)
    if uri.bare_host != settings.digest.realm.lower():
        print(f"secconf: identity must be sip:USER@{settings.digest.realm}", file=sys.stderr)
        return 2
    lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
    password = lines[0] if lines else ""
    client = connect_blocking(settings.redis_url, timeout=max(settings.redis_timeout, 2.0))
    try:
        wrapper = KeyWrapper(load_key_file(settings.kek_file), settings.kek_id)
        users = SipUserStore(client, wrapper, settings.redis_prefix)
        users.add(identity, uri.user or "", settings.digest.realm, password)
    finally:
        client.close()
    print(f"SIP user {identity} stored (HA1 for {', '.join(settings.digest.algorithms)}, wrapped)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secconf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"secconf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="a whole secure conference on this machine (make demo; needs root)"
    )
    demo.add_argument(
        "--timeline",
        default="secconf-demo-timeline.svg",
        help="where the timeline picture is written (default: %(default)s)",
    )
    demo.add_argument(
        "--captures",
        default=None,
        metavar="DIR",
        help="instead: key the real SDP captures in DIR (with PROVENANCE.toml), no services",
    )
    demo.set_defaults(handler=_cmd_demo)

    sdp = commands.add_parser("sdp", help="SDP tools").add_subparsers(
        dest="sdp_command", required=True
    )
    inspect = sdp.add_parser("inspect", help="show an SDP body's media and crypto (keys masked)")
    inspect.add_argument("file", help="SDP file, or - for standard input")
    inspect.set_defaults(handler=_cmd_sdp_inspect)

    kms = commands.add_parser("kms", help="the MIKEY-TICKET key management service")
    kms_commands = kms.add_subparsers(dest="kms_command", required=True)
    serve = kms_commands.add_parser("serve", help="serve Request and Resolve over HTTP")
    serve.add_argument("--config", required=True, help="KMS TOML file (see config/kms.toml)")
    serve.set_defaults(handler=_cmd_kms_serve)
    init_kek = kms_commands.add_parser("init-kek", help="create a key-encryption key file")
    init_kek.add_argument("path")
    init_kek.set_defaults(handler=_cmd_kms_init_kek)

    user = kms_commands.add_parser("user", help="provision identities and their PSKs")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="add an identity with a PSK")
    add.add_argument("identity", help="SIP URI, e.g. sip:alice@example.com")
    add.add_argument(
        "--psk-file",
        required=True,
        help="PSK file: read if it exists, else a new random PSK is written there (0600)",
    )
    add.add_argument("--replace", action="store_true", help="replace an existing identity")
    add.set_defaults(handler=_cmd_kms_user_add)
    listing = user_commands.add_parser("list", help="list identities (never keys)")
    listing.set_defaults(handler=_cmd_kms_user_list)
    for action, text in (("remove", "delete an identity"), ("revoke", "refuse an identity")):
        change = user_commands.add_parser(action, help=text)
        change.add_argument("identity")
        change.set_defaults(handler=_cmd_kms_user_change, action=action)
    for sub in (add, listing, *user_commands.choices.values()):
        if not any(a.dest == "config" for a in sub._actions):
            sub.add_argument("--config", required=True, help="KMS TOML file")

    ticket = kms_commands.add_parser("ticket", help="issued tickets")
    ticket_commands = ticket.add_subparsers(dest="ticket_command", required=True)
    revoke = ticket_commands.add_parser("revoke", help="refuse every later resolve of a ticket")
    revoke.add_argument("ticket_id", help="hex ticket id (as logged at issue)")
    revoke.add_argument("--config", required=True, help="KMS TOML file")
    revoke.set_defaults(handler=_cmd_kms_ticket_revoke)

    edge = commands.add_parser("edge", help="the SRTP media edge")
    edge_commands = edge.add_subparsers(dest="edge_command", required=True)
    edge_serve = edge_commands.add_parser("serve", help="relay media and serve the control API")
    edge_serve.add_argument("--config", required=True, help="edge TOML file (config/edge.toml)")
    edge_serve.set_defaults(handler=_cmd_edge_serve)
    edge_token = edge_commands.add_parser("init-token", help="create a control API token file")
    edge_token.add_argument("path")
    edge_token.set_defaults(handler=_cmd_edge_init_token)

    tls = commands.add_parser("tls", help="a throwaway CA for SIP over TLS (demo, tests, labs)")
    tls_commands = tls.add_subparsers(dest="tls_command", required=True)
    tls_init = tls_commands.add_parser(
        "init", help="make a CA and a server certificate (keys mode 0600, never printed)"
    )
    tls_init.add_argument("directory", help="where ca.pem, server.pem and their keys go")
    tls_init.add_argument(
        "--host", action="append", required=True,
        help="name or IP address the server certificate is for (repeatable; first is the CN)",
    )  # fmt: skip
    tls_init.add_argument(
        "--client", action="append", help="also a client certificate for NAME (repeatable)"
    )
    tls_init.add_argument("--days", type=int, default=30, help="validity (default %(default)s)")
    tls_init.add_argument("--force", action="store_true", help="replace an existing CA")
    tls_init.set_defaults(handler=_cmd_tls_init)

    focus = commands.add_parser("focus", help="the conference focus (Kamailio module) state")
    focus_commands = focus.add_subparsers(dest="focus_command", required=True)
    focus_rekey = focus_commands.add_parser(
        "rekey", help="mint a conference's next key epoch (Redis + edge); legs switch on re-INVITE"
    )
    focus_rekey.add_argument("conference", help="conference id (16 hex digits)")
    focus_rekey.set_defaults(handler=_cmd_focus_rekey)
    focus_user = focus_commands.add_parser("user", help="SIP digest users (SDES mode)")
    focus_user_commands = focus_user.add_subparsers(dest="focus_user_command", required=True)
    focus_user_add = focus_user_commands.add_parser(
        "add", help="store a user's digest HA1 values (wrapped with the KEK)"
    )
    focus_user_add.add_argument("identity", help="sip:USER@REALM (the [digest] realm)")
    focus_user_add.add_argument(
        "--password-file", required=True, help="file whose first line is the password"
    )
    focus_user_add.set_defaults(handler=_cmd_focus_user_add)
    focus_user_add.add_argument(
        "--config", default=None, help="the module's TOML file (default: $SECCONF_KAMAILIO_CONFIG)"
    )
    for sub in focus_commands.choices.values():
        sub.add_argument(
            "--config",
            default=None,
            help="the module's TOML file (default: $SECCONF_KAMAILIO_CONFIG)",
        )

    watcher = commands.add_parser(
        "watcher", help="the Asterisk roster watcher and rekey driver (docs/asterisk.md)"
    )
    watcher_commands = watcher.add_subparsers(dest="watcher_command", required=True)
    watcher_serve = watcher_commands.add_parser(
        "serve", help="follow ConfBridge over AMI, keep rosters in Redis, drive rekeys"
    )
    watcher_serve.add_argument(
        "--config", required=True, help="watcher TOML file (config/watcher.toml)"
    )
    watcher_serve.set_defaults(handler=_cmd_watcher_serve)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except SecconfError as exc:
        print(f"secconf: refused: {exc.status_code} {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
