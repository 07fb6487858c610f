"""System status (status.html, refreshed every 10 s): pending work per stage, failed
items and quarantined payloads, the last processed event, the last backfill, upstream
error rates, database size, snapshot freshness, heartbeats and the newest job runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common import db
from site_builder.pages import common

Row = dict[str, Any]


@dataclass(frozen=True)
class StatusContext:
    frame: common.Frame
    pending: list[tuple[str, int, str]]
    failed: list[Row]
    quarantine: list[Row]
    quarantine_open: int
    last_event: Row | None
    last_attempt: Row | None
    last_backfill: Row | None
    heartbeats: list[Row]
    jobs: list[Row]
    upstreams: list[Row]
    db_size: int
    tables: list[Row]
    snapshot_at: datetime | None
    mark_at: datetime | None
    stale_after_s: float


_PENDING = """
SELECT
  (SELECT count(*) FROM trade_event WHERE shadow_applied_at IS NULL) AS shadow_trades,
  (SELECT count(*) FROM activity_event WHERE shadow_applied_at IS NULL) AS shadow_activity,
  (SELECT count(*) FROM trade_event WHERE group_state IS NULL) AS ungrouped_trades,
  (SELECT count(*) FROM activity_event WHERE group_state IS NULL) AS ungrouped_activity,
  (SELECT count(*) FROM copy_group WHERE state = 'OPEN') AS open_groups,
  (SELECT count(*) FROM copy_group WHERE state = 'CLOSED') AS closed_groups,
  (SELECT count(*) FROM config_test WHERE state IN ('PENDING', 'RUNNING')) AS config_tests
"""
# job_run grows by a row per busy run: walk its (job, started_at) index one job at a
# time instead of scanning it (a "loose index scan").
_JOBS = """
WITH RECURSIVE jobs AS (
    (SELECT job FROM job_run ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT j.job FROM job_run j WHERE j.job > jobs.job ORDER BY j.job LIMIT 1)
    FROM jobs WHERE jobs.job IS NOT NULL
)
SELECT r.*,
       (SELECT count(*) FROM job_run f WHERE f.job = r.job AND f.status = 'FAILED'
          AND f.started_at > %(hour)s) AS failures_1h
FROM jobs CROSS JOIN LATERAL (
    SELECT job, started_at, finished_at, status, items, error,
           extract(epoch FROM finished_at - started_at) * 1000 AS duration_ms
    FROM job_run WHERE job_run.job = jobs.job ORDER BY started_at DESC LIMIT 1
) r
ORDER BY r.job
"""
_TABLES = """
SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes,
       greatest(t.n_live_tup, c.reltuples::bigint, 0) AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
WHERE c.relkind = 'r' AND n.nspname = 'public'
ORDER BY bytes DESC LIMIT 12
"""


def _upstreams(beats: list[Row]) -> list[Row]:
    """Per process and upstream: requests and errors since the process started."""
    out = []
    for b in beats:
        for name, stats in (b["info"].get("upstreams") or {}).items():
            requests = int(stats.get("requests", 0))
            if not requests:
                continue
            errors = sum(
                int(stats.get(k, 0))
                for k in ("transport_errors", "http_429", "http_4xx", "http_5xx")
            )
            out.append(
                {
                    "process": b["process"],
                    "upstream": name,
                    "requests": requests,
                    "errors": errors,
                    "rate": common.ratio(errors, requests),
                    "http_429": int(stats.get("http_429", 0)),
                    "http_5xx": int(stats.get("http_5xx", 0)),
                    "breaker_trips": int(stats.get("breaker_trips", 0)),
                }
            )
    return out


def last_backfill(conn: db.Conn) -> Row | None:
    """The newest reconcile run (it re-polls the last minutes every run): its recorded
    run, or its heartbeat when the newest runs found nothing (idle runs are not kept)."""
    run = conn.execute(
        """SELECT started_at, status, counts FROM job_run
           WHERE job = 'reconcile' ORDER BY started_at DESC LIMIT 1"""
    ).fetchone()
    beat = conn.execute(
        "SELECT beat_at FROM process_heartbeat WHERE process = 'reconcile'"
    ).fetchone()
    if beat is not None and (run is None or beat["beat_at"] > run["started_at"]):
        return {"started_at": beat["beat_at"], "status": "OK", "counts": {}}
    return run


def context(conn: db.Conn, now: datetime, stale_after_s: float) -> StatusContext:
    p = conn.execute(_PENDING).fetchone()
    assert p is not None
    pending = [
        ("Shadow ledger: fills not applied", p["shadow_trades"], "poll / listen"),
        ("Shadow ledger: MERGE/SPLIT/REDEEM not applied", p["shadow_activity"], "poll"),
        ("Fills not grouped", p["ungrouped_trades"], "simulate (group)"),
        ("Activity not grouped", p["ungrouped_activity"], "simulate (group)"),
        ("Groups open (window running)", p["open_groups"], "simulate"),
        ("Groups closed, not decided", p["closed_groups"], "simulate"),
        ("Config tests queued", p["config_tests"], "config_test"),
    ]
    beats = common.heartbeats(conn)
    q_open = conn.execute(
        "SELECT count(*) AS n FROM quarantine WHERE resolved_at IS NULL"
    ).fetchone()
    size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
    return StatusContext(
        frame=common.frame(conn, now),
        pending=pending,
        failed=list(
            conn.execute(
                """SELECT id, stage, item_key, error, attempts, first_failed_at, last_failed_at
                   FROM failed_item WHERE resolved_at IS NULL
                   ORDER BY last_failed_at DESC LIMIT 50"""
            )
        ),
        quarantine=list(
            conn.execute(
                """SELECT id, source, reason, left(payload, 200) AS payload, seen_count,
                          first_seen_at, last_seen_at
                   FROM quarantine WHERE resolved_at IS NULL
                   ORDER BY last_seen_at DESC LIMIT 20"""
            )
        ),
        quarantine_open=q_open["n"] if q_open else 0,
        last_event=conn.execute(
            """SELECT t.id, t.event_time, t.detect_time, t.source, u.label FROM trade_event t
               JOIN followed_user u ON u.id = t.followed_user_id ORDER BY t.id DESC LIMIT 1"""
        ).fetchone(),
        last_attempt=conn.execute(
            "SELECT id, decision_time, decision FROM copy_attempt ORDER BY id DESC LIMIT 1"
        ).fetchone(),
        last_backfill=last_backfill(conn),
        heartbeats=beats,
        jobs=list(conn.execute(_JOBS, {"hour": now - timedelta(hours=1)})),
        upstreams=_upstreams(beats),
        db_size=size["b"] if size else 0,
        tables=list(conn.execute(_TABLES)),
        snapshot_at=common.latest_bucket(conn),
        mark_at=conn.execute("SELECT max(bucket) AS b FROM market_price_snapshot").fetchone()["b"],  # type: ignore[index]
        stale_after_s=stale_after_s,
    )
