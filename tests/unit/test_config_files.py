"""Every service refuses a setting it does not read: a typo never silently keeps a default.

The shipped files (config/) are the inputs: each one loads as shipped (the schema names
every key an operator is shown), and the same file with one key or one section misspelt
is refused with a ConfigError naming the setting.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secconf.asterisk.watcher_settings import SCHEMA as WATCHER_SCHEMA
from secconf.asterisk.watcher_settings import WatcherConfigError
from secconf.core.config import ConfigError, unknown_setting
from secconf.focus.settings import SCHEMA as FOCUS_SCHEMA
from secconf.focus.settings import Settings, SettingsError, load_settings
from secconf.kms.config import SCHEMA as KMS_SCHEMA
from secconf.kms.config import KmsConfigError
from secconf.kms.config import load_config as load_kms
from secconf.media.config import SCHEMA as EDGE_SCHEMA
from secconf.media.config import EdgeConfigError
from secconf.media.config import load_config as load_edge
from secconf.store import generate_key_file

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_unknown_setting_reports_the_first_in_sorted_order() -> None:
    schema = {"a": frozenset({"x"}), "b": None}
    assert unknown_setting({"a": {"x": 1}, "b": {"anything": 2}}, schema) is None
    assert unknown_setting({"a": {"z": 1, "y": 2}}, schema) == "[a] y"
    assert unknown_setting({"c": {}, "a": {"q": 1}}, schema) == "[a] q"
    assert unknown_setting({"a": 5}, schema) == "[a] (not a table)"
    assert unknown_setting({"top": 1}, schema) == "[top]"


def test_every_config_error_is_one_class() -> None:
    for error in (SettingsError, EdgeConfigError, KmsConfigError, WatcherConfigError):
        assert issubclass(error, ConfigError)
        assert issubclass(error, ValueError)  # loaders guarded by ``except ValueError`` still work


def _focus(path: Path, tmp: Path) -> object:
    return load_settings(path, env={"SECCONF_MIXER_TOKEN_FILE": str(tmp / "secret")})


def _watcher(path: Path, tmp: Path, secret_mode: int = 0o600) -> object:
    from secconf.asterisk.watcher_settings import load_watcher_settings

    focus = _with_local_files((CONFIG / "kamailio" / "secconf.toml").read_text(), tmp)
    (tmp / "focus.toml").write_text(focus)
    (tmp / "ami-secret").write_text("not-a-real-secret\n")
    (tmp / "ami-secret").chmod(secret_mode)  # a secret file: private, as every other
    return load_watcher_settings(
        path,
        env={
            "SECCONF_KAMAILIO_CONFIG": str(tmp / "focus.toml"),
            "SECCONF_AMI_SECRET_FILE": str(tmp / "ami-secret"),
        },
    )


def _with_local_files(text: str, tmp: Path) -> str:
    """The shipped file with its secret files replaced by ones made here (the paths are /etc)."""
    for name in ("kek", "secret"):
        if not (tmp / name).exists():
            generate_key_file(tmp / name)
    return (
        text.replace("/etc/secconf/kek", str(tmp / "kek"))
        .replace("/etc/secconf/mixer-token", str(tmp / "secret"))
        .replace("/etc/secconf/edge-token", str(tmp / "token"))
    )


LOADERS: dict[str, tuple[Path, Callable[[Path, Path], object], type[ConfigError], Any]] = {
    "focus": (CONFIG / "kamailio" / "secconf.toml", _focus, SettingsError, FOCUS_SCHEMA),
    "edge": (CONFIG / "edge.toml", lambda p, t: load_edge(p), EdgeConfigError, EDGE_SCHEMA),
    "kms": (CONFIG / "kms.toml", lambda p, t: load_kms(p), KmsConfigError, KMS_SCHEMA),
    "watcher": (CONFIG / "watcher.toml", _watcher, WatcherConfigError, WATCHER_SCHEMA),
}


@pytest.mark.parametrize("service", sorted(LOADERS))
def test_the_shipped_file_names_only_known_settings(service: str) -> None:
    shipped, _, _, schema = LOADERS[service]
    assert unknown_setting(tomllib.loads(shipped.read_text()), schema) is None


@pytest.mark.parametrize("service", sorted(LOADERS))
def test_the_shipped_file_loads_and_a_misspelt_key_is_refused(service: str, tmp_path: Path) -> None:
    shipped, load, error, _ = LOADERS[service]
    text = _with_local_files(shipped.read_text(), tmp_path)
    (tmp_path / "token").write_text("t" * 32)
    (tmp_path / "token").chmod(0o600)
    good = tmp_path / "good.toml"
    good.write_text(text)
    load(good, tmp_path)
    first_table = text.index("\n[", 0) if not text.startswith("[") else 0
    header_end = text.index("]\n", first_table) + 2
    section = text[first_table:header_end].strip().strip("[]")
    typo = tmp_path / "typo.toml"
    typo.write_text(text[:header_end] + "tiemout = 3\n" + text[header_end:])
    with pytest.raises(error, match=rf"unknown setting \[{section}\] tiemout"):
        load(typo, tmp_path)
    extra = tmp_path / "extra.toml"
    extra.write_text(text + "\n[polcy]\ncreators = []\n")
    with pytest.raises(error, match=r"unknown setting \[polcy\]"):
        load(extra, tmp_path)


@pytest.mark.parametrize(
    ("suite", "accepted"),
    [
        ("AES_CM_128_HMAC_SHA1_80", True),
        ("AES_256_CM_HMAC_SHA1_32", True),
        ("AEAD_AES_128_GCM", True),
        ("AES_192_CM_HMAC_SHA1_80", False),  # an SDES suite the edge does not relay
        ("F8_128_HMAC_SHA1_80", False),  # an SDES suite nobody here implements
        ("NO_SUCH_SUITE", False),
    ],
)
def test_the_focus_takes_only_a_suite_the_edge_relays(
    suite: str, accepted: bool, tmp_path: Path
) -> None:
    text = _with_local_files((CONFIG / "kamailio" / "secconf.toml").read_text(), tmp_path)
    (tmp_path / "token").write_text("t" * 32)
    (tmp_path / "token").chmod(0o600)
    path = tmp_path / "focus.toml"
    path.write_text(text.replace('suite = "AES_CM_128_HMAC_SHA1_80"', f'suite = "{suite}"'))
    if accepted:
        settings = _focus(path, tmp_path)
        assert isinstance(settings, Settings)
        assert settings.suite.name == suite
    else:
        with pytest.raises(SettingsError, match=rf"\[focus\] suite '{suite}' is not supported"):
            _focus(path, tmp_path)


@pytest.mark.parametrize(
    ("suites", "leg_suites"),
    [
        ("[]", ["AES_CM_128_HMAC_SHA1_80"]),
        (
            '["AES_256_CM_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"]',
            ["AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32"],
        ),
        ('["AES_192_CM_HMAC_SHA1_80"]', None),  # not one the edge relays
        ("[1]", None),
    ],
)
def test_further_leg_suites_follow_the_conference_suite(
    suites: str, leg_suites: list[str] | None, tmp_path: Path
) -> None:
    """``[focus] suites`` (docs/mikey-decisions.md #30): the conference's suite first, once."""
    text = _with_local_files((CONFIG / "kamailio" / "secconf.toml").read_text(), tmp_path)
    (tmp_path / "token").write_text("t" * 32)
    (tmp_path / "token").chmod(0o600)
    path = tmp_path / "focus.toml"
    path.write_text(text.replace("[focus]\n", f"[focus]\nsuites = {suites}\n", 1))
    if leg_suites is None:
        with pytest.raises(SettingsError, match=r"\[focus\] suite .* is not supported"):
            _focus(path, tmp_path)
        return
    settings = _focus(path, tmp_path)
    assert isinstance(settings, Settings)
    assert [suite.name for suite in settings.leg_suites] == leg_suites


def test_a_removed_setting_says_what_replaced_it(tmp_path: Path) -> None:
    text = _with_local_files((CONFIG / "kamailio" / "secconf.toml").read_text(), tmp_path)
    path = tmp_path / "focus.toml"
    path.write_text(text.replace("[focus]\n", "[focus]\nrelay_other = true\n", 1))
    with pytest.raises(SettingsError, match=r"\[focus\] relay_other was removed: .*proxy"):
        _focus(path, tmp_path)


def test_the_ami_secret_file_must_be_private(tmp_path: Path) -> None:
    """Every secret file is read by one reader (secconf.config_files): the AMI's too."""
    _watcher(CONFIG / "watcher.toml", tmp_path)  # a private one loads
    with pytest.raises(WatcherConfigError, match=r"\[ami\] secret file .* run chmod 600"):
        _watcher(CONFIG / "watcher.toml", tmp_path, secret_mode=0o640)
