"""The scheduler: the crontab's format, runs on time (in threads of its process), one
copy at a time, timeouts, failures recorded, each run's log, early wake-ups, and the
process itself (NOTIFY, SIGTERM, SIGKILL mid-run, a run that ignores its stop)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common.runtime import crontab, jobs, settings
from common.store import db
from functions import scheduler

JOB = "tests.scheduled_job"
EVERY_SECOND = "*  *  *  *  *  *"
YEARLY = "0  0  1  1  *  0"


def test_crontab_lines_parse_and_bad_ones_are_reported_not_fatal() -> None:
    text = f"""# comment
{EVERY_SECOND}   30s  {JOB} --once --sleep 0.5   # trailing comment
*/5 * * * * 0   2m   functions.poll --once
* * *  functions.price --once
* * * * * 61    30s  functions.price --once
* * * * * 0     soon functions.price --once
* * * * * 0     30s  functions.nothing_here --once
* * * * * 0     30s  os.system
* * * * * 0     1h   functions.poll --once
"""
    entries, errors = crontab.parse(text)
    assert [(e.job, e.module, e.argv, e.timeout_s) for e in entries] == [
        ("scheduled_job", JOB, ("--once", "--sleep", "0.5"), 30.0),
        ("poll", "functions.poll", ("--once",), 120.0),
    ]
    assert [e.split(":", 1)[0] for e in errors] == [f"line {n}" for n in (4, 5, 6, 7, 8, 9)]
    assert "expected 6 cron fields" in errors[0]
    assert "not a valid schedule" in errors[1]
    assert "not a timeout" in errors[2]
    assert "no such job: functions.nothing_here" in errors[3]
    assert "no such job: os.system" in errors[4]
    assert "already scheduled on line 3" in errors[5]


def test_the_shipped_crontab_schedules_every_periodic_job() -> None:
    entries, errors = crontab.load(settings.ROOT / "crontab")
    assert errors == []
    assert {e.job for e in entries} == {  # poll runs as a loop per host (supervisord.conf)
        "price",
        "snapshot",
        "rollup",
        "reconcile",
        "config_test",
        "score",
        "sweep",
        "exits",
        "metrics",
        "rules",
        "notify",
        "prune",
        "backup",
    }
    assert all(e.argv[:1] == ("--once",) for e in entries)
    conf = (settings.ROOT / "supervisord.conf").read_text()
    assert "-m functions.poll --loop" in conf


@pytest.fixture
def make(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> Iterator[Callable[..., scheduler.Scheduler]]:
    made: list[scheduler.Scheduler] = []

    def build(lines: str, **overrides: Any) -> scheduler.Scheduler:
        path = tmp_path / "crontab"
        path.write_text(lines + "\n")
        s = settings.Settings(var_dir=tmp_path, **overrides)
        env = {**os.environ, "DATABASE_URL": db_url}
        sched = scheduler.Scheduler(conn, s, env, crontab_path=path, log_dir=tmp_path / "log")
        sched.load(jobs.utcnow())
        made.append(sched)
        return sched

    yield build
    for sched in made:
        for run in sched.running():
            run.task.terminate()
            run.task.wait(10)


def tick_until(sched: scheduler.Scheduler, done: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the scheduler"
        sched.tick(jobs.utcnow())
        time.sleep(0.05)


def runs(conn: db.Conn) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM job_run WHERE job = 'scheduled_job' ORDER BY started_at"
    ).fetchall()


def finished(conn: db.Conn, n: int) -> Callable[[], bool]:
    return lambda: sum(r["status"] != "RUNNING" for r in runs(conn)) >= n


def test_a_due_job_starts_on_time_and_its_run_says_why(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # as the scheduler's main sets it
    sched = make(f"{EVERY_SECOND} 30s {JOB} --once")
    tick_until(sched, finished(conn, 1), 20)
    run = runs(conn)[0]
    assert run["status"] == "OK" and run["items"] == 1
    assert run["trigger"] == "cron" and run["host"] == socket.gethostname()
    # started within the second it was due (no process to start)
    assert timedelta(0) <= run["started_at"] - run["scheduled_at"] < timedelta(seconds=1)
    assert run["pid"] == os.getpid()  # a thread of the scheduler's process
    text = (sched.log_dir / "scheduled_job.log").read_text()
    assert "scheduled_job: 1 items" in text  # the run's own log records, in its job's log


def test_never_two_copies_a_tick_during_a_run_is_skipped(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler]
) -> None:
    sched = make(f"{EVERY_SECOND} 30s {JOB} --once --sleep 2")
    tick_until(sched, finished(conn, 2), 30)
    first, second = runs(conn)[:2]
    assert first["finished_at"] <= second["started_at"]
    assert sched.slots["scheduled_job"].skipped >= 1


def test_a_copy_started_by_hand_holds_the_lock_and_the_scheduled_one_stays_out(
    conn: db.Conn, db_url: str, make: Callable[..., scheduler.Scheduler]
) -> None:
    with db.connect(db_url, autocommit=True) as other:
        role = jobs.role(other, "scheduled_job")
        assert role.take()
        sched = make(f"{EVERY_SECOND} 30s {JOB} --once")
        slot = sched.slots["scheduled_job"]
        tick_until(sched, lambda: slot.started >= 1 and slot.run is None, 20)
        assert runs(conn) == []  # it saw the role held and left, recording nothing
        role.release()
    tick_until(sched, finished(conn, 1), 20)  # the role is free again
    assert runs(conn)[0]["status"] == "OK"


def test_a_run_past_its_timeout_is_asked_to_stop_and_marked_timeout(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "KILL_GRACE_S", 0.5)
    sched = make(f"{YEARLY} 1s {JOB} --once --sleep 60")
    sched.wake("scheduled_job", jobs.utcnow())
    slot = sched.slots["scheduled_job"]
    tick_until(sched, lambda: finished(conn, 1)() and slot.run is None, 20)
    run = runs(conn)[0]
    assert run["status"] == "TIMEOUT", run
    assert run["error"] == "asked to stop after its 1s timeout; ended early"
    assert run["finished_at"] - run["started_at"] < timedelta(seconds=3)
    assert not sched.restart  # it stopped when asked


def test_a_run_that_ignores_its_stop_is_given_up_and_the_scheduler_restarts(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread cannot be killed: past the grace, the row becomes TIMEOUT at once and
    the scheduler asks to exit (supervisord restarts it; the process's end ends the run)."""
    monkeypatch.setattr(scheduler, "KILL_GRACE_S", 0.5)
    sched = make(f"{YEARLY} 1s {JOB} --once --sleep 4 --ignore-stop")
    sched.wake("scheduled_job", jobs.utcnow())
    tick_until(sched, finished(conn, 1), 20)
    run = runs(conn)[0]
    assert run["status"] == "TIMEOUT"
    assert run["error"] == "still running 0.5s after it was asked to stop after the 1s timeout"
    assert sched.restart and sched.slots["scheduled_job"].run is None
    sched.wake("scheduled_job", jobs.utcnow())  # nothing starts until the scheduler exits
    assert sched.slots["scheduled_job"].run is None
    (task,) = sched.given_up
    task.wait(10)  # it ends by itself here; its late end leaves the row as it was
    assert runs(conn)[0]["status"] == "TIMEOUT"


def test_a_run_that_loses_its_role_stops_alone_and_says_why(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fencing inside the scheduler: the run whose role another holder took is asked to
    stop and does; the scheduler's process (this test's) and its other runs go on."""
    monkeypatch.setenv("OCULUS_ROLE_LEASE_S", "3")  # renewed every second
    settings.get.cache_clear()
    try:
        sched = make(f"{YEARLY} 60s {JOB} --once --sleep 30")
        sched.wake("scheduled_job", jobs.utcnow())
        slot = sched.slots["scheduled_job"]
        tick_until(sched, lambda: bool(runs(conn)), 20)
        conn.execute("UPDATE role_lease SET holder = 'elsewhere/1/x' WHERE role = 'scheduled_job'")
        tick_until(sched, lambda: slot.run is None, 20)
    finally:
        monkeypatch.delenv("OCULUS_ROLE_LEASE_S")
        settings.get.cache_clear()
    run = runs(conn)[0]
    assert run["status"] == "FAILED", run
    assert run["error"].startswith("lost its role (taken by another holder")
    assert run["error"].endswith("; ended early")
    assert run["finished_at"] - run["started_at"] < timedelta(seconds=10)
    assert not sched.restart  # it stopped within the grace: nothing else was touched


def test_failures_are_recorded_once_whether_the_job_or_its_process_fails(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler]
) -> None:
    sched = make(f"{EVERY_SECOND} 30s {JOB} --once --fail")
    tick_until(sched, finished(conn, 1), 20)
    for later in sched.running():
        later.task.terminate()
        later.task.wait(10)
    sched.slots.clear()
    (run,) = [r for r in runs(conn) if r["status"] != "RUNNING"]
    assert run["status"] == "FAILED" and run["error"] == "RuntimeError: asked to fail"
    conn.execute("DELETE FROM job_run")
    sched = make(f"{EVERY_SECOND} 30s {JOB} --exit-early 3")  # dies before recording
    tick_until(sched, finished(conn, 1), 20)
    run = runs(conn)[0]
    assert run["status"] == "FAILED" and run["error"].startswith("exited with code 3; see ")
    assert run["trigger"] == "cron"
    for later in sched.running():
        later.task.wait(10)
    sched.slots.clear()
    conn.execute("DELETE FROM job_run")
    sched = make(f"{EVERY_SECOND} 30s {JOB} --crash")  # raises before the job frame
    tick_until(sched, finished(conn, 1), 20)
    run = runs(conn)[0]
    assert run["status"] == "FAILED"
    assert run["error"].startswith("ValueError: crashed before the job frame; see ")
    assert "Traceback" in (sched.log_dir / "scheduled_job.log").read_text()


def test_a_wake_starts_the_job_now_and_once_more_after_a_run_it_interrupts(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler]
) -> None:
    sched = make(f"{YEARLY} 30s {JOB} --once --sleep 1", wake_min_gap_s=0)
    sched.wake("scheduled_job", jobs.utcnow())
    sched.wake("functions.unknown", jobs.utcnow())  # not scheduled: ignored
    slot = sched.slots["scheduled_job"]
    assert slot.run is not None
    sched.wake("scheduled_job", jobs.utcnow())  # while running: once more afterwards
    sched.wake("scheduled_job", jobs.utcnow())  # coalesced with the one before
    tick_until(sched, finished(conn, 2), 30)
    time.sleep(0.5)
    sched.tick(jobs.utcnow())
    assert [r["trigger"] for r in runs(conn)] == ["wake", "wake"]
    assert slot.run is None and not slot.rerun


def test_runs_of_processes_that_are_gone_are_marked_failed(conn: db.Conn) -> None:
    now = jobs.utcnow()
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (os.getpid(), dead.pid):
        conn.execute(
            "INSERT INTO job_run (job, started_at, status, pid, host)"
            " VALUES ('poll', %s, 'RUNNING', %s, %s)",
            (now, pid, host),
        )
    assert jobs.abandon_dead_runs(conn, now) == 1
    rows = conn.execute("SELECT pid, status, error FROM job_run ORDER BY pid").fetchall()
    assert {(r["pid"], r["status"]) for r in rows} == {
        (os.getpid(), "RUNNING"),
        (dead.pid, "FAILED"),
    }


def test_runs_of_processes_that_die_later_are_marked_failed_as_it_goes(
    conn: db.Conn, make: Callable[..., scheduler.Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only at start: a run by hand killed while the scheduler runs is closed by its
    periodic check, even for a job that will not run again soon."""
    monkeypatch.setattr(scheduler, "DEAD_RUNS_CHECK_S", 0.5)
    sched = make(f"{YEARLY} 30s {JOB} --once")
    sched.tick(jobs.utcnow())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn.execute(
        "INSERT INTO job_run (job, started_at, status, pid, host, trigger)"
        " VALUES ('backup', now(), 'RUNNING', %s, %s, 'manual')",
        (dead.pid, socket.gethostname()),
    )

    def closed() -> bool:
        row = conn.execute("SELECT status, error FROM job_run WHERE job = 'backup'").fetchone()
        return row is not None and row["status"] == "FAILED"

    tick_until(sched, closed, 5)


def test_the_process_wakes_on_notify_and_stops_its_runs_on_sigterm(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "crontab"
    path.write_text(f"{YEARLY} 30s {JOB} --once --sleep 30\n* * * * * 0 bad line\n")
    env = {**os.environ, "DATABASE_URL": db_url, "OCULUS_VAR_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "functions.scheduler", "--crontab", str(path), "--seconds", "60"],
        env=env,
        stderr=subprocess.DEVNULL,
        cwd=settings.ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while (
            conn.execute("SELECT 1 FROM process_heartbeat WHERE process = 'scheduler'").fetchone()
            is None
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "no heartbeat"
            time.sleep(0.05)
        beat = conn.execute(
            "SELECT info FROM process_heartbeat WHERE process = 'scheduler'"
        ).fetchone()
        assert beat is not None
        assert list(beat["info"]["jobs"]) == ["scheduled_job"]
        assert "line 2" in beat["info"]["errors"][0]
        sent = jobs.utcnow()
        jobs.wake(conn, "scheduled_job")
        while not runs(conn):
            assert time.monotonic() < deadline, "the wake-up started nothing"
            time.sleep(0.02)
        run = runs(conn)[0]
        assert run["trigger"] == "wake"
        assert run["started_at"] - sent < timedelta(seconds=1)
        # a second scheduler stands by beside the first ...
        second = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions.scheduler",
                "--crontab",
                str(path),
                "--seconds",
                "30",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            cwd=settings.ROOT,
        )
        holder = "SELECT holder FROM role_lease WHERE role = 'scheduler'"
        time.sleep(3)
        assert f"/{proc.pid}/" in conn.execute(holder).fetchone()["holder"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        # ... and takes over once the first stops (it freed the role)
        deadline = time.monotonic() + 15
        while f"/{second.pid}/" not in (
            (conn.execute(holder).fetchone() or {}).get("holder") or ""
        ):
            assert time.monotonic() < deadline and second.poll() is None, "no takeover"
            time.sleep(0.1)
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 0 and "standing by" in err and "taken over" in err, err
    finally:
        for p in (proc, *([second] if "second" in locals() else [])):
            if p.poll() is None:
                p.kill()
                p.wait()
    run = runs(conn)[0]  # its stop flag ended it (a 30 s sleep) at once
    assert run["status"] == "OK" and run["finished_at"] - run["started_at"] < timedelta(seconds=10)
    # the backfill it asks for on start (SPEC §9) is waiting for the poller
    request = conn.execute(
        "SELECT cursor_time FROM system_checkpoint WHERE name = 'listen.backfill_request'"
    ).fetchone()
    assert request is not None


def test_a_scheduler_killed_mid_run_takes_its_run_along_and_the_next_one_closes_it(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    """SIGKILL to the scheduler ends its running job with it (a thread of its process):
    the restarted scheduler marks that run FAILED (its process is gone), takes the job's
    role over and runs it again; the job's runs never overlap."""
    path = tmp_path / "crontab"
    path.write_text(f"{EVERY_SECOND} 30s {JOB} --once --sleep 3\n")
    env = {**os.environ, "DATABASE_URL": db_url, "OCULUS_VAR_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "functions.scheduler", "--crontab", str(path)]
    first = subprocess.Popen([*command, "--seconds", "60"], env=env, cwd=settings.ROOT)
    second = None
    try:
        deadline = time.monotonic() + 30
        while not runs(conn):
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.05)
        first.kill()  # SIGKILL: no clean-up at all
        first.wait()
        second = subprocess.Popen([*command, "--seconds", "10"], env=env, cwd=settings.ROOT)
        assert second.wait(timeout=60) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    ordered = sorted(runs(conn), key=lambda r: r["started_at"])
    killed = ordered[0]
    assert killed["pid"] == first.pid and killed["status"] == "FAILED"
    assert "process" in killed["error"]
    assert any(r["status"] == "OK" and r["pid"] == second.pid for r in ordered)
    for earlier, later in itertools.pairwise(ordered):
        assert earlier["finished_at"] is not None
        assert earlier["finished_at"] <= later["started_at"], "two runs overlapped"
