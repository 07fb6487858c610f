"""Loading the portfolios (`domain.portfolio`) by folding their ledger entries, their
marks from stored books and mark snapshots, and the circuit breakers' reference
equities from `portfolio_snapshot` (the snapshot job's rows of the same fold)."""

from __future__ import annotations

from datetime import datetime

from common.domain import money, portfolio, records
from common.store import db, queries

LEDGER = queries.load("ledger_entry")
PORTFOLIO = queries.load("portfolio")
BOOKS = queries.load("order_book_snapshot")
MIDS = queries.load("market_price_snapshot")


def load_marks(conn: db.Conn, asset_ids: set[str], until: datetime) -> portfolio.Marks:
    """Returns the newest stored mid of each asset at or before `until`."""
    marks = portfolio.Marks()
    if not asset_ids:
        return marks
    params = {"a": sorted(asset_ids), "t": until}
    for r in conn.execute(BOOKS["newest_mids"], params):
        marks.observe(
            r["asset_id"], r["fetched_at"], money.div_round(r["bid"] + r["ask"], 2), r["id"]
        )
    for r in conn.execute(MIDS["newest_mids"], params):
        marks.observe(r["asset_id"], r["observed_at"], r["mid_micros"])
    return marks


def load(
    conn: db.Conn,
    scope: str,
    user_id: int | None,
    starting_cash: int,
    until: datetime | None = None,
) -> portfolio.Portfolio:
    """Returns the portfolio as its ledger says, folded entry by entry (counting only
    entries effective before `until` when given). One with no DEPOSIT yet is unfunded:
    its cash starts at `starting_cash`, deposited with its first decision."""
    p = portfolio.Portfolio(scope, user_id, starting_cash)
    params = {"s": scope, "u": user_id, "until": until}
    with conn.cursor() as cur:
        cur.execute(LEDGER["portfolio_entries"], params)
        for r in cur:
            e = records.LedgerEntry.from_row(r)
            p.apply(e, e.copied_from)
    if not p.funded:
        p.cash += starting_cash
    return p


def breaker_refs(conn: db.Conn, p: portfolio.Portfolio, at: datetime) -> portfolio.BreakerRefs:
    """Reads the reference equities from `portfolio_snapshot` (so they survive restarts):
    the last snapshot at or before each period's start (else the period's first one,
    else the starting cash), and the highest snapshot so far."""

    def query(name: str, start: datetime | None = None) -> int:
        params = {"s": p.scope, "u": p.user_id, "t": at, "start": start}
        row = conn.execute(PORTFOLIO[name], params).fetchone()
        return p.starting_cash if row is None or row["equity"] is None else int(row["equity"])

    return portfolio.BreakerRefs(
        day_start=query("breaker_ref", portfolio.day_start(at)),
        week_start=query("breaker_ref", portfolio.week_start(at)),
        peak=max(p.starting_cash, query("breaker_peak")),
    )
