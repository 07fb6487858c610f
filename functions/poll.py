"""Poll the Data API for the enabled followed users that are due — the active ones
every run, the idle ones every OCULUS_POLL_IDLE_EVERY_S while the chain listener is
connected, everyone while it is down (`common.store.polling.Due`): `/activity` (TRADE,
SPLIT, MERGE, REDEEM, CONVERSION) by time window, and `/trades?takerOnly=false` while
the listener is down or a chain fill waits for its row, from the user's checkpoint
minus an overlap (the API indexes fills seconds late). Rows become
`trade_event` / `activity_event` exactly once (common/store/ingest.py), then the shadow
ledger applies what is new (common/store/shadow.py).

`python -m functions.poll --loop` is how it runs (under supervisor, one per host): each
run claims this host's fair share of the users (`common.store.leases`: every host on the
database polls its own 1/n, and takes over a dead host's users once their leases expire,
`OCULUS_POLL_LEASE_S`), polls those that are due — for at most `OCULUS_POLL_RUN_MAX_S`,
the longest unpolled first, so a run never holds the others back for long (seeding a
thousand new users takes minutes) — and applies their shadow ledgers; a backfill
request (`wake`) starts the next run at once. `--once` polls once, every due
user, without leases (by hand, or for a quick check). The first run of a process
reaches back `OCULUS_POLL_BACKFILL_ON_START_S` (15 min); `--backfill 6h` reaches back
further. Runs the scheduler starts do not: it files that backfill request once, when it
starts.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from common.runtime import jobs
from common.store import db, leases, polling
from common.upstream import http

log = logging.getLogger(__name__)


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    s, now = ctx.settings, ctx.clock()
    reach: datetime | None = None
    # A process's first run reaches back — unless the scheduler started it: the
    # scheduler asks for that backfill once, when it starts, not every 5 s.
    scheduled = jobs.run_trigger(ctx.args)[0] in ("cron", "wake")
    if not ctx.resources.get("started") and (ctx.args.backfill or not scheduled):
        reach = now - (ctx.args.backfill or timedelta(seconds=s.poll_backfill_on_start_s))
    ups: http.Upstreams = ctx.resources["ups"]
    only, between, stop_at = None, None, None
    if getattr(ctx.args, "loop", False):
        only, between = lease_users(conn, ctx, now)
        stop_at = time.monotonic() + s.poll_run_max_s
    polling.poll_all(
        conn,
        ups,
        now,
        overlap=timedelta(seconds=s.poll_overlap_s),
        reach_back_to=reach,
        counts=ctx.counts,
        clock=ctx.clock,
        only=only,
        between=between,
        stop_at=stop_at,
    )
    ctx.resources["started"] = True
    for key, n in polling.apply_shadow(conn, now, s, ups, only=only).items():
        ctx.count(f"shadow_{key}", n)
    return ctx.counts.get("api_inserted", 0) + ctx.counts.get("activity_inserted", 0)


def lease_users(
    conn: db.Conn, ctx: jobs.Context, now: datetime
) -> tuple[frozenset[int], Callable[[], None]]:
    """Claims this host's share of the users; returns them, and what renews the leases
    while the run goes on (a run longer than a third of the lease keeps them)."""
    me, ttl = ctx.settings.host_id, timedelta(seconds=ctx.settings.poll_lease_s)
    if not ctx.resources.get("announced"):  # counted live before its first (long) run
        jobs.heartbeat(conn, jobs.host_process("poll"), now, {"starting": True})
        ctx.resources["announced"] = True
    got = leases.claim(conn, me, now, ttl)
    ctx.count("users_leased", len(got.held))
    ctx.count("leases_taken", got.taken)
    ctx.count("leases_taken_over", got.taken_over)
    ctx.count("leases_freed", got.freed)
    ctx.details["poll_hosts"] = got.hosts

    def beat(at: datetime) -> None:
        info = {"users_leased": len(got.held), "running": True}
        jobs.heartbeat(conn, jobs.host_process("poll"), at, info)

    lease = leases.Lease(conn, me, ttl, ctx.clock, beat, renewed_at=now)
    return got.held, lease.keep


def free_leases(conn: db.Conn, ctx: jobs.Context) -> None:
    """A loop stopping cleanly frees its users: the other hosts take them at once."""
    if n := leases.release(conn, ctx.settings.host_id):
        log.info("poll: freed the leases of %d users for the other hosts", n)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("poll", __doc__ or "")
    p.add_argument(
        "--backfill",
        type=jobs.parse_duration,
        metavar="DURATION",
        help="reach back this far on the first run (e.g. 6h)",
    )
    args = p.parse_args(argv)
    return jobs.main("poll", args, run_once, upstreams=True, per_host=True, at_exit=free_leases)


if __name__ == "__main__":
    sys.exit(main())
