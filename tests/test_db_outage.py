"""The long-running processes (simulate, listen, the scheduler, the site builder) and a
database that goes away (issue 13): a lost connection ends the process at once with
EXIT_DB_LOST (69) and one log line, for supervisord to restart it, instead of failing
every loop forever without its session locks; a database that is down when a process
starts is waited for (a line a minute) instead of exiting, so supervisord neither backs
off between restarts nor gives up. The whole cycle, with supervisord and a real server
killed and restarted, is the fault drill's (tests/test_fault_drill.py, part 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import run_local
from common.runtime import jobs, settings
from common.store import db
from sandbox import testing

pytestmark = pytest.mark.sandbox

YEARLY = "0  0  1  1  *  0"
HEARTBEATS = {  # process → its heartbeat row
    "simulate": "simulate",
    "listen": "listen",
    "scheduler": "scheduler",
    "site": "site_builder",
}
MOST_LINES = 4  # what a process may log about one outage


def commands(tmp_path: Path, db_url: str) -> dict[str, list[str]]:
    """The supervisord programs' command lines, against `db_url`."""
    crontab = tmp_path / "crontab"
    crontab.write_text(f"{YEARLY} 30s tests.scheduled_job --once\n")
    py, url = sys.executable, ["--database-url", db_url]
    return {
        "simulate": [py, "-m", "functions.simulate", "--loop", "--interval", "0.25", *url],
        "listen": [py, "-m", "functions.listen", *url],
        "scheduler": [py, "-m", "functions.scheduler", "--crontab", str(crontab), *url],
        "site": [py, "-m", "site_builder", "--loop", "--out", str(tmp_path / "public"), *url],
    }


class Started:
    """The processes, each logging to its own file."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> None:
        out = self.logs[name] = (self.tmp_path / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, cwd=settings.ROOT, stdout=out, stderr=subprocess.STDOUT
        )

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for out in self.logs.values():
            out.close()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[Started, testing.RunningSandbox]]:
    with testing.running_sandbox(seed=7, clock="manual", anchor_ms=1_790_000_000_000) as sb:
        env = {
            **os.environ,
            **run_local.demo_environment(sb.port),
            "OCULUS_VAR_DIR": str(tmp_path / "var"),
        }
        procs = Started(tmp_path, env)
        try:
            yield procs, sb
        finally:
            procs.stop()


def test_a_lost_connection_ends_each_process_with_one_line(
    started: tuple[Started, testing.RunningSandbox], conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    procs, _ = started
    for name, argv in commands(tmp_path, db_url).items():
        procs.start(name, argv)
    deadline = time.monotonic() + 60
    while (
        len(beats := {r["process"] for r in conn.execute("SELECT process FROM process_heartbeat")})
        < 4
    ):
        assert time.monotonic() < deadline, f"no heartbeat from all: {beats}"
        assert all(p.poll() is None for p in procs.procs.values()), procs.procs
        time.sleep(0.2)
    before = {name: len(procs.log(name).splitlines()) for name in procs.procs}
    # what a restart of the server does to every session (ours is the test's)
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 20
    for name, proc in procs.procs.items():
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        lines = procs.log(name).splitlines()[before[name] :]
        assert code == jobs.EXIT_DB_LOST, f"{name} exit {code}:\n" + "\n".join(lines[-30:])
        assert 1 <= len(lines) <= MOST_LINES, f"{name} logged:\n" + "\n".join(lines)
        assert "lost" in lines[-1] and "database" in lines[-1], lines


def test_a_database_down_at_start_is_waited_for_quietly(
    started: tuple[Started, testing.RunningSandbox], tmp_path: Path
) -> None:
    procs, _ = started
    nowhere = f"postgresql://postgres@/oculus?host={tmp_path / 'no-server'}&port=5432"
    for name, argv in commands(tmp_path, nowhere).items():
        procs.start(name, argv)
    time.sleep(5)  # past supervisord's startsecs (2): the start counts as a success
    for name, proc in procs.procs.items():
        assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{procs.log(name)}"
        proc.send_signal(signal.SIGTERM)
    for name, proc in procs.procs.items():
        assert proc.wait(timeout=10) == 0, procs.log(name)
        lines = procs.log(name).splitlines()
        assert 1 <= len(lines) <= 2, f"{name} logged:\n" + "\n".join(lines)
        assert "database unavailable" in lines[0], lines
