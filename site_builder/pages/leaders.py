"""The Leaders page (SPEC §10): whom to copy, ranked by *your* outcome — each leader's own
executable copy (EXEC_USER): ROI 7 d and 30 d (PnL in the window / equity at its start),
alpha retention 30 d, median execution score, fill rate, median slippage, max drawdown
30 d, the shadow's PnL 30 d, attempts 30 d, and the latency half-life of the newest
latency sweep (SPEC §12, `functions.sweep`); rank by `common.domain.league`, and its
change against the same ranking 24 h ago (from the snapshots and attempts as they were
then). The figures are common/store/leaders.py's, which the `leader.*` metrics publish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from common.domain import league
from common.store import db, leaders, sweep
from site_builder.pages import common, users

Row = dict[str, Any]
DAYS = leaders.DAYS


@dataclass(frozen=True)
class Leader:
    user: Row
    rank: int | None  # None: too few copies
    rank_change: int | None  # places gained since 24 h ago; None: not ranked then
    roi_7d: Decimal | None
    roi_30d: Decimal | None
    retention: Decimal | None
    retention_sums: tuple[int, int]  # (Σ exec, Σ ideal), shown when the ratio is n/a
    score: Decimal | None  # median execution score
    scored: int
    fill_rate: float | None
    slippage_bps: float | None  # median, vs their price
    drawdown: Decimal | None
    shadow_pnl_30d: int | None
    attempts: int
    half_life_s: Decimal | None  # SPEC §12: from the newest latency sweep
    half_life_label: str | None  # "12.5 s", "> 60 s", "n/a"; None: no sweep yet


@dataclass(frozen=True)
class LeadersContext:
    frame: common.Frame
    leaders: list[Leader]
    min_attempts: int = league.MIN_ATTEMPTS
    shrink: int = league.SHRINK
    sweep_at: datetime | None = None  # the newest latency sweep's time (None: none yet)
    sweep_hours: float | None = None


def context(conn: db.Conn, now: datetime) -> LeadersContext:
    figures = leaders.figures(conn, now)
    swept = sweep.latest(conn)
    drawdowns = leaders.max_drawdowns(conn, now)
    rollups = users.attempt_rollups(conn, now - timedelta(days=DAYS))
    now_standing, then_standing = [], []
    by_user = {f.user_id: f for f in figures}
    for f in figures:
        now_standing.append(league.Standing(f.user_id, f.roi_30d, f.attempts, f.retention))
        then_standing.append(
            league.Standing(f.user_id, f.roi_30d_then, f.attempts_then, f.retention)
        )
    before = league.ranks(then_standing)
    out = []
    for rank, st in league.order(now_standing):
        f = by_user[st.user_id]
        mine = [
            x for x in rollups
            if x["followed_user_id"] == st.user_id and x["portfolio_scope"] == "EXEC_USER"
        ]  # fmt: skip
        slip = common.quantile(common.merge_histograms(mine, "slip_their_bps"), 0.5)
        was = before.get(st.user_id)
        out.append(
            Leader(
                user=f.user,
                rank=rank,
                rank_change=None if rank is None or was is None else was - rank,
                roi_7d=f.roi_7d,
                roi_30d=f.roi_30d,
                retention=f.retention,
                retention_sums=f.retention_sums,
                score=None if f.score_cpts is None else Decimal(f.score_cpts) / 100,
                scored=f.scored,
                fill_rate=common.ratio(f.executed, f.attempts),
                slippage_bps=slip,
                drawdown=drawdowns.get(st.user_id),
                shadow_pnl_30d=f.shadow_pnl_30d,
                attempts=f.attempts,
                **_half_life(swept, st.user_id),
            )
        )
    return LeadersContext(
        frame=common.frame(conn, now),
        leaders=out,
        sweep_at=None if swept is None else swept.taken_at,
        sweep_hours=None if swept is None else swept.hours,
    )


def _half_life(swept: sweep.Latest | None, user_id: int) -> dict[str, Any]:
    """A leader's half-life in the newest sweep ("n/a": it had no copies in its range)."""
    if swept is None:
        return {"half_life_s": None, "half_life_label": None}
    mine = swept.of(user_id)
    if mine is None:
        return {"half_life_s": None, "half_life_label": "n/a"}
    hl = mine["half_life"]
    seconds = hl["seconds"] if hl["seconds"] is not None else None
    return {"half_life_s": None if seconds is None else Decimal(seconds),
            "half_life_label": hl["label"]}  # fmt: skip
