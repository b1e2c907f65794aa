"""What every secconf configuration file has in common: one error class and one check for typos.

Each service reads its own TOML file (the focus ``secconf.toml``, the edge ``edge.toml``,
the KMS ``kms.toml``, the watcher ``watcher.toml``) and keeps its own defaults and bounds;
what they share is decided here, once:

* :class:`ConfigError`: the file is missing, unreadable, or has an unknown setting or a bad
  value. A ``ValueError`` too, so code that guarded a loader with ``except ValueError``
  keeps working. Messages name the section and key, never a value read from a secret file.
* :func:`unknown_setting`: a key no loader reads would silently keep its default (a
  ``dialogs_per_identiy = 2`` leaves the limit at 4, a ``[polcy]`` section leaves the
  policy open), so every loader refuses the first setting its schema does not name.

Pure: tables in, a name or ``None`` out (the files are read by the services).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SecconfError

__all__ = ["ConfigError", "Schema", "unknown_setting"]

#: Section name -> the keys it may hold; ``None``: the section is a free table (names chosen
#: by the operator, e.g. identities), checked by its loader.
Schema = Mapping[str, "frozenset[str] | None"]


class ConfigError(SecconfError, ValueError):
    """A configuration file is missing, unreadable, or has an unknown setting or a bad value."""


def unknown_setting(data: Mapping[str, Any], schema: Schema) -> str | None:
    """The first setting of *data* that *schema* does not name, as ``[section] key``; else None.

    Sections and keys are reported in sorted order, so the same file always gives the same
    message. A section that is not a table is reported as the section itself (its loader
    would otherwise read it as empty).
    """
    for section in sorted(data):
        if section not in schema:
            return f"[{section}]"
        table = data[section]
        if not isinstance(table, Mapping):
            return f"[{section}] (not a table)"
        known = schema[section]
        if known is None:
            continue
        for key in sorted(table):
            if key not in known:
                return f"[{section}] {key}"
    return None
