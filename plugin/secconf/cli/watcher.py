"""``secconf watcher``: the Asterisk roster watcher and rekey driver."""

from __future__ import annotations

import argparse

from .common import Commands, log_to_stderr


def _cmd_watcher_serve(args: argparse.Namespace) -> int:
    from ..asterisk.watcher import run
    from ..asterisk.watcher_settings import load_watcher_settings

    log_to_stderr()
    run(load_watcher_settings(args.config))
    return 0


def add_commands(commands: Commands) -> None:
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
