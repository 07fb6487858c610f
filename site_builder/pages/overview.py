"""Overview (index.html, refreshed every 10 s): the global copy's equity curve, today
and 7-day PnL, drawdown, win rate, exposure, top markets and users, system health and
the pause state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution
from common.store import attributions, db
from common.store import status as system
from site_builder import svg
from site_builder.pages import common, portfolio, status

Row = dict[str, Any]


@dataclass(frozen=True)
class Health:
    listener_connected: bool | None
    listener_beat_at: datetime | None
    last_backfill_at: datetime | None
    last_backfill_status: str | None
    lag_p50_ms: float | None
    lag_p95_ms: float | None
    lag_fills_today: int
    failed_items: int
    stale_processes: list[str]


@dataclass(frozen=True)
class OverviewContext:
    frame: common.Frame
    bucket: datetime | None
    equity: int | None
    cash: int | None
    exposure: int | None
    contributed: int | None
    pnl_total: int | None
    pnl_today: int | None
    pnl_7d: int | None
    drawdown: float | None
    peak: int | None
    wins: int
    losses: int
    exposure_ratio: float | None
    exposure_cap_bps: int
    top_markets: list[Row]
    top_users: list[Row]
    health: Health
    series: list[Row]
    retention: dict[str, attribution.Retention]

    @property
    def win_rate(self) -> float | None:
        return common.ratio(self.wins, self.wins + self.losses)


def _pnl_since(conn: db.Conn, now_row: Row | None, at: datetime) -> int | None:
    since = common.global_pnl_since(conn, now_row, at)
    return None if since is None else since[0]


def health(conn: db.Conn, now: datetime, stale_after_s: float = 180.0) -> Health:
    beats = {r["process"]: r for r in system.heartbeats(conn)}
    listener = beats.get("listen")
    backfill = status.last_backfill(conn)
    lag_rows = list(
        conn.execute(
            "SELECT lag_ms, fills FROM rollup_detect_daily WHERE day = %(d)s", {"d": now.date()}
        )
    )
    lag = common.merge_histograms(lag_rows, "lag_ms")
    failed = conn.execute(
        "SELECT count(*) AS n FROM failed_item WHERE resolved_at IS NULL"
    ).fetchone()
    stale = sorted(
        p for p, r in beats.items() if (now - r["beat_at"]).total_seconds() > stale_after_s
    )
    return Health(
        listener_connected=None if listener is None else bool(listener["info"].get("connected")),
        listener_beat_at=None if listener is None else listener["beat_at"],
        last_backfill_at=None if backfill is None else backfill["started_at"],
        last_backfill_status=None if backfill is None else backfill["status"],
        lag_p50_ms=common.quantile(lag, 0.5),
        lag_p95_ms=common.quantile(lag, 0.95),
        lag_fills_today=sum(r["fills"] for r in lag_rows),
        failed_items=failed["n"] if failed else 0,
        stale_processes=stale,
    )


def top_markets(conn: db.Conn, limit: int = 8) -> list[Row]:
    """The global copy's exposure by market, the largest `limit`, then one row for the
    other markets: the rows add up to the Exposure card."""
    held = portfolio.positions(conn, "EXEC_GLOBAL", None, open=True)
    markets = common.by_market(held)
    for m in markets:
        m["outcomes"] = sorted(
            {p["outcome"] or "?" for p in held if p["condition_id"] == m["condition_id"]}
        )
    return common.top(markets, limit, {"condition_id": None, "question": None, "outcomes": []})


def context(conn: db.Conn, now: datetime) -> OverviewContext:
    bucket = common.latest_bucket(conn)
    rows = common.snapshots_at(conn, bucket)
    g = rows.get(("EXEC_GLOBAL", None))
    labels = {r["id"]: r["label"] for r in conn.execute("SELECT id, label FROM followed_user")}
    users = sorted(
        (
            {
                "id": u,
                "label": labels.get(u, str(u)),
                "pnl": common.pnl(r),
                "equity": r["equity_micros"],
            }
            for (scope, u), r in rows.items()
            if scope == "EXEC_USER"
        ),
        key=lambda x: -(x["pnl"] or 0),
    )
    peak_row = conn.execute(common.GLOBAL_PEAK).fetchone()
    peak = peak_row["peak"] if peak_row else None
    outcomes = {
        r["outcome"]: r["n"]
        for r in conn.execute(
            """SELECT outcome, count(*) AS n FROM rollup_resolution
               WHERE portfolio_scope = 'EXEC_GLOBAL' GROUP BY outcome"""
        )
    }
    cfg = common.config(conn).base
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return OverviewContext(
        frame=common.frame(conn, now),
        bucket=bucket,
        equity=common.value(g, "equity_micros"),
        cash=common.value(g, "cash_micros"),
        exposure=common.value(g, "exposure_micros"),
        contributed=common.value(g, "contributed_micros"),
        pnl_total=common.pnl(g),
        pnl_today=_pnl_since(conn, g, midnight),
        pnl_7d=_pnl_since(conn, g, now - timedelta(days=7)),
        drawdown=None if not (g and peak) else max(0.0, 1 - g["equity_micros"] / peak),
        peak=peak,
        wins=outcomes.get("WON", 0),
        losses=outcomes.get("LOST", 0),
        exposure_ratio=None if not g else common.ratio(g["exposure_micros"], g["equity_micros"]),
        exposure_cap_bps=cfg.max_total_exposure_bps,
        top_markets=top_markets(conn),
        top_users=users[:8],
        health=health(conn, now),
        series=common.series(conn, "EXEC_GLOBAL", None, now),
        retention=attributions.retention(conn, now),
    )


def equity_chart(ctx: OverviewContext, since: datetime | None) -> bytes:
    times = [r["bucket"] for r in ctx.series]
    return svg.lines(
        "Global copy: equity (hourly; by the minute for the last 24 h)",
        [
            svg.Series("equity", times, [r["equity_micros"] / 1e6 for r in ctx.series]),
            svg.Series(
                "contributed",
                times,
                [r["contributed_micros"] / 1e6 for r in ctx.series],
                color=svg.MUTED,
                dashed=True,
            ),
        ],
        until=ctx.frame.now,
        since=since,
    )


def waterfall_chart(ctx: OverviewContext) -> bytes:
    return common.retention_chart(ctx.retention["30d"], "the global copy")
