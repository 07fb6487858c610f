"""The metric catalogue (SPEC §11): README's table and the code agree, and the job
writes each series once a minute with the values the pipeline's tables give."""

from __future__ import annotations

import argparse
import json
import re
import socket
from datetime import timedelta
from typing import Any

import pytest

from common.runtime import jobs, settings
from common.store import db, probes
from common.store import metrics as store
from functions import metrics
from tests import site_data

NOW = site_data.NOW
UPSTREAMS = ("data_api", "clob", "gamma", "chain")


def offline() -> settings.Settings:
    """Settings whose upstreams are a loopback port nothing listens on: probes fail at
    once (a test never probes Polymarket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = f"http://127.0.0.1:{port}"
    return settings.Settings(
        data_api_url=http, clob_url=http, gamma_url=http, chain_ws_url=f"ws://127.0.0.1:{port}"
    )


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
    ctx = jobs.Context(args=argparse.Namespace(), settings=offline(), clock=lambda: NOW)

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
    assert {k[0] for k in set(got) - set(expected)} == {
        "job.last_ok_age_s",
        "upstream.latency_p95_ms",
        "upstream.error_rate",  # every probe failed: nothing listens there
        "leader.copies_30d",
        "leader.roi_7d",
        "portfolio.drawdown_pct",
    }  # no chain head read, no fill both sources saw, too few copies for a retention
    assert {got[("upstream.error_rate", f'{{"upstream": "{u}"}}')]["value"] for u in UPSTREAMS} == {
        1.0
    }
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


def values(conn: db.Conn, at: Any = NOW) -> dict[tuple[str, str], float]:
    """The catalogue at `at`: (name, labels as JSON text) → value."""
    return {
        (p.name, json.dumps(p.labels, sort_keys=True)): p.value
        for p in store.collect(conn, at, 30.0)
    }


def add_probe(
    conn: db.Conn, upstream: str, ago_s: float, latency_ms: float, ok: bool, **more: Any
) -> None:
    conn.execute(
        "INSERT INTO upstream_probe (upstream, at, ok, latency_micros, head_block, head_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            upstream, NOW - timedelta(seconds=ago_s), ok, round(latency_ms * 1000),
            more.get("head_block"), more.get("head_at"),
        ),
    )  # fmt: skip


def test_probe_metrics_are_the_probes_of_the_last_15_minutes(conn: db.Conn) -> None:
    window: dict[str, list[tuple[float, bool]]] = {
        "data_api": [(40 + 7 * i, i % 4 != 0) for i in range(30)],  # every 30 s, 8 failed
        "gamma": [(900.0, False), (12.5, True)],
    }
    for upstream, probes_ in window.items():
        for i, (ms, ok) in enumerate(probes_):
            add_probe(conn, upstream, 30 * i + 1, ms, ok)
    add_probe(conn, "data_api", 15 * 60 + 1, 99_999, False)  # older than the window
    add_probe(conn, "data_api", -30, 99_999, False)  # after `now` (a later run)
    add_probe(conn, "clob", 20 * 60, 50, True)  # nothing in the window: no value
    head_at = NOW - timedelta(seconds=42)
    add_probe(conn, "chain", 90, 120, True, head_block=7, head_at=head_at - timedelta(seconds=30))
    add_probe(conn, "chain", 60, 130, True, head_block=9, head_at=head_at)
    add_probe(conn, "chain", 30, 5000, False)  # the newest failed: the head is the older one
    got = values(conn)
    for upstream, probes_ in window.items():
        key = f'{{"upstream": "{upstream}"}}'
        latencies = [ms for ms, _ in probes_]
        assert got[("upstream.latency_p95_ms", key)] == pytest.approx(
            percentile_cont(latencies, 0.95), abs=1e-6
        )
        failed = sum(1 for _, ok in probes_ if not ok)
        assert got[("upstream.error_rate", key)] == pytest.approx(failed / len(probes_), abs=1e-6)
    chain = '{"upstream": "chain"}'
    assert got[("upstream.error_rate", chain)] == pytest.approx(1 / 3, abs=1e-6)
    assert got[("upstream.latency_p95_ms", chain)] == pytest.approx(
        percentile_cont([120, 130, 5000], 0.95), abs=1e-6
    )
    assert ("upstream.error_rate", '{"upstream": "clob"}') not in got
    assert ("upstream.latency_p95_ms", '{"upstream": "clob"}') not in got
    assert got[("chain.head_age_s", "{}")] == 42.0


def test_index_lag_is_the_chain_fills_the_data_api_confirmed_in_the_last_hour(
    conn: db.Conn,
) -> None:
    site_data.load(conn)
    chain = [r["id"] for r in conn.execute("SELECT id FROM trade_event ORDER BY id")]
    assert len(chain) == 6  # all CHAIN in the dataset
    lags = {chain[0]: 4.5, chain[1]: 11.0, chain[2]: 6.25, chain[3]: 30.0}
    for i, (trade, lag) in enumerate(lags.items()):
        seen = NOW - timedelta(minutes=10 * i + 1)  # the Data API row, seen in the hour
        conn.execute(
            "UPDATE trade_event SET api_source_id = %(s)s, confirmed_at = %(c)s,"
            " event_time = %(c)s - make_interval(secs => %(lag)s),"
            " detect_time = %(c)s - make_interval(secs => %(lag)s) + interval '2 s'"
            " WHERE id = %(id)s",
            {"s": f"api:{trade}", "c": seen, "lag": lag, "id": trade},
        )
    conn.execute(  # confirmed 2 hours ago: out of the window
        "UPDATE trade_event SET api_source_id = 'api:old', confirmed_at = %(c)s,"
        " event_time = %(c)s - interval '5 s', detect_time = %(c)s WHERE id = %(id)s",
        {"c": NOW - timedelta(hours=2), "id": chain[4]},
    )
    conn.execute(  # a chain fill of 3 h ago (a catch-up) confirmed now: left out
        "UPDATE trade_event SET api_source_id = 'api:late', confirmed_at = %(c)s,"
        " event_time = %(c)s - interval '3 hours', detect_time = %(c)s - interval '3 hours'"
        " WHERE id = %(id)s",
        {"c": NOW - timedelta(minutes=2), "id": chain[5]},
    )
    got = values(conn)
    expected = percentile_cont(list(lags.values()), 0.95)
    assert got[("upstream.data_api_index_lag_p95_s", "{}")] == pytest.approx(expected, abs=1e-6)
    page = probes.summary(conn, NOW, "1 hour", store.HISTORY_CUTOFF).index_lag
    assert page["n"] == 4
    assert page["p95_s"] == pytest.approx(expected, abs=1e-9)
    assert page["p50_s"] == pytest.approx(percentile_cont(list(lags.values()), 0.5), abs=1e-9)
    conn.execute("UPDATE trade_event SET source = 'DATA_API'")  # the API saw them first
    assert ("upstream.data_api_index_lag_p95_s", "{}") not in values(conn)


def attribute(conn: db.Conn, user: int) -> None:
    """Attributions for every EXEC_USER attempt of `user` (ideal and exec differ per row)."""
    conn.execute(
        """INSERT INTO copy_attribution (copy_attempt_id, mark_micros, ideal_micros,
               exec_micros, sizing_micros, skip_micros, unfilled_micros, fee_micros,
               marked_at, updated_at)
           SELECT id, 500000, 1000000 + id * 1000, 600000 + (id %% 7) * 50000, 0, 0, 0, 0,
                  %(t)s, %(t)s
           FROM copy_attempt WHERE portfolio_scope = 'EXEC_USER' AND followed_user_id = %(u)s""",
        {"t": NOW, "u": user},
    )


def test_leader_metrics_are_the_leaders_page_figures(conn: db.Conn) -> None:
    from site_builder.pages import leaders as page

    users = site_data.load(conn)
    busy, thin, removed = users
    for n in range(7, 7 + store.RETENTION_MIN_COPIES):  # 20 more fills: 22 copies
        site_data.add_fill(conn, busy, n)
    for n in range(30, 38):  # 8 more: 10 copies, retention shown on the page, not a metric
        site_data.add_fill(conn, thin, n)
    attribute(conn, busy)
    attribute(conn, thin)
    conn.execute("UPDATE followed_user SET copy_mode = 'REMOVED' WHERE id = %s", (removed,))
    got = values(conn)
    shown = {x.user["id"]: x for x in page.context(conn, NOW).leaders}
    assert set(shown) == {busy, thin}
    assert shown[busy].attempts == 22 and shown[thin].attempts == 10
    assert shown[busy].retention is not None and shown[thin].retention is not None
    assert shown[busy].roi_7d is not None
    for user, x in shown.items():
        key = f'{{"user": "{user}"}}'
        assert got[("leader.copies_30d", key)] == x.attempts
        assert got[("leader.roi_7d", key)] == float(x.roi_7d)  # type: ignore[arg-type]
    assert got[("leader.retention_30d", f'{{"user": "{busy}"}}')] == float(shown[busy].retention)
    assert ("leader.retention_30d", f'{{"user": "{thin}"}}') not in got  # under 20 copies
    sums = conn.execute(  # and the ratio is the attributions' own
        "SELECT sum(c.exec_micros)::numeric / sum(c.ideal_micros) AS r FROM copy_attribution c"
        " JOIN copy_attempt a ON a.id = c.copy_attempt_id WHERE a.followed_user_id = %s"
        " AND a.portfolio_scope = 'EXEC_USER'",
        (busy,),
    ).fetchone()
    assert got[("leader.retention_30d", f'{{"user": "{busy}"}}')] == float(round(sums["r"], 4))
    assert not [k for k in got if k[0].startswith("leader.") and f'"{removed}"' in k[1]]


def test_drawdown_is_each_portfolio_s_newest_equity_under_its_peak(conn: db.Conn) -> None:
    users = site_data.load(conn)
    conn.execute("UPDATE followed_user SET copy_mode = 'REMOVED' WHERE id = %s", (users[2],))
    conn.execute(  # a snapshot after `now` (a replay's clock) is not "so far"
        "INSERT INTO portfolio_snapshot (portfolio_scope, followed_user_id, bucket, equity_micros,"
        " cash_micros, exposure_micros, unrealized_pnl_micros, realized_pnl_micros)"
        " VALUES ('EXEC_USER', %s, %s, 999999000000, 0, 0, 0, 0)",
        (users[0], NOW.replace(second=0) + timedelta(minutes=5)),
    )
    series: dict[tuple[str, str], list[int]] = {}
    for r in conn.execute(
        "SELECT portfolio_scope, followed_user_id, equity_micros FROM portfolio_snapshot"
        " WHERE bucket <= %s ORDER BY bucket",
        (NOW,),
    ):
        user = "" if r["followed_user_id"] is None else str(r["followed_user_id"])
        series.setdefault((r["portfolio_scope"], user), []).append(r["equity_micros"])
    expected = {
        ("portfolio.drawdown_pct", json.dumps({"scope": scope, "user": user}, sort_keys=True)):
            100 * (1 - equities[-1] / max(equities))
        for (scope, user), equities in series.items()
        if user != str(users[2])
    }  # fmt: skip
    assert len(expected) == 5 and any(v > 0 for v in expected.values())
    got = {k: v for k, v in values(conn).items() if k[0] == "portfolio.drawdown_pct"}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6)
