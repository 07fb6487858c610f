"""Latency sweep (issue 20): `functions.sweep`'s run — the what-if replayed at each of
the six ladder delays — over 24 h of 50 leaders, in a scratch database (loopback
server, dropped after unless --keep). Goal: ≤ 30 s.

Data set: benchmarks/dataset.py's month cut to --days days (its pages' inputs: one copy
group per leader order, decided on a stored book), then a ladder for every BUY/SELL
group: six rungs, each the group's stored book moved by a drift that grows with the
delay (against the copier half of the time, a random walk the rest), compact as the
watcher stores them; one fresh mark per attempted asset. Prints the figures of the
global portfolio per delay, the half-lives, the wall and CPU time of the run (median of
--reps), and that two runs give the same report.

Run: python -m benchmarks.sweep [--users 50] [--days 1] [--reps 3] [--levels 50] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from benchmarks import dataset
from benchmarks.score import mark
from benchmarks.scratch import database_name, scratch_database
from common.domain import live_book
from common.runtime import jobs, settings
from common.store import db
from functions import sweep

GOAL_S = 30.0
DELAYS_MS = (0, 2_000, 5_000, 10_000, 30_000, 60_000)


def _deepen(levels: list[tuple[int, int]], step: int, most: int) -> list[tuple[int, int]]:
    """The levels carried on, a tick at a time away from the best, to `most` levels
    (the watcher keeps at most 50 a side within ±0.10: the deepest a rung can be)."""
    out = list(levels)
    while out and len(out) < most:
        p, s = out[-1]
        out.append((p + step, s))
    return out


def add_ladders(conn: db.Conn, rng: random.Random, depth: int = 0) -> int:
    """Six rungs for every BUY/SELL group with a stored book (`depth`: each side
    carried on to that many levels, half ticks apart, for the deepest rungs)."""
    rows = conn.execute(
        """SELECT g.id, g.action, g.window_start, b.bid_prices_micros AS bp,
                  b.bid_sizes_micros AS bs, b.ask_prices_micros AS ap, b.ask_sizes_micros AS az
           FROM copy_group g JOIN order_book_snapshot b ON b.id = g.order_book_snapshot_id
           WHERE g.action IN ('BUY', 'SELL')"""
    ).fetchall()
    n = 0
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            "COPY book_ladder (copy_group_id, delay_ms, book_at, source, best_bid_micros,"
            " best_ask_micros, bids, asks, taken_at) FROM STDIN"
        ) as cp,
    ):
        for r in rows:
            against = rng.random() < 0.5  # the price runs away from the copier
            sign = 1 if r["action"] == "BUY" else -1
            walk = 0
            for d in DELAYS_MS:
                step = dataset.TICK * (d // 10_000 + (1 if d else 0))
                walk += sign * step if against else rng.choice((-1, 0, 1)) * step
                bids = [(p + walk, s) for p, s in zip(r["bp"], r["bs"], strict=True)]
                asks = [(p + walk, s) for p, s in zip(r["ap"], r["az"], strict=True)]
                if depth:
                    bids = _deepen(bids, -dataset.TICK // 5, depth)
                    asks = _deepen(asks, dataset.TICK // 5, depth)
                ok = [lv for lv in bids if 0 < lv[0] < dataset.MICROS]
                levels = live_book.Levels(
                    tuple(ok), tuple(lv for lv in asks if 0 < lv[0] < dataset.MICROS)
                ).compact()
                t = r["window_start"] + timedelta(milliseconds=d if d else -1)
                cp.write_row((r["id"], d, t, "LIVE", levels.best_bid, levels.best_ask,
                              Jsonb([list(x) for x in levels.bids]),
                              Jsonb([list(x) for x in levels.asks]), t))  # fmt: skip
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--positions", type=int, default=200)
    p.add_argument("--markets", type=int, default=1_500)
    p.add_argument("--orders-per-day", type=float, default=60.0, help="per leader")
    p.add_argument("--price-days", type=float, default=0.05, help="days of 30 s marks")
    p.add_argument("--reps", type=int, default=3)
    deepest = "carry each rung's sides on to this many levels (50: the deepest)"
    p.add_argument("--levels", type=int, default=0, help=deepest)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fills-per-run", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--database-url", help="the server (default: the embedded one)")
    args = p.parse_args(argv)
    with (
        scratch_database(args.database_url or db.server_url(), "bench_sweep", args.keep) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        end_ms = dataset.ms_of(dataset.END)
        month = dataset.build_month(
            conn, url, args, cut_ms=end_ms, until_ms=dataset.tick_of(end_ms)
        )
        world = month.world
        dataset.copy_entries(conn, world.entries[month.entries_loaded :])
        dataset.copy_books(conn, world, world.books[month.books_loaded :])
        dataset.print_month(month, args, "sweep", database_name(url))
        dataset.add_page_inputs(conn, month, args)
        rng = random.Random(args.seed)
        rungs = add_ladders(conn, rng, args.levels)
        sql = "SELECT DISTINCT asset_id FROM copy_group WHERE action IN ('BUY', 'SELL')"
        assets = [r["asset_id"] for r in conn.execute(sql)]
        now_ms = end_ms + 60_000
        mark(conn, assets, now_ms - 10_000, rng)
        conn.execute("VACUUM ANALYZE")
        size = conn.execute(
            "SELECT pg_total_relation_size('book_ladder') AS b, count(DISTINCT copy_group_id)"
            " AS g FROM book_ladder"
        ).fetchone()
        assert size is not None
        per_group = size["b"] / max(size["g"], 1)
        per_day = size["g"] / args.days
        print(f"  ladder storage: {size['b'] / 2**20:.1f} MB for {size['g']:,} groups"
              f" ({per_group / 1024:.1f} KiB a group, six rungs with their indexes):"
              f" {per_group * per_day / 2**20:.1f} MB/day at this data set's"
              f" {per_day:,.0f} groups/day")  # fmt: skip
        s = settings.get().model_copy(update={"sweep_hours": 24.0 * args.days})
        walls, cpus, reports = [], [], []
        for _ in range(args.reps):
            ctx = jobs.Context(args=argparse.Namespace(), settings=s,
                               clock=lambda: dataset.at(now_ms))  # fmt: skip
            t0, c0 = time.perf_counter(), time.process_time()
            sweep.run_once(conn, ctx)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            row = conn.execute("SELECT report FROM latency_sweep ORDER BY id DESC LIMIT 1")
            reports.append(row.fetchone()["report"])  # type: ignore[index]
        r: dict[str, Any] = reports[-1]
        print(f"  {r['groups']:,} BUY/SELL groups with a full ladder ({rungs:,} rungs),"
              f" {r['groups_without_ladder']:,} without, {len(r['leaders'])} leaders")  # fmt: skip
        print("  global portfolio by delay: delay, attempts, fill rate, PnL, retention,"
              " median slippage (bps)")  # fmt: skip
        for pt in r["global"]["points"]:
            print(f"    +{pt['delay_ms'] / 1000:>4g} s  {pt['attempts']:>6,}  {pt['fill_rate']}"
                  f"  {pt['pnl_micros'] / 1e6:>12,.2f}  {pt['retention']}"
                  f"  {pt['median_slippage_bps']}")  # fmt: skip
        labels = Counter(v["half_life"]["label"] for v in r["leaders"].values())
        print(f"  global half-life: {r['global']['half_life']['label']}; leaders': "
              + ", ".join(f"{k} ×{n}" for k, n in labels.most_common(8)))  # fmt: skip
        same = all(json.dumps(x, sort_keys=True) == json.dumps(r, sort_keys=True)
                   for x in reports)  # fmt: skip
        print(f"  reproducible (the {len(reports)} reports identical): {same}")
        wall = statistics.median(walls)
        print(f"  sweep run: median {wall:.2f} s wall, {statistics.median(cpus):.2f} s CPU"
              f" (this process) over {len(walls)} (goal ≤ {GOAL_S:g} s)")  # fmt: skip
        ok = wall <= GOAL_S and same
        print("  goals:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
