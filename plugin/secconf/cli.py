"""The one ``secconf`` command, for every service and for operators."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.captures))


def _cmd_sdp_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .core.errors import ProtocolError
    from .inspect import describe_sdp

    console = Console()
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        console.print(describe_sdp(data))
    except ProtocolError as exc:
        console.print(f"[red]refused: {exc.status_code} {exc.reason}: {exc.message}[/red]")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secconf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"secconf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the most complete secure-conference flow built so far"
    )
    demo.add_argument(
        "--captures",
        default="tests/data/sdp",
        help="folder of real SDP captures with PROVENANCE.toml (default: %(default)s)",
    )
    demo.set_defaults(handler=_cmd_demo)

    sdp = commands.add_parser("sdp", help="SDP tools").add_subparsers(
        dest="sdp_command", required=True
    )
    inspect = sdp.add_parser(
        "inspect", help="parse an SDP body and show its media and crypto (keys masked)"
    )
    inspect.add_argument("file", help="SDP file, or - for standard input")
    inspect.set_defaults(handler=_cmd_sdp_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
