"""The scheduler (persistent, under supervisor): runs the crontab's jobs on time.

- Each run is `functions.<job>.main(<flags>)` with the crontab's flags, in a thread of
  the scheduler's own process (issue 18: a process per run cost ~45 MB and a third of a
  second of CPU for a run of a fraction of one; on a 1 vCPU / 2 GB box, the stack's
  memory peaked with each run). It is started when the job's schedule fires (seconds
  resolution, UTC), and also at once when another process wakes the job (`jobs.wake`:
  NOTIFY oculus_wake '<job>'), at most once per OCULUS_WAKE_MIN_GAP_S. A job woken
  while it runs runs again as soon as it ends. Every job also runs by hand as a process
  of its own (`python -m functions.<job> --once`), through the same job frame.
- One scheduler across every host (the elected role `scheduler`, common.store.leases.Role):
  a second one stands by and takes over once the first stops, dies or its host goes
  silent for OCULUS_ROLE_LEASE_S.
- Never two copies of a job: the scheduler starts a job only when its previous run has
  ended (a tick that finds it running is skipped), and the job itself holds its role
  (a copy started by hand makes the scheduled one leave at once, recording nothing).
- A run past its timeout has its stop flag set (what SIGTERM does to a job process; long
  jobs check it between steps). If it is still running KILL_GRACE_S later, its `job_run`
  row becomes TIMEOUT and the scheduler exits EXIT_RESTART for supervisord to restart
  it (a thread cannot be killed; the process's end ends the run, its session, the job's
  role and any open transaction), after stopping its other runs. A run that fails (an
  exception, an exit code, a crash before it could record) is marked FAILED; every run
  has a row. Runs' log records go to var/log/<job>.log (the scheduler's own go to
  stderr). RUNNING rows whose process is gone (a run by hand killed with SIGKILL, a
  scheduler killed mid-run) become FAILED at start and every minute.
  (A run by hand times itself with the crontab's timeout: common.runtime.jobs.Watchdog.)
- The crontab is reread when it changes; a bad line is logged, shown on the status page
  (heartbeat info) and left out, the rest keeps running.
- SIGTERM stops starting runs, sets the running ones' stop flags and waits for them.
- A lost database connection ends it (exit 69, for supervisord to restart it; the new
  process takes the role over from its dead predecessor at once) and the runs with it;
  started while the database is down, it waits for it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import psycopg

from common.runtime import crontab, jobs, memory, settings
from common.store import checkpoints, db

log = logging.getLogger("functions.scheduler")
KILL_GRACE_S = jobs.KILL_GRACE_S  # SIGTERM → SIGKILL
DEAD_RUNS_CHECK_S = 60.0  # how often RUNNING rows of dead processes are marked FAILED
STOP_GRACE_S = 20.0  # how long shutdown waits for running jobs
HEARTBEAT_S = 5.0
MAX_WAIT_S = 0.5  # longest sleep between checks (children, signals, the crontab)
LOG_MAX_BYTES = 10 * 2**20
LOG_BACKUPS = 3
EXIT_RESTART = 70  # EX_SOFTWARE: a run ignored its stop; supervisord restarts us to end it
THREAD_PREFIX = "job:"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Task:
    """One run of a job in a thread of the scheduler: `<module>.main(argv)` with the
    run's trigger and stop flag (`jobs.Run`), its log records in var/log/<job>.log. Like
    a process in what the scheduler asks of it: `poll()` gives its exit code once it
    ended, `terminate()` asks it to stop. A thread cannot be killed (see Scheduler.tick)."""

    def __init__(self, job: str, module: str, argv: list[str], run: jobs.Run, log_path: Path):
        self.job, self.module, self.argv, self.run = job, module, argv, run
        self.log_path = log_path
        self.pid = os.getpid()
        self.code: int | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._main, name=f"{THREAD_PREFIX}{job}", daemon=True)

    def start(self) -> Task:
        self.thread.start()
        return self

    def _main(self) -> None:
        RUN_LOGS.route(threading.get_ident(), self.log_path)
        jobs.enter_run(self.run)
        try:
            main = importlib.import_module(self.module).main
            code = main(list(self.argv))
            self.code = code if isinstance(code, int) else 0
        except SystemExit as exc:
            self.code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception as exc:  # a run's crash must not end the scheduler
            logging.getLogger(self.module).exception("%s: crashed", self.job)
            self.error, self.code = f"{type(exc).__name__}: {exc}", 1
        finally:
            jobs.enter_run(None)
            RUN_LOGS.route(threading.get_ident(), None)
            self.run.ended.set()

    def poll(self) -> int | None:
        """The run's exit code once it ended, else None."""
        if self.thread.is_alive():
            return None
        return 1 if self.code is None else self.code

    def terminate(self) -> None:
        self.run.request_stop()

    def wait(self, timeout: float) -> int | None:
        self.thread.join(max(0.0, timeout))
        return self.poll()


class RunLogs(logging.Handler):
    """One handler on the root logger for every run: a record logged by a run's thread
    goes to its job's log (var/log/<job>.log, appended, rotated at 10 MB, 3 kept); the
    others pass by. Runs register their thread (`route`), so the root's handlers never
    change while other threads log."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: dict[int, Path] = {}  # thread ident → its job's log
        self.files: dict[Path, RotatingFileHandler] = {}

    def route(self, ident: int, path: Path | None) -> None:
        if path is None:
            self.paths.pop(ident, None)
            return
        if path not in self.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            self.files[path] = handler
        self.paths[ident] = path

    def emit(self, record: logging.LogRecord) -> None:
        path = self.paths.get(record.thread or 0)
        if path is not None:
            self.files[path].handle(record)


RUN_LOGS = RunLogs()  # on the root logger once a Scheduler exists (after logging's set-up)


class NotRuns(logging.Filter):
    """Keeps runs' records out of the scheduler's own log (they go to the job's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(THREAD_PREFIX)


@dataclass
class Run:
    task: Task  # its trigger and due time: task.run
    started_wall: datetime
    started: float  # monotonic
    deadline: float
    terminated_at: float | None = None


@dataclass
class Slot:
    entry: crontab.Entry
    due: datetime
    run: Run | None = None
    rerun: bool = False  # woken while running
    last_start: float = float("-inf")
    skipped: int = 0  # ticks that found the previous run still going
    started: int = 0
    removed: bool = False  # gone from the crontab; kept until its run ends


class Scheduler:
    def __init__(
        self,
        conn: db.Conn,
        s: settings.Settings,
        env: dict[str, str],
        *,
        crontab_path: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.conn, self.s, self.env = conn, s, env
        self.path = crontab_path or s.crontab_path
        self.log_dir = log_dir or s.var_dir / "log"
        self.slots: dict[str, Slot] = {}
        self.errors: list[str] = []
        self._mtime: float | None = None
        self.host = jobs.host_id()
        self.stopping = False  # runs ended by our own shutdown are not failures
        self.restart = False  # a run ignored its stop: exit for supervisord to restart us
        self.given_up: list[Task] = []  # runs that did not end when asked; end with us
        if RUN_LOGS not in logging.getLogger().handlers:
            logging.getLogger().addHandler(RUN_LOGS)
        self._dead_checked = float("-inf")

    # -- the crontab --------------------------------------------------------------
    def load(self, now: datetime) -> None:
        """(Re)reads the crontab when it changed; keeps running runs of removed jobs."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._mtime and self._mtime is not None:
            return
        self._mtime = mtime
        entries, self.errors = crontab.load(self.path)
        for error in self.errors:
            log.error("crontab %s: %s", self.path, error)
        fresh = {e.job: e for e in entries}
        for job, slot in list(self.slots.items()):
            if job not in fresh:
                slot.removed = True
                if slot.run is None:
                    del self.slots[job]
        for job, entry in fresh.items():
            known = self.slots.get(job)
            if known is None:
                self.slots[job] = Slot(entry, entry.next_after(now))
            elif known.entry != entry or known.removed:
                known.entry, known.due, known.removed = entry, entry.next_after(now), False
        log.info("crontab: %d jobs (%s)", len(fresh), ", ".join(sorted(fresh)))

    # -- one pass -----------------------------------------------------------------
    def tick(self, now: datetime) -> None:
        """Closes the rows of dead runs (at start, then every DEAD_RUNS_CHECK_S), reaps
        ended runs, enforces timeouts and starts what is due."""
        mono = time.monotonic()
        if mono - self._dead_checked >= DEAD_RUNS_CHECK_S:
            # runs by hand killed since, left over from a killed scheduler, or a reboot
            self._dead_checked = mono
            if n := jobs.abandon_dead_runs(self.conn, now):
                log.warning("scheduler: %d runs whose process is gone marked FAILED", n)
        for slot in list(self.slots.values()):
            run = slot.run
            if run is not None:
                code = run.task.poll()
                if code is not None:
                    self._finished(slot, run, code, now)
                elif run.terminated_at is None and mono >= run.deadline:
                    log.warning(
                        "%s: past its %gs timeout; asked to stop",
                        slot.entry.job,
                        slot.entry.timeout_s,
                    )
                    run.task.run.timed_out = True
                    run.task.terminate()
                    run.terminated_at = mono
                elif run.terminated_at is not None and mono - run.terminated_at >= KILL_GRACE_S:
                    log.error(
                        "%s: still running %gs after it was asked to stop; the scheduler"
                        " exits to end it (supervisord restarts it)",
                        slot.entry.job,
                        KILL_GRACE_S,
                    )
                    self._finished(slot, run, None, now)
                    self.restart = True
            if slot.removed:
                if slot.run is None:
                    del self.slots[slot.entry.job]  # its last run has ended
                continue
            if now >= slot.due:
                due, slot.due = slot.due, slot.entry.next_after(max(now, slot.due))
                if slot.run is None:
                    self._start(slot, "cron", due, now)
                else:
                    slot.skipped += 1
                    log.info(
                        "%s: still running at its %s tick; skipped",
                        slot.entry.job,
                        f"{due:%H:%M:%S}",
                    )
            if slot.run is None and slot.rerun:
                self._start(slot, "wake", now, now)

    def wake(self, job: str, now: datetime) -> None:
        """Starts `job` now if it is scheduled, idle and was not started within the gap."""
        slot = self.slots.get(job.removeprefix("functions."))
        if slot is None:
            log.info("wake for %r ignored: not in the crontab", job)
            return
        slot.rerun = True  # kept until it starts: after the run in progress, or the gap
        if slot.run is None:
            self._start(slot, "wake", now, now)

    def seconds_to_next(self, now: datetime) -> float:
        """How long the main loop may sleep before something is due."""
        wait = MAX_WAIT_S
        for slot in self.slots.values():
            if slot.removed:
                continue
            wait = min(wait, (slot.due - now).total_seconds())
            if slot.rerun and slot.run is None:
                gap = slot.last_start + self.s.wake_min_gap_s - time.monotonic()
                wait = min(wait, gap)
        return max(0.0, wait)

    # -- runs ---------------------------------------------------------------------
    def _start(self, slot: Slot, trigger: str, due: datetime, now: datetime) -> None:
        if self.restart:
            return  # a given-up run may still hold its role: nothing starts until we exit
        gap = self.s.wake_min_gap_s
        if trigger == "wake" and time.monotonic() - slot.last_start < gap:
            return  # rerun stays set; seconds_to_next comes back after the gap
        e = slot.entry
        argv = list(e.argv)
        if url := self.env.get("DATABASE_URL"):
            argv += ["--database-url", url]
        run = jobs.Run(trigger, due, e.timeout_s)
        task = Task(e.job, e.module, argv, run, self.log_dir / f"{e.job}.log")
        try:
            task.start()
        except (RuntimeError, OSError) as exc:  # no thread to be had
            log.error("%s: cannot start: %s", e.job, exc)
            self._record(e.job, "FAILED", now, now, f"could not start: {exc}", trigger, due)
            return
        mono = time.monotonic()
        slot.run = Run(task, now, mono, mono + e.timeout_s)
        slot.rerun, slot.last_start = False, mono
        slot.started += 1
        log.debug("%s: started (%s)", e.job, trigger)

    def _finished(self, slot: Slot, run: Run, code: int | None, now: datetime) -> None:
        """Makes sure the run has a row saying how it ended (`code` None: it did not
        end, it was given up)."""
        slot.run = None
        memory.trim()  # what the run allocated, freed, back to the system
        job = slot.entry.job
        if code is None:
            self.given_up.append(run.task)
        if code == jobs.EXIT_BUSY:
            log.warning(
                "%s: another copy holds its role (started by hand, or on another host?)", job
            )
            return
        if code == 0:
            return  # its own row says how it went
        timed_out = run.terminated_at is not None and not self.stopping
        status = "TIMEOUT" if timed_out else "FAILED"
        if code is None:
            how = f"still running {KILL_GRACE_S:g}s after it was asked to stop"
        else:
            how = run.task.error or f"exited with code {code}"
        if self.stopping:
            error = f"{how}: stopped with the scheduler"
        elif timed_out:
            error = f"{how} after the {slot.entry.timeout_s:g}s timeout"
        else:
            error = f"{how}; see {self.log_dir / (job + '.log')}"
        updated = 0
        if ids := run.task.run.run_ids:
            updated = self.conn.execute(
                """UPDATE job_run SET status = %(s)s, finished_at = %(t)s,
                       error = COALESCE(error || '; ', '') || %(e)s
                   WHERE id = ANY(%(ids)s) AND status = 'RUNNING'""",
                {"s": status, "t": now, "e": error, "ids": ids},
            ).rowcount
        if not ids and not self.stopping:
            # it ended before it could record a run (import error, no database, a crash)
            self._record(
                job,
                status,
                run.started_wall,
                now,
                error,
                run.task.run.trigger,
                run.task.run.scheduled_at,
                run.task.pid,
            )
        if ids and not updated:  # the run recorded its own end (e.g. FAILED, with its error)
            return
        log.warning("%s: run %s (%s)", job, status.lower(), error)

    def _record(
        self,
        job: str,
        status: str,
        started: datetime,
        now: datetime,
        error: str,
        trigger: str,
        due: datetime | None,
        pid: int | None = None,
    ) -> None:
        self.conn.execute(
            """INSERT INTO job_run (job, started_at, finished_at, status, error, pid, host,
                   trigger, scheduled_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (job, started, now, status, error, pid, self.host, trigger, due),
        )

    def running(self) -> list[Run]:
        return [slot.run for slot in self.slots.values() if slot.run is not None]

    def stop_all(self, now: datetime, grace_s: float = STOP_GRACE_S) -> None:
        """Sets every run's stop flag and waits up to `grace_s` for them; closes their
        rows (a run stopped before it recorded anything leaves no row: nothing ran).
        Runs still going are left to end with the process."""
        self.stopping = True
        for run in self.running():
            run.task.terminate()
        deadline = time.monotonic() + grace_s
        for slot in self.slots.values():
            if slot.run is None:
                continue
            run = slot.run
            code = run.task.wait(deadline - time.monotonic())
            self._finished(slot, run, code, now)

    def info(self, now: datetime) -> dict[str, Any]:
        """What the heartbeat carries (the status command and page read it)."""
        return {
            "crontab": str(self.path),
            "errors": self.errors,
            "jobs": {
                job: {
                    "next": slot.due.isoformat(),
                    "running_pid": slot.run.task.pid if slot.run else None,
                    "running_s": round(time.monotonic() - slot.run.started, 1)
                    if slot.run
                    else None,
                    "started": slot.started,
                    "skipped": slot.skipped,
                }
                for job, slot in sorted(self.slots.items())
            },
        }


# Moved to common.runtime.jobs (each job's run closes its own dead runs too); `ops clear-stuck`
# reads them here.


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m functions.scheduler",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--crontab", type=Path, help="default: OCULUS_CRONTAB_PATH (crontab)")
    p.add_argument("--check", action="store_true", help="parse the crontab, print it, exit")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (tests)")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = p.parse_args(argv)
    s = settings.get()
    jobs.setup_logging(s)
    path = args.crontab or s.crontab_path
    if args.check:
        entries, errors = crontab.load(path)
        now = jobs.utcnow()
        for e in entries:
            print(
                f"{e.job:12} next {e.next_after(now):%Y-%m-%d %H:%M:%S}Z"
                f"  timeout {e.timeout_s:g}s  {e.command}"
            )
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        return 1 if errors else 0
    stop = jobs.StopFlag().install()
    conn = jobs.connect_waiting(args.database_url, stop, "scheduler")
    if conn is None:
        return 0  # stopped while waiting for the database
    try:
        url = args.database_url or db.database_url(s)
        listener = db.connect(url, autocommit=True)
    except db.DatabaseUnavailable as exc:  # gone again since `conn`
        conn.close()
        return jobs.lost_exit("scheduler", exc)
    for handler in logging.getLogger().handlers:  # runs' records go to their jobs' logs
        handler.addFilter(NotRuns())
    sched = Scheduler(conn, s, {**os.environ, "DATABASE_URL": url}, crontab_path=path)
    try:
        code = serve(sched, listener, stop, args.seconds)
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if not (db.lost(conn, exc) or db.lost(listener, exc)):
            raise
        # The runs end with the process (their rows become FAILED when the next
        # scheduler starts: their process is gone).
        if running := [job for job, slot in sched.slots.items() if slot.run is not None]:
            log.warning("scheduler: runs of %s end with it", ", ".join(running))
        code = jobs.lost_exit("scheduler", exc)
    finally:
        for run in sched.running():
            run.task.terminate()
        conn.close()
        listener.close()
    if any(task.thread.is_alive() for task in sched.given_up):
        logging.shutdown()  # runs that ignored their stop end with the process, now
        os._exit(code)
    return code


def serve(sched: Scheduler, listener: db.Conn, stop: jobs.StopFlag, seconds: float | None) -> int:
    """Holds the scheduler's role (one across every host: a second scheduler stands by
    and takes over once this one stops, dies, or its host goes silent for
    OCULUS_ROLE_LEASE_S) and runs the crontab until stopped (or `seconds`); wake-ups
    arrive on `listener`. Returns the exit code."""
    conn = sched.conn
    end = time.monotonic() + seconds if seconds else None
    role = jobs.role(conn, "scheduler", sched.env.get("DATABASE_URL"))

    def done() -> bool:
        return stop.stopped or (end is not None and time.monotonic() >= end)

    if not role.take() and not role.wait(done, stop.sleep):
        return 0  # stopped while standing by
    role.keep()
    try:
        return _serve(sched, listener, lambda: done() or sched.restart)
    finally:
        role.release()


def _serve(sched: Scheduler, listener: db.Conn, done: Callable[[], bool]) -> int:
    """`serve` once the role is held."""
    conn, s = sched.conn, sched.s
    now = jobs.utcnow()
    # SPEC §9: backfill the last 15 min on start (the poll runs serve the request)
    checkpoints.request_backfill(conn, now - timedelta(seconds=s.poll_backfill_on_start_s), now)
    listener.execute(f"LISTEN {jobs.WAKE_CHANNEL}")
    sched.load(now)
    beat = 0.0
    while not done():
        now = jobs.utcnow()
        sched.load(now)
        sched.tick(now)
        if time.monotonic() - beat >= HEARTBEAT_S:
            jobs.heartbeat(conn, "scheduler", now, sched.info(now))
            beat = time.monotonic()
        wait = sched.seconds_to_next(jobs.utcnow())
        for note in listener.notifies(timeout=wait, stop_after=1):
            sched.wake(note.payload, jobs.utcnow())
    sched.stop_all(jobs.utcnow())
    return EXIT_RESTART if sched.restart else 0


if __name__ == "__main__":
    sys.exit(main())
