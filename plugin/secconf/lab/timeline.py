"""A conference's story as data, and its picture as SVG (what ``make demo`` writes).

Members are rows (a bar from each call's start to its end; a member with
several calls, e.g. a replacement call, has several bars), key epochs are
background bands, rekeys are vertical marks, refusals are crosses on a row
of their own, and the roster views a subscriber applied (RFC 4575 NOTIFYs) are
dots on another.  Pure: times are seconds passed in by the caller, nothing is read
from a clock, and the SVG is built from escaped text only (no template engine,
no drawing library).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

__all__ = ["Call", "Mark", "Timeline"]

# Layout (px).
_LEFT = 150
_RIGHT = 30
_TOP = 50
_ROW = 34
_BAR = 16
_WIDTH = 960
# Epoch bands alternate between these fills; bars are coloured by key mode.
_BAND_FILLS = ("#eef3fb", "#fbf4e6")
_MODE_FILLS = {"kms": "#3a6fb0", "sdes": "#4c9a5a", "dial-out": "#8a5fb0"}
_DEFAULT_FILL = "#777777"


@dataclass
class Call:
    """One call of a member: [start, end) in seconds, how it was keyed, how it ended."""

    member: str
    start: float
    mode: str
    end: float | None = None
    ended_by: str = ""


@dataclass(frozen=True)
class Mark:
    """A point in time: a rekey (``rekey``), a refused request (``refused``), a view (``view``)."""

    time: float
    kind: str
    text: str


@dataclass
class Timeline:
    """Collects calls, epochs and marks; :meth:`svg` draws them."""

    title: str
    calls: list[Call] = field(default_factory=list)
    epochs: list[tuple[int, float]] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def joined(self, member: str, time: float, mode: str) -> Call:
        """A call of *member* starts (it is in the conference from *time*)."""
        call = Call(member, time, mode)
        self.calls.append(call)
        return call

    def left(self, member: str, time: float, ended_by: str) -> None:
        """The member's open call ends (``bye``, ``removed``, ``replaced`` ...)."""
        for call in reversed(self.calls):
            if call.member == member and call.end is None:
                call.end = time
                call.ended_by = ended_by
                return
        raise ValueError(f"{member} has no open call")

    def epoch(self, number: int, time: float) -> None:
        """Key epoch *number* is in use from *time* on."""
        if self.epochs and (number <= self.epochs[-1][0] or time < self.epochs[-1][1]):
            raise ValueError("epochs must grow in number and time")
        self.epochs.append((number, time))

    def mark(self, time: float, kind: str, text: str) -> None:
        """A rekey, a refusal or a subscriber's roster view at *time*."""
        self.marks.append(Mark(time, kind, text))

    def members(self) -> list[str]:
        """Members in order of their first call."""
        seen: dict[str, None] = {}
        for call in self.calls:
            seen.setdefault(call.member, None)
        return list(seen)

    def svg(self, end: float) -> str:
        """The picture up to *end* seconds (open calls are drawn to *end*)."""
        if end <= 0:
            raise ValueError("end must be positive")
        return _Picture(self, end).draw()


class _Picture:
    """The SVG of one :class:`Timeline` up to *end* seconds, drawn layer by layer.

    Back to front: the title, the epoch bands, one row of call bars per member, the row of
    refusals, the rekey marks, the time axis and the legend.
    """

    def __init__(self, timeline: Timeline, end: float) -> None:
        self.timeline = timeline
        self.end = end
        self.members = timeline.members()
        self.refusals = [m for m in timeline.marks if m.kind == "refused"]
        self.views = [m for m in timeline.marks if m.kind == "view"]
        rows = len(self.members) + (1 if self.refusals else 0) + (1 if self.views else 0)
        self.height = _TOP + rows * _ROW + 60
        self.bottom = _TOP + rows * _ROW
        self.out: list[str] = []

    def x(self, t: float) -> float:
        """The abscissa of *t* seconds (clamped to [0, end])."""
        span = _WIDTH - _LEFT - _RIGHT
        return _LEFT + span * min(max(t, 0.0), self.end) / self.end

    def draw(self) -> str:
        self._header()
        self._epochs()
        for row, member in enumerate(self.members):
            self._member(row, member)
        if self.refusals:
            self._refusals()
        if self.views:
            self._views()
        self._rekeys()
        self._axis()
        self._legend()
        self.out.append("</svg>")
        return "\n".join(self.out) + "\n"

    def _header(self) -> None:
        title, height = escape(self.timeline.title), self.height
        self.out += [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
            f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif" font-size="12">',
            f"<title>{title}</title>",
            f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
            f'<text x="{_LEFT}" y="20" font-size="15" font-weight="bold">{title}</text>',
        ]

    def _epochs(self) -> None:
        epochs, x, bottom = self.timeline.epochs, self.x, self.bottom
        for index, (number, start) in enumerate(epochs):
            stop = epochs[index + 1][1] if index + 1 < len(epochs) else self.end
            fill = _BAND_FILLS[index % len(_BAND_FILLS)]
            self.out.append(
                f'<rect class="epoch" data-epoch="{number}" x="{x(start):.1f}" y="{_TOP - 12}" '
                f'width="{max(x(stop) - x(start), 0.5):.1f}" height="{bottom - _TOP + 12}" '
                f'fill="{fill}"/>'
            )
            self.out.append(
                f'<text x="{x(start) + 4:.1f}" y="{_TOP - 2}" fill="#555">epoch {number}</text>'
            )

    def _member(self, row: int, member: str) -> None:
        """The member's name and a bar per call, labelled with how it ended."""
        x = self.x
        y = _TOP + row * _ROW + (_ROW - _BAR) / 2
        self.out.append(
            f'<text x="{_LEFT - 8}" y="{y + _BAR - 3:.1f}" text-anchor="end">'
            f"{escape(member)}</text>"
        )
        for call in (c for c in self.timeline.calls if c.member == member):
            stop = call.end if call.end is not None else self.end
            fill = _MODE_FILLS.get(call.mode, _DEFAULT_FILL)
            label = call.mode + (f", {call.ended_by}" if call.ended_by else "")
            self.out.append(
                f'<rect class="call" data-member={quoteattr(member)} '
                f'x="{x(call.start):.1f}" y="{y:.1f}" '
                f'width="{max(x(stop) - x(call.start), 1.0):.1f}" height="{_BAR}" '
                f'rx="3" fill="{fill}"><title>{escape(member)}: {escape(label)}</title></rect>'
            )
            if call.ended_by:
                self.out.append(
                    f'<text x="{x(stop) + 3:.1f}" y="{y + _BAR - 3:.1f}" fill="#444" '
                    f'font-size="10">{escape(call.ended_by)}</text>'
                )

    def _refusals(self) -> None:
        """A row of its own: a cross per refused request."""
        y = _TOP + len(self.members) * _ROW + _ROW / 2
        self.out.append(f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">refused</text>')
        for mark in self.refusals:
            cx = self.x(mark.time)
            self.out.append(
                f'<g class="refused"><title>{escape(mark.text)}</title>'
                f'<line x1="{cx - 5:.1f}" y1="{y - 5:.1f}" x2="{cx + 5:.1f}" y2="{y + 5:.1f}" '
                f'stroke="#c0392b" stroke-width="2"/>'
                f'<line x1="{cx - 5:.1f}" y1="{y + 5:.1f}" x2="{cx + 5:.1f}" y2="{y - 5:.1f}" '
                f'stroke="#c0392b" stroke-width="2"/></g>'
            )

    def _views(self) -> None:
        """A row of its own, under the refusals: a dot per roster view applied."""
        row = len(self.members) + (1 if self.refusals else 0)
        y = _TOP + row * _ROW + _ROW / 2
        self.out.append(
            f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">roster views</text>'
        )
        for mark in self.views:
            self.out.append(
                f'<circle class="view" cx="{self.x(mark.time):.1f}" cy="{y:.1f}" r="3.5" '
                f'fill="#2c7a7b"><title>{escape(mark.text)}</title></circle>'
            )

    def _rekeys(self) -> None:
        """A dashed vertical line across every row, with an arrowhead under it."""
        bottom = self.bottom
        for mark in (m for m in self.timeline.marks if m.kind == "rekey"):
            cx = self.x(mark.time)
            self.out.append(
                f'<g class="rekey"><title>{escape(mark.text)}</title>'
                f'<line x1="{cx:.1f}" y1="{_TOP - 12}" x2="{cx:.1f}" y2="{bottom}" '
                f'stroke="#d35400" stroke-width="2" stroke-dasharray="4 3"/>'
                f'<path d="M {cx - 5:.1f} {bottom + 8} L {cx + 5:.1f} {bottom + 8} '
                f'L {cx:.1f} {bottom} Z" fill="#d35400"/></g>'
            )

    def _axis(self) -> None:
        """Time axis: a tick every second, labelled every 5 s on long runs."""
        bottom = self.bottom
        step = 1 if self.end <= 20 else 5
        self.out.append(
            f'<line x1="{_LEFT}" y1="{bottom + 16}" x2="{_WIDTH - _RIGHT}" y2="{bottom + 16}" '
            f'stroke="#333"/>'
        )
        for second in range(0, int(self.end) + 1, step):
            tx = self.x(float(second))
            self.out.append(
                f'<line x1="{tx:.1f}" y1="{bottom + 13}" x2="{tx:.1f}" y2="{bottom + 19}" '
                f'stroke="#333"/><text x="{tx:.1f}" y="{bottom + 32}" text-anchor="middle" '
                f'font-size="10">{second} s</text>'
            )

    def _legend(self) -> None:
        legend_y = self.bottom + 50
        legend_x = _LEFT
        for mode, fill in _MODE_FILLS.items():
            self.out.append(
                f'<rect x="{legend_x}" y="{legend_y - 9}" width="12" height="10" fill="{fill}"/>'
                f'<text x="{legend_x + 16}" y="{legend_y}">{escape(mode)} call</text>'
            )
            legend_x += 110
        self.out.append(
            f'<line x1="{legend_x}" y1="{legend_y - 10}" x2="{legend_x}" y2="{legend_y + 2}" '
            f'stroke="#d35400" stroke-width="2" stroke-dasharray="4 3"/>'
            f'<text x="{legend_x + 6}" y="{legend_y}">rekey</text>'
        )
