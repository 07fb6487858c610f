"""Metrics (every 30 s): one probe of each upstream (common/upstream/probes.py) into
`upstream_probe`, then the metric catalogue of common/store/metrics.py, one value per
series and minute, into `metric_point` (SPEC §11). Rules, the status page and
`/metrics` read them. Run by hand: python -m functions.metrics --once."""

from __future__ import annotations

import sys

from common.runtime import jobs
from common.store import db, probes
from common.store import metrics as store
from common.upstream import probes as upstream_probes


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now = ctx.clock()
    found = upstream_probes.probe_all(ctx.settings)
    ctx.count("probes", probes.write(conn, found, now))
    ctx.count("probes_failed", sum(not p.ok for p in found))
    points = store.collect(conn, now, ctx.settings.reconcile_stale_after_s)
    ctx.count("series", store.write(conn, points, now))
    return len(points)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("metrics", __doc__ or "")
    args = p.parse_args(argv)
    return jobs.main("metrics", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
