"""The Asterisk tree is the one docker/asterisk.lock pins: built, restored and running.

Debian sid moves daily; a different Asterisk must be an explicit update of the lock (see
docker/asterisk.lock), never something a fresh machine happens to download.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from secconf.lab.services.asterisk import (
    ASTERISK_TREE_SCRIPT,
    AsteriskProcess,
    check_asterisk_tree,
    pinned_asterisk_version,
    tree_asterisk_version,
)
from secconf.lab.services.process import ServiceError
from tests.asterisk.support import ami_client
from tests.fixtures.asterisk_server import AsteriskServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _upstream(debian_version: str) -> str:
    """``1:22.10.1+dfsg+~cs6-1`` -> ``22.10.1``: no epoch, no repack suffix, no revision."""
    without_epoch = debian_version.partition(":")[2] or debian_version
    return re.split(r"[+~-]", without_epoch, maxsplit=1)[0]


def _tree_script(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(ASTERISK_TREE_SCRIPT), *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_the_lock_pins_an_asterisk_22() -> None:
    pinned = pinned_asterisk_version()
    assert _upstream(pinned).startswith("22."), pinned
    assert _tree_script("pinned") == pinned


def test_the_cached_tarball_and_the_restored_tree_hold_the_pinned_version(
    asterisk_tree: Path,
) -> None:
    pinned = pinned_asterisk_version()
    assert pinned.replace(":", ".").replace("~", "_") in _tree_script("path")
    assert _tree_script("version") == pinned
    assert tree_asterisk_version(asterisk_tree) == pinned
    assert check_asterisk_tree(asterisk_tree) == pinned
    manifest = (asterisk_tree / "etc" / "secconf-tree-manifest").read_text().splitlines()
    assert f"asterisk {pinned}" in manifest


def test_the_running_asterisk_reports_the_pinned_version(
    asterisk_server: AsteriskServer,
) -> None:
    async def version() -> str:
        ami = ami_client(asterisk_server)
        await ami.start()
        try:
            settings = await ami.action({"Action": "CoreSettings"})
            return str(settings.get("AsteriskVersion", ""))
        finally:
            await ami.close()

    reported = asyncio.run(version())
    assert reported.startswith(_upstream(pinned_asterisk_version())), reported


def test_a_tree_of_another_version_is_refused_before_anything_starts(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "secconf-asterisk-version").write_text("1:21.4.0~dfsg-1")
    with pytest.raises(
        ServiceError, match=r"has asterisk 1:21\.4\.0~dfsg-1, docker/asterisk\.lock pins"
    ):
        AsteriskProcess(tree).start()
    assert not (tree / "etc" / "asterisk").exists()  # nothing rendered, nothing launched
    (tree / "etc" / "secconf-asterisk-version").unlink()
    with pytest.raises(ServiceError, match="has asterisk unknown"):
        check_asterisk_tree(tree)
