"""Config test (every 2 s): runs the "Test config" requests the write API queues in
`config_test`. Each PENDING row is claimed (FOR UPDATE SKIP LOCKED, so two runners never
take the same one), its proposal re-decides the last `hours` of groups (`whatif.report`,
and the latency sweep, `sweep.report`) and the report is kept (DONE); a proposal that
cannot run keeps its error (FAILED). A row left RUNNING by a crashed run is queued again
after 10 minutes, and given up after 3 tries.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from common.runtime import jobs, settings
from common.store import copy_configs, db, sweep, whatif

log = logging.getLogger(__name__)
STALE = timedelta(minutes=10)
MAX_ATTEMPTS = 3
BATCH = 5  # reports per run: a queue of them does not hold the loop for long

_REQUEUE = """
UPDATE config_test SET
    state = CASE WHEN attempts >= %(max)s THEN 'FAILED' ELSE 'PENDING' END,
    finished_at = CASE WHEN attempts >= %(max)s THEN %(now)s END,
    error = CASE WHEN attempts >= %(max)s
                 THEN 'gave up: the run stopped without a result ' || attempts || ' times' END
WHERE state = 'RUNNING' AND started_at < %(cutoff)s
"""
_CLAIM = """
UPDATE config_test SET state = 'RUNNING', started_at = %(now)s, attempts = attempts + 1
WHERE id = (SELECT id FROM config_test WHERE state = 'PENDING' ORDER BY id
            LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, proposal, hours, attempts
"""
_FINISH = """
UPDATE config_test SET state = %(state)s, finished_at = %(now)s, report = %(report)s,
    error = %(error)s
WHERE id = %(id)s AND state = 'RUNNING' AND attempts = %(attempts)s
"""


def evaluate(
    conn: db.Conn, proposal: dict[str, Any], hours: int, end: datetime, s: settings.Settings
) -> Any:
    """Returns the what-if report of a stored proposal over the `hours` before `end`,
    with the proposal's latency sweep (`sweep`, as functions.sweep stores it)."""
    users = {int(u): dict(v) for u, v in proposal.get("users", {}).items()}
    proposed = copy_configs.propose(conn, dict(proposal.get("global", {})), users)
    start = end - timedelta(hours=hours)
    inputs = whatif.load_for(conn, start, end, proposed)
    out = whatif.report(conn, start, end, proposed, inputs)
    out["sweep"] = sweep.report(
        conn, inputs, proposed, s.ladder_delays_ms, end, s.score_mark_max_age_s
    )
    return out


def run_one(conn: db.Conn, ctx: jobs.Context) -> bool:
    """Claims and runs the oldest pending request; returns False when none is pending."""
    row = conn.execute(_CLAIM, {"now": ctx.clock()}).fetchone()
    if row is None:
        return False
    result: dict[str, Any] = {"state": "DONE", "report": None, "error": None}
    try:
        report = evaluate(conn, row["proposal"], row["hours"], ctx.clock(), ctx.settings)
        result["report"] = Jsonb(report)
    except psycopg.OperationalError:
        raise  # the database went away: the row stays RUNNING and is queued again later
    except Exception as exc:
        # A bad proposal (or a what-if bug) fails this request, not the loop.
        if not conn.autocommit:
            conn.rollback()
        log.warning("config test %s failed: %s", row["id"], exc)
        result.update(state="FAILED", error=f"{type(exc).__name__}: {exc}")
    conn.execute(
        _FINISH, {**result, "id": row["id"], "attempts": row["attempts"], "now": ctx.clock()}
    )
    ctx.count(result["state"].lower())
    return True


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now = ctx.clock()
    requeued = conn.execute(
        _REQUEUE, {"max": MAX_ATTEMPTS, "now": now, "cutoff": now - STALE}
    ).rowcount
    ctx.count("requeued", requeued)
    done = 0
    while done < BATCH and not ctx.stop.stopped and run_one(conn, ctx):
        done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("config_test", __doc__ or "")
    p.set_defaults(interval=2.0)
    args = p.parse_args(argv)
    return jobs.main("config_test", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
