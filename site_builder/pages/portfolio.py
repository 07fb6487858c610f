"""Global portfolio (portfolio.html): open positions, exposure by market and by user,
drawdown, and how much of each risk limit is in use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain.portfolio import allocate
from common.store import db, portfolios
from site_builder import svg
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
class Realized:
    """The realized PnL card explained: what the positions realized (the closed ones, and
    the open ones' partial closes), the fees, and cash that no asset moved."""

    closed: int
    open: int
    fees: int
    other: int

    @property
    def total(self) -> int:
        return self.closed + self.open - self.fees + self.other


CLOSED_BY = {
    "TRADE_FILL": "sold",
    "MERGE": "merged",
    "REDEEM": "redeemed",
    "SETTLEMENT": "settled",
    "CONVERSION": "converted",
}


def realized(snap: Row | None, positions: list[Row], closed: list[Row]) -> Realized:
    """Splits a snapshot's realized PnL: Σ of the positions' realized, fees, the rest."""
    shut = sum(r["realized_micros"] for r in closed)
    held = sum(r["realized_micros"] for r in positions)
    fees = common.value(snap, "fees_micros") or 0
    total = common.value(snap, "realized_pnl_micros") or 0
    return Realized(shut, held, fees, total - shut - held + fees)


@dataclass(frozen=True)
class PortfolioContext:
    frame: common.Frame
    snapshot: Row | None
    positions: list[Row]  # open, valued at the snapshot's marks (they add up to its cards)
    closed: list[Row]  # closed positions, newest first, with what each realized
    realized: Realized
    by_market: list[Row]
    by_user: list[Row]  # adds up to the positions' value (an "unattributed" row if need be)
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


# The global portfolio's positions (open when %(open)s, else closed), as the snapshot
# job saved them with the ledger cut of its newest row.
_POSITIONS = """
SELECT p.asset_id, p.condition_id, p.share_micros, p.cost_micros, p.last_price_micros,
       p.realized_micros, p.closed_by, p.closed_at,
       m.question, o.outcome, m.end_time, m.closed, m.resolved_at
FROM portfolio_position p
LEFT JOIN market m ON m.condition_id = p.condition_id
LEFT JOIN outcome_asset o ON o.asset_id = p.asset_id
WHERE p.portfolio_scope = %(scope)s AND {user}
  AND (p.share_micros <> 0) = %(open)s AND (%(open)s OR p.closed_by IS NOT NULL)
ORDER BY p.closed_at DESC NULLS LAST, p.asset_id
"""
# (= and IS NULL apart: IS NOT DISTINCT FROM would not use the key past the scope)
_POSITIONS_USER = _POSITIONS.replace("{user}", "p.followed_user_id = %(u)s")
_POSITIONS_GLOBAL = _POSITIONS.replace("{user}", "p.followed_user_id IS NULL")
_HOLDERS = """
SELECT e.followed_user_id AS user_id, u.label, e.asset_id, e.share_micros
FROM rollup_global_exposure e JOIN followed_user u ON u.id = e.followed_user_id
WHERE e.share_micros > 0
"""


def largest_user(conn: db.Conn, starting_cash: int) -> tuple[int, str] | None:
    """The per-user cap as the copy engine checks it (`Portfolio.user_exposure`: each
    user's own shares × the mark, at the snapshot's marks): (value, label) of the
    largest, None without any."""
    glob = portfolios.load(conn, "EXEC_GLOBAL", None, starting_cash)
    assets = {a for held in glob.by_user.values() for a in held}
    marks = common.marks(conn, assets, common.marks_as_of(conn))
    labels = {r["id"]: r["label"] for r in conn.execute("SELECT id, label FROM followed_user")}
    found = [(glob.user_exposure(u, marks), labels.get(u, str(u))) for u in glob.by_user]
    return max(found, default=None)


def positions(conn: db.Conn, scope: str, user: int | None, *, open: bool) -> list[Row]:
    """One portfolio's open positions, valued (`common.valued`), or its closed ones."""
    query = _POSITIONS_GLOBAL if user is None else _POSITIONS_USER
    rows = list(conn.execute(query, {"scope": scope, "u": user, "open": open}))
    if open:
        return common.valued(conn, rows)
    for r in rows:
        r["closed_as"] = CLOSED_BY.get(r["closed_by"], (r["closed_by"] or "").lower())
    return rows


def by_user(conn: db.Conn, held: list[Row]) -> list[Row]:
    """Exposure by user: each position's value split across the users whose signals hold
    its shares (`rollup_global_exposure`), in proportion to their shares; a position no
    user holds goes to "unattributed". So the rows add up to the positions' value."""
    holders: dict[str, list[Row]] = {}
    for r in conn.execute(_HOLDERS):
        holders.setdefault(r["asset_id"], []).append(r)
    out: dict[int | None, Row] = {}
    for p in held:
        who = sorted(holders.get(p["asset_id"], []), key=lambda r: r["user_id"])
        if not who:
            who = [{"user_id": None, "label": "unattributed", "share_micros": 1}]
        parts = allocate(abs(p["value_micros"]), [r["share_micros"] for r in who])
        for r, part in zip(who, parts, strict=True):
            row = out.setdefault(
                r["user_id"],
                {"user_id": r["user_id"], "label": r["label"], "value_micros": 0, "assets": 0},
            )
            row["value_micros"] += part
            row["assets"] += 1
    return sorted(out.values(), key=lambda r: (-r["value_micros"], r["label"]))


def _loss_since(conn: db.Conn, snap: Row | None, at: datetime) -> float | None:
    """The loss since `at` as a fraction of the equity then (0 for a gain)."""
    since = common.global_pnl_since(conn, snap, at)
    if since is None:
        return None
    change, equity_then = since
    return max(0.0, -change / equity_then) if equity_then else 0.0


def context(conn: db.Conn, now: datetime) -> PortfolioContext:
    snap = common.snapshots_at(conn, common.latest_bucket(conn)).get(("EXEC_GLOBAL", None))
    held = positions(conn, "EXEC_GLOBAL", None, open=True)
    closed = positions(conn, "EXEC_GLOBAL", None, open=False)
    by_market = common.by_market(held)
    users = by_user(conn, held)
    top_user = largest_user(conn, common.config(conn).base.starting_cash_micros)
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
            common.ratio(top_user[0], equity) if top_user else 0.0,
            cfg.max_user_exposure_bps,
            top_user[1] if top_user else "",
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
        positions=held,
        closed=closed,
        realized=realized(snap, held, closed),
        by_market=by_market,
        by_user=users,
        limits=limits,
        series=series,
        peak=peak,
    )


def drawdown_chart(ctx: PortfolioContext, since: datetime | None) -> bytes:
    points = ctx.drawdown
    return svg.lines(
        "Drawdown from the running peak (global copy)",
        [svg.Series("", [t for t, _ in points], [v for _, v in points], color=svg.LOSS)],
        unit="ratio",
        fill_below=True,
        until=ctx.frame.now,
        since=since,
    )


def market_chart(ctx: PortfolioContext) -> bytes:
    return svg.bars(
        "Exposure by market (top 12)",
        [
            (m["question"] or m["condition_id"] or "?", m["value_micros"] / 1e6)
            for m in ctx.by_market[:12]
        ],
        unit="usd",
    )


def user_chart(ctx: PortfolioContext) -> bytes:
    return svg.bars(
        "Exposure by user (whose signals bought it)",
        [(u["label"], u["value_micros"] / 1e6) for u in ctx.by_user[:12]],
        unit="usd",
        color=svg.SHADOW,
    )
