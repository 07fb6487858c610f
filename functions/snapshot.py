"""Snapshot (every minute): one `portfolio_snapshot` per portfolio (shadow per user,
exec per user, global) per minute — equity, cash, exposure, realized PnL (average cost),
unrealized PnL (mark vs average cost), fees, open positions.

Incremental: the running state (`portfolio_state`, `portfolio_position`) is carried
forward from the ledger entries newer than the last run's cut (`system_checkpoint`
`snapshot.ledger`). The cut is read while holding both ledger writers' locks, so no
entry below it can still be uncommitted. Each row records its cut (last ledger entry,
`as_of` for marks), so `--rebuild --since T` recomputes those rows from the ledger alone
and gets the same numbers (it reports how many differed, which should be none).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from common.domain import portfolio, records
from common.runtime import jobs
from common.store import checkpoints, db, locks, portfolios, queries

CHECKPOINT = portfolios.FOLD_CHECKPOINT
SNAPSHOT_LOCK = locks.SNAPSHOT
LOCK_WAIT_S = 5.0
Key = portfolio.Key

LEDGER = queries.load("ledger_entry")
PORTFOLIO = queries.load("portfolio")


Books = dict[Key, portfolio.Portfolio]


def book(books: Books, key: Key) -> portfolio.Portfolio:
    hit = books.get(key)
    if hit is None:
        hit = books[key] = portfolio.Portfolio(*key)
    return hit


def fold(books: Books, entries: Iterable[records.LedgerEntry]) -> set[Key]:
    """Applies ledger entries (in id order) to the portfolios by the one portfolio fold;
    returns the portfolios moved."""
    moved = set()
    for e in entries:
        key = (e.portfolio_scope, e.followed_user_id)
        book(books, key).apply(e)
        moved.add(key)
    return moved


def read_entries(conn: db.Conn, lo: int, hi: int) -> list[records.LedgerEntry]:
    return queries.fetch(conn, records.LedgerEntry, LEDGER["between_ids"], {"lo": lo, "hi": hi})


def row(
    key: Key, p: portfolio.Portfolio, marks: portfolio.Marks, bucket: datetime
) -> dict[str, Any]:
    """The snapshot row of one portfolio (pure)."""
    v = p.value(marks)
    return {
        "scope": key[0],
        "u": key[1],
        "bucket": bucket,
        "equity": v.equity,
        "cash": p.cash,
        "exposure": v.exposure,
        "unrealized": v.unrealized,
        "realized": p.realized,
        "fees": p.fees,
        "open": v.open_positions,
        "contributed": p.contributed,
    }


Touched = set[tuple[str, int | None, str]]  # (scope, user, asset)


def touched(entries: Iterable[records.LedgerEntry]) -> Touched:
    """The (portfolio, asset) pairs the entries move."""
    return {
        (e.portfolio_scope, e.followed_user_id, e.asset_id)
        for e in entries
        if e.asset_id is not None and e.entry_type not in ("FEE", "DEPOSIT")
    }


def load_state(conn: db.Conn, moving: Touched) -> Books:
    """Reads every portfolio's totals, its open positions and the closed ones about to
    move (a closed position's last price still matters if it reopens); the closed
    history stays on disk, untouched."""
    books: Books = {}
    for s in queries.fetch(conn, records.PortfolioState, PORTFOLIO["states"]):
        p = book(books, (s.portfolio_scope, s.followed_user_id))
        p.cash, p.contributed = s.cash_micros, s.contributed_micros
        p.realized, p.fees = s.realized_pnl_micros, s.fees_micros
    users = sorted(p for p in moving if p[1] is not None)
    params = {"s": [p[0] for p in users], "u": [p[1] for p in users], "a": [p[2] for p in users]}
    glob = {"a": sorted(p[2] for p in moving if p[1] is None)}
    rows = queries.fetch(conn, records.PositionRow, PORTFOLIO["open_positions"])
    if users:
        rows += queries.fetch(conn, records.PositionRow, PORTFOLIO["closed_user_positions"], params)
    if glob["a"]:
        rows += queries.fetch(conn, records.PositionRow, PORTFOLIO["closed_global_positions"], glob)
    for pos in rows:
        book(books, (pos.portfolio_scope, pos.followed_user_id)).put(pos.asset_id, pos.position())
    return books


def save_state(conn: db.Conn, books: Books, keys: set[Key], moving: Touched, now: datetime) -> None:
    """Writes the moved portfolios' totals and only the positions that moved."""
    with conn.cursor() as cur:
        cur.executemany(
            PORTFOLIO["upsert_state"],
            [
                (k[0], k[1], b.cash, b.contributed, b.realized, b.fees, now)
                for k in sorted(keys, key=str)
                for b in [books[k]]
            ],
        )
        cur.executemany(
            PORTFOLIO["upsert_position"],
            [
                (
                    scope,
                    user,
                    a,
                    p.condition_id,
                    p.shares,
                    p.cost,
                    p.last_price,
                    p.realized,
                    p.closed_by,
                    p.closed_at,
                    p.opened_at,
                )
                for scope, user, a in sorted(moving, key=str)
                for p in [books[(scope, user)].position(a)]
                if p is not None
            ],
        )


def take(conn: db.Conn, now: datetime) -> dict[str, int]:
    """One incremental run: folds the new ledger entries, then writes this minute's
    rows at the marks known now. Returns counts."""
    bucket = now.replace(second=0, microsecond=0)
    cuts = checkpoints.committed_max_ids(conn, ("ledger_entry",), LOCK_WAIT_S)
    cut = None if cuts is None else cuts["ledger_entry"]
    counts = {"entries": 0, "snapshots": 0, "cut_skipped": int(cut is None)}
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SNAPSHOT_LOCK,))
        seen = checkpoints.read(conn, CHECKPOINT)
        lo = int(seen["cursor_int"]) if seen and seen["cursor_int"] is not None else 0
        hi = lo if cut is None or cut < lo else cut
        entries = read_entries(conn, lo, hi)
        moving = touched(entries)
        books = load_state(conn, moving)
        moved = fold(books, entries)
        counts["entries"] = len(entries)
        if moved:
            save_state(conn, books, moved, moving, now)
        checkpoints.advance(conn, CHECKPOINT, now, number=hi)
        held = portfolio.held_assets(books.values())
        marks = portfolios.load_marks(conn, held, now)
        rows = [{**row(k, b, marks, bucket), "cut": hi, "as_of": now} for k, b in books.items()]
        with conn.cursor() as cur:
            cur.executemany(PORTFOLIO["upsert_snapshot"], rows)
        counts["snapshots"] = len(rows)
    return counts


def rebuild(conn: db.Conn, since: datetime) -> dict[str, int]:
    """Recomputes every snapshot row from `since` on from the ledger alone, at each
    row's recorded cut; rewrites the rows and returns how many there were and how many
    differed (a correct incremental history gives 0)."""
    targets = conn.execute(PORTFOLIO["snapshots_since"], {"t": since}).fetchall()
    books: Books = {}
    done = 0
    counts = {"rows": 0, "differed": 0}
    fields = ("equity", "cash", "exposure", "unrealized", "realized", "fees", "open")
    stored_names = (
        "equity_micros",
        "cash_micros",
        "exposure_micros",
        "unrealized_pnl_micros",
        "realized_pnl_micros",
        "fees_micros",
        "open_positions",
    )
    marks_at: dict[datetime, portfolio.Marks] = {}
    with conn.transaction(), conn.cursor() as cur:
        for t in targets:
            cut = t["last_ledger_entry_id"] or 0
            if cut > done:
                fold(books, read_entries(conn, done, cut))
                done = cut
            key = (t["portfolio_scope"], t["followed_user_id"])
            p = books.get(key) or portfolio.Portfolio(*key)
            if t["as_of"] not in marks_at:
                held = portfolio.held_assets(books.values())
                marks_at = {t["as_of"]: portfolios.load_marks(conn, held, t["as_of"])}
            new = row(key, p, marks_at[t["as_of"]], t["bucket"])
            counts["rows"] += 1
            if any(new[f] != t[s] for f, s in zip(fields, stored_names, strict=True)):
                counts["differed"] += 1
            cur.execute(PORTFOLIO["upsert_snapshot"], {**new, "cut": cut, "as_of": t["as_of"]})
    return counts


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    args = ctx.args
    if getattr(args, "rebuild", False):
        counts = rebuild(conn, args.since)
    else:
        counts = take(conn, ctx.clock())
    for k, v in counts.items():
        ctx.count(k, v)
    return counts.get("snapshots", counts.get("rows", 0))


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("snapshot", __doc__ or "")
    p.set_defaults(interval=60.0)
    p.add_argument("--rebuild", action="store_true", help="recompute rows from the ledger")
    p.add_argument(
        "--since",
        type=datetime.fromisoformat,
        default=datetime.fromisoformat("2000-01-01T00:00:00+00:00"),
        help="with --rebuild: first bucket (ISO, UTC)",
    )
    args = p.parse_args(argv)
    return jobs.main("snapshot", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
