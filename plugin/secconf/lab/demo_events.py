"""The demo's acts on the conference event package (RFC 4575 over RFC 6665, issue 15).

alice subscribes to her own conference in KMS mode (:func:`alice_watches`); the story
prints her roster view at the moments it changes the conference (:func:`alice_sees`),
each view checked against what the story knows and timed from the change; mallory's
SUBSCRIBE is refused with nothing stored (:func:`mallory_subscribes`); and a passive
capture of a KMS-mode subscription over plain UDP (:func:`passive_capture`), read back
by tshark's SIP and CMS dissectors, shows NOTIFY bodies that are CMS AuthEnvelopedData
and no roster identity in clear.

What is timed (issue 15: a change reaches the subscriber within 500 ms): from the
moment the story's own SIP request is answered or sent to the arrival of the NOTIFY
whose view shows it, stamped in the NOTIFY's handler — bob's join from his INVITE's
200 OK to the first view naming him, bob's departure from his BYE leaving to the
view showing him disconnected (``departed``).  Changes the story does not make
itself (the bridge's ConfbridgeJoin turning a leg ``connected``, the phones' calls)
are shown with their delay from the story's step, not held to 500 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from rich.table import Table

from ..client.conference_events import ConferenceWatch, Protection, format_rows, roster_rows
from ..client.sip import SipRequestFailed, UserAgent
from ..core.confinfo import ConferenceView, DisconnectionMethod, Endpoint, EndpointStatus
from .capture import LoopbackCapture, tshark_fields
from .demo_scenes import Stage
from .demo_services import ALICE, BOB, CAROL, DAVE, ERIN, FOCUS, MALLORY

__all__ = [
    "AUTH_ENVELOPED_DATA",
    "RosterWatch",
    "alice_sees",
    "alice_sees_bob_join",
    "alice_sees_bob_leave",
    "alice_sees_phones",
    "alice_watches",
    "connected",
    "departed",
    "mallory_subscribes",
    "passive_capture",
    "roster_summary",
    "stop_watching",
]

#: RFC 5083 §1.1: id-ct-authEnvelopedData, as tshark's CMS dissector names it.
AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
#: RFC 4575 §4 and issue 15: a roster change reaches the subscriber within this.
WITHIN = 0.5
#: The views kept (the story has a few dozen changes at most).
MAX_VIEWS = 256

Predicate = Callable[[ConferenceView], bool]


@dataclass
class RosterWatch:
    """alice's subscription and every view it applied, stamped when its NOTIFY arrived."""

    watch: ConferenceWatch
    views: deque[tuple[float, ConferenceView]] = field(
        default_factory=lambda: deque(maxlen=MAX_VIEWS)
    )
    #: The version of the view the story printed last (views must keep increasing).
    shown_version: int = 0

    def add(self, view: ConferenceView) -> None:
        self.views.append((time.monotonic(), view))

    async def first(
        self, predicate: Predicate, *, since: float, timeout: float
    ) -> tuple[float, ConferenceView] | None:
        """The first view that arrived after *since* and satisfies *predicate*."""
        deadline = time.monotonic() + timeout
        while True:
            for at, view in list(self.views):
                if at >= since and predicate(view):
                    return at, view
            if time.monotonic() > deadline or self.watch.ended.is_set():
                return None
            await asyncio.sleep(0.02)


def _endpoints(view: ConferenceView, identity: str) -> list[Endpoint]:
    return [e for user in view.info.users if user.entity == identity for e in user.endpoints]


def connected(*identities: str) -> Predicate:
    """Each of *identities* has a connected endpoint (in the bridge, says the watcher)."""

    def holds(view: ConferenceView) -> bool:
        return all(
            any(e.status is EndpointStatus.CONNECTED for e in _endpoints(view, who))
            for who in identities
        )

    return holds


def departed(identity: str) -> Predicate:
    """*identity* is in the roster, every endpoint disconnected by ``departed`` (a BYE)."""

    def holds(view: ConferenceView) -> bool:
        endpoints = _endpoints(view, identity)
        return bool(endpoints) and all(
            e.status is EndpointStatus.DISCONNECTED
            and e.disconnection_method is DisconnectionMethod.DEPARTED
            for e in endpoints
        )

    return holds


def _src_ids(view: ConferenceView, identity: str) -> set[int]:
    """The SSRCs the roster says *identity*'s connected legs send under (``src-id``)."""
    return {
        medium.src_id
        for endpoint in _endpoints(view, identity)
        if endpoint.status is EndpointStatus.CONNECTED
        for medium in endpoint.media
        if medium.src_id is not None
    }


def _epoch(view: ConferenceView) -> int | None:
    state = view.info.state
    return state.keying.epoch if state is not None and state.keying is not None else None


def _check_roster(
    stage: Stage, view: ConferenceView, present: tuple[str, ...], gone: tuple[str, ...] = ()
) -> None:
    """The view against what the story knows: who is in, who left, the KMS members' SSRCs."""
    ssrcs = {
        who: stage.calls[name].tx_ssrc
        for name, who in (("alice", ALICE), ("bob", BOB))
        if who in present and name in stage.calls
    }
    users = {user.entity for user in view.info.users}
    count = view.info.state.user_count if view.info.state is not None else None
    names = ", ".join(_name(who) for who in present)
    stage.story.check(
        users == {*present, *gone}
        and count == len(present)
        and connected(*present)(view)
        and all(departed(who)(view) for who in gone)
        and all(_src_ids(view, who) == {ssrc} for who, ssrc in ssrcs.items()),
        f"members {names} connected (user-count {count})"
        + "".join(f", {_name(who)} departed" for who in gone)
        + "; src-id "
        + ", ".join(f"{_name(who)} {ssrc}" for who, ssrc in ssrcs.items())
        + ": the SSRC each KMS member sends under",
    )


def _name(identity: str) -> str:
    return identity.removeprefix("sip:").split("@", 1)[0]


def _show(stage: Stage, view: ConferenceView, heading: str) -> None:
    stage.story.say(f"{heading} (version {view.version}):")
    for line in format_rows(roster_rows(view)):
        stage.story.say(f"  {line}")


async def alice_watches(stage: Stage) -> RosterWatch:
    """alice SUBSCRIBEs to her conference in KMS mode: her own exchange with the focus."""
    story, alice = stage.story, stage.agents["alice"]
    story.step("alice subscribes to her conference's roster (RFC 4575 event package, KMS mode)")
    exchange = await alice.subscription(FOCUS)
    roster: RosterWatch | None = None

    def on_view(view: ConferenceView) -> None:
        if roster is not None:
            roster.add(view)

    since = time.monotonic()
    watch = await ConferenceWatch.start(
        alice.ua, stage.target, protection=Protection.KMS, kms=exchange, on_view=on_view
    )
    roster = RosterWatch(watch)
    if watch.view is not None:  # the first NOTIFY may overtake the 2xx
        roster.add(watch.view)
    story.say(
        "SUBSCRIBE with a TRANSFER_INIT (alice's ticket for the focus); the 2xx's "
        "TRANSFER_RESP verified: NOTIFY bodies are CMS under this subscription's event key"
    )
    found = await roster.first(connected(ALICE), since=since, timeout=5)
    if found is None:
        story.check(False, "alice's view shows her connected")
        return roster
    _, view = found
    _show(stage, view, "alice's view")
    story.check(_epoch(view) == 1, "alice's view says epoch 1")
    _check_roster(stage, view, (ALICE,))
    roster.shown_version = view.version
    return roster


async def alice_sees(
    stage: Stage,
    roster: RosterWatch,
    what: str,
    predicate: Predicate,
    *,
    since: float,
    since_what: str,
    timed: bool,
) -> ConferenceView | None:
    """Print alice's first view after *since* (*since_what*) showing *what*; timed: < 500 ms."""
    story = stage.story
    found = await roster.first(predicate, since=since, timeout=10)
    if found is None:
        story.check(False, f"alice's view shows {what} within 10 s")
        return None
    at, view = found
    _show(stage, view, f"alice's view, {(at - since) * 1000:.0f} ms after {since_what}")
    increased = view.version > roster.shown_version
    roster.shown_version = max(roster.shown_version, view.version)
    story.check(
        increased and (not timed or at - since < WITHIN),
        f"alice's view shows {what}: version {view.version} (increasing)"
        + (f", {(at - since) * 1000:.0f} ms after {since_what} (< 500 ms)" if timed else ""),
    )
    return view


async def alice_sees_bob_join(stage: Stage, roster: RosterWatch) -> None:
    """After bob's join: timed from his INVITE's 2xx to the first view naming him."""
    joined = stage.joined_at["bob"]
    story = stage.story
    named = await roster.first(lambda v: bool(_endpoints(v, BOB)), since=joined, timeout=5)
    story.check(
        named is not None and named[0] - joined < WITHIN,
        "bob in alice's view "
        + (f"{(named[0] - joined) * 1000:.0f} ms after his INVITE's 200 OK" if named else "never")
        + " (< 500 ms)",
    )
    view = await alice_sees(
        stage, roster, "bob connected (in the bridge)", connected(ALICE, BOB),
        since=joined, since_what="his 200 OK", timed=False,
    )  # fmt: skip
    if view is not None:
        _check_roster(stage, view, (ALICE, BOB))


async def alice_sees_phones(stage: Stage, roster: RosterWatch, since: float) -> None:
    """After carol's and erin's phones joined (SDES: no SSRC unless their SDP says one)."""
    present = (ALICE, BOB, CAROL, ERIN)
    view = await alice_sees(
        stage, roster, "carol and erin connected", connected(*present),
        since=since, since_what="their act began", timed=False,
    )  # fmt: skip
    if view is not None:
        _check_roster(stage, view, present)


async def alice_sees_bob_leave(stage: Stage, roster: RosterWatch, bye_at: float) -> None:
    """After bob's BYE: timed from the BYE to the view showing him departed."""
    view = await alice_sees(
        stage, roster, "bob disconnected (departed), the others connected",
        lambda v: departed(BOB)(v) and connected(ALICE, CAROL, DAVE, ERIN)(v),
        since=bye_at, since_what="bob's BYE", timed=True,
    )  # fmt: skip
    if view is None:
        return
    _check_roster(stage, view, (ALICE, CAROL, DAVE, ERIN), gone=(BOB,))
    later = await roster.first(lambda v: _epoch(v) == 2, since=bye_at, timeout=10)
    stage.story.check(
        later is not None and later[1].version >= view.version and departed(BOB)(later[1]),
        "alice's view then says epoch 2 (the rekey after bob's departure)"
        + (f": version {later[1].version}" if later else ""),
    )


async def mallory_subscribes(stage: Stage) -> None:
    """mallory (a KMS user, not invited) SUBSCRIBEs: 403, and nothing stored."""
    story, mallory = stage.story, stage.agents["mallory"]
    story.step("mallory tries to SUBSCRIBE to the conference's roster (KMS mode)")
    subscriptions = stage.store.subscriptions
    before = subscriptions.of_conference(stage.conference)
    exchange = await mallory.subscription(FOCUS)
    status = 0
    try:
        watch = await ConferenceWatch.start(
            mallory.ua, stage.target, protection=Protection.KMS, kms=exchange
        )
    except SipRequestFailed as exc:
        status = exc.status_code
        story.say(f"focus: {exc.status_code} {exc.reason}")
    else:
        await watch.close()
    story.timeline.mark(story.now(), "refused", "mallory's SUBSCRIBE: not a member (403)")
    story.check(status == 403, "mallory's SUBSCRIBE refused with 403")
    after = subscriptions.of_conference(stage.conference)
    story.check(
        after == before and MALLORY not in after.values(),
        "no subscription stored for her (the conference's: "
        + (", ".join(sorted(_name(who) for who in after.values())) or "none")
        + ")",
    )


@asynccontextmanager
async def passive_capture(stage: Stage) -> AsyncIterator[None]:
    """alice's second device subscribes over UDP while the block runs, captured by tshark."""
    story, services = stage.story, stage.services
    story.step(
        "alice's second device subscribes over plain UDP (KMS mode) while dave is called in; "
        "tshark captures its port"
    )
    ua = await UserAgent.start("127.0.0.1", 0, "udp", identity=ALICE)
    path = services.workdir / "notify.pcapng"
    capture = LoopbackCapture(path, f"udp port {ua.local_port}")
    try:
        await asyncio.to_thread(capture.__enter__)
        try:
            exchange = await stage.agents["alice"].subscription(FOCUS)
            target = f"sip:conf-{stage.conference}@127.0.0.1:{services.kamailio.port}"
            watch = await ConferenceWatch.start(ua, target, protection=Protection.KMS, kms=exchange)
            try:
                yield
                opened = await _view_showing(watch, connected(DAVE), timeout=5)
            finally:
                await watch.close()
        finally:
            await asyncio.to_thread(capture.__exit__, None, None, None)
    finally:
        await ua.close()
    rows = await asyncio.to_thread(tshark_fields, path, "sip", _FIELDS)
    _read_capture(stage, opened, path.read_bytes(), rows)


async def _view_showing(
    watch: ConferenceWatch, predicate: Predicate, *, timeout: float
) -> ConferenceView | None:
    """The watch's view once it satisfies *predicate* (or as it is after *timeout*)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (watch.view and predicate(watch.view)):
        await asyncio.sleep(0.05)
    return watch.view


_FIELDS = ("sip.Method", "sip.Subscription-State", "sip.Content-Type", "cms.contentType",
           "frame.len")  # fmt: skip


def _read_capture(
    stage: Stage, opened: ConferenceView | None, captured: bytes, rows: list[dict[str, str]]
) -> None:
    """What tshark saw: a table of the NOTIFYs, and the checks on their bodies."""
    story = stage.story
    notifies = [row for row in rows if row["sip.Method"] == "NOTIFY"]
    table = Table(
        title="what an eavesdropper on the UDP path sees (tshark's SIP and CMS dissectors)"
    )
    for column in (
        "NOTIFY",
        "Subscription-State",
        "Content-Type",
        "CMS content type",
        "frame bytes",
    ):
        table.add_column(column, justify="right" if column in ("NOTIFY", "frame bytes") else "left")
    for number, row in enumerate(notifies, start=1):
        cms_type = row["cms.contentType"]
        table.add_row(
            str(number), row["sip.Subscription-State"], row["sip.Content-Type"] or "-",
            f"{cms_type} (AuthEnvelopedData)" if cms_type == AUTH_ENVELOPED_DATA else cms_type or "-",
            row["frame.len"],
        )  # fmt: skip
    story.console.print(table)
    with_body = [row for row in notifies if row["sip.Content-Type"]]
    story.check(
        len(with_body) >= 2
        and all(row["sip.Content-Type"].startswith("application/pkcs7-mime") for row in with_body)
        and {row["cms.contentType"] for row in with_body} == {AUTH_ENVELOPED_DATA},
        f"{len(with_body)} NOTIFY bodies on the wire, each application/pkcs7-mime carrying "
        "CMS AuthEnvelopedData (RFC 5083)",
    )
    users = {user.entity for user in opened.info.users} if opened is not None else set()
    others = [who for who in (BOB, CAROL, DAVE, ERIN) if who in users]
    in_clear = [who for who in others if who.removeprefix("sip:").encode() in captured]
    story.check(
        len(others) == 4 and not in_clear and b"<conference-info" not in captured,
        f"the roster alice's device opened names {len(others)} others; the capture "
        f"({len(captured)} bytes) names {len(in_clear)} of them and no conference-info "
        "document (alice's own URI is in the SIP headers: she is the subscriber)",
    )


def roster_summary(stage: Stage, roster: RosterWatch) -> None:
    """The summary's line on the event package: what alice's view went through."""
    versions = [view.version for _, view in roster.views]
    refused = roster.watch.refusals
    stage.story.console.print(
        f"conference event package (RFC 4575, KMS mode: bodies CMS AuthEnvelopedData under "
        f"alice's event key): alice's view applied {len(versions)} NOTIFYs, versions "
        f"{min(versions, default=0)}..{max(versions, default=0)}, {len(refused)} refused"
    )
    stage.story.check(
        bool(versions) and all(a < b for a, b in itertools.pairwise(versions)) and not refused,
        "alice's views came in increasing versions, none refused",
    )


async def stop_watching(stage: Stage, roster: RosterWatch | None) -> None:
    """Un-SUBSCRIBE alice's watch (before everyone leaves the stage), whatever happened;
    the views she applied go on the timeline."""
    if roster is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(roster.watch.close(), 5)
    for at, view in roster.views:
        users = len(view.info.users)
        stage.story.timeline.mark(
            stage.story.at(at), "view", f"alice's view: version {view.version}, roster of {users}"
        )
