"""A job run by hand (`python -m functions.<job> --once`): it gives itself the crontab's
timeout for the job (`--timeout` overrides, 0 = none) and is recorded TIMEOUT when it
outlives it; a hand run killed with SIGKILL leaves a RUNNING row that the job's next run
marks FAILED."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.runtime import jobs, settings
from common.store import db

JOB = "tests.scheduled_job"
YEARLY = "0  0  1  1  *  0"


def hand_env(db_url: str, tmp_path: Path, timeout: str) -> dict[str, str]:
    """The operator's shell, the job in the crontab."""
    path = tmp_path / "crontab"
    path.write_text(f"{YEARLY} {timeout} {JOB} --once\n")
    return {**os.environ, "DATABASE_URL": db_url, "OCULUS_CRONTAB_PATH": str(path)}


def by_hand(env: dict[str, str], *flags: str, limit_s: float = 30) -> tuple[int, str, float]:
    """Runs the job once by hand; returns its exit code, its log and how long it took."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", JOB, "--once", *flags],
        env=env,
        cwd=settings.ROOT,
        capture_output=True,
        text=True,
        timeout=limit_s,
    )
    return done.returncode, done.stderr, time.monotonic() - began


def runs(conn: db.Conn) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM job_run WHERE job = 'scheduled_job' ORDER BY id").fetchall()


def test_a_hand_run_past_the_crontab_timeout_ends_and_is_recorded_timeout(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    # a run that sleeps through its stop flag: the watchdog records it and exits hard
    code, log, took = by_hand(hand_env(db_url, tmp_path, "2s"), "--sleep", "60", "--ignore-stop")
    assert code == jobs.EXIT_TIMEOUT, log
    assert took < 2 + jobs.KILL_GRACE_S + 5  # the cold start and the recording
    assert "past its 2s timeout" in log
    (run,) = runs(conn)
    assert run["status"] == "TIMEOUT" and run["trigger"] == "manual"
    assert "2s timeout" in run["error"] and run["finished_at"] is not None
    assert jobs.role(conn, "scheduled_job").take()  # the scheduled runs are free to go


def test_the_timeout_flag_overrides_the_crontab_and_zero_means_none(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    env = hand_env(db_url, tmp_path, "1h")
    code, log, took = by_hand(env, "--sleep", "60", "--timeout", "1")
    assert code == jobs.EXIT_TIMEOUT and took < 1 + 5, log  # it heeded its stop flag
    assert runs(conn)[0]["error"] == "asked to stop after its 1s timeout; ended early"
    env = hand_env(db_url, tmp_path, "1s")
    code, log, _ = by_hand(env, "--sleep", "2.5", "--timeout", "0")
    assert code == 0, log
    assert [r["status"] for r in runs(conn)] == ["TIMEOUT", "OK"]


def test_a_killed_hand_run_is_marked_failed_by_the_next_run(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    env = hand_env(db_url, tmp_path, "1h")
    proc = subprocess.Popen(
        [sys.executable, "-m", JOB, "--once", "--sleep", "60"],
        env=env,
        cwd=settings.ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not runs(conn):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never started"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: nothing of the job runs any more
        proc.wait()
    role = jobs.role(conn, "scheduled_job")
    assert role.take()  # its process is gone from this host: its role is free at once
    role.release()
    assert runs(conn)[0]["status"] == "RUNNING"
    code, log, _ = by_hand(env)
    assert code == 0, log
    killed, after = runs(conn)
    assert (killed["pid"], killed["status"]) == (proc.pid, "FAILED")
    assert killed["error"].startswith("abandoned: its process is gone")
    assert after["status"] == "OK"
