"""The watcher's pieces that need no Asterisk: the lease on the real Redis, the configuration."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from secconf.asterisk.watcher import Lease, WatcherConfigError, load_watcher_settings
from secconf.cli import build_parser
from secconf.core.roster import FailurePolicy
from secconf.store import generate_key_file
from secconf.store.conferences import connect_blocking

ROOT = Path(__file__).resolve().parents[2]

FOCUS = """
[focus]
domain = "conf.test.invalid"
[upstream]
uri = "sip:127.0.0.1:5080"
[redis]
url = "redis://127.0.0.1:6379/0"
prefix = "scw"
kek_file = "kek"
"""


def test_one_lease_holder_per_conference_and_a_lapsed_lease_is_taken_over(
    redis_url: str,
) -> None:
    client = connect_blocking(redis_url, timeout=1.0)
    try:
        first = Lease(client, "scw", "w1", ttl=0.3)
        second = Lease(client, "scw", "w2", ttl=0.3)
        assert first.hold("c1")
        assert not second.hold("c1")  # held: the other watcher leaves it alone
        assert first.hold("c1")  # renewal
        assert second.hold("c2")  # another conference is free
        assert first.holder("c1") == first.token
        second.release("c1")  # not its lease: no effect
        assert first.holder("c1") == first.token
        client.pexpire(first.key("c1"), 1)  # first stops renewing (dies)

        time.sleep(0.05)
        assert second.hold("c1")
        assert not first.hold("c1")  # the old holder cannot renew someone else's lease
        second.release("c1")
        assert first.holder("c1") is None
    finally:
        client.close()


def test_the_sample_config_loads_with_replace_and_remove(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "kek")
    (tmp_path / "focus.toml").write_text(FOCUS)
    (tmp_path / "secret").write_text("s3cret\n")
    env = {
        "SECCONF_KAMAILIO_CONFIG": str(tmp_path / "focus.toml"),
        "SECCONF_AMI_SECRET_FILE": str(tmp_path / "secret"),
    }
    settings = load_watcher_settings(ROOT / "config" / "watcher.toml", env)
    assert settings.ami.secret == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.prefix == "scw"
    assert settings.policy.debounce == 2.0
    assert settings.on_failure is FailurePolicy.REPLACE  # the default
    assert (settings.dialout_endpoint, settings.dialout_context) == (
        "kamailio-out",
        "secconf-dialout",
    )
    sample = (ROOT / "config" / "watcher.toml").read_text()
    (tmp_path / "watcher.toml").write_text(
        sample.replace('on_failure = "replace"', 'on_failure = "remove"')
    )
    assert load_watcher_settings(tmp_path / "watcher.toml", env).on_failure is (
        FailurePolicy.REMOVE
    )
    (tmp_path / "watcher.toml").write_text(
        sample.replace('on_failure = "replace"', 'on_failure = "ignore"')
    )
    with pytest.raises(WatcherConfigError, match="on_failure"):
        load_watcher_settings(tmp_path / "watcher.toml", env)
    (tmp_path / "watcher.toml").write_text(
        sample.replace('endpoint = "kamailio-out"', 'endpoint = "x/y"')
    )
    with pytest.raises(WatcherConfigError, match="endpoint"):
        load_watcher_settings(tmp_path / "watcher.toml", env)


def test_cli_has_watcher_serve() -> None:
    args = build_parser().parse_args(["watcher", "serve", "--config", "w.toml"])
    assert args.config == "w.toml"
    assert args.handler.__name__ == "_cmd_watcher_serve"


def test_two_watchers_share_the_refer_stream_each_entry_once(
    redis_url: str, tmp_path: Path
) -> None:
    """XREADGROUP: every REFER entry goes to exactly one watcher, entries before the group too."""
    import asyncio

    from secconf.asterisk.ami import AmiSettings
    from secconf.asterisk.watcher import REFER_GROUP, Watcher, WatcherSettings
    from secconf.focus.settings import load_settings

    generate_key_file(tmp_path / "kek")
    (tmp_path / "focus.toml").write_text(FOCUS)
    focus = load_settings(
        tmp_path / "focus.toml", env={"SECCONF_REDIS_URL": redis_url}, mixer_token=False
    )
    conference = "0123456789abcdef"

    async def scenario() -> None:
        watchers = [
            Watcher(WatcherSettings(ami=AmiSettings(secret="x"), focus=focus, watcher_id=name))
            for name in ("w1", "w2")
        ]
        key = watchers[0].store.refer_stream_key(conference)
        try:
            assert watchers[0]._read_refers(conference) == []  # no stream yet: no group, no key
            assert not watchers[0].redis.exists(key)
            for n in range(3):  # before any group exists (the module's XADD)
                watchers[0].redis.xadd(key, {"target": f"sip:u{n}@example.com"})
            seen = [watchers[0]._read_refers(conference)]
            for n in range(3, 6):
                watchers[0].redis.xadd(key, {"target": f"sip:u{n}@example.com"})
            seen.append(watchers[1]._read_refers(conference))
            seen.append(watchers[0]._read_refers(conference))
            seen.append(watchers[1]._read_refers(conference))
            targets = [fields["target"] for batch in seen for _, fields in batch]
            assert sorted(targets) == [f"sip:u{n}@example.com" for n in range(6)]  # once each
            assert len(seen[0]) == 3
            assert len(seen[1]) == 3
            assert seen[2] == seen[3] == []
            pending = watchers[0].redis.xpending(key, REFER_GROUP)
            assert pending["pending"] == 6  # until each dial-out is done and acknowledged
        finally:
            for watcher in watchers:
                watcher.redis.close()
                if watcher.edge is not None:
                    await watcher.edge.aclose()

    asyncio.run(scenario())
