"""Rules job (issue 19): one minute's evaluation of 200 threshold rules and 20 SQL rules
on the 50 users data set, in a scratch database (loopback server, dropped after unless
--keep). Goal: ≤ 1 s of CPU a minute (this process's and its Postgres backend's).

Data set: benchmarks/dataset.py's users and days with the pages' inputs (copy attempts,
job runs, heartbeats), the metric catalogue written by functions.metrics each minute.
Rules: 200 threshold rules cycling over the catalogue's metrics (a third matching one
leader's `user` label, half with a `for`), 20 SQL rules (the shipped four and variants
of them, each due every minute: the worst case), every rule to the log channel. Each
minute: the metrics job, then the rules job's evaluation, timed.

Run: python -m benchmarks.rules_eval [--users 50] [--days 7] [--reps 5] [--keep]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import yaml

from benchmarks import dataset
from benchmarks.scratch import backend_cpu, database_name, scratch_database
from common.domain import rules
from common.runtime import jobs, settings
from common.store import alerts, db
from common.store import metrics as metric_store
from functions import metrics

GOAL_CPU_S = 1.0
OPS = (">", ">=", "<", "<=", "==", "!=")


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def fixed(t: datetime) -> Callable[[], datetime]:
    return lambda: t


def ruleset(user_ids: list[int], thresholds: int, sqls: int, seed: int) -> rules.RuleSet:
    rng = random.Random(seed)
    names = [m.name for m in metric_store.CATALOGUE]
    items: list[dict[str, object]] = []
    for i in range(thresholds):
        m = metric_store.BY_NAME[names[i % len(names)]]
        rule: dict[str, object] = {
            "name": f"t{i:03d}",
            "metric": m.name,
            "op": OPS[i % len(OPS)],
            "value": round(rng.uniform(0, 100), 2),
            "for": "2m" if i % 2 else 0,
            "cooldown": "10m",
            "severity": "warn",
            "message": "{{ rule }} {{ labels }} = {{ value }} ({{ op }} {{ threshold }})",
        }
        if "user" in m.labels and i % 3 == 0:
            rule["labels"] = {"user": str(rng.choice(user_ids))}
        items.append(rule)
    shipped = yaml.safe_load((settings.ROOT / "rules.yaml").read_text())["rules"]
    shipped_sql = [r for r in shipped if "sql" in r]
    for i in range(sqls):
        base = dict(shipped_sql[i % len(shipped_sql)])
        base["name"] = f"s{i:02d}_{base['name']}"
        base["schedule"] = "* * * * * 0"
        items.append(base)
    text = yaml.dump(  # no anchors: rules.yaml refuses them
        {"channels": {}, "rules": items}, Dumper=_PlainDumper, sort_keys=False
    )
    rs = rules.parse(text, metric_store.BY_NAME)
    assert not rs.errors, rs.errors[:3]
    return rs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rules_eval", description=__doc__)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--positions", type=int, default=200)
    p.add_argument("--markets", type=int, default=1_500)
    p.add_argument("--orders-per-day", type=float, default=60.0, help="per leader")
    p.add_argument("--price-days", type=float, default=0.05, help="days of 30 s marks")
    p.add_argument("--thresholds", type=int, default=200)
    p.add_argument("--sql", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fills-per-run", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--database-url", help="the server (default: the embedded one)")
    args = p.parse_args(argv)
    with (
        scratch_database(args.database_url or db.server_url(), "bench_rules", args.keep) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        end_ms = dataset.ms_of(dataset.END)
        month = dataset.build_month(
            conn, url, args, cut_ms=end_ms, until_ms=dataset.tick_of(end_ms)
        )
        world = month.world
        dataset.copy_entries(conn, world.entries[month.entries_loaded :])
        dataset.copy_books(conn, world, world.books[month.books_loaded :])
        dataset.print_month(month, args, "rules", database_name(url))
        dataset.add_page_inputs(conn, month, args)
        conn.execute("VACUUM ANALYZE")
        user_ids = [int(r["id"]) for r in conn.execute("SELECT id FROM followed_user")]
        rs = ruleset(user_ids, args.thresholds, args.sql, args.seed)
        print(f"  {len(rs.rules)} rules ({args.thresholds} threshold, {args.sql} SQL), "
              f"{len(user_ids)} users")  # fmt: skip
        s = settings.get()
        now = dataset.END + timedelta(minutes=1, seconds=52)
        cpu, wall, server, series, moved = [], [], [], [], 0
        for rep in range(args.reps + 1):  # the first minute warms the caches: not counted
            now += timedelta(minutes=1)
            ctx = jobs.Context(args=argparse.Namespace(), settings=s, clock=fixed(now))
            metrics.run_once(conn, ctx)
            b0, c0, w0 = backend_cpu(conn), time.process_time(), time.perf_counter()
            out = alerts.Evaluator(conn, rs, now).run(alerts.series(conn, now))
            c1, w1, b1 = time.process_time(), time.perf_counter(), backend_cpu(conn)
            n = sum(len(v) for v in alerts.series(conn, now).values())
            if rep == 0:
                print(f"  warm-up minute: {w1 - w0:.3f} s wall, {out.transitions} transitions, "
                      f"{len(out.errors)} rule errors")  # fmt: skip
                continue
            print(f"  minute {rep}: CPU {c1 - c0 + (b1 or 0.0) - (b0 or 0.0):.3f} s (python "
                  f"{c1 - c0:.3f}), wall {w1 - w0:.3f} s, {out.transitions} transitions, "
                  f"{out.queued} queued")  # fmt: skip
            cpu.append(c1 - c0)
            wall.append(w1 - w0)
            server.append((b1 or 0.0) - (b0 or 0.0))
            series.append(n)
            moved += out.transitions
        total = [a + b for a, b in zip(cpu, server, strict=True)]
        print(f"  series a minute: {statistics.median(series)}; transitions after warm-up: "
              f"{moved}")  # fmt: skip
        print(f"  per minute, median of {args.reps}: CPU {statistics.median(total):.3f} s "
              f"(python {statistics.median(cpu):.3f} + postgres {statistics.median(server):.3f})"
              f", max {max(total):.3f} s, wall {statistics.median(wall):.3f} s "
              f"(goal ≤ {GOAL_CPU_S:.1f} s CPU: "
              f"{'met' if max(total) <= GOAL_CPU_S else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
