"""``secconf sdp``: SDP bodies shown with every key masked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import Commands


def _cmd_sdp_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..lab.sdp_view import describe_sdp

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    Console().print(describe_sdp(data))
    return 0


def add_commands(commands: Commands) -> None:
    sdp = commands.add_parser("sdp", help="SDP tools").add_subparsers(
        dest="sdp_command", required=True
    )
    inspect = sdp.add_parser("inspect", help="show an SDP body's media and crypto (keys masked)")
    inspect.add_argument("file", help="SDP file, or - for standard input")
    inspect.set_defaults(handler=_cmd_sdp_inspect)
