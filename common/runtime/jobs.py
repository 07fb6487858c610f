"""The frame every job shares: flags, logging, one run recorded in `job_run`, a loop
that stops on a signal, heartbeats for long-running processes, the per-job role and the
wake-up signal.

A job module supplies `run_once(conn, ctx) -> int` (one bounded batch; returns how many
items it handled) and calls `jobs.main(...)` from its own `main(argv)`.

- One copy of a job at a time, across every host: `main` holds the job's elected role
  (`leases.Role`, a `role_lease` row named after the job, renewed in a thread, expiring
  OCULUS_ROLE_LEASE_S after its last renewal) for as long as the process runs. A
  `--once` run that finds it held exits with EXIT_BUSY (75) and records nothing; a loop
  stands by until it is free (released, its process gone, or its host silent).
- `wake(conn, job)` sends NOTIFY on WAKE_CHANNEL with the job's name: the scheduler
  starts that job now instead of at its next tick (functions/scheduler.py).
- The scheduler runs a job in a thread of its own process with a `Run` (`current_run`):
  the trigger (cron or wake) and the instant it was due, which `job_run` keeps, and the
  stop flag it sets at the run's timeout. Runs started by hand are recorded as
  'manual', loops as 'loop'.
- A `--once` run started by hand holds itself to the crontab's timeout for its job
  (`--timeout S` overrides, 0 = none), as the scheduler holds its own runs: past it,
  SIGTERM, then KILL_GRACE_S later its row becomes TIMEOUT and it exits EXIT_TIMEOUT.
- Every run starts by closing the RUNNING rows its job's dead processes left (a run
  killed with SIGKILL): they become FAILED (`abandon_dead_runs`).
- A long-running process (a loop; listen, the scheduler and the site builder use the
  same two helpers) that loses its database connection logs one line and exits
  EXIT_DB_LOST (`lost_exit`): its role lapses unless renewed meanwhile, and supervisord
  restarts it. Started while the database is down, it waits for it (`connect_waiting`)
  rather than exit, so supervisord counts the start as good and never gives up on it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from common.runtime import clock as clocks
from common.runtime import memory, settings
from common.store import db, leases

if TYPE_CHECKING:  # httpx is imported only where a run makes requests
    from common.upstream import http

log = logging.getLogger(__name__)
utcnow = clocks.utcnow

WAKE_CHANNEL = "oculus_wake"
EXIT_BUSY = 75  # EX_TEMPFAIL: another copy of the job holds its role
EXIT_TIMEOUT = 124  # as coreutils `timeout`: a run by hand outlived its timeout
KILL_GRACE_S = 5.0  # past a timeout: SIGTERM, then this long before the hard stop
EXIT_DB_LOST = 69  # EX_UNAVAILABLE: the database connection was lost; restart me
DB_RETRY_S = 1.0  # a long-running process started while the database is down retries this often
DB_WAIT_LOG_S = 60.0  # ... and says it is still waiting this often


class StopFlag:
    """Set by SIGTERM/SIGINT; long loops check it and sleep in short slices. Installed,
    it also stops the process's HTTP upstreams: the request in flight ends at once and
    none starts (a dripping or silent server must not hold a stopping job). A run the
    scheduler starts in its own process (`Run`) gets a flag it sets itself instead."""

    def __init__(self) -> None:
        self.stopped = False

    def install(self) -> StopFlag:
        from common.upstream import http

        self._halt = http.HALT
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, *_: object) -> None:
        self._stop()
        self._halt.request()  # raises http.Stopped if the main thread is in a request

    def _stop(self, *_: object) -> None:
        self.stopped = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopped and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


@dataclass
class Run:
    """A run the scheduler starts inside its own process (a thread: no interpreter of
    ~45 MB to start for a second's work): why and when it was due, the stop flag the
    scheduler sets at its timeout or shutdown, and the job_run rows it wrote."""

    trigger: str
    scheduled_at: datetime | None
    timeout_s: float
    stop: StopFlag = field(default_factory=StopFlag)
    halt: http.Halt = field(default_factory=lambda: _new_halt())  # its upstreams'
    timed_out: bool = False  # the stop came at the timeout (not a shutdown)
    fenced: str | None = None  # why it lost its role
    run_ids: list[int] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)

    def request_stop(self) -> None:
        """What SIGTERM does to a job process: the stop flag, and its upstreams stop
        (none starts a request; a backoff ends; a read ends at its next chunk)."""
        self.stop.stopped = True
        self.halt.request()


def _new_halt() -> http.Halt:
    from common.upstream import http  # httpx only where a run makes requests

    return http.Halt()


_local = threading.local()


def current_run() -> Run | None:
    """The scheduler's Run this thread is executing, or None (a process of its own)."""
    run: Run | None = getattr(_local, "run", None)
    return run


def enter_run(run: Run | None) -> None:
    _local.run = run


@dataclass
class Context:
    """What one run of a job gets: parsed flags, settings, counters, the clock, and the
    stop flag (SIGTERM, or the scheduler's at a timeout) that long runs check."""

    args: argparse.Namespace
    settings: settings.Settings
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # saved beside the counts
    clock: Callable[[], datetime] = utcnow
    wait_until: Callable[[datetime], None] = clocks.sleep_until
    resources: dict[str, Any] = field(default_factory=dict)
    stop: StopFlag = field(default_factory=StopFlag)

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n


def role(conn: db.Conn, job: str, url: str | None = None) -> leases.Role:
    """The job's elected role (one copy across every host: `leases.Role`). Inside the
    scheduler's process, a run that loses its role is stopped alone (`fence`), not the
    process with every other run."""
    s = settings.get()
    run = current_run()
    on_lost = None if run is None else functools.partial(fence, run, s.role_lease_s)
    return leases.Role(conn, job, s.host_id, s.role_lease_s, url=url, on_lost=on_lost)


def fence(run: Run, ttl_s: float, why: str) -> None:
    """A run inside the scheduler lost its role: it is asked to stop at once, and if it
    has not ended within the grace a process gets (`leases.Role._terminate`), the process
    exits: two holders never work on past one lease."""
    run.fenced = why
    run.request_stop()
    grace = max(0.2, min(2.0, 0.15 * ttl_s))

    def hard_stop() -> None:
        if not run.ended.wait(grace):
            log.error("a run that lost its role did not stop within %gs; exiting", grace)
            os._exit(leases.FENCED_EXIT)

    threading.Thread(target=hard_stop, name="fence", daemon=True).start()


def host_id() -> str:
    """This host's name in runs, heartbeats and leases (OCULUS_HOST_ID, else hostname)."""
    return settings.get().host_id


def host_process(job: str) -> str:
    """The name of a one-per-host loop's lock and heartbeat: `<job>@<host id>`."""
    return f"{job}@{host_id()}"


# A host none of whose processes beat this long is taken for gone (its runs abandoned).
HOST_GONE = timedelta(minutes=2)


def gone(pid: int | None, host: str | None) -> bool:
    """Whether the process that wrote a row (its pid and host) has provably ended: it ran
    on this host and its pid is no longer there. Another host's, or an unknown pid, is
    never taken for gone here (`dead_runs` asks that host's heartbeats)."""
    return pid is not None and host == host_id() and leases.process_gone(pid)


def dead_runs(
    conn: db.Conn, job: str | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The RUNNING rows (of `job`, or of every job) whose process is gone (a scheduler or
    job killed with SIGKILL, a reboot): on this host, with a pid that no longer runs; on
    another host, one none of whose processes has beaten for HOST_GONE (a host that died
    whole) — a host whose processes still beat is trusted with its own runs."""
    rows = conn.execute(
        """SELECT r.id, r.job, r.pid, r.host, r.started_at,
                  r.host <> %(me)s AND r.started_at < %(cut)s AND NOT EXISTS (
                      SELECT 1 FROM process_heartbeat h
                      WHERE h.host = r.host AND h.beat_at >= %(cut)s) AS host_gone
           FROM job_run r WHERE r.status = 'RUNNING'
             AND (%(j)s::text IS NULL OR r.job = %(j)s) ORDER BY r.id""",
        {"j": job, "me": host_id(), "cut": (now or utcnow()) - HOST_GONE},
    )
    return [r for r in rows if r["host_gone"] or gone(r["pid"], r["host"])]


# Marks runs FAILED (params: now, error, ids); `ops clear-stuck` runs it too.
ABANDON = """UPDATE job_run SET status = 'FAILED', finished_at = %s, error = %s
             WHERE id = ANY(%s) AND status = 'RUNNING'"""


def abandon_dead_runs(conn: db.Conn, now: datetime, job: str | None = None) -> int:
    """Marks the dead runs (of `job`, or all) FAILED; returns how many."""
    dead = [r["id"] for r in dead_runs(conn, job, now)]
    if dead:
        conn.execute(ABANDON, (now, "abandoned: its process is gone", dead))
    return len(dead)


def wake(conn: db.Conn, job: str) -> None:
    """Asks the scheduler to start `job` now (delivered when the transaction commits)."""
    conn.execute("SELECT pg_notify(%s, %s)", (WAKE_CHANNEL, job))


def run_trigger(args: argparse.Namespace | None = None) -> tuple[str, datetime | None]:
    """Why this run started and when it was due: the scheduler's `Run` (cron or wake);
    else a loop, or a run by hand ('manual'), neither of them due."""
    if (run := current_run()) is not None:
        return run.trigger, run.scheduled_at
    return ("loop" if args is not None and getattr(args, "loop", False) else "manual"), None


def record_start(
    conn: db.Conn,
    job: str,
    now: datetime,
    trigger: str = "manual",
    scheduled_at: datetime | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO job_run (job, started_at, status, pid, host, trigger, scheduled_at)"
        " VALUES (%(j)s, %(t)s, 'RUNNING', %(pid)s, %(host)s, %(tr)s, %(due)s) RETURNING id",
        {
            "j": job,
            "t": now,
            "pid": os.getpid(),
            "host": host_id(),
            "tr": trigger,
            "due": scheduled_at,
        },
    ).fetchone()
    assert row is not None
    return int(row["id"])


def record_end(
    conn: db.Conn,
    run_id: int,
    now: datetime,
    status: str,
    items: int,
    counts: dict[str, Any],
    error: str | None = None,
) -> None:
    conn.execute(  # only a RUNNING row: a watchdog may have closed it as TIMEOUT
        "UPDATE job_run SET finished_at = %(t)s, status = %(s)s, items = %(i)s,"
        " counts = %(c)s, error = %(e)s WHERE id = %(id)s AND status = 'RUNNING'",
        {"t": now, "s": status, "i": items, "c": Jsonb(counts), "e": error, "id": run_id},
    )


def heartbeat(conn: db.Conn, process: str, now: datetime, info: dict[str, Any]) -> None:
    """Upserts the process's heartbeat row (reconcile and the status page read it)."""
    conn.execute(
        """INSERT INTO process_heartbeat (process, pid, host, started_at, beat_at, info)
           VALUES (%(p)s, %(pid)s, %(h)s, %(t)s, %(t)s, %(i)s)
           ON CONFLICT (process) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host,
               beat_at = EXCLUDED.beat_at, info = EXCLUDED.info,
               started_at = CASE WHEN process_heartbeat.pid = EXCLUDED.pid
                                 THEN process_heartbeat.started_at ELSE EXCLUDED.started_at END""",
        {"p": process, "pid": os.getpid(), "h": host_id(), "t": now, "i": Jsonb(info)},
    )


def run_recorded(
    conn: db.Conn,
    job: str,
    ctx: Context,
    run_once: Callable[[db.Conn, Context], int],
    *,
    keep_idle: bool = True,
) -> int:
    """Runs one batch and records it in job_run; returns the items handled. A failure
    is recorded with its error and re-raised. With keep_idle=False a run that handled
    nothing and counted nothing leaves no row (fast loops would flood the table)."""
    ctx.counts.clear()
    ctx.details.clear()
    trigger, due = run_trigger(ctx.args)
    run_id = record_start(conn, job, ctx.clock(), trigger, due)
    if (run := current_run()) is not None:
        run.run_ids.append(run_id)  # the scheduler closes it if the run cannot
    try:
        items = run_once(conn, ctx)
    except Exception as exc:
        if not conn.autocommit:
            conn.rollback()
        error = f"{type(exc).__name__}: {exc}"
        status = "FAILED"
        if (timeout_s := _timed_out(ctx)) is not None:
            status, error = "TIMEOUT", f"{error}; stopped after its {timeout_s:g}s timeout"
        record_end(conn, run_id, ctx.clock(), status, 0, {**ctx.counts, **ctx.details}, error)
        raise
    if not keep_idle and not items and not ctx.counts:
        conn.execute("DELETE FROM job_run WHERE id = %s", (run_id,))
        return items
    ups = ctx.resources.get("ups")
    if ups is not None and not getattr(ctx.args, "loop", False):
        ctx.details["upstreams"] = ups.stats()  # a run's own calls (loops: heartbeats)
    status, note = "OK", None
    if (timeout_s := _timed_out(ctx)) is not None:  # it heeded its stop flag: cut short
        status, note = "TIMEOUT", f"asked to stop after its {timeout_s:g}s timeout; ended early"
    elif (run := current_run()) is not None and run.stop.stopped:
        status = "FAILED" if run.fenced else "OK"
        note = f"lost its role ({run.fenced})" if run.fenced else "stopped with the scheduler"
        note += "; ended early"
    record_end(conn, run_id, ctx.clock(), status, items, {**ctx.counts, **ctx.details}, note)
    return items


def parse_duration(text: str) -> timedelta:
    """'6h', '90m', '45s', '2d' → timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration like 15m, 6h or 2d: {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def parser(job: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m functions.{job}", description=description)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one batch and exit (default)")
    mode.add_argument("--loop", action="store_true", help="run batches until SIGTERM")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between loop batches")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    p.add_argument(
        "--timeout",
        type=float,
        help="a --once run by hand stops after this many seconds"
        " (default: the crontab's timeout for the job; 0: none)",
    )
    return p


def hand_timeout(job: str, args: argparse.Namespace) -> float | None:
    """The timeout a --once run started by hand holds itself to: --timeout (0: none),
    else the crontab's for the job (none if not scheduled). None for loops, and for the
    scheduler's runs: it times them itself."""
    if getattr(args, "loop", False) or run_trigger(args)[0] != "manual":
        return None
    given = getattr(args, "timeout", None)
    if given is not None:
        return float(given) if given > 0 else None
    from common.runtime import crontab

    entries, _ = crontab.load()
    return next((e.timeout_s for e in entries if e.job == job), None)


class Watchdog:
    """Holds a run started by hand to its timeout, as the scheduler holds its runs: past
    it, SIGTERM (the stop flag); KILL_GRACE_S later, if the run is still going, its row
    becomes TIMEOUT and the process exits EXIT_TIMEOUT (its session, the job's lock and
    any open transaction end with it)."""

    def __init__(
        self, job: str, timeout_s: float, url: str | None, clock: Callable[[], datetime]
    ) -> None:
        self.job, self.timeout_s, self.url, self.clock = job, timeout_s, url, clock
        self.fired = threading.Event()
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True

    def start(self) -> Watchdog:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        log.warning(
            "%s: past its %gs timeout (a run by hand gets the crontab's; --timeout changes"
            " it); SIGTERM",
            self.job,
            self.timeout_s,
        )
        self.fired.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(KILL_GRACE_S)  # the run may still end (and record itself) meanwhile
        log.error("%s: still running %gs after its timeout; stopped", self.job, KILL_GRACE_S)
        self.record()
        os._exit(EXIT_TIMEOUT)

    def record(self) -> None:
        """Marks this process's RUNNING row of the job TIMEOUT, on a connection of its
        own (the run's may be in the middle of a query)."""
        error = f"stopped after its {self.timeout_s:g}s timeout (a run by hand)"
        try:
            with db.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    """UPDATE job_run SET status = 'TIMEOUT', finished_at = %(t)s, error = %(e)s
                       WHERE job = %(j)s AND pid = %(pid)s AND host = %(h)s
                         AND status = 'RUNNING'""",
                    {
                        "t": self.clock(),
                        "e": error,
                        "j": self.job,
                        "pid": os.getpid(),
                        "h": host_id(),
                    },
                )
        except (db.DatabaseUnavailable, psycopg.Error) as exc:
            log.error("%s: could not record the timeout: %s", self.job, exc)


def setup_logging(s: settings.Settings) -> None:
    logging.basicConfig(
        level=s.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def backoff_delay(attempt: int, jitter: float, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds before a WebSocket client's reconnect attempt `attempt` (0-based): doubling
    from `base`, capped at `cap`, spread over the upper half by `jitter` in [0, 1)."""
    ceiling = min(cap, base * (1 << min(attempt, 30)))
    return ceiling / 2 * (1 + jitter)


def connect_waiting(url: str | None, stop: StopFlag, who: str) -> db.Conn | None:
    """Connects (autocommit); while the database is down, retries every DB_RETRY_S,
    logging once and then once every DB_WAIT_LOG_S. Returns None if stopped first."""
    said = float("-inf")
    while True:
        try:
            conn = db.connect(url, autocommit=True)
        except db.DatabaseUnavailable as exc:
            if time.monotonic() - said >= DB_WAIT_LOG_S:
                said = time.monotonic()
                log.warning(
                    "%s: database unavailable (%s); waiting for it, retrying every %gs",
                    who,
                    " ".join(str(exc).split()),
                    DB_RETRY_S,
                )
        else:
            if said > float("-inf"):
                log.info("%s: database reachable; going on", who)
            return conn
        stop.sleep(DB_RETRY_S)
        if stop.stopped:
            return None


def lost_exit(who: str, exc: BaseException) -> int:
    """Logs the lost connection (one line) and returns EXIT_DB_LOST."""
    log.error(
        "%s: lost the database connection (%s); exiting %d for supervisord to restart it",
        who,
        db.one_line(exc),
        EXIT_DB_LOST,
    )
    return EXIT_DB_LOST


def acquire(
    conn: db.Conn, job: str, args: argparse.Namespace, stop: StopFlag
) -> leases.Role | None:
    """Takes the job's role and keeps it renewed. A --once run gives up at once; a loop
    stands by until the other copy ends or its host stops renewing. Returns None when the
    role was not taken."""
    held = role(conn, job, args.database_url)
    if held.take():
        return held.keep()
    if not args.loop:
        log.warning("%s: another copy is running (%s); not started", job, held.describe())
        return None
    return held.keep() if held.wait(lambda: stop.stopped, stop.sleep) else None


def main(
    job: str,
    args: argparse.Namespace,
    run_once: Callable[[db.Conn, Context], int],
    *,
    upstreams: bool = False,
    per_host: bool = False,
    at_exit: Callable[[db.Conn, Context], None] | None = None,
) -> int:
    """Runs a job from its command line: once (exit 1 on failure) or in a loop; either
    exits EXIT_DB_LOST when its database connection is lost. With `upstreams`,
    ctx.resources["ups"] holds the process's HTTP upstreams. A `per_host` loop is one
    copy per host, not one in all (its role and heartbeat are `<job>@<host id>`), and a
    NOTIFY waking the job (`wake`) cuts its rest short. `at_exit` runs when a loop stops
    while its database is still there (a poll loop frees its leases)."""
    s = settings.get()
    run = current_run()
    if run is None:  # a process of its own (a run inside the scheduler uses its logging)
        setup_logging(s)
    stop = StopFlag().install() if run is None else run.stop
    ctx = Context(args=args, settings=s, stop=stop)
    source = clocks.configured(s.clock_url)
    ctx.clock, ctx.wait_until = source.now, source.wait_until
    try:
        if args.loop:
            found = connect_waiting(args.database_url, stop, job)
            if found is None:
                return 0  # stopped while waiting
            conn = found
        else:
            conn = db.connect(args.database_url, autocommit=True)
    except db.DatabaseUnavailable as exc:
        log.error("%s: database unavailable: %s", job, exc)
        source.close()
        return 1
    try:
        code = _main(job, run_once, ctx, conn, stop, upstreams, per_host)
        if at_exit is not None and args.loop and code == 0:
            at_exit(conn, ctx)
        return code
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if not db.lost(conn, exc):
            raise
        return lost_exit(job, exc)
    finally:
        if "watchdog" in ctx.resources:
            ctx.resources["watchdog"].cancel()
        if "role" in ctx.resources:
            ctx.resources["role"].release()
        if "ups" in ctx.resources:
            ctx.resources["ups"].close()
        conn.close()
        source.close()


def _main(
    job: str,
    run_once: Callable[[db.Conn, Context], int],
    ctx: Context,
    conn: db.Conn,
    stop: StopFlag,
    upstreams: bool,
    per_host: bool = False,
) -> int:
    """`main` once connected: the lock, then the run or the loop."""
    args = ctx.args
    conn.execute("SELECT set_config('application_name', %s, false)", (f"oculus {job}",))
    process = host_process(job) if per_host and args.loop else job
    if (held := acquire(conn, process, args, stop)) is None:
        return EXIT_BUSY if not args.loop else 0
    ctx.resources["role"] = held
    woken = per_host and args.loop
    if woken:
        conn.execute(f"LISTEN {WAKE_CHANNEL}")
    if n := abandon_dead_runs(conn, ctx.clock(), job):
        log.warning("%s: %d earlier runs whose process is gone marked FAILED", job, n)
    timeout_s = hand_timeout(job, args)
    if timeout_s is not None:
        watchdog = Watchdog(job, timeout_s, args.database_url, ctx.clock)
        ctx.resources["watchdog"] = watchdog.start()
    if upstreams:
        from common.store import budget  # the shared request budget

        run = current_run()
        ctx.resources["ups"] = budget.make_upstreams(
            ctx.settings, args.database_url, halt=None if run is None else run.halt
        )
    while True:
        try:
            items = run_recorded(conn, job, ctx, run_once, keep_idle=not args.loop)
            if items or ctx.counts or not args.loop:
                log.info("%s: %d items %s", job, items, ctx.counts or "")
            if args.loop:
                info: dict[str, Any] = {"items": items}
                if "ups" in ctx.resources:
                    info["upstreams"] = ctx.resources["ups"].stats()
                heartbeat(conn, process, ctx.clock(), info)
        except Exception as exc:
            if db.lost(conn, exc):
                raise  # no retrying: main exits for supervisord to restart it
            log.exception("%s: run failed", job)
            if not args.loop:
                return EXIT_TIMEOUT if _timed_out(ctx) is not None else 1
        if not args.loop and _timed_out(ctx) is not None:
            return EXIT_TIMEOUT  # cut short at its timeout (its row says TIMEOUT)
        if not args.loop or stop.stopped:
            return 0
        memory.trim()  # a batch's payloads and rows, freed, back to the system
        rest(conn, stop, args.interval, job if woken else None)
        if stop.stopped:
            return 0


def rest(conn: db.Conn, stop: StopFlag, seconds: float, woken_by: str | None) -> None:
    """Sleeps `seconds` between a loop's runs, in short slices (a stop ends it); with
    `woken_by`, a NOTIFY on WAKE_CHANNEL naming that job ends it too."""
    if woken_by is None:
        stop.sleep(seconds)
        return
    deadline = time.monotonic() + seconds
    while not stop.stopped and (left := deadline - time.monotonic()) > 0:
        for note in conn.notifies(timeout=min(0.2, left), stop_after=1):
            if note.payload == woken_by:
                return


def _timed_out(ctx: Context) -> float | None:
    """The timeout a run was stopped at (its watchdog's, or the scheduler's), else None."""
    watchdog = ctx.resources.get("watchdog")
    if isinstance(watchdog, Watchdog) and watchdog.fired.is_set():
        return watchdog.timeout_s
    run = current_run()
    return run.timeout_s if run is not None and run.timed_out else None
