"""``make demo``: one secure conference from start to end, for real, told as it happens.

Starts on loopback, on free ports: redis-server, the KMS (``secconf kms serve``),
the media edge (``secconf edge serve``), Asterisk 22 ConfBridge (chrooted in the
cached Debian sid tree), Kamailio 5.6 with the secconf module (SIP over TLS towards
participants with a CA made for this run, UDP towards Asterisk) and the roster
watcher.  Then:

1. alice (KMS mode, secconf agent) gets a ticket naming the focus and bob, carol,
   dave and erin, and creates a secure conference; she subscribes to its roster (the
   RFC 4575 event package, KMS mode), and her view is printed, checked and timed as
   the story changes the conference (:mod:`secconf.lab.demo_events`);
2. bob (KMS mode) joins with his own ticket; carol joins with **linphonec** and erin
   with **baresip**, both SDES and authenticated by SIP digest;
3. mallory, a KMS user not in the allowed set, is refused (403), and bob's
   TRANSFER_INIT replayed is refused (403), with nothing written; her SUBSCRIBE is
   refused (403) with no subscription stored;
4. alice REFERs dave (allowed); the focus dials him out through Asterisk and
   Kamailio (dave: secconf's own SDES phone, registered with the focus), while a
   second device of alice's subscribes over UDP under a tshark capture: the NOTIFY
   bodies on the wire are CMS AuthEnvelopedData, no roster identity in clear;
5. bob leaves: one rekey; alice (a TRANSFER_INIT from the focus, epoch from the
   KMS), carol (linphone) and dave follow in their running calls; erin's baresip,
   which cannot, is detected by the edge and called back on the new epoch; bob's
   key opens nothing sent after his departure, and the KMS will not resolve the
   new epoch's ticket for him;
6. a summary table, a timeline picture (SVG), and an exit code that is non-zero if
   any step did not behave as stated.  Every service is stopped at the end, and on
   Ctrl-C.

Everything printed is measured in this run; keys appear only as fingerprints.
Needs root (Asterisk's chroot).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from ..client.sip import SipRequestFailed
from .demo_events import (
    RosterWatch,
    alice_sees_bob_join,
    alice_sees_bob_leave,
    alice_sees_phones,
    alice_watches,
    mallory_subscribes,
    passive_capture,
    roster_summary,
    stop_watching,
)
from .demo_narrator import Story, StoryFailed
from .demo_scenes import (
    Stage,
    alice_creates,
    alice_refers_dave,
    bob_joins,
    bob_leaves,
    bob_listens_in,
    everybody_hears_alice,
    everybody_hears_epoch_2,
    leave_the_stage,
    mallory_is_refused,
    phones_join,
    summary,
    watcher_for,
)
from .demo_services import Services, start_services
from .services.process import ServiceError

__all__ = ["run_story"]

STORY_TIMEOUT = 240.0


async def _story(story: Story, services: Services) -> None:
    """The acts in order; whatever happens, everyone leaves the stage (the services stay up)."""
    stage = Stage(story, services, watcher_for(services), services.store())
    roster: RosterWatch | None = None
    try:
        await stage.watcher.start()
        story.say(f"roster watcher on Asterisk's AMI (port {services.asterisk.ami_port})")
        await alice_creates(stage)
        roster = await alice_watches(stage)
        await bob_joins(stage)
        await alice_sees_bob_join(stage, roster)
        phones_from = time.monotonic()
        await phones_join(stage)
        await alice_sees_phones(stage, roster, phones_from)
        await mallory_is_refused(stage)
        await mallory_subscribes(stage)
        async with passive_capture(stage):
            await alice_refers_dave(stage)
        await everybody_hears_alice(stage)
        departure = await bob_leaves(stage)
        await alice_sees_bob_leave(stage, roster, departure.bye_at)
        await everybody_hears_epoch_2(stage)
        await bob_listens_in(stage, departure)
        summary(stage, departure)
        roster_summary(stage, roster)
    finally:
        await stop_watching(stage, roster)
        await leave_the_stage(stage)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    with open("/proc/self/mounts") as table:
        points = [line.split()[1].replace("\\040", " ") for line in table]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def run_story(console: Console, timeline_path: Path) -> int:
    """Run the whole story; 0 when every check held, 1 otherwise.  Every service stops."""
    console.rule("[bold]secconf: a secure conference, for real, on this machine")
    if os.geteuid() != 0:
        console.print(
            "[red]The demo needs root: Asterisk runs chrooted in the cached Debian tree "
            "(docker/asterisk-tree.sh).[/red]"
        )
        return 1
    story = Story(console, "secconf demo")
    workdir = Path(tempfile.mkdtemp(prefix="secconf-demo-"))
    left: list[str] = []
    mounted: list[str] = []
    try:
        with start_services(console, workdir) as services:
            try:
                asyncio.run(asyncio.wait_for(_story(story, services), STORY_TIMEOUT))
            except StoryFailed as exc:
                story.check(False, str(exc))
            except (SipRequestFailed, ServiceError, OSError, RuntimeError) as exc:
                story.check(False, f"the story stopped: {type(exc).__name__}: {exc}")
            except TimeoutError:
                story.check(False, f"the story took over {STORY_TIMEOUT:.0f} s")
            end = story.now()
            running = services
        left = running.running()
    except ServiceError as exc:
        story.check(False, f"a service did not start: {exc}")
        end = story.now()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every service was stopped[/yellow]")
        story.failed.append("interrupted")
        end = story.now()
    finally:
        mounted = _mounts_under(workdir)
        if not mounted:
            shutil.rmtree(workdir, ignore_errors=True)
    story.check(not left, f"every service stopped ({', '.join(left) or 'none left running'})")
    story.check(not mounted, f"nothing left mounted ({len(mounted)})")
    timeline_path.write_text(story.timeline.svg(end=max(end, 1.0)))
    console.print(f"\ntimeline picture: {timeline_path.resolve()}")
    if story.failed:
        console.print(f"[bold red]{len(story.failed)} step(s) did not behave as stated:[/]")
        for text in story.failed:
            console.print(f"  [red]- {text}[/red]")
        return 1
    console.print(f"[bold green]all {story.passed} checks held[/bold green]")
    return 0
