"""``secconf tls``: a throwaway CA for SIP over TLS (the lab's, :mod:`secconf.lab.tlsca`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import Commands


def _cmd_tls_init(args: argparse.Namespace) -> int:
    from ..lab.tlsca import CaError, fingerprint, init_ca

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


def add_commands(commands: Commands) -> None:
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
