"""A leader's latency research on their page (SPEC §12): the newest latency sweep's
points for this leader's own copy, beside the global portfolio's, the "alpha decay"
charts (retention and PnL against the delay) and the half-life. The figures are
`functions.sweep`'s, as stored; nothing is recomputed here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from common.store import db, sweep
from site_builder import svg

Row = dict[str, Any]


@dataclass(frozen=True)
class Latency:
    taken_at: datetime
    hours: float
    delays_s: list[float]
    points: list[Row]  # this leader's, one per delay (empty: no copies in the range)
    global_points: list[Row]
    half_life: Row  # seconds, beyond_s, label
    global_half_life: Row
    groups: int
    groups_without_ladder: int
    groups_late_base: int = 0  # +0 later than +2 s (detected late): left out

    @property
    def half_life_s(self) -> float | None:
        s = self.half_life["seconds"]
        return None if s is None else float(s)


def context(conn: db.Conn, user_id: int) -> Latency | None:
    """The newest sweep as this leader's page shows it; None before the first sweep."""
    swept = sweep.latest(conn)
    if swept is None:
        return None
    mine = swept.of(user_id) or {"points": [], "half_life": {"label": "n/a", "seconds": None}}
    everyone = swept.of(None) or {"points": [], "half_life": {"label": "n/a", "seconds": None}}
    r = swept.report
    return Latency(
        taken_at=swept.taken_at,
        hours=swept.hours,
        delays_s=[d / 1000 for d in r["delays_ms"]],
        points=list(mine["points"]),
        global_points=list(everyone["points"]),
        half_life=dict(mine["half_life"]),
        global_half_life=dict(everyone["half_life"]),
        groups=int(r["groups"]),
        groups_without_ladder=int(r["groups_without_ladder"]),
        groups_late_base=int(r.get("groups_late_base", 0)),
    )


def _values(lat: Latency, points: list[Row], key: str, scale: float) -> list[float | None]:
    by_delay = {p["delay_ms"] / 1000: p.get(key) for p in points}
    out: list[float | None] = []
    for d in lat.delays_s:
        v = by_delay.get(d)
        out.append(None if v is None else float(Decimal(str(v))) / scale)
    return out


def retention_chart(lat: Latency) -> bytes:
    return svg.decay(
        "Alpha decay: retention by delay after the leader's fill",
        lat.delays_s,
        [
            svg.Curve("own copy", _values(lat, lat.points, "retention", 1)),
            svg.Curve(
                "global portfolio",
                _values(lat, lat.global_points, "retention", 1),
                color=svg.SHADOW,
                dashed=True,
            ),
        ],
        marker_s=lat.half_life_s,
    )


def pnl_chart(lat: Latency) -> bytes:
    return svg.decay(
        "PnL of the copies by delay (at the marks now)",
        lat.delays_s,
        [svg.Curve("own copy", _values(lat, lat.points, "pnl_micros", 1_000_000))],
        unit="usd",
    )
