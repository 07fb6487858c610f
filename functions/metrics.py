"""Metrics (every minute): the metric catalogue of common/store/metrics.py, one value
per series, into `metric_point` (SPEC §11). Rules and the status page read them.
Run by hand: python -m functions.metrics --once."""

from __future__ import annotations

import sys

from common.runtime import jobs
from common.store import db
from common.store import metrics as store


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now = ctx.clock()
    points = store.collect(conn, now, ctx.settings.reconcile_stale_after_s)
    ctx.count("series", store.write(conn, points, now))
    return len(points)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("metrics", __doc__ or "")
    args = p.parse_args(argv)
    return jobs.main("metrics", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
