"""The metric catalogue (SPEC §11): named series with labels, one value per minute, that
rules, the status page and `/metrics` read. Each metric is one query over what the
pipeline already stores (the probes' through common/store/probes.py's statements, which
the status page reads too), or, for `leader.*`, the Leaders page's own figures
(common/store/leaders.py); README.md's catalogue table lists them (tests/test_metrics.py
keeps the two in step). `functions.metrics` writes them into `metric_point`."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.store import db, leaders, probes
from common.upstream import probes as upstream_probes

DETECT_WINDOW = "15 minutes"  # the detect-lag and probe percentiles' window
HISTORY_CUTOFF = "1 hour"  # older fills (a backfill, a new leader's history) have no lag
INDEX_LAG_WINDOW = "1 hour"  # the Data API's indexing lag: fills confirmed this recently
RETENTION_MIN_COPIES = 20  # leader.retention_30d below this many copies is noise

Row = dict[str, Any]


class Reading:
    """One collection's inputs: the binds every metric's SQL may use, and what the
    metrics computed in Python share (read once, when first asked)."""

    def __init__(self, conn: db.Conn, params: dict[str, Any]) -> None:
        self.conn, self.params = conn, params

    @functools.cached_property
    def leaders(self) -> list[leaders.Figures]:
        return leaders.figures(self.conn, self.params["now"])


@dataclass(frozen=True)
class Metric:
    name: str
    labels: tuple[str, ...]
    unit: str
    meaning: str
    sql: str = ""  # columns: the labels by name, then `value`; binds: see `collect`
    rows: Callable[[Reading], Iterable[Row]] | None = None  # instead of `sql`, same columns


@dataclass(frozen=True)
class Point:
    name: str
    labels: dict[str, str]
    value: float


def _leader_rows(
    value: Callable[[leaders.Figures], object], keep: Callable[[leaders.Figures], bool]
) -> Callable[[Reading], Iterable[Row]]:
    def rows(reading: Reading) -> Iterable[Row]:
        return [{"user": str(f.user_id), "value": value(f)} for f in reading.leaders if keep(f)]

    return rows


# Each portfolio's newest snapshot equity against its highest so far (an index probe
# each: portfolio_snapshot_peak_idx, the global one portfolio_snapshot_global_equity_idx),
# users not REMOVED, and the global copy.
_DRAWDOWN = """
WITH p(scope, user_id) AS (
    SELECT s.scope, u.id FROM followed_user u
    CROSS JOIN (VALUES ('EXEC_USER'), ('SHADOW_USER')) s(scope)
    WHERE u.copy_mode <> 'REMOVED')
SELECT p.scope, p.user_id::text AS "user", 100 * (1 - n.equity::numeric / k.peak) AS value
FROM p
CROSS JOIN LATERAL (
    SELECT equity_micros AS equity FROM portfolio_snapshot
    WHERE portfolio_scope = p.scope AND followed_user_id = p.user_id AND bucket <= %(now)s
    ORDER BY portfolio_scope DESC, followed_user_id DESC, bucket DESC LIMIT 1) n
CROSS JOIN LATERAL (
    SELECT max(equity_micros) AS peak FROM portfolio_snapshot
    WHERE portfolio_scope = p.scope AND followed_user_id = p.user_id
      AND bucket <= %(now)s) k
WHERE k.peak > 0
UNION ALL
SELECT 'EXEC_GLOBAL', '', 100 * (1 - n.equity::numeric / k.peak)
FROM (SELECT equity_micros AS equity FROM portfolio_snapshot
      WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL AND bucket <= %(now)s
      ORDER BY portfolio_scope DESC, followed_user_id DESC, bucket DESC LIMIT 1) n
CROSS JOIN (SELECT max(equity_micros) AS peak FROM portfolio_snapshot
            WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL
              AND bucket <= %(now)s) k
WHERE k.peak > 0
"""

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
    Metric(
        "upstream.latency_p95_ms",
        ("upstream",),
        "ms",
        f"95th percentile of the probes' latency over the last {DETECT_WINDOW}, by upstream "
        "(data_api, clob, gamma, chain; failed probes count with the time they took).",
        f"SELECT upstream, p95_ms AS value FROM ({probes.STATS}) s",  # noqa: S608
    ),
    Metric(
        "upstream.error_rate",
        ("upstream",),
        "0..1",
        f"Failed probes / probes over the last {DETECT_WINDOW}, by upstream (no probe: no value).",
        f"SELECT upstream, error_rate AS value FROM ({probes.STATS}) s",  # noqa: S608
    ),
    Metric(
        "chain.head_age_s",
        (),
        "s",
        "Seconds from the chain's head block's timestamp, as the newest chain probe that "
        "read it saw it, to now (it grows while the probes fail).",
        f"SELECT age_s AS value FROM ({probes.HEAD}) h",  # noqa: S608
    ),
    Metric(
        "upstream.data_api_index_lag_p95_s",
        (),
        "s",
        f"95th percentile of (Data API row seen − chain log's block time) over the fills both "
        f"sources saw, the chain first, whose Data API row was seen in the last "
        f"{INDEX_LAG_WINDOW} (chain fills detected more than {HISTORY_CUTOFF} before that "
        "window are left out). Seen = when our poll's page arrived (asked "
        "OCULUS_POLL_CONFIRM_AFTER_S after the chain fill, then 2×, 4×, … later): an upper "
        "bound of the API's own lag.",
        f"SELECT p95_s AS value FROM ({probes.INDEX_LAG}) l WHERE n > 0",  # noqa: S608
    ),
    Metric(
        "leader.retention_30d",
        ("user",),
        "ratio",
        f"The Leaders page's alpha retention 30 d (Σ exec / Σ ideal of the copy's "
        f"attributed attempts), for leaders with at least {RETENTION_MIN_COPIES} copy "
        "attempts in 30 d (below that the ratio is noise).",
        rows=_leader_rows(
            lambda f: f.retention,
            lambda f: f.attempts >= RETENTION_MIN_COPIES and f.retention is not None,
        ),
    ),
    Metric(
        "leader.copies_30d",
        ("user",),
        "attempts",
        "The Leaders page's copy attempts 30 d: the leader's own copy's (EXEC_USER) "
        "decisions, executed or skipped.",
        rows=_leader_rows(lambda f: f.attempts, lambda f: True),
    ),
    Metric(
        "leader.roi_7d",
        ("user",),
        "ratio",
        "The Leaders page's ROI 7 d of the leader's own copy: PnL in the window / equity "
        "at its start (no snapshot then: no value).",
        rows=_leader_rows(lambda f: f.roi_7d, lambda f: f.roi_7d is not None),
    ),
    Metric(
        "portfolio.drawdown_pct",
        ("scope", "user"),
        "%",
        "100 × (1 − newest snapshot equity / highest snapshot equity so far) of each "
        "portfolio: EXEC_USER and SHADOW_USER per user not REMOVED, EXEC_GLOBAL with user "
        '"" (the circuit breaker\'s peak, without its floor at the starting cash).',
        _DRAWDOWN,
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
        "lag_window": INDEX_LAG_WINDOW,
        "upstreams": list(upstream_probes.UPSTREAMS),
    }
    reading = Reading(conn, params)
    out = []
    for m in CATALOGUE:
        rows = m.rows(reading) if m.rows is not None else conn.execute(m.sql, params)
        for row in rows:
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
