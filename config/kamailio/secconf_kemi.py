"""app_python3 entry script for secconf (loaded with modparam("app_python3", "load", ...)).

app_python3 imports this file by its name, with this directory first on
sys.path, and calls mod_init() once in Kamailio's main process.  Kamailio
embeds Debian's /usr/bin/python3, not the virtual environment secconf is
installed in, so the environment's site-packages are added here first:

* SECCONF_PYTHONPATH: directories to add (os.pathsep separated), processed
  like site-packages (their .pth files too, so an editable install works);
* otherwise the .venv of the source tree this file lives in, if there is one.

Keep this directory free of files named like Python modules: they would
shadow the standard library inside Kamailio.
"""

import os
import site
import sys
from pathlib import Path


def _add_paths() -> None:
    configured = os.environ.get("SECCONF_PYTHONPATH", "")
    paths = [p for p in configured.split(os.pathsep) if p]
    if not paths:
        tree = Path(__file__).resolve().parents[2]
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        candidate = tree / ".venv" / "lib" / version / "site-packages"
        if candidate.is_dir():
            paths.append(str(candidate))
        if (tree / "plugin" / "secconf").is_dir():
            paths.append(str(tree / "plugin"))
    for path in paths:
        site.addsitedir(path)


_add_paths()

from secconf.kamailio.handler import mod_init  # noqa: E402,F401 - app_python3 calls it
