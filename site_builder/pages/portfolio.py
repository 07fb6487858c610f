"""Global portfolio (portfolio.html): open positions, exposure by market and by user,
drawdown, and how much of each risk limit is in use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.store import db
from site_builder import charts
from site_builder.pages import common

Row = dict[str, Any]


@dataclass(frozen=True)
class Limit:
    name: str
    used: float | None  # fraction of equity (or loss fraction)
    cap_bps: int
    note: str

    @property
    def utilization(self) -> float | None:
        return None if self.used is None or not self.cap_bps else self.used / (self.cap_bps / 1e4)


@dataclass(frozen=True)
class PortfolioContext:
    frame: common.Frame
    snapshot: Row | None
    positions: list[Row]
    by_market: list[Row]
    by_user: list[Row]
    limits: list[Limit]
    series: list[Row]
    peak: int | None

    @property
    def drawdown(self) -> list[tuple[datetime, float]]:
        """(time, drawdown from the running peak) along the series."""
        out, top = [], 0
        for r in self.series:
            top = max(top, r["equity_micros"])
            out.append((r["bucket"], (r["equity_micros"] / top - 1) if top else 0.0))
        return out


_POSITIONS = """
SELECT p.asset_id, p.condition_id, p.share_micros, p.cost_micros, p.last_price_micros,
       m.question, o.outcome, m.end_time, m.closed,
       (p.share_micros * held_price(p.last_price_micros, p.cost_micros, p.share_micros))
           / 1000000 AS value_micros
FROM portfolio_position p
LEFT JOIN market m ON m.condition_id = p.condition_id
LEFT JOIN outcome_asset o ON o.asset_id = p.asset_id
WHERE p.portfolio_scope = 'EXEC_GLOBAL' AND p.followed_user_id IS NULL AND p.share_micros <> 0
ORDER BY value_micros DESC, p.asset_id
"""
_BY_USER = """
SELECT e.followed_user_id AS user_id, u.label,
       sum((e.share_micros * held_price(p.last_price_micros, p.cost_micros, p.share_micros))
           / 1000000)::bigint AS value_micros,
       count(*) AS assets
FROM rollup_global_exposure e
JOIN followed_user u ON u.id = e.followed_user_id
LEFT JOIN portfolio_position p ON p.portfolio_scope = 'EXEC_GLOBAL'
     AND p.followed_user_id IS NULL AND p.asset_id = e.asset_id
WHERE e.share_micros <> 0
GROUP BY 1, 2 ORDER BY value_micros DESC
"""


def _loss_since(conn: db.Conn, snap: Row | None, at: datetime) -> float | None:
    """The loss since `at` as a fraction of the equity then (0 for a gain)."""
    since = common.global_pnl_since(conn, snap, at)
    if since is None:
        return None
    change, equity_then = since
    return max(0.0, -change / equity_then) if equity_then else 0.0


def context(conn: db.Conn, now: datetime) -> PortfolioContext:
    snap = common.snapshots_at(conn, common.latest_bucket(conn)).get(("EXEC_GLOBAL", None))
    positions = list(conn.execute(_POSITIONS))
    markets: dict[str, Row] = {}
    for p in positions:
        m = markets.setdefault(
            p["condition_id"] or "?",
            {"condition_id": p["condition_id"], "question": p["question"], "value_micros": 0},
        )
        m["value_micros"] += p["value_micros"]
    by_market = sorted(markets.values(), key=lambda m: -m["value_micros"])
    by_user = list(conn.execute(_BY_USER))
    series = common.series(conn, "EXEC_GLOBAL", None, now)
    peak_row = conn.execute(common.GLOBAL_PEAK).fetchone()
    peak = peak_row["peak"] if peak_row else None
    equity = snap["equity_micros"] if snap else None
    cfg = common.config(conn).base
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    limits = [
        Limit(
            "Total exposure",
            common.ratio(common.value(snap, "exposure_micros"), equity),
            cfg.max_total_exposure_bps,
            "of equity in open positions",
        ),
        Limit(
            "Largest market",
            common.ratio(by_market[0]["value_micros"], equity) if by_market else 0.0,
            cfg.max_market_exposure_bps,
            by_market[0]["question"] or "" if by_market else "",
        ),
        Limit(
            "Largest user",
            common.ratio(by_user[0]["value_micros"], equity) if by_user else 0.0,
            cfg.max_user_exposure_bps,
            by_user[0]["label"] if by_user else "",
        ),
        Limit(
            "Daily loss",
            _loss_since(conn, snap, midnight),
            cfg.daily_loss_limit_bps,
            "since 00:00 UTC",
        ),
        Limit(
            "Weekly loss",
            _loss_since(conn, snap, now - timedelta(days=7)),
            cfg.weekly_loss_limit_bps,
            "over 7 days",
        ),
        Limit(
            "Drawdown",
            None if not (equity and peak) else max(0.0, 1 - equity / peak),
            cfg.max_drawdown_bps,
            "from the peak",
        ),
    ]
    return PortfolioContext(
        frame=common.frame(conn, now),
        snapshot=snap,
        positions=positions,
        by_market=by_market,
        by_user=by_user,
        limits=limits,
        series=series,
        peak=peak,
    )


def drawdown_chart(ctx: PortfolioContext) -> bytes:
    points = ctx.drawdown
    return charts.lines(
        "Drawdown from the running peak (global copy)",
        [charts.Series("", [t for t, _ in points], [v for _, v in points], color=charts.LOSS)],
        unit="ratio",
        fill_below=True,
        until=ctx.frame.now,
    )


def market_chart(ctx: PortfolioContext) -> bytes:
    return charts.bars(
        "Exposure by market (top 12)",
        [
            ((m["question"] or m["condition_id"] or "?")[:48], m["value_micros"] / 1e6)
            for m in ctx.by_market[:12]
        ],
        unit="usd",
    )


def user_chart(ctx: PortfolioContext) -> bytes:
    return charts.bars(
        "Exposure by user (whose signals bought it)",
        [(u["label"][:32], u["value_micros"] / 1e6) for u in ctx.by_user[:12]],
        unit="usd",
        color=charts.SHADOW,
    )
