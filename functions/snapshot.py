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

from common.domain import pnl, portfolio
from common.runtime import jobs
from common.store import checkpoints, db, locks, portfolios

CHECKPOINT = "snapshot.ledger"
SNAPSHOT_LOCK = locks.SNAPSHOT
LOCK_WAIT_S = 5.0
Key = tuple[str, int | None]

_ENTRIES = """
SELECT id, portfolio_scope, followed_user_id, entry_type, asset_id, condition_id,
       share_delta_micros, cash_delta_micros, price_micros
FROM ledger_entry WHERE id > %(lo)s AND id <= %(hi)s ORDER BY id
"""
_UPSERT = """
INSERT INTO portfolio_snapshot (portfolio_scope, followed_user_id, bucket, equity_micros,
    cash_micros, exposure_micros, unrealized_pnl_micros, realized_pnl_micros, fees_micros,
    open_positions, last_ledger_entry_id, as_of, contributed_micros)
VALUES (%(scope)s, %(u)s, %(bucket)s, %(equity)s, %(cash)s, %(exposure)s, %(unrealized)s,
    %(realized)s, %(fees)s, %(open)s, %(cut)s, %(as_of)s, %(contributed)s)
ON CONFLICT (portfolio_scope, followed_user_id, bucket) DO UPDATE SET
    equity_micros = EXCLUDED.equity_micros, cash_micros = EXCLUDED.cash_micros,
    exposure_micros = EXCLUDED.exposure_micros,
    unrealized_pnl_micros = EXCLUDED.unrealized_pnl_micros,
    realized_pnl_micros = EXCLUDED.realized_pnl_micros, fees_micros = EXCLUDED.fees_micros,
    open_positions = EXCLUDED.open_positions,
    last_ledger_entry_id = EXCLUDED.last_ledger_entry_id, as_of = EXCLUDED.as_of,
    contributed_micros = EXCLUDED.contributed_micros
"""


def fold(books: dict[Key, pnl.Book], entries: Iterable[dict[str, Any]]) -> set[Key]:
    """Applies ledger entries (in id order) to the books; returns the portfolios moved."""
    moved = set()
    for e in entries:
        key = (e["portfolio_scope"], e["followed_user_id"])
        books.setdefault(key, pnl.Book()).apply(e)
        moved.add(key)
    return moved


def row(key: Key, book: pnl.Book, marks: portfolio.Marks, bucket: datetime) -> dict[str, Any]:
    """The snapshot row of one portfolio (pure)."""
    held = {a: m for a in book.positions if (m := marks.get(a)) is not None}
    equity, exposure, unrealized, open_positions = book.value(held)
    return {
        "scope": key[0],
        "u": key[1],
        "bucket": bucket,
        "equity": equity,
        "cash": book.cash,
        "exposure": exposure,
        "unrealized": unrealized,
        "realized": book.realized,
        "fees": book.fees,
        "open": open_positions,
        "contributed": book.contributed,
    }


Touched = set[tuple[str, int | None, str]]  # (scope, user, asset)

_OPEN_POSITIONS = "SELECT * FROM portfolio_position WHERE share_micros <> 0"
_USER_POSITIONS = """
SELECT p.* FROM unnest(%(s)s::text[], %(u)s::bigint[], %(a)s::text[]) AS t(s, u, a)
JOIN portfolio_position p
  ON p.portfolio_scope = t.s AND p.followed_user_id = t.u AND p.asset_id = t.a
WHERE p.share_micros = 0
"""
_GLOBAL_POSITIONS = """
SELECT * FROM portfolio_position
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL AND asset_id = ANY(%(a)s)
  AND share_micros = 0
"""


def touched(entries: Iterable[dict[str, Any]]) -> Touched:
    """The (portfolio, asset) pairs the entries move."""
    return {
        (e["portfolio_scope"], e["followed_user_id"], e["asset_id"])
        for e in entries
        if e["asset_id"] is not None and e["entry_type"] not in ("FEE", "DEPOSIT")
    }


def load_state(conn: db.Conn, moving: Touched) -> dict[Key, pnl.Book]:
    """Reads every portfolio's totals, its open positions and the closed ones about to
    move (a closed position's last price still matters if it reopens); the closed
    history stays on disk, untouched."""
    books: dict[Key, pnl.Book] = {}
    for r in conn.execute("SELECT * FROM portfolio_state"):
        books[(r["portfolio_scope"], r["followed_user_id"])] = pnl.Book(
            cash=r["cash_micros"],
            contributed=r["contributed_micros"],
            realized=r["realized_pnl_micros"],
            fees=r["fees_micros"],
        )
    users = sorted(p for p in moving if p[1] is not None)
    params = {"s": [p[0] for p in users], "u": [p[1] for p in users], "a": [p[2] for p in users]}
    glob = {"a": sorted(p[2] for p in moving if p[1] is None)}
    rows = conn.execute(_OPEN_POSITIONS).fetchall()
    rows += conn.execute(_USER_POSITIONS, params).fetchall() if users else []
    rows += conn.execute(_GLOBAL_POSITIONS, glob).fetchall() if glob["a"] else []
    for r in rows:
        book = books.setdefault((r["portfolio_scope"], r["followed_user_id"]), pnl.Book())
        book.positions[r["asset_id"]] = pnl.Position(
            r["share_micros"], r["cost_micros"], r["condition_id"], r["last_price_micros"]
        )
    return books


def save_state(
    conn: db.Conn, books: dict[Key, pnl.Book], keys: set[Key], moving: Touched, now: datetime
) -> None:
    """Writes the moved portfolios' totals and only the positions that moved."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO portfolio_state (portfolio_scope, followed_user_id, cash_micros,
                   contributed_micros, realized_pnl_micros, fees_micros, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (portfolio_scope, followed_user_id) DO UPDATE SET
                   cash_micros = EXCLUDED.cash_micros,
                   contributed_micros = EXCLUDED.contributed_micros,
                   realized_pnl_micros = EXCLUDED.realized_pnl_micros,
                   fees_micros = EXCLUDED.fees_micros, updated_at = EXCLUDED.updated_at""",
            [
                (k[0], k[1], b.cash, b.contributed, b.realized, b.fees, now)
                for k in sorted(keys, key=str)
                for b in [books[k]]
            ],
        )
        cur.executemany(
            """INSERT INTO portfolio_position (portfolio_scope, followed_user_id, asset_id,
                   condition_id, share_micros, cost_micros, last_price_micros)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (portfolio_scope, followed_user_id, asset_id) DO UPDATE SET
                   condition_id = EXCLUDED.condition_id, share_micros = EXCLUDED.share_micros,
                   cost_micros = EXCLUDED.cost_micros,
                   last_price_micros = EXCLUDED.last_price_micros""",
            [
                (scope, user, a, p.condition_id, p.shares, p.cost, p.last_price)
                for scope, user, a in sorted(moving, key=str)
                for p in [books[(scope, user)].positions[a]]
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
        entries = conn.execute(_ENTRIES, {"lo": lo, "hi": hi}).fetchall()
        moving = touched(entries)
        books = load_state(conn, moving)
        moved = fold(books, entries)
        counts["entries"] = len(entries)
        if moved:
            save_state(conn, books, moved, moving, now)
        checkpoints.advance(conn, CHECKPOINT, now, number=hi)
        held = {a for b in books.values() for a, p in b.positions.items() if p.shares}
        marks = portfolios.load_marks(conn, held, now)
        rows = [{**row(k, b, marks, bucket), "cut": hi, "as_of": now} for k, b in books.items()]
        with conn.cursor() as cur:
            cur.executemany(_UPSERT, rows)
        counts["snapshots"] = len(rows)
    return counts


def rebuild(conn: db.Conn, since: datetime) -> dict[str, int]:
    """Recomputes every snapshot row from `since` on from the ledger alone, at each
    row's recorded cut; rewrites the rows and returns how many there were and how many
    differed (a correct incremental history gives 0)."""
    targets = conn.execute(
        """SELECT portfolio_scope, followed_user_id, bucket, last_ledger_entry_id, as_of,
                  equity_micros, cash_micros, exposure_micros, unrealized_pnl_micros,
                  realized_pnl_micros, fees_micros, open_positions, contributed_micros
           FROM portfolio_snapshot WHERE bucket >= %(t)s AND as_of IS NOT NULL
           ORDER BY last_ledger_entry_id, as_of""",
        {"t": since},
    ).fetchall()
    books: dict[Key, pnl.Book] = {}
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
                fold(books, conn.execute(_ENTRIES, {"lo": done, "hi": cut}).fetchall())
                done = cut
            key = (t["portfolio_scope"], t["followed_user_id"])
            book = books.get(key, pnl.Book())
            if t["as_of"] not in marks_at:
                held = {a for b in books.values() for a, p in b.positions.items() if p.shares}
                marks_at = {t["as_of"]: portfolios.load_marks(conn, held, t["as_of"])}
            new = row(key, book, marks_at[t["as_of"]], t["bucket"])
            counts["rows"] += 1
            if any(new[f] != t[s] for f, s in zip(fields, stored_names, strict=True)):
                counts["differed"] += 1
            cur.execute(_UPSERT, {**new, "cut": cut, "as_of": t["as_of"]})
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
