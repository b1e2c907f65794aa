"""``secconf edge``: serve the SRTP media edge; its control API token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import Commands, log_to_stderr


def _cmd_edge_serve(args: argparse.Namespace) -> int:
    from ..media.config import load_config
    from ..media.server import run

    log_to_stderr()
    run(load_config(args.config))
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


def add_commands(commands: Commands) -> None:
    edge = commands.add_parser("edge", help="the SRTP media edge")
    edge_commands = edge.add_subparsers(dest="edge_command", required=True)
    edge_serve = edge_commands.add_parser("serve", help="relay media and serve the control API")
    edge_serve.add_argument("--config", required=True, help="edge TOML file (config/edge.toml)")
    edge_serve.set_defaults(handler=_cmd_edge_serve)
    edge_token = edge_commands.add_parser("init-token", help="create a control API token file")
    edge_token.add_argument("path")
    edge_token.set_defaults(handler=_cmd_edge_init_token)
