"""Killing the poller mid-run (SIGKILL, no cleanup) and starting it again loses nothing
and duplicates nothing: the checkpoint only moves after a user's rows are stored; the
killed runs' rows are closed (FAILED) by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

import run_local
from common.store import db, polling, users
from common.upstream import http
from sandbox import testing

pytestmark = pytest.mark.sandbox


def test_poller_killed_mid_run_then_restarted(db_url: str) -> None:
    with testing.running_sandbox(seed=3, leaders=8, slow_rate=0.3, slow_ms=300) as sb:
        s = run_local.demo_settings(sb.port)
        env = {**os.environ, **run_local.demo_environment(sb.port), "DATABASE_URL": db_url}
        with db.connect(db_url, autocommit=True) as conn, http.make_upstreams(s) as ups:
            now = datetime.now(tz=UTC)
            for i, wallet in enumerate(sb.leaders):
                users.add(conn, wallet, f"l{i}", [], now)
            for user in polling.followed_users(conn):
                polling.seed_user(conn, ups, user, now)
        command = [sys.executable, "-m", "functions.poll", "--loop", "--interval", "0.5"]
        for _ in range(3):  # each time, kill it while a run is in progress
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            with db.connect(db_url, autocommit=True) as conn:
                deadline = time.monotonic() + 30
                while (
                    conn.execute(
                        "SELECT 1 FROM job_run WHERE pid = %(p)s AND status = 'RUNNING'",
                        {"p": proc.pid},
                    ).fetchone()
                    is None
                ):
                    assert time.monotonic() < deadline, "the poller never started a run"
                    time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # inside the run: slow responses make it long
            proc.wait(timeout=5)
        time.sleep(6)  # past the Data API lag
        subprocess.run(
            [*command[:3], "--once"],
            env=env,
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        last_ms = (sb.now_ms() - 6_000) // 1000 * 1000 - 1  # just before a whole second
        events = sb.truth(until_ms=last_ms)["events"]
    with db.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT tx_hash, asset_id, side, share_micros, event_time FROM trade_event"
        ).fetchall()
        left = conn.execute(
            "SELECT status, count(*) AS n FROM job_run WHERE job = 'poll' GROUP BY status"
        ).fetchall()
    first = min(r["event_time"] for r in rows)
    got = Counter(
        (r["tx_hash"], r["asset_id"], r["side"], r["share_micros"])
        for r in rows
        if r["event_time"].timestamp() * 1000 <= last_ms
    )
    want = Counter(
        (e["tx_hash"], e["asset"], e["side"], e["shares_micros"])
        for e in events
        if e["type"] == "TRADE"
        and first.timestamp() * 1000 <= e["t_ms"]
        and e["t_ms"] // 1000 * 1000 <= last_ms
    )
    assert got == want
    # the killed runs do not stay RUNNING: the next run marks them FAILED
    statuses = {r["status"]: r["n"] for r in left}
    assert statuses.pop("FAILED") == 3 and set(statuses) == {"OK"}
