"""Reading an operator's files: a service's TOML, checked, and the private files it names.

Every service reads its configuration the same way (:func:`read_config`: the file parsed,
every section and key checked against the service's ``SCHEMA`` with
:func:`secconf.core.config.unknown_setting`, a typo stopping the service at start with
the file and the key named) and every secret file the same way (:func:`read_private_file`:
a regular file that neither group nor others may access — as ssh treats private keys —
read up to a bound; :func:`parse_key32` for the 32-byte keys: KEKs, PSKs, the join-token
secret).  Errors name the path and the problem, never a byte of a secret.

The core stays pure (it only checks tables); this module does the reading, and each
service raises its own :class:`~secconf.core.config.ConfigError` subclass (*error*).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secconf.core.config import ConfigError, Schema, unknown_setting

__all__ = ["KEY_LENGTH", "parse_key32", "read_config", "read_private_file", "read_token"]

#: Bytes of every key secconf reads from a file (KEK, PSK, join-token secret).
KEY_LENGTH = 32


def read_config(
    path: str | os.PathLike[str],
    schema: Schema,
    *,
    error: type[ConfigError],
    doc: str,
    removed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The TOML at *path*, every setting known to *schema*; *doc* names where they are described.

    *removed* maps a setting that no longer exists (``"[section] key"``) to why, so an
    operator upgrading learns what replaced it rather than only that it is unknown.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"cannot read {file}: {exc}") from None
    unknown = unknown_setting(data, schema)
    if unknown is not None and removed and unknown in removed:
        raise error(f"{unknown} was removed: {removed[unknown]}")
    if unknown is not None:
        raise error(f"{file}: unknown setting {unknown} ({doc})")
    return data


def read_private_file(
    path: str | os.PathLike[str], *, what: str, max_bytes: int, error: type[Exception]
) -> bytes:
    """The bytes of the secret file *path* (at most *max_bytes*), or *error* saying why not.

    Refused: not a regular file, accessible by group or others, unreadable, too large.
    A symlink to a private file is fine (its target is checked, like ``O_NOFOLLOW`` is not).
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise error(f"{what} file {str(file)!r} is not a regular file")
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise error(
                    f"{what} file {str(file)!r} is accessible by group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 on it"
                )
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{what} file {str(file)!r} cannot be read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{what} file {str(file)!r} is larger than {max_bytes} bytes")
    return data


def parse_key32(data: bytes) -> bytes | None:
    """A 32-byte key written as raw bytes, 64 hex digits or base64; ``None`` for anything else."""
    if len(data) == KEY_LENGTH:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_LENGTH:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == KEY_LENGTH else None


def read_token(path: str | os.PathLike[str], *, error: type[Exception]) -> str:
    """The edge's API bearer token: a private file of 16..512 printable ASCII characters.

    Read by the edge (the token it accepts) and by the focus (the token it sends).
    """
    raw = read_private_file(path, what="token", max_bytes=1024, error=error)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not 16 <= len(token) <= 512 or not token.isprintable() or " " in token:
        raise error(f"token file {str(Path(path))!r} must hold 16..512 printable ASCII characters")
    return token
