"""System status (status.html, refreshed every 10 s): pending work per stage, failed
items and quarantined payloads, the last processed event, the last backfill, upstream
error rates, the upstream probes of the last hour (and the Data API's indexing lag),
database size, snapshot freshness, heartbeats and the newest job runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.store import db, metrics, probes, status
from site_builder.pages import common

Row = dict[str, Any]


@dataclass(frozen=True)
class StatusContext:
    frame: common.Frame
    checks: list[status.Check]
    pending: list[tuple[str, int, str]]
    failed: list[Row]
    quarantine: list[Row]
    quarantine_open: int
    last_event: Row | None
    last_attempt: Row | None
    last_backfill: Row | None
    heartbeats: list[Row]
    jobs: list[Row]
    crontab_errors: list[str]
    upstreams: list[Row]
    probes: probes.Summary
    db_size: int
    tables: list[Row]
    snapshot_at: datetime | None
    mark_at: datetime | None
    stale_after_s: float


PROBE_WINDOW = "1 hour"  # the probes section's; the metrics' figures over 15 minutes

_TABLES = """
SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes,
       greatest(t.n_live_tup, c.reltuples::bigint, 0) AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
WHERE c.relkind = 'r' AND n.nspname = 'public'
ORDER BY bytes DESC LIMIT 12
"""


def _upstreams(beats: list[Row], runs: list[Row]) -> list[Row]:
    """Per process (or job) and upstream: requests and errors — since the process
    started for the long-running ones (heartbeats), over the last hour for the
    scheduled jobs (their runs' counts)."""
    totals: dict[tuple[str, str], dict[str, int]] = {}
    sources = [(b["process"], b["info"].get("upstreams")) for b in beats]
    sources += [(f"{r['job']} (1 h)", r["upstreams"]) for r in runs]
    for process, upstreams in sources:
        for name, stats in (upstreams or {}).items():
            total = totals.setdefault((process, name), {})
            for key, n in stats.items():
                total[key] = total.get(key, 0) + int(n)
    out = []
    for (process, name), stats in sorted(totals.items()):
        requests = stats.get("requests", 0)
        if not requests:
            continue
        errors = sum(
            stats.get(k, 0) for k in ("transport_errors", "http_429", "http_4xx", "http_5xx")
        )
        out.append(
            {
                "process": process,
                "upstream": name,
                "requests": requests,
                "errors": errors,
                "rate": common.ratio(errors, requests),
                "http_429": stats.get("http_429", 0),
                "http_5xx": stats.get("http_5xx", 0),
                "breaker_trips": stats.get("breaker_trips", 0),
            }
        )
    return out


_JOB_UPSTREAMS = """
SELECT job, counts -> 'upstreams' AS upstreams FROM job_run
WHERE started_at > %(since)s AND counts ? 'upstreams'
"""


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
    pending = [(p.stage, p.count, p.who) for p in status.pending(conn)]
    beats = status.heartbeats(conn)
    q_open = conn.execute(
        "SELECT count(*) AS n FROM quarantine WHERE resolved_at IS NULL"
    ).fetchone()
    size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
    return StatusContext(
        frame=common.frame(conn, now),
        checks=status.readiness(conn, now, stale_after_s),
        pending=pending,
        failed=status.failed_items(conn),
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
        jobs=status.jobs(conn, now),
        crontab_errors=list(status.scheduler_info(beats).get("errors") or []),
        upstreams=_upstreams(
            beats, list(conn.execute(_JOB_UPSTREAMS, {"since": now - timedelta(hours=1)}))
        ),
        probes=probes.summary(conn, now, PROBE_WINDOW, metrics.HISTORY_CUTOFF),
        db_size=size["b"] if size else 0,
        tables=list(conn.execute(_TABLES)),
        snapshot_at=common.latest_bucket(conn),
        mark_at=conn.execute("SELECT max(bucket) AS b FROM market_price_snapshot").fetchone()["b"],  # type: ignore[index]
        stale_after_s=stale_after_s,
    )
