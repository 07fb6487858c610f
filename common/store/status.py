"""What the operator asks "is it working?" with: pending work per stage, each job's last
run, failed items, heartbeats, and readiness. The status command (`python -m
functions.ops status`), the readiness check (`ops ready`, `GET /api/ready`) and the
status page all read it from here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.store import db

Row = dict[str, Any]
# The processes that must beat for the system to be ready (supervisor runs them).
REQUIRED_PROCESSES = ("scheduler", "listen", "simulate", "site_builder")


@dataclass(frozen=True)
class Pending:
    stage: str
    count: int
    who: str  # the job or process that moves it on


_PENDING = """
SELECT
  (SELECT count(*) FROM trade_event WHERE shadow_applied_at IS NULL) AS shadow_trades,
  (SELECT count(*) FROM activity_event WHERE shadow_applied_at IS NULL) AS shadow_activity,
  (SELECT count(*) FROM trade_event WHERE group_state IS NULL) AS ungrouped_trades,
  (SELECT count(*) FROM activity_event WHERE group_state IS NULL) AS ungrouped_activity,
  (SELECT count(*) FROM copy_group WHERE state = 'OPEN') AS open_groups,
  (SELECT count(*) FROM copy_group WHERE state = 'CLOSED') AS closed_groups,
  (SELECT count(*) FROM config_test WHERE state IN ('PENDING', 'RUNNING')) AS config_tests,
  (SELECT count(*) FROM system_checkpoint
    WHERE name = 'listen.backfill_request' AND cursor_time IS NOT NULL) AS backfills
"""


def pending(conn: db.Conn) -> list[Pending]:
    p = conn.execute(_PENDING).fetchone()
    assert p is not None
    return [
        Pending("Shadow ledger: fills not applied", p["shadow_trades"], "poll / listen"),
        Pending("Shadow ledger: MERGE/SPLIT/REDEEM not applied", p["shadow_activity"], "poll"),
        Pending("Fills not grouped", p["ungrouped_trades"], "simulate (group)"),
        Pending("Activity not grouped", p["ungrouped_activity"], "simulate (group)"),
        Pending("Groups open (window running)", p["open_groups"], "simulate"),
        Pending("Groups closed, not decided", p["closed_groups"], "simulate"),
        Pending("Config tests queued", p["config_tests"], "config_test"),
        Pending("Backfill requests open", p["backfills"], "poll"),
    ]


# job_run grows by a row per run: walk its (job, started_at) index one job at a time
# instead of scanning it (a "loose index scan").
_JOBS = """
WITH RECURSIVE jobs AS (
    (SELECT job FROM job_run ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT j.job FROM job_run j WHERE j.job > jobs.job ORDER BY j.job LIMIT 1)
    FROM jobs WHERE jobs.job IS NOT NULL
)
SELECT r.*,
       (SELECT count(*) FROM job_run f WHERE f.job = r.job
          AND f.status IN ('FAILED', 'TIMEOUT') AND f.started_at > %(since)s) AS failures_1h,
       (SELECT max(o.started_at) FROM job_run o WHERE o.job = r.job
          AND o.status = 'OK') AS last_ok_at
FROM jobs CROSS JOIN LATERAL (
    SELECT job, started_at, finished_at, status, items, error, trigger,
           extract(epoch FROM coalesce(finished_at, %(now)s) - started_at) * 1000
               AS duration_ms
    FROM job_run WHERE job_run.job = jobs.job ORDER BY started_at DESC LIMIT 1
) r
ORDER BY r.job
"""


def jobs(conn: db.Conn, now: datetime) -> list[Row]:
    """Each job's newest run, its failures in the last hour, its last success and when
    the scheduler runs it next (`next_at`, an ISO string, or None)."""
    planned = scheduler_info(heartbeats(conn)).get("jobs") or {}
    runs = list(conn.execute(_JOBS, {"since": now - timedelta(hours=1), "now": now}))
    for run in runs:
        run["next_at"] = (planned.get(run["job"]) or {}).get("next")
    return runs


def failed_items(conn: db.Conn, limit: int = 50) -> list[Row]:
    return list(
        conn.execute(
            """SELECT id, stage, item_key, error, attempts, first_failed_at, last_failed_at
               FROM failed_item WHERE resolved_at IS NULL
               ORDER BY last_failed_at DESC LIMIT %s""",
            (limit,),
        )
    )


def heartbeats(conn: db.Conn) -> list[Row]:
    return list(conn.execute("SELECT * FROM process_heartbeat ORDER BY process"))


def scheduler_info(beats: list[Row]) -> dict[str, Any]:
    """The scheduler's heartbeat info: {"jobs": {job: {"next": …}}, "errors": [crontab]}."""
    return next((b["info"] or {} for b in beats if b["process"] == "scheduler"), {})


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def readiness(conn: db.Conn, now: datetime, stale_after_s: float) -> list[Check]:
    """Database reachable (the caller got a connection and this query answers) and the
    required processes' heartbeats younger than `stale_after_s`."""
    row = conn.execute("SELECT now() AS t").fetchone()
    checks = [Check("database", row is not None, "reachable")]
    listed = heartbeats(conn)
    beats = {b["process"]: b for b in listed}
    for process in REQUIRED_PROCESSES:
        beat = beats.get(process)
        if beat is None:
            checks.append(Check(process, False, "no heartbeat yet"))
            continue
        age = (now - beat["beat_at"]).total_seconds()
        checks.append(Check(process, age <= stale_after_s, f"heartbeat {age:.0f}s ago"))
    errors = scheduler_info(listed).get("errors")
    if errors:
        checks.append(Check("crontab", False, "; ".join(errors)))
    return checks


def ready(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)
