"""Loading the portfolios (`domain.portfolio`) by the one fold — from the snapshot job's
saved state plus the ledger entries after its cut — their marks from stored books and
mark snapshots, and the circuit breakers' reference equities from `portfolio_snapshot`
(the snapshot job's rows of the same fold)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.domain import money, portfolio, records
from common.store import checkpoints, db, queries

# The snapshot job's cut: every ledger entry up to it is folded into its saved state
# (portfolio_state, portfolio_position), the fold's checkpoint.
FOLD_CHECKPOINT = "snapshot.ledger"

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
    """Returns an executable portfolio as its ledger says, by the one fold: from the
    state the snapshot job saved at its last cut (the fold's checkpoint) plus the entries
    after that cut, or — with `until` — from the start, counting only entries effective
    before it. One with no DEPOSIT yet is unfunded: its cash starts at `starting_cash`,
    deposited with its first decision."""
    p = portfolio.Portfolio(scope, user_id, starting_cash)
    params: dict[str, Any] = {"s": scope, "u": user_id, "until": until, "after": 0}
    if until is None:
        params["after"] = _saved(conn, p)
        for e in queries.fetch(
            conn, records.LedgerEntry, LEDGER["portfolio_entries_after"], params
        ):
            p.apply(e)
        if scope == "EXEC_GLOBAL":  # attribution: a sum over every copy
            for r in conn.execute(LEDGER["copied_by_user"]):
                p.by_user.setdefault(r["u"], {})[r["asset_id"]] = int(r["n"])
    else:
        for e in queries.fetch(conn, records.LedgerEntry, LEDGER["portfolio_entries"], params):
            p.apply(e, e.copied_from)
    if not p.funded:
        p.cash += starting_cash
    return p


def _saved(conn: db.Conn, p: portfolio.Portfolio) -> int:
    """Sets `p` to the snapshot job's saved state of it and returns that state's cut
    (0 without one). The cut is read before and after the state: the job writes both
    in one transaction, so equal reads mean the state is the one at that cut."""
    for _ in range(5):
        cut = checkpoints.read(conn, FOLD_CHECKPOINT)
        before = int(cut["cursor_int"] or 0) if cut else 0
        params = {"s": p.scope, "u": p.user_id}
        state = conn.execute(PORTFOLIO["saved_state"], params).fetchone()
        rows = queries.fetch(conn, records.PositionRow, PORTFOLIO["saved_positions"], params)
        cut = checkpoints.read(conn, FOLD_CHECKPOINT)
        if (int(cut["cursor_int"] or 0) if cut else 0) == before:
            break
    else:
        return 0  # the snapshot job kept moving: fold from the start
    if state is None or before == 0:
        return 0
    s = records.PortfolioState.from_row(state)
    p.cash, p.contributed, p.realized, p.fees = (
        s.cash_micros,
        s.contributed_micros,
        s.realized_pnl_micros,
        s.fees_micros,
    )
    p.funded, p.starting_cash = True, s.contributed_micros  # its first entry was a DEPOSIT
    for pos in rows:
        p.put(pos.asset_id, pos.position())
    return before


_GLOBAL = {"breaker_ref": "breaker_ref_global", "breaker_peak": "breaker_peak_global"}


def breaker_refs(conn: db.Conn, p: portfolio.Portfolio, at: datetime) -> portfolio.BreakerRefs:
    """Reads the reference equities from `portfolio_snapshot` (so they survive restarts):
    the last snapshot at or before each period's start (else the period's first one,
    else the starting cash), and the highest snapshot so far."""

    def query(name: str, start: datetime | None = None) -> int:
        params = {"s": p.scope, "u": p.user_id, "t": at, "start": start}
        statement = PORTFOLIO[name if p.user_id is not None else _GLOBAL[name]]
        row = conn.execute(statement, params).fetchone()
        return p.starting_cash if row is None or row["equity"] is None else int(row["equity"])

    return portfolio.BreakerRefs(
        day_start=query("breaker_ref", portfolio.day_start(at)),
        week_start=query("breaker_ref", portfolio.week_start(at)),
        peak=max(p.starting_cash, query("breaker_peak")),
    )
