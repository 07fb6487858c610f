"""Markets (markets.html) and one page per market (markets/<condition_id>.html): spread
and depth in band at decision time, our slippage, open positions, the blacklist."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from common.runtime import settings
from common.store import db
from site_builder import svg
from site_builder.pages import attempt, common, portfolio

Row = dict[str, Any]
DAYS = 30
ATTEMPT_ROWS = 20  # a market page's newest attempts; the trades page filters to the rest


@dataclass(frozen=True)
class MarketsContext:
    frame: common.Frame
    markets: list[Row]


@dataclass(frozen=True)
class History:
    """A market's recent prices: each outcome's mid (the stored 30 s marks, averaged per
    10 minutes) and the spread of the books stored at decisions; empty without marks
    (the price job stores them only for held assets)."""

    mids: dict[str, list[tuple[datetime, float]]]  # asset → (time, mid)
    spreads: list[tuple[datetime, float]]

    @property
    def empty(self) -> bool:
        return not self.spreads and not any(self.mids.values())


HISTORY = timedelta(hours=24)
_MIDS = """
SELECT asset_id, date_bin('10 minutes', bucket, TIMESTAMPTZ '2000-01-01') AS t,
       avg(mid_micros) AS mid
FROM market_price_snapshot
WHERE asset_id = ANY(%(a)s) AND bucket > %(since)s AND bucket <= %(now)s
GROUP BY 1, 2 ORDER BY 1, 2
"""
_SPREADS = """
SELECT fetched_at AS t, ask_prices_micros[1] - bid_prices_micros[1] AS spread
FROM order_book_snapshot
WHERE asset_id = ANY(%(a)s) AND fetched_at > %(since)s AND fetched_at <= %(now)s
  AND cardinality(bid_prices_micros) > 0 AND cardinality(ask_prices_micros) > 0
ORDER BY fetched_at
"""


def history(conn: db.Conn, outcomes: list[Row], now: datetime) -> History:
    assets = [o["asset_id"] for o in outcomes]
    params = {"a": assets, "since": now - HISTORY, "now": now}
    mids: dict[str, list[tuple[datetime, float]]] = {a: [] for a in assets}  # by asset
    for r in conn.execute(_MIDS, params):
        mids[r["asset_id"]].append((r["t"], float(r["mid"]) / 1e6))
    if not any(mids.values()):  # marks are stored only while held: no price history
        return History({}, [])
    spreads = [(r["t"], r["spread"] / 1e6) for r in conn.execute(_SPREADS, params)]
    return History(mids, spreads)


def history_chart(ctx: MarketContext, since: datetime | None) -> bytes:
    """Each outcome's mid and the decision books' spread over the last HISTORY."""
    h = ctx.history
    names = {o["asset_id"]: o["outcome"] or f"outcome {o['outcome_index']}" for o in ctx.outcomes}
    series = [
        svg.Series(names[a], [t for t, _ in points], [v for _, v in points], color=color)
        for (a, points), color in zip(h.mids.items(), svg.PALETTE, strict=False)
    ]
    series.append(
        svg.Series(
            "spread at decisions",
            [t for t, _ in h.spreads],
            [v for _, v in h.spreads],
            color=svg.MUTED,
            dashed=True,
        )
    )
    return svg.lines(
        "Mid per outcome (10-minute means) and spread at our decisions, 24 h",
        series,
        unit="price",
        until=ctx.frame.now,
        since=since,
    )


@dataclass(frozen=True)
class MarketContext:
    frame: common.Frame
    attempt_floor: int  # attempts from this id on have a page (`attempt.floor`)
    market: Row
    outcomes: list[Row]  # with `mark_micros`: the snapshot's mark of each (None without)
    marks_at: datetime | None  # when the snapshot took its marks
    history: History
    days: list[Row]
    slippage: list[tuple[str, int, str]]  # (label, count, bucket key)
    positions: list[Row]
    attempts: list[Row]
    link: str | None  # the market on Polymarket (OCULUS_MARKET_LINK_URL + its event's slug)


_LIST = """
WITH stats AS (
    SELECT condition_id, sum(decisions)::bigint AS decisions, sum(executed)::bigint AS executed,
           sum(spread_sum_micros) AS spread_sum, sum(spread_n) AS spread_n,
           sum(depth_sum_micros) AS depth_sum, sum(depth_n) AS depth_n
    FROM rollup_market_daily WHERE day >= %(d)s GROUP BY condition_id
), held AS (
    SELECT condition_id, count(DISTINCT (portfolio_scope, followed_user_id)) AS holders
    FROM portfolio_position WHERE share_micros <> 0 AND portfolio_scope <> 'SHADOW_USER'
    GROUP BY condition_id
)
SELECT m.condition_id, m.question, m.slug, m.end_time, m.closed, m.resolved_at,
       m.blacklisted, m.fees_enabled, coalesce(s.decisions, 0) AS decisions,
       coalesce(s.executed, 0) AS executed,
       (s.spread_sum / nullif(s.spread_n, 0))::bigint AS mean_spread_micros,
       (s.depth_sum / nullif(s.depth_n, 0))::bigint AS mean_depth_micros,
       coalesce(h.holders, 0) AS holders
FROM market m
LEFT JOIN stats s USING (condition_id)
LEFT JOIN held h USING (condition_id)
WHERE s.condition_id IS NOT NULL OR h.condition_id IS NOT NULL OR m.blacklisted
"""


def _rows(conn: db.Conn, now: datetime) -> list[Row]:
    return list(conn.execute(_LIST, {"d": (now - timedelta(days=DAYS)).date()}))


def listed_ids(conn: db.Conn, now: datetime) -> list[str]:
    """The markets worth a page: decided on in 30 days, held, or blacklisted."""
    return [r["condition_id"] for r in _rows(conn, now)]


def listed(conn: db.Conn, now: datetime) -> list[Row]:
    """The markets worth a page (`listed_ids`), with the global copy's exposure to each
    at the snapshot's marks: blacklisted first, then by that exposure, then by
    decisions."""
    rows = _rows(conn, now)
    held = portfolio.positions(conn, "EXEC_GLOBAL", None, open=True)
    value = {m["condition_id"]: m["value_micros"] for m in common.by_market(held)}
    for r in rows:
        r["global_value_micros"] = value.get(r["condition_id"], 0)
    rows.sort(
        key=lambda r: (
            not r["blacklisted"],
            -r["global_value_micros"],
            -r["decisions"],
            r["condition_id"],
        )
    )
    return rows


def markets_context(conn: db.Conn, now: datetime) -> MarketsContext:
    return MarketsContext(frame=common.frame(conn, now), markets=listed(conn, now))


def market_context(conn: db.Conn, condition_id: str, now: datetime) -> MarketContext | None:
    market = conn.execute(
        "SELECT * FROM market WHERE condition_id = %(c)s", {"c": condition_id}
    ).fetchone()
    if market is None:
        return None
    days = list(
        conn.execute(
            """SELECT * FROM rollup_market_daily WHERE condition_id = %(c)s AND day >= %(d)s
               ORDER BY day DESC""",
            {"c": condition_id, "d": (now - timedelta(days=DAYS)).date()},
        )
    )
    base = settings.get().market_link_url
    as_of = common.marks_as_of(conn)
    outcomes = list(
        conn.execute(
            "SELECT * FROM outcome_asset WHERE condition_id = %(c)s ORDER BY outcome_index",
            {"c": condition_id},
        )
    )
    held = list(
        conn.execute(
            """SELECT p.*, u.label, o.outcome FROM portfolio_position p
               LEFT JOIN followed_user u ON u.id = p.followed_user_id
               LEFT JOIN outcome_asset o ON o.asset_id = p.asset_id
               WHERE p.condition_id = %(c)s AND p.share_micros <> 0""",
            {"c": condition_id},
        )
    )
    assets = {o["asset_id"] for o in outcomes} | {p["asset_id"] for p in held}
    marks = common.marks(conn, assets, as_of)  # one read for the cards and the positions
    positions = sorted(
        common.valued(conn, held, as_of, marks),
        key=lambda p: (p["portfolio_scope"], p["label"] or "", p["asset_id"]),
    )
    for o in outcomes:
        o["mark_micros"] = marks.get(o["asset_id"])
    slug = market["event_slug"] or market["slug"]
    return MarketContext(
        attempt_floor=attempt.floor(conn, now),
        link=f"{base}{quote(slug)}" if base and slug else None,
        frame=common.frame(conn, now),
        market=market,
        outcomes=outcomes,
        marks_at=as_of,
        history=history(conn, outcomes, now) if positions else History({}, []),
        days=days,
        slippage=common.keyed(common.merge_histograms(days, "slip_their_bps"), common.SLIP_EDGES),
        positions=positions,
        attempts=list(
            conn.execute(
                """SELECT a.*, u.label, o.outcome FROM copy_attempt a
                   JOIN followed_user u ON u.id = a.followed_user_id
                   LEFT JOIN outcome_asset o ON o.asset_id = a.asset_id
                   WHERE a.condition_id = %(c)s ORDER BY a.id DESC LIMIT %(n)s""",
                {"c": condition_id, "n": ATTEMPT_ROWS},
            )
        ),
    )
