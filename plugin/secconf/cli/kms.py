"""``secconf kms``: serve the MIKEY-TICKET KMS, its key-encryption key, users and tickets."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .common import Commands, log_to_stderr


def _kms_config(args: argparse.Namespace) -> Any:
    from ..kms.config import load_config

    return load_config(args.config)


def _cmd_kms_serve(args: argparse.Namespace) -> int:
    from ..kms.server import run

    log_to_stderr()
    run(_kms_config(args))
    return 0


def _cmd_kms_init_kek(args: argparse.Namespace) -> int:
    from ..store import generate_key_file

    generate_key_file(args.path)
    print(f"wrote a new key-encryption key to {args.path} (mode 0600)")
    return 0


def _with_store(args: argparse.Namespace, action: Callable[[Any, Any], Awaitable[int]]) -> int:
    """Run *action(users, tickets)* against the configured Redis, closing it after."""
    from ..store import KeyWrapper, TicketStore, UserStore, connect, load_key_file

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
    from ..store import generate_key_file, load_key_file

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


def add_commands(commands: Commands) -> None:
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
