"""Render the shipped Asterisk configuration (``config/asterisk/``, ``dialplan/``).

The files are templates: ``@NAME@`` words are replaced by the values below (a
port, an address, the AMI account).  The tests' fixture renders them with free
loopback ports; an operator renders them once with their own values::

    python -m secconf.asterisk.config /etc/asterisk SIP_PORT=5080 \
        --file AMI_SECRET=/run/secrets/ami --file MIXER_TOKEN_SECRET=/run/secrets/mixer-token

Unknown placeholders, and values with a newline or ``;`` (Asterisk's comment
sign: a value could smuggle in a new option), are refused.

``MIXER_TOKEN_SECRET`` (required) is the 32-byte secret shared with the Kamailio
module (``[upstream] token_secret_file``; 64 hex digits or base64, or raw bytes
from a file).  It is substituted into no template: the renderer derives the two
key blocks of the join-token MAC from it (:mod:`secconf.core.mixer_token`) and
writes them, and only them, to ``secconf-mixer-token.key`` (mode 0600), which the
dialplan reads with ``FILE()`` (docs/asterisk.md, "Join tokens").

``SIP_HOST`` is where Asterisk's one SIP transport binds: the internal side that
only Kamailio reaches (loopback when both run on one host).  A wildcard
(``0.0.0.0``, ``::``) is refused.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from secconf.config_files import parse_key32, read_private_file
from secconf.core.mixer_token import KEY_FILE_LENGTH, SECRET_LENGTH, MixerTokenKeys

__all__ = [
    "DEFAULTS",
    "MIXER_TOKEN_KEY_FILE",
    "MIXER_TOKEN_SECRET",
    "PLACEHOLDER",
    "parse_secret",
    "read_secret_file",
    "render",
    "render_text",
    "source_files",
]

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

#: The render value that is no placeholder: the join-token secret shared with the module.
MIXER_TOKEN_SECRET = "MIXER_TOKEN_SECRET"  # noqa: S105 - a name, not a secret
#: The file in the etc directory with K_in || K_out (dialplan: ${ASTETCDIR}/<this>).
MIXER_TOKEN_KEY_FILE = "secconf-mixer-token.key"  # noqa: S105 - a file name
#: Files holding a secret: written mode 0600.
PRIVATE_FILES = frozenset({"manager.conf", MIXER_TOKEN_KEY_FILE})
#: SIP_HOST values that would bind every interface (the SIP side must be the internal one).
WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0"})  # noqa: S104 - refused

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_UNSAFE = re.compile(r"[\r\n;\[\]]")
_MAX_SECRET_FILE = 4096


def parse_secret(data: bytes | str) -> bytes:
    """The 32-byte join-token secret from raw bytes, 64 hex digits or base64.

    ``ValueError`` (naming no content) for anything else.
    """
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    # Text is never taken as 32 raw bytes: a 32-character string is a typo, not a key.
    secret = parse_key32(raw) if isinstance(data, bytes) or len(raw) != SECRET_LENGTH else None
    if secret is None:
        raise ValueError(
            f"{MIXER_TOKEN_SECRET} is not a {SECRET_LENGTH}-byte secret "
            f"(raw bytes, {2 * SECRET_LENGTH} hex digits or base64)"
        )
    return secret


def read_secret_file(path: Path) -> bytes:
    """The secret from *path*; refused if group or others may access the file (like ssh keys)."""
    data = read_private_file(
        path, what="join-token secret", max_bytes=_MAX_SECRET_FILE, error=ValueError
    )
    try:
        return parse_secret(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _write_private(target: Path, text: str) -> None:
    """Write *text* to *target* created with mode 0600 (never readable by others meanwhile)."""
    target.unlink(missing_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


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
    """Write the rendered files into *destination*; return the values used (no secret).

    *values* override :data:`DEFAULTS`; a name not in :data:`DEFAULTS` is refused
    (a typo would otherwise silently keep the default).  ``MIXER_TOKEN_SECRET``
    (bytes or text, :func:`parse_secret`) is required; it becomes
    :data:`MIXER_TOKEN_KEY_FILE` and is left out of the returned values.
    """
    merged = dict(DEFAULTS)
    secret: bytes | None = None
    for name, value in (values or {}).items():
        if name == MIXER_TOKEN_SECRET:
            secret = parse_secret(value if isinstance(value, bytes | str) else str(value))
            continue
        if name not in DEFAULTS:
            raise KeyError(f"unknown Asterisk placeholder {name!r}")
        text = str(value)
        if _UNSAFE.search(text):
            raise ValueError(f"value for {name} contains a newline, ';' or a bracket")
        merged[name] = text
    if secret is None:
        raise KeyError(
            f"{MIXER_TOKEN_SECRET} is required: the secret shared with the Kamailio module "
            "(its [upstream] token_secret_file)"
        )
    if merged["SIP_HOST"].strip().lower() in WILDCARDS:
        raise ValueError(
            "SIP_HOST must be the internal address only Kamailio reaches (loopback on one "
            "host), not a wildcard"
        )
    keys = MixerTokenKeys.derive(secret).key_file_text()
    if len(keys) != KEY_FILE_LENGTH:  # pragma: no cover - derive() makes 2 x 64 hex digits
        raise ValueError("mixer token keys of the wrong length")
    destination.mkdir(parents=True, exist_ok=True)
    for name, source in source_files(config_dir, dialplan_dir).items():
        rendered = render_text(source.read_text(), merged)
        target = destination / name
        if name in PRIVATE_FILES:
            _write_private(target, rendered)  # manager.conf holds the AMI secret
        else:
            target.write_text(rendered)
    _write_private(destination / MIXER_TOKEN_KEY_FILE, keys)
    return merged


def main(argv: list[str]) -> int:
    """``DEST NAME=VALUE ... [--file NAME=PATH ...]``: *PATH*'s first line is the value.

    ``--file`` keeps a secret (``AMI_SECRET``) off the command line, e.g. from a
    container secret: ``--file AMI_SECRET=/run/secrets/ami-secret``.  For
    ``MIXER_TOKEN_SECRET`` the whole file is read (:func:`read_secret_file`: mode
    0600, 32 raw bytes, 64 hex digits or base64).  Errors name files, never contents.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    values: dict[str, str | bytes] = {}
    items = iter(argv[1:])
    for item in items:
        from_file = item == "--file"
        if from_file:
            item = next(items, "")
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"expected NAME=VALUE, got {name!r} without a value", file=sys.stderr)
            return 2
        if from_file and name == MIXER_TOKEN_SECRET:
            try:
                values[name] = read_secret_file(Path(value))
            except ValueError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 2
            continue
        if from_file:
            path = Path(value)
            lines = path.read_text().splitlines()
            value = lines[0].strip() if lines else ""
            if not value:
                print(f"{name}: {path} is empty", file=sys.stderr)
                return 2
        values[name] = value
    try:
        render(Path(argv[0]), values)
    except (KeyError, ValueError) as exc:
        print(f"cannot render: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
