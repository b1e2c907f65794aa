"""The watcher's pieces that need no Asterisk: the configuration, its REFER queue on the real Redis.

The lease, rosters, REFER queue and journal themselves: tests/store/test_watcher.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from secconf.asterisk.watcher_settings import WatcherConfigError, load_watcher_settings
from secconf.cli import build_parser
from secconf.core.roster import FailurePolicy
from secconf.store import generate_key_file
from tests.fixtures.redis_server import RedisServer

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


def test_the_sample_config_loads_with_replace_and_remove(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "kek")
    (tmp_path / "focus.toml").write_text(FOCUS)
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "secret").chmod(0o600)  # a secret file is private (secconf.config_files)
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
    from secconf.asterisk.watcher import Watcher
    from secconf.asterisk.watcher_settings import WatcherSettings
    from secconf.focus.settings import load_settings
    from secconf.store.watcher import REFER_GROUP

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
        key = watchers[0].refers.key(conference)
        # the stream the focus writes
        assert key == watchers[0].conference_commands.keys.refer_stream(conference)
        redis = watchers[0].redis.client

        async def take(watcher: Watcher) -> list[tuple[str, dict[str, str]]]:
            return await watcher.redis.run(watcher.refers.take(conference))

        try:
            assert await take(watchers[0]) == []  # no stream yet: no group, no key
            assert not await redis.exists(key)
            for n in range(3):  # before any group exists (the module's XADD)
                await redis.xadd(key, {"target": f"sip:u{n}@example.com"})
            seen = [await take(watchers[0])]
            for n in range(3, 6):
                await redis.xadd(key, {"target": f"sip:u{n}@example.com"})
            seen.append(await take(watchers[1]))
            seen.append(await take(watchers[0]))
            seen.append(await take(watchers[1]))
            targets = [fields["target"] for batch in seen for _, fields in batch]
            assert sorted(targets) == [f"sip:u{n}@example.com" for n in range(6)]  # once each
            assert len(seen[0]) == 3
            assert len(seen[1]) == 3
            assert seen[2] == seen[3] == []
            pending = await redis.xpending(key, REFER_GROUP)
            assert pending["pending"] == 6  # until each dial-out is done and acknowledged
            # each watcher reads as itself: an entry a dead watcher took stays its own
            assert {c["name"] for c in pending["consumers"]} == {b"w1", b"w2"}
        finally:
            for watcher in watchers:
                await watcher.redis.client.aclose()
                if watcher.edge is not None:
                    await watcher.edge.aclose()

    asyncio.run(scenario())


def test_redis_refusing_or_down_is_logged_by_the_watcher_and_it_goes_on(
    redis_server: RedisServer, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher catches the store's errors only: WRONGTYPE and an outage both stay warnings."""
    import asyncio

    from secconf.asterisk.ami import AmiSettings
    from secconf.asterisk.rekey_driver import RekeyReport
    from secconf.asterisk.watcher import Watcher
    from secconf.asterisk.watcher_settings import WatcherSettings
    from secconf.core.roster import ConferenceEnded, Member, MemberLeft
    from secconf.focus.settings import load_settings

    generate_key_file(tmp_path / "kek")
    (tmp_path / "focus.toml").write_text(FOCUS)
    focus = load_settings(
        tmp_path / "focus.toml", env={"SECCONF_REDIS_URL": redis_url}, mixer_token=False
    )
    conference = "0123456789abcdef"
    member = Member("PJSIP/alice-00000001", "1700000000.1", "alice")

    def warnings() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        caplog.clear()
        return found

    async def scenario() -> None:
        watcher = Watcher(WatcherSettings(ami=AmiSettings(secret="x"), focus=focus))
        try:
            redis = watcher.redis.client
            await redis.set(watcher.rosters.key(conference), "string-where-a-hash-belongs")
            await redis.set(watcher.journal.report_key(conference), "string-not-a-stream")
            await watcher._on_change(MemberLeft(conference, member))
            waiter = asyncio.ensure_future(watcher.next_report(5.0))
            await asyncio.sleep(0)
            await watcher.rekeys.publish(RekeyReport(conference, 2, ("join",), 0.0, 0.0))
            assert (await waiter).epoch == 2  # the report is out, stored or not
            assert warnings() == [
                f"roster write for {conference} failed: Redis error: could not write a "
                "roster (ResponseError)",
                f"rekey report for {conference} not stored: Redis error: could not store a "
                "rekey report (ResponseError)",
            ]

            redis_server.stop()
            await watcher._on_change(ConferenceEnded(conference))
            await watcher.mirror.reconcile(watcher.ami)
            await watcher.rekeys.publish(RekeyReport(conference, 3, ("leave",), 0.0, 0.0))
            logged = warnings()
            assert len(logged) == 3
            assert all("Redis unavailable: could not" in line for line in logged), logged
            assert [r.epoch for r in watcher.reports] == [2, 3]
        finally:
            redis_server.start()
            await watcher.redis.client.aclose()
            if watcher.edge is not None:
                await watcher.edge.aclose()

    with caplog.at_level(logging.WARNING, logger="secconf.asterisk.watcher"):
        asyncio.run(scenario())
