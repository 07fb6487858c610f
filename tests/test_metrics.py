"""The metric catalogue (SPEC §11): README's table and the code agree, and the job
writes each series once a minute with the values the pipeline's tables give."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

from common.runtime import jobs, settings
from common.store import db
from common.store import metrics as store
from functions import metrics
from tests import site_data

NOW = site_data.NOW


def readme_rows() -> dict[str, tuple[tuple[str, ...], str]]:
    text = (settings.ROOT / "README.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_.]+)` \|([^|]*)\|([^|]+)\|", section, flags=re.M)
    return {
        name: (tuple(re.findall(r"`([a-z_]+)`", labels)), unit.strip())
        for name, labels, unit in rows
    }


def test_readme_lists_every_metric_with_its_labels_and_unit() -> None:
    assert readme_rows() == {m.name: (m.labels, m.unit) for m in store.CATALOGUE}


def percentile_cont(values: list[float], q: float) -> float:
    """Postgres's percentile_cont: linear between the two nearest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def points(conn: db.Conn) -> dict[tuple[str, str], Any]:
    rows = conn.execute(
        "SELECT name, labels::text AS labels, at, value_micros::float8 / 1e6 AS value"
        " FROM metric_point"
    )
    return {(r["name"], r["labels"]): r for r in rows}


def test_the_job_writes_each_series_once_a_minute(conn: db.Conn) -> None:
    site_data.load(conn)
    conn.execute(  # every fill detected an hour ago, but those below
        "UPDATE trade_event SET detect_time = %s", (NOW - timedelta(hours=1),)
    )
    recent = conn.execute(
        "SELECT id FROM trade_event WHERE source = 'CHAIN' ORDER BY id LIMIT 5"
    ).fetchall()
    assert len(recent) == 5  # and one more, below
    lags = []
    for i, r in enumerate(recent):  # detected 1..5 minutes ago, 0.5 .. 4.5 s after
        lag = 0.5 + i % 5
        lags.append(lag)
        at = NOW - timedelta(minutes=i + 1)
        conn.execute(
            "UPDATE trade_event SET detect_time = %s,"
            " event_time = %s - make_interval(secs => %s) WHERE id = %s",
            (at, at, lag, r["id"]),
        )
    conn.execute(  # history: a fill two days old, detected a minute ago (no lag figure)
        "UPDATE trade_event SET detect_time = %s, event_time = %s - interval '2 days'"
        " WHERE id = (SELECT max(id) FROM trade_event WHERE source = 'CHAIN')",
        (NOW - timedelta(minutes=1), NOW),
    )
    conn.execute(
        "UPDATE copy_group SET state = 'CLOSED' WHERE id = (SELECT min(id) FROM copy_group)"
    )
    for job, status, ago in (("price", "OK", 90), ("price", "FAILED", 30), ("rollup", "FAILED", 5)):
        conn.execute(
            "INSERT INTO job_run (job, started_at, finished_at, status, pid, host, trigger)"
            " VALUES (%s, %s, %s, %s, 1, 'h', 'cron')",
            (job, NOW - timedelta(seconds=ago + 1), NOW - timedelta(seconds=ago), status),
        )
    jobs.heartbeat(conn, "listen", NOW - timedelta(seconds=3), {"connected": True})
    ctx = jobs.Context(args=argparse.Namespace(), settings=settings.get(), clock=lambda: NOW)

    written = metrics.run_once(conn, ctx)
    got = points(conn)
    assert written == len(got)
    expected = {
        ("job.last_ok_age_s", '{"job": "price"}'): 90.0,  # rollup: never OK, no value
        ("queue.groups_undecided", "{}"): 1.0,
        ("listener.connected", "{}"): 1.0,
        ("detect.lag_p95_s", '{"source": "CHAIN"}'): percentile_cont(lags, 0.95),
    }
    assert {k: got[k]["value"] for k in expected} == expected
    assert ("job.last_ok_age_s", '{"job": "rollup"}') not in got  # never OK: no value
    assert {k[0] for k in set(got) - set(expected)} <= {"job.last_ok_age_s", "detect.lag_p95_s"}
    assert {r["at"] for r in got.values()} == {NOW.replace(second=0)}

    # the same minute again: overwritten, not doubled; the listener gone quiet reads 0
    jobs.heartbeat(conn, "listen", NOW - timedelta(minutes=10), {"connected": True})
    metrics.run_once(conn, ctx)
    again = points(conn)
    assert again.keys() == got.keys()
    assert again[("listener.connected", "{}")]["value"] == 0.0


def test_prune_keeps_every_minute_a_week_then_the_hours(conn: db.Conn, db_url: str) -> None:
    from functions import prune

    now = jobs.utcnow().replace(second=0, microsecond=0)
    start = (now - timedelta(days=9)).replace(minute=0)
    minutes = [start + timedelta(minutes=i) for i in range(0, 9 * 24 * 60, 10)]
    for at in minutes:  # a point every 10 minutes for 9 days
        store.write(conn, [store.Point("queue.groups_undecided", {}, 1.0)], at)
    settings.get.cache_clear()
    assert prune.main(["--once", "--database-url", db_url]) == 0
    left = [r["at"] for r in conn.execute("SELECT at FROM metric_point ORDER BY at")]
    cutoff = prune.floor_to(now - timedelta(days=7), prune.HOUR)
    assert [t for t in left if t >= cutoff] == [t for t in minutes if t >= cutoff]
    old = [t for t in left if t < cutoff]
    assert old == [t for t in minutes if t < cutoff and t.minute == 0]
    assert len(old) == 2 * 24
