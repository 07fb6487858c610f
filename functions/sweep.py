"""Latency sweep (every 15 minutes): how fast must you be to copy each leader (SPEC
§12)? Re-decides the groups of the last OCULUS_SWEEP_HOURS under the config in force at
each ladder delay (OCULUS_LADDER_DELAYS_S) on the book as it was then
(`common/store/sweep.py`) and stores the report in `latency_sweep`: per leader and for
the global portfolio, PnL, retention, fill rate and median slippage per delay, and the
half-life. The Leaders page and each leader's page show the newest one; the newest
SWEEPS_KEPT are kept.

The same figures, for the config in force or a proposal, come from
`python -m functions.whatif --sweep` (printed, nothing stored) and from the write API's
"Test config" (`POST /api/config/test`, the report's `sweep`).

    python -m functions.sweep --once
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from psycopg.types.json import Jsonb

from common.runtime import jobs
from common.store import copy_configs, db, sweep, whatif

SWEEPS_KEPT = 96  # a day of them at the crontab's pace

_STORE = """
INSERT INTO latency_sweep (taken_at, range_start, range_end, groups, report, cpu_ms)
VALUES (%(now)s, %(start)s, %(end)s, %(groups)s, %(report)s, %(cpu)s)
"""
_KEEP = """
DELETE FROM latency_sweep WHERE id NOT IN (
  SELECT id FROM latency_sweep ORDER BY taken_at DESC, id DESC LIMIT %(n)s)
"""


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    s = ctx.settings
    began = time.thread_time()
    end = ctx.clock()
    start = end - timedelta(hours=s.sweep_hours)
    inputs = whatif.load_for(conn, start, end, copy_configs.load(conn))
    configs = copy_configs.load(conn)
    report = sweep.report(conn, inputs, configs, s.ladder_delays_ms, end, s.score_mark_max_age_s)
    cpu_ms = round((time.thread_time() - began) * 1000)
    with conn.transaction():
        conn.execute(_STORE, {"now": end, "start": start, "end": end, "cpu": cpu_ms,
                              "groups": report["groups"], "report": Jsonb(report)})  # fmt: skip
        conn.execute(_KEEP, {"n": SWEEPS_KEPT})
    ctx.count("groups", report["groups"])
    ctx.count("groups_without_ladder", report["groups_without_ladder"])
    ctx.count("leaders", len(report["leaders"]))
    return 1


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("sweep", __doc__ or "")
    p.set_defaults(interval=900.0)
    args = p.parse_args(argv)
    return jobs.main("sweep", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
