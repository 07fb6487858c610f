"""Scale (issue 16): the whole stack (`make run`: embedded Postgres, the sandbox and its
leaders, every job, the site) with N followed leaders, one size per run, in steady
state for the window; prints the table the issue measured, beside its goals.

    python -m benchmarks.scale --leaders 300 [--minutes 5] [--warmup 180]

It runs `benchmarks.resources` (same isolation: a temp dir, its own Postgres, ports)
with `--leaders N`, samples the site builder's queue (`process_heartbeat` site
`left`) at every sample, and after the window reads from the database, for the window:
- the aggregate fill rate of the followed leaders (chain fills detected);
- poll runs: how many, their duration (p50, max), users polled and left idle per run;
- Data API row stored after the fill, p50 / p95: a fill's Data API row is stored at its
  detect time when it came first, else when it confirmed the chain's (`confirmed_at`);
  chain fills no row confirmed by the end are counted beside it ("never");
- chain detection after the fill p95 (detect − block time);
- snapshot runs that skipped their cut, and the fewest portfolios one minute's
  snapshot covered against the portfolios that exist at the end (they grow as users
  get their first copy), and how many portfolios of one minute's snapshot were missing
  from the next minute's (a skipped portfolio);
- rollup runs that skipped their cut; price runs that deferred settlement;
- decision delay p95: an attempt's write (`created_at`, its transaction's start) after
  its group's `decide_at`;
- site pages left in the builder's queue (p50 / max over the samples);
- total RSS of the Oculus processes and their average CPU (from `resources`).
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

from benchmarks import resources
from common.runtime import settings
from common.store import db

GOALS = {
    "api_p95_s": 15.0,
    "decision_p95_s": 0.5,
    "site_left_p95": 20,
    "rss_mb": 600.0,
    "cpu_pct_of_two_cores": 60.0,
}


class Scale:
    """Collects the site queue per sample and prints the figures after the window."""

    def __init__(self, leaders: int) -> None:
        self.leaders = leaders
        self.site_left: list[int] = []
        self.db_bytes: list[tuple[float, int]] = []  # (monotonic, database size)
        self.tables: list[tuple[float, dict[str, int]]] = []  # first and last: table sizes

    def on_sample(self, url: str) -> None:
        with db.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (info->>'left')::int AS left FROM process_heartbeat WHERE process = 'site'"
            ).fetchone()
            size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
            tables = {
                r["t"]: int(r["b"])
                for r in conn.execute(
                    "SELECT relname AS t, pg_total_relation_size(oid) AS b FROM pg_class"
                    " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                )
            }
        self.tables[1:] = [(time.monotonic(), tables)]  # keeps the first sample, and the last
        if len(self.tables) == 1:
            self.tables.append(self.tables[0])
        if size is not None:
            self.db_bytes.append((time.monotonic(), int(size["b"])))
        if row is not None and row["left"] is not None:
            self.site_left.append(int(row["left"]))

    def after(self, sampler: resources.Sampler, url: str, start: datetime) -> None:
        with db.connect(url, autocommit=True) as conn:
            f = figures(conn, start)
        elapsed = (sampler.last or 0.0) - (sampler.started or 0.0)
        rss, cpu = totals(sampler, elapsed)
        left = sorted(self.site_left) or [0]
        rows = [
            ("leaders (aggregate fills/s)", f"{self.leaders} ({f['fills_per_s']:.2f})", ""),
            (
                "poll runs: count, duration p50 / max",
                f"{f['polls']}, {f['poll_p50']:.2f} s / {f['poll_max']:.2f} s",
                "",
            ),
            (
                "users per poll run: polled / idle (median)",
                f"{f['polled_median']:.0f} / {f['idle_median']:.0f}",
                "",
            ),
            (
                "Data API row stored after the fill, p50 / p95",
                f"{f['api_p50']:.1f} s / {f['api_p95']:.1f} s ({f['unconfirmed']} never)",
                f"p95 ≤ {GOALS['api_p95_s']:.0f} s",
            ),
            ("chain detection after the fill, p95", f"{f['chain_p95']:.2f} s", ""),
            (
                "snapshot runs that skipped their cut",
                f"{f['snap_skipped']} of {f['snaps']}",
                "none",
            ),
            (
                "portfolios in a minute's snapshot: fewest, last; dropped next minute",
                f"{'n/a' if f['snap_min'] is None else f['snap_min']}, {f['snap_last']}"
                f" of {f['portfolios']}; {f['snap_dropped']} dropped",
                "every portfolio",
            ),
            (
                "rollup runs that skipped their cut",
                f"{f['rollup_skipped']} of {f['rollups']}",
                "none",
            ),
            (
                "price runs that deferred settlement",
                f"{f['price_deferred']} of {f['prices']}",
                "none",
            ),
            (
                "decision delay p95 (commit after decide_at)",
                f"{f['decision_p95']:.3f} s",
                f"≤ {GOALS['decision_p95_s']} s",
            ),
            (
                "site pages left (p50 / p95 / max)",
                f"{pct(left, 50):.0f} / {pct(left, 95):.0f} / {max(left)}",
                f"p95 ≤ {GOALS['site_left_p95']}",
            ),
            ("total RSS of Oculus (peak)", f"{rss:.0f} MB", f"≤ {GOALS['rss_mb']:.0f} MB"),
            ("database size, growth per day at this rate", self.growth(), ""),
            (
                "average CPU, % of the 2 cores (Oculus, Postgres)",
                f"{cpu['oculus']:.1f} %, {cpu['postgres']:.1f} %",
                f"≤ {GOALS['cpu_pct_of_two_cores']:.0f} % in all",
            ),
        ]
        print(f"\nscale at {self.leaders} leaders, window {elapsed:.0f} s")
        width = max(len(r[0]) for r in rows) + 2
        values = max(len(r[1]) for r in rows) + 2
        for name, value, goal in rows:
            print(f"  {name:<{width}}{value:<{values}}{goal}")
        self.table_growth()

    def table_growth(self) -> None:
        """Each table's growth per day at this rate, and what prune keeps it at: a table
        prune thins holds about its full-resolution days of growth (`OCULUS_PRUNE_*`);
        the others (events, ledgers, decisions and the books they name) grow for good."""
        if len(self.tables) < 2:
            return
        s = settings.get()
        pruned = {  # table → days kept at full resolution (thinned or deleted after)
            "market_price_snapshot": s.prune_marks_full_days,
            "portfolio_snapshot": s.prune_snapshots_full_days,
            "job_run": s.prune_runs_days,
            "quarantine": s.prune_quarantine_days,
        }
        (t0, first), (t1, last) = self.tables[0], self.tables[-1]
        days = max(1.0, t1 - t0) / 86_400
        rates = {t: (last[t] - first.get(t, 0)) / days for t in last}
        forever = steady = 0.0
        print("\n  table growth per day at this rate (top 8), and what prune keeps it at:")
        for table, rate in sorted(rates.items(), key=lambda kv: -kv[1])[:8]:
            if table in pruned:
                kept = rate * pruned[table]
                what = f"pruned: ~{kept / 2**30:.1f} GB kept ({pruned[table]} days full)"
            else:
                what = "kept for good (SPEC: events, ledgers, decisions, their books)"
            print(f"    {table:<28}+{rate / 2**20:8.0f} MB/day  {what}")
        for table, rate in rates.items():
            if table in pruned:
                steady += rate * pruned[table]
            else:
                forever += rate
        print(
            f"  in all: +{forever / 2**30:.1f} GB/day kept for good; the pruned tables level"
            f" off at ~{steady / 2**30:.1f} GB"
        )

    def growth(self) -> str:
        if len(self.db_bytes) < 2:
            return "n/a"
        (t0, b0), (t1, b1) = self.db_bytes[0], self.db_bytes[-1]
        per_day = (b1 - b0) / max(1.0, t1 - t0) * 86_400
        return f"{b1 / 2**20:.0f} MB, +{per_day / 2**30:.1f} GB/day"


def pct(values: list[float] | list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))])


def totals(s: resources.Sampler, elapsed: float) -> tuple[float, dict[str, float]]:
    """Peak total RSS of the Oculus processes (MB) and the CPU shares (% of 2 cores)."""
    rss = [0.0] * s.samples
    cpu = {"oculus": 0.0, "postgres": 0.0}
    for name, g in s.groups.items():
        if not g.rss_mb or name == "sandbox":
            continue
        used = sum(g.cpu_used())
        if name == "postgres":
            cpu["postgres"] += used
            continue
        cpu["oculus"] += used
        pad = s.samples - len(g.rss_mb)
        for i, r in enumerate(g.rss_mb):
            rss[pad + i] += r
    share = {k: 100 * v / elapsed / 2 if elapsed else 0.0 for k, v in cpu.items()}
    return max(rss or [0.0]), share


def figures(conn: db.Conn, start: datetime) -> dict[str, Any]:
    """The window's figures from the database (see the module's docstring)."""
    q = {"t": start}

    def one(sql: str) -> dict[str, Any]:
        row = conn.execute(sql, q).fetchone()
        return dict(row) if row else {}

    out: dict[str, Any] = {}
    fills = one(
        """SELECT count(*) AS n, extract(epoch FROM now() - %(t)s) AS s FROM trade_event
           WHERE source = 'CHAIN' AND detect_time >= %(t)s"""
    )
    out["fills_per_s"] = fills["n"] / float(fills["s"] or 1)
    polls = conn.execute(
        """SELECT extract(epoch FROM finished_at - started_at) AS s, counts FROM job_run
           WHERE job = 'poll' AND started_at >= %(t)s AND finished_at IS NOT NULL""",
        q,
    ).fetchall()
    durations = [float(r["s"]) for r in polls]
    out["polls"] = len(polls)
    out["poll_p50"] = statistics.median(durations) if durations else 0.0
    out["poll_max"] = max(durations, default=0.0)
    idle = [int((r["counts"] or {}).get("users_idle", 0)) for r in polls]
    users = one("SELECT count(*) AS n FROM followed_user WHERE enabled AND copy_mode <> 'REMOVED'")[
        "n"
    ]
    out["idle_median"] = statistics.median(idle) if idle else 0.0
    out["polled_median"] = users - out["idle_median"]
    lag = one(
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY s) AS p95
           FROM (SELECT extract(epoch FROM CASE WHEN source = 'DATA_API' THEN detect_time
                                                 ELSE confirmed_at END - event_time) AS s
                 FROM trade_event WHERE event_time >= %(t)s AND reorg_state IS NULL) x
           WHERE s IS NOT NULL"""
    )
    out["api_p50"], out["api_p95"] = float(lag["p50"] or 0), float(lag["p95"] or 0)
    out["unconfirmed"] = one(
        """SELECT count(*) AS n FROM trade_event WHERE source = 'CHAIN' AND api_source_id IS NULL
             AND reorg_state IS NULL AND event_time >= %(t)s"""
    )["n"]
    chain = one(
        """SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY
                  extract(epoch FROM detect_time - event_time)) AS p95
           FROM trade_event WHERE source = 'CHAIN' AND event_time >= %(t)s"""
    )
    out["chain_p95"] = float(chain["p95"] or 0)
    for job, key, skipped in (
        ("snapshot", "snap", "cut_skipped"),
        ("rollup", "rollup", "cut_skipped"),
        ("price", "price", "settlement_deferred"),
    ):
        runs = conn.execute(
            "SELECT counts FROM job_run WHERE job = %(j)s AND started_at >= %(t)s",
            {"j": job, "t": start},
        ).fetchall()
        out[f"{key}s"] = len(runs)
        hit = sum(1 for r in runs if int((r["counts"] or {}).get(skipped, 0)))
        out[
            {"snap": "snap_skipped", "rollup": "rollup_skipped", "price": "price_deferred"}[key]
        ] = hit
    out["portfolios"] = one("SELECT count(*) AS n FROM portfolio_state")["n"]
    per_minute = one(
        """SELECT min(n) AS n FROM (
             SELECT bucket, count(*) AS n FROM portfolio_snapshot
             WHERE bucket >= date_trunc('minute', %(t)s::timestamptz) + interval '1 minute'
               AND bucket < date_trunc('minute', now())
             GROUP BY bucket) x"""
    )
    out["snap_min"] = per_minute["n"]  # None: no whole minute in the window
    last = one(
        """SELECT count(*) AS n FROM portfolio_snapshot
           WHERE bucket = (SELECT max(bucket) FROM portfolio_snapshot
                           WHERE bucket < date_trunc('minute', now()))"""
    )
    out["snap_last"] = last["n"]
    # a portfolio in one minute's snapshot and missing from the next one's was skipped
    # (portfolios made during the window — a user's first copy — only ever add)
    out["snap_dropped"] = one(
        """SELECT count(*) AS n FROM portfolio_snapshot p
           WHERE p.bucket >= date_trunc('minute', %(t)s::timestamptz) + interval '1 minute'
             AND p.bucket < date_trunc('minute', now()) - interval '1 minute'
             AND NOT EXISTS (SELECT 1 FROM portfolio_snapshot q
                             WHERE q.portfolio_scope = p.portfolio_scope
                               AND q.followed_user_id IS NOT DISTINCT FROM p.followed_user_id
                               AND q.bucket = p.bucket + interval '1 minute')"""
    )["n"]
    decision = one(
        """SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY
                  extract(epoch FROM a.created_at - g.decide_at)) AS p95
           FROM copy_attempt a JOIN copy_group g ON g.group_key = a.group_key
           WHERE a.created_at >= %(t)s"""
    )
    out["decision_p95"] = float(decision["p95"] or 0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = resources.parser("python -m benchmarks.scale", __doc__)
    p.set_defaults(minutes=5.0, warmup=180.0, leaders=100)
    args = p.parse_args(argv)
    scale = Scale(args.leaders)
    return resources.run(args, scale.on_sample, scale.after)


if __name__ == "__main__":
    raise SystemExit(main())
