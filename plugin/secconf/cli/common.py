"""What the command groups share: the subcommand table they add to, the services' logging."""

from __future__ import annotations

import argparse
import logging
from typing import TypeAlias

#: ``secconf``'s table of subcommands; each command group adds its own to it.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def log_to_stderr() -> None:
    """The long-running services (kms, edge, watcher) log INFO and up, timestamped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
