"""Snapshot job: the wall time of one incremental `snapshot` run (functions.snapshot.take)
on a month of data, and that data set's size on disk, in a scratch database (loopback
server, dropped after unless --keep).

Data set (fixed seed, benchmarks/dataset.py), built with COPY:
- --users followed users, each with a SHADOW_USER and an EXEC_USER portfolio, plus the
  EXEC_GLOBAL one (2 × users + 1 portfolios).
- Binary markets (--markets, 2 outcome assets each, some with taker fees) whose mids
  wander (two slow waves and a little noise per 30 s bucket, on half ticks).
- The leaders' orders over --days days (Poisson, --orders-per-day each; 1-3 fills at the
  touch): they open, add to, reduce and close positions; the shadow ledger takes every
  fill (TRADE_FILL), the two exec portfolios copy most of them 4 s later at 1 % of the
  notional (5-250 USDC) from a stored decision book (TRADE_FILL per level, FEE on fee
  markets; one DEPOSIT each at the start; shadow books start from SEED positions).
- "200 open positions" is read as --positions distinct outcome assets held at the end
  (the set the price job marks and Marks.load looks up): each is some leaders' "final"
  holding (1-2 leaders each, opened during the month, never closed); every other
  position closes, so the month leaves a long closed history. The exec copies hold most
  of the final ones. The counts are printed.
- `market_price_snapshot`: one row per held asset per 30 s bucket for the last
  --price-days days; `order_book_snapshot`: the decision book of every leader order.
- `portfolio_snapshot`: one row per portfolio per minute up to the job's first run (cut =
  the newest entry id by then, as_of 5 s into the minute), valued at the wandering
  mids; plausible rows, not recomputed by the benchmark.

Then the last --rebuild-hours of the month go through the real job, minute by minute
(each minute's entries, books and marks inserted before its run): the first run is
"cold" (no state yet: it folds the whole month's ledger), the others fold a minute at
the month's own rate. Then --runs "busy" minutes, each with about --fills-per-run new
fills on held positions, are timed one run each: wall time, this process's CPU time and
the Postgres backend's CPU time (one core pays both), entries folded, rows written, and
where the time went. Then `snapshot.rebuild` recomputes the rows from the job's own
minutes (it should report 0 differed), and the database and table sizes are printed.
Run: python -m benchmarks.snapshot [--users 50] [--days 30] [--positions 200]
     [--rebuild-hours 1] [--price-days 1] [--runs 5] [--keep] [--database-url SERVER_URL]
"""

from __future__ import annotations

import argparse
import bisect
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from benchmarks.dataset import (
    COPY_PRICES,
    END,
    MINUTE_MS,
    at,
    build_month,
    copy_books,
    copy_entries,
    copy_lines,
    ms_of,
    print_month,
    tick_of,
)
from benchmarks.scratch import backend_cpu, database_name, percentile, scratch_database
from common.store import checkpoints, db, portfolios
from functions import snapshot


class Phases:
    """Times the parts of snapshot.take by wrapping the functions it calls."""

    TARGETS = (
        (checkpoints, "committed_max_ids", "read_cut"),
        (snapshot, "load_state", "load_state"),
        (snapshot, "fold", "fold"),
        (snapshot, "save_state", "save_state"),
        (snapshot, "row", "row"),
        (portfolios, "load_marks", "marks"),
    )

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.spans.setdefault(name, []).append((started, time.perf_counter()))

        return timed

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved = [(o, n, getattr(o, n)) for o, n, _ in self.TARGETS if hasattr(o, n)]
        try:
            for owner, n, label in self.TARGETS:
                if hasattr(owner, n):
                    setattr(owner, n, self._wrap(label, getattr(owner, n)))
            yield
        finally:
            for owner, n, fn in saved:
                setattr(owner, n, fn)

    def breakdown(self, started: float, ended: float) -> dict[str, float]:
        """Seconds per part of one run (the spans of the last run only)."""
        s = {n: [x for x in v if x[0] >= started] for n, v in self.spans.items()}

        def dur(n: str) -> float:
            return sum(b - a for a, b in s.get(n, []))

        def first(n: str, default: float) -> float:
            return s[n][0][0] if s.get(n) else default

        def last(n: str, default: float) -> float:
            return s[n][-1][1] if s.get(n) else default

        load_end = last("load_state", started)
        fold_start = first("fold", load_end)
        before_marks = last("save_state", last("fold", fold_start))
        parts = {
            "read_cut": dur("read_cut"),
            "load_state": dur("load_state"),
            "select entries": fold_start - load_end,
            "fold": dur("fold"),
            "save_state": dur("save_state"),
            "checkpoint+held": first("marks", before_marks) - before_marks,
            "Marks.load": dur("marks"),
            "rows": dur("row"),
            "upsert+commit": ended - last("row", last("marks", before_marks)),
        }
        parts["other"] = ended - started - sum(parts.values())
        return parts


@dataclass
class Run:
    wall: float
    cpu: float
    backend: float | None
    entries: int
    moved: int
    positions_written: int
    snapshots: int
    wal: int
    parts: dict[str, float]


def timed_take(conn: db.Conn, now: datetime, phases: Phases) -> Run:
    """One snapshot.take, timed; counts the portfolios it moved and the position rows it
    rewrote (save_state rewrites every stored position of a moved portfolio)."""
    seen = conn.execute(
        "SELECT cursor_int FROM system_checkpoint WHERE name = %(n)s", {"n": snapshot.CHECKPOINT}
    ).fetchone()
    lo = int(seen["cursor_int"]) if seen and seen["cursor_int"] is not None else 0
    wal0 = conn.execute("SELECT pg_current_wal_insert_lsn() AS l").fetchone()
    cpu0, be0 = time.process_time(), backend_cpu(conn)
    started = time.perf_counter()
    counts = snapshot.take(conn, now)
    ended = time.perf_counter()
    cpu, be1 = time.process_time() - cpu0, backend_cpu(conn)
    wal = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %(l)s)::bigint AS b",
        {"l": wal0["l"] if wal0 else "0/0"},
    ).fetchone()
    moved = conn.execute(
        """SELECT count(DISTINCT (portfolio_scope, followed_user_id)) AS portfolios,
                  count(DISTINCT (portfolio_scope, followed_user_id, asset_id))
                      FILTER (WHERE asset_id IS NOT NULL
                              AND entry_type NOT IN ('FEE', 'DEPOSIT')) AS positions
           FROM ledger_entry WHERE id > %(lo)s AND id <= %(hi)s""",
        {"lo": lo, "hi": lo + counts["entries"]},
    ).fetchone()
    assert moved is not None
    return Run(
        ended - started,
        cpu,
        None if be0 is None or be1 is None else be1 - be0,
        counts["entries"],
        int(moved["portfolios"]),
        int(moved["positions"]),
        counts["snapshots"],
        int(wal["b"]) if wal else 0,
        phases.breakdown(started, ended),
    )


def ms(x: float) -> str:
    return f"{x * 1000:,.0f} ms"


def describe(r: Run) -> str:
    backend = "n/a" if r.backend is None else ms(r.backend)
    return (
        f"wall {ms(r.wall):>9}  cpu: python {ms(r.cpu):>9}, postgres {backend:>8}  |"
        f" {r.entries:4d} entries, {r.moved:3d} portfolios moved -> {r.moved} state +"
        f" {r.positions_written:,} position + {r.snapshots} snapshot rows, WAL"
        f" {r.wal / 1e6:,.1f} MB"
    )


def print_parts(runs: list[Run]) -> None:
    names = list(runs[0].parts)
    med = {n: statistics.median(r.parts[n] for r in runs) for n in names}
    total = statistics.median(r.wall for r in runs)
    shown = ", ".join(f"{n} {ms(v)}" for n, v in sorted(med.items(), key=lambda x: -x[1]))
    print(f"    where the time goes (median per run, of {ms(total)}): {shown}")


def print_sizes(
    conn: db.Conn, days: int, price_days: float, mean_held: int, users: int, positions: int
) -> None:
    size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
    assert size is not None
    print(f"database size: {size['b'] / 1e6:,.0f} MB (pg_database_size)")
    tables = conn.execute(
        """SELECT c.relname AS name, pg_total_relation_size(c.oid) AS total,
                  pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS idx
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'r'
           ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 8"""
    ).fetchall()
    per_row: dict[str, float] = {}
    for t in tables:
        got = conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(t["name"]))
        ).fetchone()
        n = int(got["n"]) if got else 0
        per_row[t["name"]] = t["total"] / n if n else 0.0
        print(
            f"  {t['name']:<23} {n:>11,} rows  total {t['total'] / 1e6:8,.1f} MB"
            f" (heap {t['heap'] / 1e6:7,.1f} + indexes {t['idx'] / 1e6:7,.1f})"
            f"  {per_row[t['name']]:6.0f} B/row"
        )
    for table in ("portfolio_snapshot", "ledger_entry", "market_price_snapshot"):
        idx = conn.execute(
            """SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS b
               FROM pg_index WHERE indrelid = %(t)s::regclass ORDER BY 2 DESC""",
            {"t": table},
        ).fetchall()
        shown = ", ".join(f"{i['name']} {i['b'] / 1e6:,.1f} MB" for i in idx)
        print(f"    {table} indexes: {shown}")
    portfolios = 2 * users + 1
    snap = per_row.get("portfolio_snapshot", 0.0) * portfolios * 1_440
    price = per_row.get("market_price_snapshot", 0.0) * mean_held * 2_880
    print(
        f"  growth: portfolio_snapshot {snap / 1e6:,.1f} MB/day ({portfolios} rows a minute),"
        f" market_price_snapshot {price / 1e6:,.1f} MB/day ({mean_held} held assets every"
        f" 30 s) -> {(snap + price) * 365 / 1e9:,.1f} GB/year for the two"
    )
    per_asset = per_row.get("market_price_snapshot", 0.0) * 2_880
    daily = per_asset * positions
    print(
        f"  marks: {per_asset / 1e6:,.2f} MB per held asset per day; with {positions} held"
        f" assets {daily / 1e6:,.0f} MB/day, {daily * 30 / 1e9:,.1f} GB per 30 days"
    )
    if price_days < days:
        print(
            f"  marks kept here for {price_days:g} of {days} days; all {days} days would add"
            f" {price * (days - price_days) / 1e9:,.2f} GB"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.snapshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--days", type=int, default=30, help="of minute snapshots and ledger")
    p.add_argument("--positions", type=int, default=200, help="distinct assets held at the end")
    p.add_argument("--markets", type=int, default=1_500, help="binary markets traded")
    p.add_argument("--orders-per-day", type=float, default=60.0, help="per leader")
    p.add_argument("--price-days", type=float, default=1.0, help="days of 30 s marks stored")
    p.add_argument(
        "--rebuild-hours",
        type=float,
        default=1.0,
        help="last hours run through the job minute by minute, then rebuilt",
    )
    p.add_argument("--runs", type=int, default=5, help="busy minutes timed")
    p.add_argument("--fills-per-run", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--database-url",
        help="server to create the scratch database on (default: DATABASE_URL or the"
        " embedded server)",
    )
    args = p.parse_args(argv)
    for flag in ("users", "days", "positions", "markets", "runs", "fills_per_run"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.positions > args.markets:
        p.error("--positions must be <= --markets (half the assets stay for closed history)")
    if not 0 <= args.rebuild_hours * 60 < args.days * 1_440 - 120:
        p.error("--rebuild-hours must be >= 0 and shorter than the history")
    server = args.database_url or db.server_url()
    began = time.perf_counter()
    with (
        scratch_database(server, "oculus_bench", keep=args.keep) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        bench(conn, url, args, database_name(url))
        kept = f" (kept: {url})" if args.keep else ""
        print(f"total {time.perf_counter() - began:.0f} s{kept}")
    return 0


def bench(conn: db.Conn, url: str, args: argparse.Namespace, name: str) -> None:
    end_ms = ms_of(END)
    m0 = end_ms - round(args.rebuild_hours * 60) * MINUTE_MS  # the cold run's minute
    busy = [end_ms + k * MINUTE_MS for k in range(1, args.runs + 1)]
    month = build_month(conn, url, args, cut_ms=m0, until_ms=tick_of(busy[-1]), busy=busy)
    world, later_prices = month.world, month.later_prices
    n0, b0 = month.entries_loaded, month.books_loaded
    print_month(month, args, "snapshot", name)

    # The job's own minutes: cold at m0, then one run a minute, then the busy minutes.
    phases = Phases()
    entry_times = [e[0] for e in world.entries]
    book_times = [b[0] for b in world.books]
    price_times = [x[0] for x in later_prices]
    done = (n0, b0, 0)
    light: list[Run] = []
    heavy: list[Run] = []
    cold: Run | None = None
    with phases.installed():
        minutes = list(range(m0, end_ms + 1, MINUTE_MS)) + busy
        for m in minutes:
            tick = tick_of(m)
            n = bisect.bisect_right(entry_times, tick)
            nb = bisect.bisect_right(book_times, tick)
            npx = bisect.bisect_right(price_times, tick)
            copy_entries(conn, world.entries[done[0] : n])
            copy_books(conn, world, world.books[done[1] : nb])
            copy_lines(conn, COPY_PRICES, [x[1] for x in later_prices[done[2] : npx]])
            done = (n, nb, npx)
            r = timed_take(conn, at(tick), phases)
            if cold is None:
                cold = r
            elif m in busy:
                heavy.append(r)
            else:
                light.append(r)
    assert cold is not None
    held = conn.execute(
        """SELECT count(DISTINCT asset_id) AS assets, count(*) AS open,
                  count(*) FILTER (WHERE portfolio_scope = 'SHADOW_USER') AS shadow,
                  count(*) FILTER (WHERE portfolio_scope = 'EXEC_USER') AS exec_user,
                  count(*) FILTER (WHERE portfolio_scope = 'EXEC_GLOBAL') AS global,
                  (SELECT count(*) FROM portfolio_position) AS stored
           FROM portfolio_position WHERE share_micros <> 0"""
    ).fetchone()
    assert held is not None
    print(
        f"  open at the end: {held['assets']} distinct assets in {held['open']} positions"
        f" (shadow {held['shadow']}, exec per user {held['exec_user']}, global"
        f" {held['global']}); portfolio_position holds {held['stored']:,} rows (closed"
        " ones included)"
    )
    print(f"cold first run (no state, folds the month): {describe(cold)}")
    print_parts([cold])
    if light:
        walls = [r.wall for r in light]
        print(
            f"job's minutes at the month's rate ({len(light)} runs, entries per run median"
            f" {statistics.median(r.entries for r in light):.0f} / max"
            f" {max(r.entries for r in light)}): wall p50 {ms(percentile(walls, 0.5))},"
            f" p95 {ms(percentile(walls, 0.95))}, max {ms(max(walls))}"
        )
        print_parts(light)
    print(f"busy minutes ({len(heavy)} runs, ~{args.fills_per_run} new fills each):")
    for i, r in enumerate(heavy, 1):
        print(f"  run {i}: {describe(r)}")
    walls = [r.wall for r in heavy]
    one_core = [r.cpu + (r.backend or 0.0) for r in heavy]
    p50 = statistics.median(walls)
    print(
        f"  wall p50 {ms(p50)}, max {ms(max(walls))}; python + postgres CPU p50"
        f" {ms(statistics.median(one_core))}, max {ms(max(one_core))}"
        f"  goal <= 1 s: {'met' if max(max(walls), max(one_core)) <= 1.0 else 'NOT met'}"
    )
    print_parts(heavy)

    if m0 < end_ms:
        started = time.perf_counter()
        counts = snapshot.rebuild(conn, at(m0))
        took = time.perf_counter() - started
        first = cold.parts["select entries"] + cold.parts["fold"]
        per_minute = max(0.0, took - first) / len(minutes)
        print(
            f"rebuild since the cold run ({len(minutes)} minutes): {counts['rows']:,} rows,"
            f" {counts['differed']} differed, {took:.1f} s (about {ms(first)} to fold the"
            f" ledger up to the first row, then {ms(per_minute)} per minute: a"
            f" {args.days}-day rebuild would take about"
            f" {per_minute * args.days * 1_440 / 60:,.0f} min, in one transaction)"
        )
    conn.execute("VACUUM (ANALYZE) portfolio_snapshot, portfolio_position, portfolio_state")
    print_sizes(
        conn,
        args.days,
        min(args.price_days, args.days),
        month.mean_held,
        args.users,
        args.positions,
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"benchmark process peak RSS {rss:,.0f} MB (data generation included)")


if __name__ == "__main__":
    raise SystemExit(main())
