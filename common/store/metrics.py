"""The metric catalogue (SPEC §11): named series with labels, one value per minute, that
rules, the status page and `/metrics` read. Each metric is one query over what the
pipeline already stores; README.md's catalogue table lists them (tests/test_metrics.py
keeps the two in step). `functions.metrics` writes them into `metric_point`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.store import db

DETECT_WINDOW = "15 minutes"  # the detect-lag percentile's window
HISTORY_CUTOFF = "1 hour"  # older fills (a backfill, a new leader's history) have no lag


@dataclass(frozen=True)
class Metric:
    name: str
    labels: tuple[str, ...]
    unit: str
    meaning: str
    sql: str  # columns: the labels by name, then `value`; binds: see `collect`


@dataclass(frozen=True)
class Point:
    name: str
    labels: dict[str, str]
    value: float


CATALOGUE: tuple[Metric, ...] = (
    Metric(
        "job.last_ok_age_s",
        ("job",),
        "s",
        "Seconds since the job's newest run that ended OK (a job with none has no value).",
        # the jobs by a walk of job_run's (job, started_at) index, not a scan of its rows
        """WITH RECURSIVE j(job) AS (
               (SELECT job FROM job_run ORDER BY job LIMIT 1)
               UNION ALL
               SELECT (SELECT n.job FROM job_run n WHERE n.job > j.job ORDER BY n.job LIMIT 1)
               FROM j WHERE j.job IS NOT NULL)
           SELECT j.job, extract(epoch FROM %(now)s - r.finished_at) AS value
           FROM j
           CROSS JOIN LATERAL (
               SELECT finished_at FROM job_run
               WHERE job = j.job AND status = 'OK' AND finished_at IS NOT NULL
               ORDER BY started_at DESC LIMIT 1) r""",
    ),
    Metric(
        "queue.groups_undecided",
        (),
        "groups",
        "Copy groups closed and waiting for their decision (`copy_group.state = 'CLOSED'`).",
        "SELECT count(*) AS value FROM copy_group WHERE state = 'CLOSED'",
    ),
    Metric(
        "listener.connected",
        (),
        "0/1",
        "1 when the chain listener's heartbeat is fresh (OCULUS_RECONCILE_STALE_AFTER_S) "
        "and it says its WebSocket is connected, else 0.",
        """SELECT coalesce(max(CASE WHEN beat_at >= %(now)s - make_interval(secs => %(stale)s)
                                     AND (info ->> 'connected')::boolean THEN 1 ELSE 0 END),
                           0) AS value
           FROM process_heartbeat WHERE process = 'listen'""",
    ),
    Metric(
        "detect.lag_p95_s",
        ("source",),
        "s",
        f"95th percentile of detect time − event time of the fills detected in the last "
        f"{DETECT_WINDOW}, by source (CHAIN: after the block; DATA_API: after the API's "
        f"timestamp); fills more than {HISTORY_CUTOFF} old when detected are left out.",
        """SELECT source, percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY extract(epoch FROM detect_time - event_time)) AS value
            FROM trade_event
            WHERE detect_time >= %(now)s - %(window)s::interval
              AND detect_time <= %(now)s
              AND event_time >= detect_time - %(history)s::interval
            GROUP BY source""",
    ),
)
BY_NAME = {m.name: m for m in CATALOGUE}


def collect(conn: db.Conn, now: datetime, stale_after_s: float) -> list[Point]:
    """Every metric's values at `now`."""
    params = {
        "now": now,
        "stale": stale_after_s,
        "window": DETECT_WINDOW,
        "history": HISTORY_CUTOFF,
    }
    out = []
    for m in CATALOGUE:
        for row in conn.execute(m.sql, params):
            if row["value"] is None:
                continue
            labels = {k: str(row[k]) for k in m.labels}
            out.append(Point(m.name, labels, float(row["value"])))
    return out


def write(conn: db.Conn, points: list[Point], at: datetime) -> int:
    """Stores the points at `at` (its minute), in millionths of their unit; a rerun of
    the minute overwrites."""
    minute = at.replace(second=0, microsecond=0)
    rows: list[Any] = [
        (p.name, json.dumps(p.labels, sort_keys=True), minute, round(p.value * 1_000_000))
        for p in points
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO metric_point (name, labels, at, value_micros)
               VALUES (%s, %s::jsonb, %s, %s)
               ON CONFLICT (name, labels, at) DO UPDATE SET value_micros = EXCLUDED.value_micros""",
            rows,
        )
    return len(rows)


def latest(conn: db.Conn) -> list[dict[str, Any]]:
    """Each series' newest point (name, labels, at, value_micros)."""
    return conn.execute(
        """SELECT DISTINCT ON (name, labels) name, labels, at, value_micros FROM metric_point
           WHERE at >= now() - interval '1 day'
           ORDER BY name, labels, at DESC"""
    ).fetchall()


def prometheus_name(name: str) -> str:
    """The Prometheus name of a catalogue metric: `oculus_` + its name, dots as
    underscores (`job.last_ok_age_s` → `oculus_job_last_ok_age_s`)."""
    return "oculus_" + name.replace(".", "_")
