"""Loading the executable portfolios (`domain.portfolio`) from the ledger, their marks
from stored books and mark snapshots, and the circuit breakers' reference equities from
`portfolio_snapshot`."""

from __future__ import annotations

from datetime import datetime

from common.domain import money, portfolio
from common.store import db


def load_marks(conn: db.Conn, asset_ids: set[str], until: datetime) -> portfolio.Marks:
    """Returns the newest stored mid of each asset at or before `until`."""
    marks = portfolio.Marks()
    if not asset_ids:
        return marks
    params = {"a": sorted(asset_ids), "t": until}
    for r in conn.execute(
        """SELECT a.asset_id, b.fetched_at, b.id, b.bid, b.ask
           FROM unnest(%(a)s::text[]) AS a(asset_id)
           CROSS JOIN LATERAL (
             SELECT fetched_at, id, bid_prices_micros[1] AS bid, ask_prices_micros[1] AS ask
             FROM order_book_snapshot o
             WHERE o.asset_id = a.asset_id AND o.fetched_at <= %(t)s
               AND cardinality(bid_prices_micros) > 0 AND cardinality(ask_prices_micros) > 0
             ORDER BY fetched_at DESC, id DESC LIMIT 1) b""",
        params,
    ):
        marks.observe(
            r["asset_id"], r["fetched_at"], money.div_round(r["bid"] + r["ask"], 2), r["id"]
        )
    for r in conn.execute(
        """SELECT a.asset_id, m.observed_at, m.mid_micros
           FROM unnest(%(a)s::text[]) AS a(asset_id)
           CROSS JOIN LATERAL (
             SELECT observed_at, mid_micros FROM market_price_snapshot p
             WHERE p.asset_id = a.asset_id AND p.observed_at <= %(t)s
             ORDER BY bucket DESC LIMIT 1) m""",
        params,
    ):
        marks.observe(r["asset_id"], r["observed_at"], r["mid_micros"])
    return marks


def load(
    conn: db.Conn,
    scope: str,
    user_id: int | None,
    starting_cash: int,
    until: datetime | None = None,
) -> portfolio.Portfolio:
    """Returns the portfolio as its ledger says (unfunded if it has no DEPOSIT yet),
    counting only entries effective before `until` when given."""
    p = portfolio.Portfolio(scope, user_id, starting_cash)
    params = {"s": scope, "u": user_id, "until": until}
    for r in conn.execute(
        """SELECT asset_id, min(condition_id) AS condition_id,
                  sum(share_delta_micros)::bigint AS shares, sum(cash_delta_micros)::bigint AS cash,
                  sum(cash_delta_micros) FILTER (WHERE entry_type = 'DEPOSIT')::bigint AS deposit,
                  (array_agg(price_micros ORDER BY id DESC)
                      FILTER (WHERE entry_type = 'TRADE_FILL' AND price_micros IS NOT NULL))[1]
                      AS last_price
           FROM ledger_entry
           WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
             AND (%(until)s::timestamptz IS NULL OR effective_time < %(until)s)
           GROUP BY asset_id""",
        params,
    ):
        p.cash += int(r["cash"])
        if r["deposit"] is not None:
            p.funded, p.starting_cash = True, int(r["deposit"])
        if r["asset_id"] is not None:
            if r["shares"]:
                p.shares[r["asset_id"]] = int(r["shares"])
            if r["condition_id"] is not None:
                p.market_of[r["asset_id"]] = r["condition_id"]
            if r["last_price"] is not None:
                p.last_price[r["asset_id"]] = int(r["last_price"])
    if scope == "EXEC_GLOBAL":
        for r in conn.execute(
            """SELECT a.followed_user_id AS u, l.asset_id, sum(l.share_delta_micros)::bigint AS n
               FROM ledger_entry l JOIN copy_attempt a ON a.id = l.copy_attempt_id
               WHERE l.portfolio_scope = 'EXEC_GLOBAL' AND l.asset_id IS NOT NULL
                 AND (%(until)s::timestamptz IS NULL OR l.effective_time < %(until)s)
               GROUP BY 1, 2""",
            params,
        ):
            p.by_user.setdefault(r["u"], {})[r["asset_id"]] = int(r["n"])
    if not p.funded:
        p.cash += starting_cash
    return p


_REF = """
SELECT COALESCE(
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
     AND bucket <= %(start)s ORDER BY bucket DESC LIMIT 1),
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
     AND bucket > %(start)s AND bucket <= %(t)s ORDER BY bucket LIMIT 1)) AS equity
"""
_PEAK = """
SELECT max(equity_micros) AS equity FROM portfolio_snapshot
WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s AND bucket <= %(t)s
"""


def breaker_refs(conn: db.Conn, p: portfolio.Portfolio, at: datetime) -> portfolio.BreakerRefs:
    """Reads the reference equities from `portfolio_snapshot` (so they survive restarts):
    the last snapshot at or before each period's start (else the period's first one,
    else the starting cash), and the highest snapshot so far."""

    def query(sql: str, start: datetime | None = None) -> int:
        params = {"s": p.scope, "u": p.user_id, "t": at, "start": start}
        row = conn.execute(sql, params).fetchone()
        return p.starting_cash if row is None or row["equity"] is None else int(row["equity"])

    return portfolio.BreakerRefs(
        day_start=query(_REF, portfolio.day_start(at)),
        week_start=query(_REF, portfolio.week_start(at)),
        peak=max(p.starting_cash, query(_PEAK)),
    )
