"""The roster a participant shows: one row per endpoint, never key material.

A flat projection of :class:`~secconf.core.confinfo.ConferenceInfo` for a table or plain
lines (``secconf client subscribe``): the user, the endpoint's status and joining
method, the SSRCs its media is sent under (RFC 4575 §5.8.4 ``src-id``), and the
conference's key epoch (our ``<sc:keying>`` extension: a number, not a key).
"""

from __future__ import annotations

from dataclasses import dataclass

from secconf.core.confinfo import ConferenceView

__all__ = ["RosterRow", "format_rows", "roster_rows"]

_HEADINGS = ("user", "status", "joined", "ssrc", "epoch")


@dataclass(frozen=True, slots=True)
class RosterRow:
    user: str
    status: str
    joining_method: str
    ssrcs: tuple[int, ...]
    epoch: int | None

    def cells(self) -> tuple[str, ...]:
        return (
            self.user,
            self.status,
            self.joining_method,
            ",".join(str(ssrc) for ssrc in self.ssrcs) or "-",
            "-" if self.epoch is None else str(self.epoch),
        )


def roster_rows(view: ConferenceView) -> list[RosterRow]:
    """One row per endpoint (a user without endpoints gets one row of dashes)."""
    info = view.info
    keying = info.state.keying if info.state is not None else None
    epoch = keying.epoch if keying is not None else None
    rows: list[RosterRow] = []
    for user in info.users:
        for endpoint in user.endpoints or (None,):
            if endpoint is None:
                rows.append(RosterRow(user.entity, "-", "-", (), epoch))
                continue
            ssrcs = tuple(m.src_id for m in endpoint.media if m.src_id is not None)
            rows.append(
                RosterRow(
                    user.entity,
                    endpoint.status.value if endpoint.status else "-",
                    endpoint.joining_method.value if endpoint.joining_method else "-",
                    ssrcs,
                    epoch,
                )
            )
    return rows


def format_rows(rows: list[RosterRow]) -> list[str]:
    """Plain aligned lines, a heading first."""
    table = [_HEADINGS, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(_HEADINGS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in table]  # fmt: skip
