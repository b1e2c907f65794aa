"""Render the shipped Asterisk configuration (``config/asterisk/``, ``dialplan/``).

The files are templates: ``@NAME@`` words are replaced by the values below (a
port, an address, the AMI account).  The tests' fixture renders them with free
loopback ports; an operator renders them once with their own values::

    python -m secconf.asterisk.config /etc/asterisk SIP_PORT=5080 --file AMI_SECRET=/run/secrets/ami

Unknown placeholders, and values with a newline or ``;`` (Asterisk's comment
sign: a value could smuggle in a new option), are refused.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULTS", "PLACEHOLDER", "render", "render_text", "source_files"]

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "config" / "asterisk"
DIALPLAN_DIR = ROOT / "dialplan"

#: Every placeholder the templates may use, with an operator's default.
DEFAULTS: dict[str, str] = {
    "SYSTEM_NAME": "secconf-mixer",
    # Asterisk's own SIP address (Kamailio's upstream.uri points here).
    "SIP_HOST": "127.0.0.1",
    "SIP_PORT": "5080",
    # Where Kamailio listens: Asterisk accepts calls only from KAMAILIO_HOST and
    # sends dial-out through Kamailio.
    "KAMAILIO_HOST": "127.0.0.1",
    "KAMAILIO_PORT": "5060",
    # RTP towards the secconf edge (must not overlap the edge's port range).
    "MEDIA_HOST": "127.0.0.1",
    "RTP_START": "20000",
    "RTP_END": "20999",
    # AMI for the roster watcher.
    "AMI_HOST": "127.0.0.1",
    "AMI_PORT": "5038",
    "AMI_USER": "secconf",
    "AMI_SECRET": "change-me",
}

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_UNSAFE = re.compile(r"[\r\n;\[\]]")


def source_files(
    config_dir: Path = CONFIG_DIR, dialplan_dir: Path = DIALPLAN_DIR
) -> dict[str, Path]:
    """File name in the Asterisk etc directory -> template path."""
    files = {path.name: path for path in sorted(config_dir.glob("*.conf"))}
    files["extensions.conf"] = dialplan_dir / "extensions.conf"
    return files


def render_text(text: str, values: Mapping[str, str]) -> str:
    """*text* with every ``@NAME@`` replaced; ``KeyError`` for an unknown name."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for placeholder @{name}@")
        return values[name]

    return PLACEHOLDER.sub(substitute, text)


def render(
    destination: Path,
    values: Mapping[str, object] | None = None,
    *,
    config_dir: Path = CONFIG_DIR,
    dialplan_dir: Path = DIALPLAN_DIR,
) -> dict[str, str]:
    """Write the rendered files into *destination*; return the values used.

    *values* override :data:`DEFAULTS`; a name not in :data:`DEFAULTS` is refused
    (a typo would otherwise silently keep the default).
    """
    merged = dict(DEFAULTS)
    for name, value in (values or {}).items():
        if name not in DEFAULTS:
            raise KeyError(f"unknown Asterisk placeholder {name!r}")
        text = str(value)
        if _UNSAFE.search(text):
            raise ValueError(f"value for {name} contains a newline, ';' or a bracket")
        merged[name] = text
    destination.mkdir(parents=True, exist_ok=True)
    for name, source in source_files(config_dir, dialplan_dir).items():
        rendered = render_text(source.read_text(), merged)
        target = destination / name
        target.write_text(rendered)
        if name == "manager.conf":
            target.chmod(0o600)  # holds the AMI secret
    return merged


def main(argv: list[str]) -> int:
    """``DEST NAME=VALUE ... [--file NAME=PATH ...]``: *PATH*'s first line is the value.

    ``--file`` keeps a secret (``AMI_SECRET``) off the command line, e.g. from a
    container secret: ``--file AMI_SECRET=/run/secrets/ami-secret``.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    values: dict[str, str] = {}
    items = iter(argv[1:])
    for item in items:
        from_file = item == "--file"
        if from_file:
            item = next(items, "")
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"expected NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        if from_file:
            path = Path(value)
            lines = path.read_text().splitlines()
            value = lines[0].strip() if lines else ""
            if not value:
                print(f"{name}: {path} is empty", file=sys.stderr)
                return 2
        values[name] = value
    render(Path(argv[0]), values)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
