"""``secconf demo --captures DIR``: the focus's SDP keying on real phone captures, no services.

Takes real SDP captured from real phones and tools, keys each secure one with a
freshly drawn conference group key the way the Kamailio module does, rekeys it to
a second epoch, and refuses the clear ones.  Everything printed is computed here,
from the files, in this run; keys are shown only as fingerprints.  (``make demo``
itself is the whole conference: :mod:`secconf.lab.demo_story`.)
"""

from __future__ import annotations

import difflib
import hmac
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..core.errors import ProtocolError, redact_line
from ..core.keys import GroupKey
from ..core.rewrite import GroupKeyRewrite, apply_group_key
from ..core.sdes import SUITES, CryptoAttribute
from ..core.sdp import SessionDescription

EDGE_ADDRESS = "192.0.2.10"  # documentation address (RFC 5737) standing for the media edge
EDGE_FIRST_PORT = 40000


@dataclass
class Capture:
    name: str
    origin: str
    raw: bytes


def load_captures(folder: Path) -> list[Capture]:
    """Every ``*.sdp`` in *folder* with its provenance line from ``PROVENANCE.toml``."""
    provenance_file = folder / "PROVENANCE.toml"
    if not provenance_file.is_file():
        raise SystemExit(f"no PROVENANCE.toml in {folder}: run from the repository root")
    provenance = tomllib.loads(provenance_file.read_text("utf-8"))
    captures = []
    for path in sorted(folder.glob("*.sdp")):
        entry = provenance.get(path.name, {})
        origin = str(entry.get("program") or entry.get("repo") or entry.get("source") or "?")
        captures.append(Capture(path.name, origin.split(" (")[0], path.read_bytes()))
    return captures


def _redacted_diff(before: str, after: str) -> list[str]:
    return [
        redact_line(line.rstrip("\r\n"))
        for line in difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), n=0
        )
        if not line.startswith(("---", "+++", "@@"))
    ]


def _check_keyed(rewrite: GroupKeyRewrite, group_key: GroupKey) -> int:
    """Re-parse the rewritten body and count streams whose one crypto line is the group key."""
    reparsed = SessionDescription.parse(str(rewrite.description))
    confirmed = 0
    for stream in rewrite.streams:
        values = reparsed.media[stream.index].attributes("crypto")
        if len(values) != 1:
            continue
        attribute = CryptoAttribute.parse(values[0] or "")
        if (
            attribute.tag == stream.chosen_tag
            and attribute.suite == group_key.suite
            and hmac.compare_digest(attribute.key + attribute.salt, group_key.key + group_key.salt)
        ):
            confirmed += 1
    return confirmed


@dataclass
class _Outcome:
    """One capture's row of the summary, how many of its checks failed, its keyed body."""

    row: tuple[str, ...]
    failures: int
    rewrite: GroupKeyRewrite | None = None


def _offered(description: SessionDescription) -> str:
    """Each stream's media and profile, and the crypto suites it offers (one per line)."""
    return "; ".join(
        f"{s.media} {s.proto}"
        + "".join(f"\n  {a.tag} {a.suite.name}" for a in _parsed_crypto(s.attributes("crypto")))
        for s in description.media
    )


def _key_and_rekey(
    description: SessionDescription, epoch1: GroupKey, epoch2: GroupKey
) -> tuple[str, int, GroupKeyRewrite | None]:
    """Key *description* with *epoch1* as the module does, then rekey it to *epoch2*.

    (the summary's result text, failed checks, the keyed rewrite or None if refused).
    """
    try:
        rewrite = apply_group_key(
            description,
            epoch1,
            media_address=EDGE_ADDRESS,
            media_ports=[
                EDGE_FIRST_PORT + 2 * i
                for i, s in enumerate(description.media)
                if s.is_rtp and s.port != 0
            ],
        )
    except ProtocolError as exc:
        return f"[yellow]refused {exc.status_code} {exc.reason}[/yellow]: {exc.message}", 0, None
    confirmed = _check_keyed(rewrite, epoch1)
    rekeyed = apply_group_key(rewrite.description, epoch2)
    confirmed2 = _check_keyed(rekeyed, epoch2)
    changed = len(_redacted_diff(str(rewrite.description), str(rekeyed.description))) // 2
    ok = confirmed == confirmed2 == len(rewrite.streams)
    result = (
        f"[green]keyed[/green] {confirmed}/{len(rewrite.streams)} stream(s) with epoch 1 "
        f"(tags kept: {', '.join(str(s.chosen_tag) for s in rewrite.streams)}); "
        f"rekey to epoch 2 changed {changed} line(s), {confirmed2} confirmed"
    )
    return result, int(not ok), rewrite


def _examine(capture: Capture, epoch1: GroupKey, epoch2: GroupKey) -> _Outcome:
    """Parse (it must round-trip byte for byte), key and rekey one capture."""
    try:
        description = SessionDescription.parse(capture.raw)
    except ProtocolError as exc:
        row = (capture.name, capture.origin, "-", "-", "-", f"parse error: {exc}")
        return _Outcome(row, 1)
    exact = bytes(description) == capture.raw
    offered = _offered(description)
    result, failed, rewrite = _key_and_rekey(description, epoch1, epoch2)
    row = (
        capture.name,
        capture.origin,
        "[green]exact[/green]" if exact else "[red]DIFFERS[/red]",
        str(len(description.media)),
        offered,
        result,
    )
    return _Outcome(row, int(not exact) + failed, rewrite)


def _diff_panel(capture: Capture, rewrite: GroupKeyRewrite) -> Panel:
    """Every line the keying changed in *capture* (keys masked)."""
    diff = "\n".join(_redacted_diff(capture.raw.decode("utf-8"), str(rewrite.description)))
    return Panel(
        diff,
        title=f"{capture.name}: every line that changed (keys masked)",
        subtitle=f"{len(capture.raw)} bytes in, all other lines byte-identical",
    )


def run_demo(folder: Path) -> int:
    console = Console()
    captures = load_captures(folder)
    console.rule("[bold]secconf demo --captures: group keys into real phone SDP")
    console.print(f"{len(captures)} captures from {folder}\n")

    suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
    epoch1 = GroupKey.generate(1, suite, secrets.token_bytes)
    epoch2 = GroupKey.generate(2, suite, secrets.token_bytes)
    console.print(
        f"conference group key epoch 1: {suite.name}, fingerprint {epoch1.fingerprint}\n"
        f"conference group key epoch 2: {suite.name}, fingerprint {epoch2.fingerprint}\n"
    )

    summary = Table(title="What the focus does with each capture")
    for column in ("capture", "from", "round-trip", "streams", "offered", "result"):
        summary.add_column(column)
    failures = 0
    shown_diff = False
    for capture in captures:
        outcome = _examine(capture, epoch1, epoch2)
        failures += outcome.failures
        if outcome.rewrite is not None and not shown_diff:
            shown_diff = True
            console.print(_diff_panel(capture, outcome.rewrite))
        summary.add_row(*outcome.row)
    console.print(summary)
    if failures:
        console.print(f"[red]{failures} capture(s) did not behave as expected[/red]")
        return 1
    console.print("[bold green]all captures round-tripped; every secure one keyed and rekeyed[/]")

    return 0


def _parsed_crypto(values: list[str | None]) -> list[CryptoAttribute]:
    parsed = []
    for value in values:
        try:
            parsed.append(CryptoAttribute.parse(value or ""))
        except ProtocolError:
            continue
    return parsed
