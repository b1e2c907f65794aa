"""The lab's launchers find the checkout's files: this source tree, or ``$SECCONF_ROOT``.

An installed package has no ``config/``, ``dialplan/`` or ``docker/``: a launcher that needs one
of their files says which, where it looked, and which variable points it at a checkout
(docs/ARCHITECTURE.md, "The lab outside a checkout").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from secconf.lab.services import asterisk, kamailio, process

REPO = Path(__file__).resolve().parents[2]

# Launchers that read a checkout's file, called in a fresh interpreter (ROOT is read at import);
# prints what each one named raised.
PROBE = """
import json, sys
from pathlib import Path
from secconf.lab.services import asterisk as a, kamailio as k, process as p

calls = {
    "kamailio": lambda: k.KamailioProcess(Path(sys.argv[1]) / "k").start(),
    "tls": lambda: k.kamailio_tls_config(Path(sys.argv[2]), Path(sys.argv[1]) / "tls.cfg"),
    "lock": a.pinned_asterisk_version,
    "cached": a.asterisk_tree_cached,
    "restore": lambda: a.restore_asterisk_tree(Path(sys.argv[1]) / "tree"),
    "configure": lambda: a.AsteriskProcess(Path(sys.argv[1]) / "tree").configure(5060),
}
raised = {}
for name in sys.argv[3:]:
    try:
        calls[name]()
    except p.ServiceError as exc:
        raised[name] = str(exc)
print(json.dumps({"root": str(p.ROOT), "raised": raised}))
"""


def _probe(root: Path | None, work: Path, *calls: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != process.ROOT_ENV}
    if root is not None:
        env[process.ROOT_ENV] = str(root)
    tls = work / "tls"
    tls.mkdir(parents=True)
    for name in ("ca.pem", "server.pem", "server.key"):
        (tls / name).write_text("not used: the template is missing first\n")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(work), str(tls), *calls],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    return dict(json.loads(result.stdout))


def test_by_default_the_launchers_use_this_checkout() -> None:
    assert process.ROOT == REPO
    assert kamailio.KAMAILIO_CONFIG == REPO / "config" / "kamailio" / "kamailio.cfg"
    assert asterisk.ASTERISK_TREE_SCRIPT == REPO / "docker" / "asterisk-tree.sh"
    assert process.PACKAGE_PARENT == REPO / "plugin"
    for path in (
        kamailio.KAMAILIO_CONFIG, kamailio.KAMAILIO_ENTRY, kamailio.KAMAILIO_TLS_TEMPLATE,
        asterisk.ASTERISK_TREE_SCRIPT, asterisk.ASTERISK_LOCK, asterisk.ASTERISK_CONFIG_DIR,
        asterisk.ASTERISK_DIALPLAN,
    ):  # fmt: skip
        assert process.repository_file(path) == path


def test_secconf_root_names_the_checkout(tmp_path: Path) -> None:
    probe = _probe(REPO, tmp_path, "lock", "tls")  # the two that start nothing
    assert probe == {"root": str(REPO), "raised": {}}
    assert (tmp_path / "tls.cfg").read_text().count(str(tmp_path / "tls")) >= 1


#: What each launcher of PROBE reads first from the checkout.
EXPECTED = {
    "kamailio": "config/kamailio/secconf_kemi.py",
    "tls": "config/kamailio/tls.cfg",
    "lock": "docker/asterisk.lock",
    "cached": "docker/asterisk-tree.sh",
    "restore": "docker/asterisk-tree.sh",
    "configure": "config/asterisk",
}


def test_without_a_checkout_each_launcher_names_the_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-checkout"
    empty.mkdir()
    probe = _probe(empty, tmp_path / "work", *EXPECTED)
    assert probe["root"] == str(empty)
    raised = probe["raised"]
    assert isinstance(raised, dict)
    assert set(raised) == set(EXPECTED)
    for name, missing in EXPECTED.items():
        assert f"the lab needs {missing} from a secconf checkout" in raised[name], raised[name]
        assert str(empty) in raised[name]
        assert "set SECCONF_ROOT" in raised[name]
