"""The real copy on a leader's page (SPEC §10): the admin's copy wallets and imported
fills paired with the leader's groups, side by side with the simulated copy — retention,
waterfalls and the cumulative ideal vs executed PnL of each at today's marks — and the
copy fills that paired with nothing. A copy wallet's own page names its leader."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution
from common.store import db, real_copies
from site_builder import svg
from site_builder.pages import common

Row = dict[str, Any]
UNPAIRED_ROWS = 50


@dataclass(frozen=True)
class RealCopy:
    wallets: list[Row]  # the leader's copy wallets (followed users)
    summary: real_copies.Summary
    retention: dict[str, attribution.Retention]  # of the real pairs
    unpaired: list[Row]  # the newest UNPAIRED_ROWS
    curves: dict[str, list[tuple[datetime, int, int]]]  # "sim" / "real": (t, Σ ideal, Σ exec)

    @property
    def median_score(self) -> float | None:
        s = self.summary.median_score_cpts
        return None if s is None else s / 100


def context(conn: db.Conn, leader: int, now: datetime) -> RealCopy | None:
    """The leader's real copy, or None when it has no copy wallet and no copy fill."""
    wallets = real_copies.copy_wallets(conn).get(leader, [])
    summary = real_copies.summary(conn, leader)
    if not wallets and not summary.total:
        return None
    return RealCopy(
        wallets=wallets,
        summary=summary,
        retention=real_copies.retention(conn, now, leader),
        unpaired=real_copies.unpaired(conn, leader, UNPAIRED_ROWS),
        curves=real_copies.cumulative(conn, leader, now - timedelta(days=common.SERIES_DAYS)),
    )


def copy_of(conn: db.Conn, user_id: int) -> Row | None:
    """The leader whose copy wallet user `user_id` is (id, label), or None."""
    return conn.execute(
        "SELECT l.id, l.label FROM followed_user u JOIN followed_user l ON l.id = u.copy_of_user_id"
        " WHERE u.id = %(u)s",
        {"u": user_id},
    ).fetchone()


def waterfall_chart(real: RealCopy) -> bytes:
    """The real copy's waterfall, half width (beside the simulated one)."""
    return common.retention_chart(real.retention["30d"], "real copy", "fills", svg.HALF)


def sim_waterfall_chart(retention: attribution.Retention) -> bytes:
    """The simulated copy's waterfall at half width, beside the real one."""
    return common.retention_chart(retention, "simulated copy", width=svg.HALF)


def curve_chart(real: RealCopy, which: str, until: datetime) -> bytes:
    """The cumulative ideal vs executed PnL of the simulated ("sim") or real copy."""
    points = real.curves[which]
    if points:  # from zero, an hour before the first point (the sums start there)
        points = [(points[0][0] - timedelta(hours=1), 0, 0), *points]
    times = [t for t, _, _ in points]
    name = {"sim": "simulated", "real": "real"}[which]
    return svg.lines(
        f"{name.capitalize()} copy vs its ideal: cumulative PnL at today's marks",
        [
            svg.Series("ideal", times, [i / 1e6 for _, i, _ in points], color=svg.SHADOW,
                          dashed=True),
            svg.Series(name, times, [e / 1e6 for _, _, e in points]),
        ],
        zero=True,
        width=svg.HALF,
        until=until,
    )  # fmt: skip
