"""Operator commands (`python -m functions.ops`), readiness (`GET /api/ready`) and the
failed items the poller records and resolves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_api import api_client

import run_local
from common.runtime import jobs, settings
from common.store import checkpoints, db, failures, polling, users
from functions import ops
from sandbox import testing

BEATING = ("scheduler", "listen", "simulate", "site_builder")


def ops_cli(db_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Runs the command the way an operator does."""
    return subprocess.run(
        [sys.executable, "-m", "functions.ops", *argv],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.ROOT,
    )


def beat(conn: db.Conn, *processes: str, age_s: float = 0, pid: int | None = None) -> None:
    for process in processes:
        jobs.heartbeat(conn, process, jobs.utcnow() - timedelta(seconds=age_s), {})
        if pid is not None:
            conn.execute("UPDATE process_heartbeat SET pid = %s WHERE process = %s", (pid, process))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_ready_needs_the_database_and_fresh_heartbeats(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    result = ops_cli(db_url, "ready")
    assert result.returncode == 1
    assert "BAD  scheduler: no heartbeat yet" in result.stdout
    beat(conn, *BEATING)
    beat(conn, "listen", age_s=600)
    result = ops_cli(db_url, "ready")
    assert result.returncode == 1 and "BAD  listen: heartbeat 6" in result.stdout
    with api_client(db_url, tmp_path, login=False) as client:  # a monitor on loopback
        reply = client.get("/api/ready")
        assert reply.status_code == 503
        assert {c["name"] for c in reply.json()["checks"] if not c["ok"]} == {"listen"}
        beat(conn, "listen")
        reply = client.get("/api/ready")
        assert reply.status_code == 200 and reply.json()["ready"] is True
    result = ops_cli(db_url, "ready")
    assert result.returncode == 0 and "BAD" not in result.stdout
    result = ops_cli("postgresql://nobody@127.0.0.1:1/none", "ready")
    assert result.returncode == 1 and "database unavailable" in result.stderr


def test_status_shows_pending_work_jobs_failed_items_and_heartbeats(
    conn: db.Conn, db_url: str
) -> None:
    now = jobs.utcnow()
    beat(conn, *BEATING)
    jobs.heartbeat(
        conn,
        "scheduler",
        now,
        {"jobs": {"poll": {"next": (now + timedelta(seconds=3)).isoformat()}}, "errors": []},
    )
    run = jobs.record_start(conn, "poll", now - timedelta(seconds=2), "cron", now)
    jobs.record_end(conn, run, now, "FAILED", 0, {}, "UpstreamError: 503 from data-api")
    failures.record(conn, "poll", "user:7", "UpstreamError: 503", now, {"user_id": 7})
    checkpoints.request_backfill(conn, now - timedelta(hours=1), now)
    text = ops_cli(db_url, "status").stdout
    assert text.startswith("Oculus at ") and ": READY" in text.splitlines()[0]
    for heading in ("Processes (heartbeats)", "Jobs (newest run of each)", "Pending work"):
        assert heading in text
    job_line = next(line for line in text.splitlines() if line.strip().startswith("poll "))
    assert "cron" in job_line and "FAILED" in job_line and "UpstreamError: 503" in job_line
    assert "Backfill requests open                         1" in text
    assert "user:7" in text
    data = json.loads(ops_cli(db_url, "status", "--json").stdout)
    assert data["ready"] is True
    assert data["jobs"][0]["job"] == "poll" and data["jobs"][0]["next_at"]
    assert [f["item_key"] for f in data["failed_items"]] == ["user:7"]


def test_backfill_files_a_request_wakes_the_poller_and_keeps_an_earlier_one(
    conn: db.Conn, db_url: str
) -> None:
    with db.connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.WAKE_CHANNEL}")
        result = ops_cli(db_url, "backfill", "6h")
        assert result.returncode == 0, result.stderr
        woken = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert woken == ["poll"]
    request = checkpoints.pending_backfill(conn)
    assert request is not None
    assert abs((jobs.utcnow() - request[0]) - timedelta(hours=6)) < timedelta(minutes=1)
    # a later, shorter request (the listener reconnecting) does not shrink it
    checkpoints.request_backfill(conn, jobs.utcnow() - timedelta(minutes=5), jobs.utcnow())
    assert checkpoints.pending_backfill(conn) == (request[0], request[1] + 1)
    result = ops_cli(db_url, "backfill", "30m", "--wait", "1")  # no poller is running
    assert result.returncode == 1
    assert "python -m functions.poll --once --backfill 30m" in result.stderr
    assert ops_cli(db_url, "backfill", "soon").returncode == 2  # argparse: bad duration


def test_rerun_failed_wakes_the_stage_and_reports_what_resolved(conn: db.Conn, db_url: str) -> None:
    now = jobs.utcnow()
    failures.record(conn, "poll", "user:1", "UpstreamError: 503", now)
    failures.record(conn, "poll", "user:2", "UpstreamError: 503", now)

    def poller() -> None:  # stands in for the poll run the wake-up starts
        with db.connect(db_url, autocommit=True) as c:
            c.execute(f"LISTEN {jobs.WAKE_CHANNEL}")
            notes = list(c.notifies(timeout=20, stop_after=1))
            assert [n.payload for n in notes] == ["poll"]
            failures.resolve(c, "poll", ["user:1"], jobs.utcnow())

    thread = threading.Thread(target=poller)
    thread.start()
    result = ops_cli(db_url, "rerun-failed", "--wait", "3")
    thread.join()
    assert result.returncode == 1
    assert "poll: 2 items; woke poll" in result.stdout
    assert "resolved 1 of 2" in result.stdout and "still failing: poll user:2" in result.stdout
    failures.resolve(conn, "poll", ["user:2"], now)
    assert ops_cli(db_url, "rerun-failed").stdout.strip() == "no open failed items"


def test_clear_stuck_clears_only_what_is_provably_dead(conn: db.Conn, db_url: str) -> None:
    now = jobs.utcnow()
    gone = dead_pid()
    ours = jobs.record_start(conn, "price", now)  # this test process: alive
    dead = jobs.record_start(conn, "poll", now)
    conn.execute("UPDATE job_run SET pid = %s WHERE id = %s", (gone, dead))
    beat(conn, "poll", age_s=3600, pid=gone)  # a loop from before the scheduler
    beat(conn, "listen", age_s=3600)  # stale, but its process (us) is alive
    dry = ops_cli(db_url, "clear-stuck")
    assert dry.returncode == 0
    assert f"job_run {dead} (poll, pid {gone}" in dry.stdout and "heartbeat of poll" in dry.stdout
    assert "dry run" in dry.stdout
    assert f"job_run {ours} " not in dry.stdout and "heartbeat of listen" not in dry.stdout
    assert conn.execute("SELECT status FROM job_run WHERE id = %s", (dead,)).fetchone() == {
        "status": "RUNNING"
    }
    done = ops_cli(db_url, "clear-stuck", "--yes")
    assert done.stdout.count("cleared:") == 2
    statuses = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM job_run")}
    assert statuses == {ours: "RUNNING", dead: "FAILED"}
    beats = {r["process"] for r in conn.execute("SELECT process FROM process_heartbeat")}
    assert beats == {"listen"}
    assert ops_cli(db_url, "clear-stuck").stdout.strip() == "nothing stuck"


def test_clear_stuck_ends_an_oculus_session_idle_in_a_transaction(
    conn: db.Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.connect(db_url) as hung:
        hung.execute("SELECT set_config('application_name', 'oculus rollup', false)")
        hung.execute("SELECT pg_advisory_xact_lock(42)")  # holds a lock, then sits idle
        monkeypatch.setattr(ops, "IDLE_TX_LIMIT", timedelta(0))
        found = ops.find_stuck(conn, jobs.utcnow() + timedelta(seconds=1), timedelta(minutes=1))
        assert [f.what.split(" (")[1].split(")")[0] for f in found] == ["oculus rollup"]
        assert found[0].sql is not None
        conn.execute(found[0].sql, found[0].params)  # what --yes runs
        deadline = time.monotonic() + 10  # the backend exits, releasing its lock
        while conn.execute("SELECT pg_try_advisory_lock(42) AS ok").fetchone() != {"ok": True}:
            assert time.monotonic() < deadline, "the lock was not released"
            time.sleep(0.05)
        with pytest.raises(psycopg.OperationalError):
            hung.execute("SELECT 1")


def test_a_group_that_cannot_be_decided_can_be_voided_with_an_audit_row(
    conn: db.Conn, db_url: str
) -> None:
    now = jobs.utcnow()
    user = users.add(conn, "0x" + "ab" * 20, "stuck", [], now)
    conn.execute(
        """INSERT INTO copy_group (group_key, followed_user_id, action, window_start,
               window_end, first_detect_time, close_time, decide_at, state)
           VALUES ('g-poison', %s, 'BUY', %s, %s, %s, %s, %s, 'CLOSED')""",
        (user, now, now, now, now, now),
    )
    failures.record(conn, "simulate", "g-poison", "ZeroDivisionError: division by zero", now)
    listed = ops_cli(db_url, "clear-stuck").stdout
    assert "group g-poison fails to decide (ZeroDivisionError" in listed
    assert "--void-group g-poison --yes" in listed
    assert ops_cli(db_url, "clear-stuck", "--void-group", "g-poison").returncode == 1  # no --yes
    result = ops_cli(db_url, "clear-stuck", "--void-group", "g-poison", "--yes")
    assert result.returncode == 0, result.stderr
    row = conn.execute("SELECT state FROM copy_group WHERE group_key = 'g-poison'").fetchone()
    assert row == {"state": "VOID"}
    audit = conn.execute("SELECT action, actor FROM audit_log ORDER BY id DESC").fetchone()
    assert audit is not None and audit["action"] == "group.void"
    assert audit["actor"].startswith("ops:")
    assert failures.open_items(conn) == []
    assert ops_cli(db_url, "clear-stuck", "--void-group", "g-poison", "--yes").returncode == 1


@pytest.mark.sandbox
def test_a_user_the_poller_cannot_reach_is_a_failed_item_until_it_can(
    conn: db.Conn, db_url: str
) -> None:
    with testing.running_sandbox(seed=4, leaders=2) as sb:
        env = {**os.environ, **run_local.demo_environment(sb.port), "DATABASE_URL": db_url}
        env["OCULUS_HTTP_MAX_RETRIES"] = "1"
        for i, wallet in enumerate(sb.leaders):
            users.add(conn, wallet, f"l{i}", [], jobs.utcnow())
        command = [sys.executable, "-m", "functions.poll", "--once"]

        def run_poll() -> dict[str, Any]:
            subprocess.run(command, env=env, timeout=60, capture_output=True, cwd=settings.ROOT)
            return {r["item_key"]: r for r in failures.open_items(conn, "poll")}

        sb.set_faults(rate_5xx=1.0)
        first = run_poll()
        keys = {f"user:{u.id}" for u in polling.followed_users(conn)}
        assert set(first) == keys
        assert all("5" in f["error"] and f["payload"]["wallets"] for f in first.values())
        again = run_poll()
        assert {k: f["attempts"] for k, f in again.items()} == dict.fromkeys(keys, 2)
        sb.set_faults(rate_5xx=0.0)
        assert run_poll() == {}
    resolved = conn.execute(
        "SELECT count(*) AS n FROM failed_item WHERE resolved_at IS NOT NULL"
    ).fetchone()
    assert resolved == {"n": len(keys)}
