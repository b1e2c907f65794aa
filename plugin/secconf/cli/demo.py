"""``secconf demo``: the whole conference on this machine, or the SDP keying on captures."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Commands


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.captures is not None:
        from ..lab.demo import run_demo

        return run_demo(Path(args.captures))
    from rich.console import Console

    from ..lab.demo_story import run_story

    return run_story(Console(), Path(args.timeline))


def add_commands(commands: Commands) -> None:
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
