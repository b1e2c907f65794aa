"""The one ``secconf`` command, for every service and for operators."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import SecconfError
from . import client, demo, edge, focus, kms, sdp, tls, watcher

__all__ = ["build_parser", "main"]

#: The command groups, in the order ``secconf --help`` lists them; each adds its own subcommand.
GROUPS = (demo, sdp, kms, edge, tls, focus, watcher, client)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secconf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"secconf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except SecconfError as exc:
        print(f"secconf: refused: {exc.status_code} {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    return result
