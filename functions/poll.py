"""Poll the Data API for the enabled followed users that are due — the active ones
every run, the idle ones every OCULUS_POLL_IDLE_EVERY_S while the chain listener is
connected, everyone while it is down (`common.store.polling.Due`): `/activity` (TRADE,
SPLIT, MERGE, REDEEM, CONVERSION) by time window, and `/trades?takerOnly=false` while
the listener is down or a chain fill waits for its row, from the user's checkpoint
minus an overlap (the API indexes fills seconds late). Rows become
`trade_event` / `activity_event` exactly once (common/store/ingest.py), then the shadow
ledger applies what is new (common/store/shadow.py).

`python -m functions.poll --once` polls once; the first run of a process reaches back
`OCULUS_POLL_BACKFILL_ON_START_S` (15 min); `--backfill 6h` reaches back further. Runs
the scheduler starts do not: it files that backfill request once, when it starts.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from common.runtime import jobs
from common.store import db, polling
from common.upstream import http


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    s, now = ctx.settings, ctx.clock()
    reach: datetime | None = None
    # A process's first run reaches back — unless the scheduler started it: the
    # scheduler asks for that backfill once, when it starts, not every 5 s.
    scheduled = jobs.run_trigger(ctx.args)[0] in ("cron", "wake")
    if not ctx.resources.get("started") and (ctx.args.backfill or not scheduled):
        reach = now - (ctx.args.backfill or timedelta(seconds=s.poll_backfill_on_start_s))
    ups: http.Upstreams = ctx.resources["ups"]
    polling.poll_all(
        conn,
        ups,
        now,
        overlap=timedelta(seconds=s.poll_overlap_s),
        reach_back_to=reach,
        counts=ctx.counts,
        clock=ctx.clock,
    )
    ctx.resources["started"] = True
    for key, n in polling.apply_shadow(conn, now, s, ups).items():
        ctx.count(f"shadow_{key}", n)
    return ctx.counts.get("api_inserted", 0) + ctx.counts.get("activity_inserted", 0)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("poll", __doc__ or "")
    p.add_argument(
        "--backfill",
        type=jobs.parse_duration,
        metavar="DURATION",
        help="reach back this far on the first run (e.g. 6h)",
    )
    args = p.parse_args(argv)
    return jobs.main("poll", args, run_once, upstreams=True)


if __name__ == "__main__":
    sys.exit(main())
