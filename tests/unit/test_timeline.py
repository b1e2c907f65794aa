"""The demo's timeline picture: its SVG is well-formed and shows what was recorded."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from secconf.lab.timeline import Timeline

SVG = "{http://www.w3.org/2000/svg}"


def _story() -> Timeline:
    timeline = Timeline("conf-0123456789abcdef")
    timeline.epoch(1, 0.0)
    timeline.joined("alice", 0.5, "kms")
    timeline.joined("bob", 1.0, "kms")
    timeline.joined("erin <&>", 2.0, "sdes")
    timeline.mark(2.5, "refused", "mallory: 403 not in the allowed set")
    timeline.mark(1.1, "view", "alice's view: version 2")
    timeline.mark(4.1, "view", "alice's view: version 3")
    timeline.left("bob", 4.0, "bye")
    timeline.mark(4.5, "rekey", "leave: all legs on epoch 2 in 550 ms")
    timeline.epoch(2, 4.5)
    timeline.left("erin <&>", 6.0, "replaced")
    timeline.joined("erin <&>", 6.2, "dial-out")
    return timeline


def test_svg_parses_and_has_one_bar_per_call_one_band_per_epoch() -> None:
    root = ET.fromstring(_story().svg(end=8.0))  # noqa: S314 (our own output)
    rects = root.findall(f"{SVG}rect")
    calls = [r for r in rects if r.get("class") == "call"]
    bands = [r for r in rects if r.get("class") == "epoch"]
    assert [c.get("data-member") for c in calls] == ["alice", "bob", "erin <&>", "erin <&>"]
    assert [b.get("data-epoch") for b in bands] == ["1", "2"]
    assert len([g for g in root.findall(f"{SVG}g") if g.get("class") == "rekey"]) == 1
    assert len([g for g in root.findall(f"{SVG}g") if g.get("class") == "refused"]) == 1
    views = [c for c in root.findall(f"{SVG}circle") if c.get("class") == "view"]
    assert [float(c.get("cx", "0")) for c in views] == sorted(
        float(c.get("cx", "0")) for c in views
    )
    assert len(views) == 2
    assert views[0].get("cx") != views[1].get("cx")
    # The views' row lies under the refusals' row.
    cross = next(g for g in root.findall(f"{SVG}g") if g.get("class") == "refused")
    refused_y = float(cross.findall(f"{SVG}line")[0].get("y2", "0"))
    assert float(views[0].get("cy", "0")) > refused_y


def test_bars_are_placed_by_time() -> None:
    root = ET.fromstring(_story().svg(end=8.0))  # noqa: S314 (our own output)
    bars = {
        (r.get("data-member"), float(r.get("x", "0"))): float(r.get("width", "0"))
        for r in root.findall(f"{SVG}rect")
        if r.get("class") == "call"
    }
    (bob_x, bob_w) = next((x, w) for (m, x), w in bars.items() if m == "bob")
    (alice_x, alice_w) = next((x, w) for (m, x), w in bars.items() if m == "alice")
    assert bob_x > alice_x
    # Bob's call lasted 3 s of 8, Alice's is open until the end (7.5 s).
    assert bob_w == pytest.approx(alice_w * 3.0 / 7.5, rel=0.01)


def test_text_is_escaped() -> None:
    assert "erin &lt;&amp;&gt;" in _story().svg(end=8.0)


def test_left_without_an_open_call_is_an_error() -> None:
    timeline = Timeline("t")
    with pytest.raises(ValueError, match="no open call"):
        timeline.left("nobody", 1.0, "bye")


def test_epochs_must_grow() -> None:
    timeline = Timeline("t")
    timeline.epoch(2, 1.0)
    with pytest.raises(ValueError, match="must grow"):
        timeline.epoch(1, 2.0)
    with pytest.raises(ValueError, match="must grow"):
        timeline.epoch(3, 0.5)


def test_end_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Timeline("t").svg(end=0.0)
