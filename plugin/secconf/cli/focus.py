"""``secconf focus``: the conference focus's state (the Kamailio module's Redis)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import Commands


def _focus_settings(args: argparse.Namespace) -> Any:
    from ..focus.settings import load_settings

    # Redis, the KEK, the edge: the mixer's join-token secret is the module's alone.
    return load_settings(args.config, mixer_token=False)


def _cmd_focus_rekey(args: argparse.Namespace) -> int:
    from ..focus.rekey import rekey

    epoch = rekey(args.conference, _focus_settings(args))
    print(f"conference {args.conference}: epoch {epoch}")
    return 0


def _cmd_focus_user_add(args: argparse.Namespace) -> int:
    from ..core.focus import normalize_identity
    from ..core.sip.uri import SipUri
    from ..store import KeyWrapper, load_key_file
    from ..store.conferences import connect_blocking
    from ..store.sip_users import SipUserStore

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


def add_commands(commands: Commands) -> None:
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
