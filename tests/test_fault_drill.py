"""The fault drill (SPEC §9; issue 7): while the sandbox runs with several leaders, every
process type is killed with SIGKILL at random moments, the chain WebSocket is dropped and
upstream 429 and 5xx storms hit; afterwards nothing is missing and nothing is doubled.

Part 1, the pipeline, on the sandbox's manual clock (deterministic). An undisturbed
reference run and a disturbed run of the same seed take the same steps: move the clock,
then poll → simulate (→ price, → snapshot on their cadence), each job as a fresh run (as
its `--once` process would be). A seeded RNG picks, in the disturbed run, runs that are
started as the operator does (`python -m functions.<job> --once`) and SIGKILLed at a
random moment inside their run (slow answers, or a held ingest lock, keep them busy long
enough), and steps whose poll and price run as processes through a 429 or a 5xx storm
(cut off after STORM_BUDGET_S, like a run timeout). Each is then run again as a new
process, as the scheduler's next tick would — at the same sandbox instant, since the
manual clock stands still between ticks. (simulate is not stormed: a book it cannot fetch
at decision time is decided SKIP NO_BOOK, by design, so no rerun could match.) Every
table the pipeline writes must then equal the reference's by content (ids differ after
kills, so rows are compared by natural keys), and the fills must equal the truth.

Part 2, the listener, on a real clock (the system's, as in production). The listener
subscribes while the followed wallets are still quiet; then `python -m functions.listen`
is SIGKILLed and restarted at random moments and its WebSocket dropped (on demand and on
a timer), one kill and one drop aimed just before the chain sends a fill, with poll runs
in between as the scheduler starts them (one of them killed too). Afterwards every truth
fill is stored once, every fill the chain sent since the listener first subscribed
carries its chain identity (tx hash + log index, exact fee), and each event's shadow
ledger entries equal the truth's deltas and cash.

Part 3, the database (issue 13). The long-running programs (scheduler, listen, simulate,
site builder) run under supervisord with supervisord.conf's own settings for them,
against a Postgres cluster of the drill's own (the shared test server is never killed).
Its postmaster is killed with SIGKILL mid-run and started again after a while; every
program must be processing again (the scheduler starting runs, the others beating)
within 30 s of the restart, supervisord must not have given up on any, and none may
have logged more than a few lines other than its INFO lines meanwhile.

`pytest -s` prints one summary line per part.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
import pytest
from test_poll import (
    LAG_MS,
    MINUTE,
    Harness,
    expected_positions,
    shadow_positions,
    stored_fills,
    truth_fills,
    without,
)

import run_local
from common.runtime import clock, jobs, settings
from common.store import db, migrate, users
from functions import poll, price, simulate, snapshot
from sandbox import testing

pytestmark = pytest.mark.sandbox
ROOT = Path(__file__).resolve().parents[1]

# --- part 1: the pipeline ------------------------------------------------------------------

SEED = 5
ANCHOR_MS = 1_790_000_000_000  # fixed: both runs see the same absolute times
LEADERS = 8
STEPS = 12
STEP_MS = 10_000
SLOW_MS = 150  # every upstream answer this late while a run is to be killed
STORMS = ({"rate_429": 0.5}, {"rate_5xx": 0.6})
STORM_BUDGET_S = 3.0  # a storm run still going after this is killed (a run timeout)
ARGS: dict[str, dict[str, Any]] = {
    "poll": {"backfill": None},
    "simulate": {"wait": 30.0, "replay": False, "batch": 1},
    "price": {},
    "snapshot": {"rebuild": False},
}
FLAGS = {"simulate": ["--wait", "30"]}
MODULES: dict[str, Any] = {"poll": poll, "simulate": simulate, "price": price, "snapshot": snapshot}


def stages(step: int) -> list[str]:
    """The jobs of one step, in order: poll and simulate every step (10 s), price every
    third (30 s), snapshot every fourth."""
    out = ["poll", "simulate"]
    if step % 3 == 2:
        out.append("price")
    if step % 4 == 3:
        out.append("snapshot")
    return out


def wait_for(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := what()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {message}")
        time.sleep(0.005)
    return got


class InProcess:
    """Runs a job's `run_once` the way its `--once` process does: a fresh context (so
    poll's first-run reach-back and a new simulate engine every time), recorded."""

    def __init__(self, conn: db.Conn, sb: testing.RunningSandbox, h: Harness) -> None:
        self.conn, self.h = conn, h
        self.source = clock.sandbox(sb.control_url)

    def run(self, job: str) -> int:
        ctx = jobs.Context(
            args=argparse.Namespace(**ARGS[job]),
            settings=self.h.settings,
            clock=self.source.now,
            wait_until=self.source.wait_until,
        )
        ctx.resources["ups"] = self.h.ups
        return jobs.run_recorded(self.conn, job, ctx, MODULES[job].run_once)

    def close(self) -> None:
        self.source.close()


class Processes:
    """Starts jobs as OS processes with the operator's command line; keeps every one so
    `close` can kill what is left, and their output for failure messages."""

    def __init__(self, db_url: str, sb: testing.RunningSandbox, logs: Path, **env: str) -> None:
        self.env = {
            **os.environ,
            **run_local.demo_environment(sb.port),
            "DATABASE_URL": db_url,
            "OCULUS_LOG_LEVEL": "WARNING",
            **env,
        }
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], Path, TextIO]] = []

    def spawn(self, job: str, *extra: str) -> subprocess.Popen[bytes]:
        path = self.logs / f"{len(self.procs):03d}-{job}.log"
        out = path.open("w")
        command = [sys.executable, "-m", f"functions.{job}", *extra]
        proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        self.procs.append((proc, path, out))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        path = next(p for q, p, _ in self.procs if q is proc)
        return path.read_text()[-3000:]

    def wait(self, proc: subprocess.Popen[bytes], timeout: float, what: str) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            log = self.log_of(proc)
            raise AssertionError(f"{what} still running after {timeout:.0f}s:\n{log}") from None

    def run(self, job: str, *extra: str, timeout: float = 90.0) -> None:
        proc = self.spawn(job, "--once", *extra)
        code = self.wait(proc, timeout, job)
        assert code == 0, f"{job} exited with {code}:\n{self.log_of(proc)}"

    def close(self) -> None:
        for proc, _, out in self.procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            out.close()


def killed(conn: db.Conn, proc: subprocess.Popen[bytes], after_id: int) -> str:
    """SIGKILLs the process; returns the state its job_run row was left in."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    row = conn.execute(
        "SELECT status FROM job_run WHERE pid = %(p)s AND id > %(a)s ORDER BY id DESC LIMIT 1",
        {"p": proc.pid, "a": after_id},
    ).fetchone()
    return row["status"] if row else "NOT_STARTED"


def last_run_id(conn: db.Conn) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) AS id FROM job_run").fetchone()
    return int(row["id"]) if row else 0


def others_gone(conn: db.Conn, mine: list[int]) -> None:
    """Waits until no other client is connected to the database: a killed process's
    backend has ended and released its session locks (simulate's SIM_LOCK)."""
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND NOT pid = ANY(%(m)s)",
                {"m": mine},
            ).fetchone()["n"]
            == 0
        ),
        15,
        "a killed process's database session is still there",
    )


@dataclass
class Plan:
    """What the disturbed run does at each (step, job): a kill after `delay` s, or a
    storm (fault knobs) for the poll and price runs of a step."""

    kills: dict[tuple[int, str], float] = field(default_factory=dict)
    storms: dict[int, dict[str, float]] = field(default_factory=dict)


def make_plan(rng: random.Random, decided: dict[int, int]) -> Plan:
    plan = Plan()
    price_steps = [s for s in range(STEPS) if "price" in stages(s)]
    storm_steps = rng.sample(price_steps, len(STORMS))
    for step, knobs in zip(storm_steps, rng.sample(STORMS, len(STORMS)), strict=True):
        plan.storms[step] = dict(knobs)
    calm = [s for s in range(STEPS) if s not in plan.storms]
    for step in rng.sample(calm, 2):
        plan.kills[(step, "poll")] = rng.uniform(0.0, 1.5)  # ≥ 16 slow answers: ≥ 2.4 s
    busy = [s for s in range(STEPS) if decided.get(s, 0) >= 2]
    assert len(busy) >= 2, f"the scenario decides too little to kill simulate: {decided}"
    for step in rng.sample(busy, 2):  # each decided group waits for one slow book
        plan.kills[(step, "simulate")] = rng.uniform(0.0, 0.8 * decided[step] * SLOW_MS / 1000)
    plan.kills[(rng.choice([s for s in price_steps if s in calm]), "price")] = rng.uniform(
        0.0, 0.8 * SLOW_MS / 1000
    )
    snapshot_steps = [s for s in range(STEPS) if "snapshot" in stages(s)]
    plan.kills[(rng.choice(snapshot_steps), "snapshot")] = rng.uniform(0.0, 1.0)
    return plan


@dataclass
class Drill:
    """What the disturbed run did, for the summary."""

    kills: Counter[str] = field(default_factory=Counter)
    mid_run: Counter[str] = field(default_factory=Counter)
    storm_runs: list[str] = field(default_factory=list)
    processes: int = 0


def pipeline_sandbox() -> contextlib.AbstractContextManager[testing.RunningSandbox]:
    return testing.running_sandbox(
        seed=SEED, clock="manual", anchor_ms=ANCHOR_MS, api_lag=LAG_MS / 1000, leaders=LEADERS
    )


def follow_and_seed(conn: db.Conn, sb: testing.RunningSandbox) -> Harness:
    sb.advance(20 * MINUTE)
    h = Harness(conn, sb, shadow_chain_grace_s=0, rate_limit_rps=1000, rate_limit_burst=1000)
    h.follow_leaders()
    return h


def reference_run(db_url: str) -> tuple[dict[str, Any], dict[int, int]]:
    """The undisturbed run: returns its content and the groups decided per step."""
    decided: dict[int, int] = {}
    with pipeline_sandbox() as sb, db.connect(db_url, autocommit=True) as conn:
        h = follow_and_seed(conn, sb)
        runner = InProcess(conn, sb, h)
        try:
            for step in range(STEPS):
                sb.advance(STEP_MS)
                for job in stages(step):
                    items = runner.run(job)
                    if job == "simulate":
                        decided[step] = items
        finally:
            runner.close()
            h.close()
        return content(conn), decided


def storm_run(
    conn: db.Conn, sb: testing.RunningSandbox, procs: Processes, job: str, knobs: dict[str, float]
) -> str:
    """Runs the job through the storm (killed if it outlasts STORM_BUDGET_S, as a run
    timeout would); returns how it ended."""
    sb.set_faults(**knobs)
    after = last_run_id(conn)
    proc = procs.spawn(job, "--once")
    try:
        code = proc.wait(timeout=STORM_BUDGET_S)
    except subprocess.TimeoutExpired:
        code = None
    sb.set_faults(rate_429=0.0, rate_5xx=0.0)
    if code is None:
        return f"timed out ({killed(conn, proc, after)})"
    row = conn.execute(
        "SELECT status, counts FROM job_run WHERE pid = %(p)s AND id > %(a)s",
        {"p": proc.pid, "a": after},
    ).fetchone()
    failures = {k: v for k, v in (row["counts"] or {}).items() if "fail" in k} if row else {}
    return f"exit {code}" + (f" {failures}" if failures else "")


def kill_run(
    conn: db.Conn,
    sb: testing.RunningSandbox,
    procs: Processes,
    job: str,
    delay: float,
    db_url: str,
) -> str:
    """Starts the job, waits until it has recorded its run, lets it work `delay` s
    (slow answers keep poll, simulate and price busy; snapshot waits for the ingest
    lock, held here), kills it; returns the state its job_run row was left in."""
    after = last_run_id(conn)
    with contextlib.ExitStack() as stack:
        if job == "snapshot":
            holder = stack.enter_context(db.connect(db_url, autocommit=True))
            stack.enter_context(holder.transaction())
            db.lock_ingest(holder)
        else:
            sb.set_faults(slow_rate=1.0, slow_ms=SLOW_MS)
            stack.callback(sb.set_faults, slow_rate=0.0)
        proc = procs.spawn(job, "--once")
        wait_for(
            lambda: (
                proc.poll() is not None
                or conn.execute(
                    "SELECT 1 FROM job_run WHERE pid = %(p)s AND id > %(a)s",
                    {"p": proc.pid, "a": after},
                ).fetchone()
            ),
            30,
            f"{job} never started its run",
        )
        time.sleep(delay)
        return killed(conn, proc, after)


def disturbed_run(db_url: str, plan: Plan, drill: Drill, logs: Path) -> dict[str, Any]:
    """The reference's steps with the plan's kills and storms. A disturbed job runs as
    the operator's process and is then run again as one; the others run in-process, as
    in the reference (a process per job and step would not fit the time budget). Returns
    the content and what the sandbox counted, after checking it against the truth."""
    with pipeline_sandbox() as sb, db.connect(db_url, autocommit=True) as conn:
        seed_ms = sb.now_ms() + 20 * MINUTE
        h = follow_and_seed(conn, sb)
        runner = InProcess(conn, sb, h)
        procs = Processes(
            db_url, sb, logs, OCULUS_CLOCK_URL=sb.control_url, OCULUS_SHADOW_CHAIN_GRACE_S="0"
        )
        mine = [conn.info.backend_pid]
        polled_ms = seed_ms
        try:
            for step in range(STEPS):
                polled_ms = sb.advance(STEP_MS)
                for job in stages(step):
                    if (step, job) in plan.kills:
                        state = kill_run(conn, sb, procs, job, plan.kills[(step, job)], db_url)
                        drill.kills[job] += 1
                        drill.mid_run[job] += state == "RUNNING"
                    elif step in plan.storms and job in ("poll", "price"):
                        knobs = plan.storms[step]
                        ended = storm_run(conn, sb, procs, job, knobs)
                        drill.storm_runs.append(f"{job}@{step} {knobs}: {ended}")
                    else:
                        runner.run(job)
                        continue
                    others_gone(conn, mine)  # the next tick: a new process, same instant
                    procs.run(job, *FLAGS.get(job, []))
            counters = sb.state()["counts"]
            check_against_truth(conn, sb, seed_ms, polled_ms)
        finally:
            drill.processes += len(procs.procs)
            procs.close()
            runner.close()
            h.close()
        return {**content(conn), "counters": counters}


def check_against_truth(
    conn: db.Conn, sb: testing.RunningSandbox, seed_ms: int, polled_ms: int
) -> None:
    """No gaps, no duplicates: every fill and activity of the truth from the seed's
    reach-back to the last poll is stored exactly once; the shadow books equal truth."""
    events = sb.truth(until_ms=polled_ms)["events"]
    lo, hi = seed_ms - 15 * MINUTE, polled_ms - LAG_MS
    assert stored_fills(conn) == truth_fills(events, lo, hi)
    got = Counter(
        (r["wallet"], r["tx_hash"], r["activity_type"], r["condition_id"], r["share_micros"])
        for r in conn.execute("SELECT * FROM activity_event")
    )
    want = Counter(
        (e["wallet"], e["tx_hash"], e["type"], e["condition_id"], e["shares_micros"])
        for e in events
        if e["type"] != "TRADE" and lo <= e["t_ms"] <= hi
    )
    assert got == want
    positions, skipped = expected_positions(sb, seed_ms, hi)
    assert without(shadow_positions(conn), skipped) == without(positions, skipped)
    pending = conn.execute(
        "SELECT count(*) AS n FROM trade_event WHERE shadow_applied_at IS NULL"
    ).fetchone()
    assert pending == {"n": 0}
    states = conn.execute("SELECT DISTINCT state FROM copy_group").fetchall()
    assert {r["state"] for r in states} <= {"DONE", "VOID"}


# --- comparing two databases by content ---------------------------------------------------

TABLES = (
    "trade_event",
    "activity_event",
    "copy_group",
    "order_book_snapshot",
    "copy_attempt",
    "executable_fill",
    "ledger_entry",
    "portfolio_snapshot",
    "portfolio_state",
    "portfolio_position",
    "market_price_snapshot",
    "market",
    "outcome_asset",
    "system_checkpoint",
    "quarantine",
)
DROP = {"id", "created_at"}
DROP_IN = {"quarantine": {"first_seen_at", "last_seen_at"}}  # the database's own now()


def content(conn: db.Conn) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
    """Every row of the pipeline's tables with ids replaced by natural keys (the event's
    source identity, the group key, the book's key, the attempt's key, the ledger key)."""
    events = {
        "trade": {
            r["id"]: f"{r['source']}:{r['source_id']}"
            for r in conn.execute("SELECT id, source, source_id FROM trade_event")
        },
        "activity": {
            r["id"]: f"{r['source']}:{r['source_id']}"
            for r in conn.execute("SELECT id, source, source_id FROM activity_event")
        },
    }

    def ref(text: str) -> str:
        m = re.fullmatch(r"(trade|activity):(\d+)(.*)", text)
        return text if m is None else f"{m[1]}:{events[m[1]][int(m[2])]}{m[3]}"

    keys: dict[str, dict[int, Any]] = {
        "copy_group_id": {
            r["id"]: r["group_key"] for r in conn.execute("SELECT id, group_key FROM copy_group")
        },
        "order_book_snapshot_id": {
            r["id"]: (r["asset_id"], r["book_time"], r["book_hash"])
            for r in conn.execute(
                "SELECT id, asset_id, book_time, book_hash FROM order_book_snapshot"
            )
        },
        "copy_attempt_id": {
            r["id"]: (r["portfolio_scope"], r["followed_user_id"], r["group_key"])
            for r in conn.execute(
                "SELECT id, portfolio_scope, followed_user_id, group_key FROM copy_attempt"
            )
        },
        "last_ledger_entry_id": {
            r["id"]: (r["portfolio_scope"], ref(r["ref_id"]), r["entry_type"])
            for r in conn.execute(
                "SELECT id, portfolio_scope, ref_id, entry_type FROM ledger_entry"
            )
        },
    }
    out = {}
    for table in TABLES:
        rows = []
        for r in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608
            row = {k: v for k, v in r.items() if k not in DROP | DROP_IN.get(table, set())}
            for column, known in keys.items():
                if row.get(column) is not None:
                    row[column] = known[row[column]]
            if "ref_id" in row:
                row["ref_id"] = ref(row["ref_id"])
            if table == "system_checkpoint" and row["name"] == snapshot.CHECKPOINT:
                row["cursor_int"] = keys["last_ledger_entry_id"].get(row["cursor_int"])
            rows.append(tuple(sorted(row.items())))
        out[table] = sorted(rows, key=repr)
    return out


def assert_same(table: str, got: list[Any], want: list[Any]) -> None:
    if got == want:
        return
    extra = [r for r in got if r not in want][:3]
    missing = [r for r in want if r not in got][:3]
    raise AssertionError(
        f"{table}: {len(got)} rows, the undisturbed run has {len(want)}\n"
        f"only in the disturbed run: {extra}\nonly in the undisturbed run: {missing}"
    )


def test_pipeline_drill_equals_an_undisturbed_run(
    new_db: Callable[[], str], tmp_path: Path
) -> None:
    began = time.monotonic()
    reference, decided = reference_run(new_db())
    attempts = reference["copy_attempt"]
    assert any(("decision", "EXECUTE") in a for a in attempts), "nothing was copied"
    assert reference["executable_fill"] and reference["portfolio_snapshot"]
    assert reference["market_price_snapshot"]
    plan = make_plan(random.Random(SEED), decided)
    drill = Drill()
    disturbed = disturbed_run(new_db(), plan, drill, tmp_path)
    for table in TABLES:
        assert_same(table, disturbed[table], reference[table])
    for job in MODULES:
        assert drill.mid_run[job] >= 1, f"no {job} run was killed inside its run: {drill}"
    counters = disturbed["counters"]
    assert counters.get("429", 0) and counters.get("5xx", 0), counters
    sizes = {t: len(reference[t]) for t in TABLES}
    summary = (
        f"pipeline: {LEADERS} leaders, {STEPS} steps of {STEP_MS // 1000}s, "
        f"{drill.processes} processes; SIGKILL "
        + ", ".join(f"{j} {drill.kills[j]} ({drill.mid_run[j]} mid-run)" for j in MODULES)
        + f"; storms {len(plan.storms)} ({counters.get('429', 0)}×429, "
        f"{counters.get('5xx', 0)}×5xx: {'; '.join(drill.storm_runs)}); "
        f"equal to the undisturbed run: {sizes['trade_event']} fills, "
        f"{sizes['activity_event']} activities, {sizes['ledger_entry']} ledger entries, "
        f"{sizes['copy_group']} groups, {sizes['copy_attempt']} attempts, "
        f"{sizes['executable_fill']} executable fills, {sizes['portfolio_snapshot']} snapshots, "
        f"{sizes['market_price_snapshot']} marks; {time.monotonic() - began:.0f}s"
    )
    print(f"\nfault drill — {summary}")


# --- part 2: the listener -----------------------------------------------------------------

LISTEN_SEED = 11
LISTEN_LEADERS = 20  # ~30 fills a minute on a real clock
API_LAG_S, CHAIN_DELAY_S = 2.0, 1.0
CHAOS_UNTIL_S = 31.0  # scenario time (s) the drill lasts to: 11 fills from t=15 s on
POLL_EVERY_S = 4.0  # the poller's tick during the drill
LISTEN_KILLS, WS_DROPS = 3, 3
Key = tuple[str, int, str, str, int, int]


def listen_heartbeat(conn: db.Conn) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT pid, info FROM process_heartbeat WHERE process = 'listen'"
    ).fetchone()
    return None if row is None else {"pid": row["pid"], **row["info"]}


def subscribed(conn: db.Conn, proc: subprocess.Popen[bytes]) -> bool:
    beat = listen_heartbeat(conn)
    return beat is not None and beat["pid"] == proc.pid and beat["subscription"] is not None


def missing_detail(conn: db.Conn, missing: set[Key], events: list[dict[str, Any]]) -> str:
    """What is stored for each transaction whose chain log is missing, and when."""
    out = []
    for key in sorted(missing):
        t = next(e["t_ms"] for e in events if (e["tx_hash"], e["log_index"]) == key[:2])
        rows = conn.execute(
            "SELECT source, log_index, detect_time, confirmed_at FROM trade_event"
            " WHERE tx_hash = %(t)s",
            {"t": key[0]},
        ).fetchall()
        out.append(f"{key[0][:10]}… log {key[1]} at {t} ms: stored {rows}")
    return "\n".join(out)


def chain_keys(conn: db.Conn) -> list[Key]:
    rows = conn.execute(
        """SELECT tx_hash, log_index, asset_id, side, share_micros, fee_micros FROM trade_event
           WHERE log_index IS NOT NULL AND reorg_state IS NULL"""
    ).fetchall()
    return [tuple(r.values()) for r in rows]  # type: ignore[misc]


@dataclass
class Chaos:
    kills: int = 0
    drops: int = 0
    restarts: int = 0
    polls: int = 0
    polls_killed: int = 0


def chaos(
    sb: testing.RunningSandbox,
    procs: Processes,
    rng: random.Random,
    listener: subprocess.Popen[bytes] | None,
    seconds: float,
    sends: list[float],
) -> tuple[subprocess.Popen[bytes], Chaos]:
    """For `seconds`: SIGKILLs the listener at random moments (restarted after a
    random downtime), drops its WebSocket at random moments and, for the middle third,
    every few seconds; starts a poll every POLL_EVERY_S (one of them SIGKILLed). One kill
    and one drop are aimed just before the chain sends a followed fill (`sends`, seconds
    from now), so what it sent while nobody listened must be replayed. Returns the
    listener left running."""
    done = Chaos()
    plan = [(rng.uniform(0.5, seconds - 2), "kill") for _ in range(LISTEN_KILLS)]
    plan += [(rng.uniform(0.5, seconds - 2), "drop") for _ in range(WS_DROPS)]
    aimed = next(t for t in sends if t >= 2.0)
    plan.append((aimed - rng.uniform(0.1, 0.6), "aimed kill"))
    send = aimed  # no listener is restarted before the chain has sent this one
    aimed = next((t for t in sends if t >= aimed + 6.0), seconds)
    plan.append((aimed - rng.uniform(0.05, 0.2), "aimed drop"))  # a reconnect takes ≥ 0.25 s
    plan += [(seconds / 3, "timer on"), (2 * seconds / 3, "timer off")]
    plan.sort()
    doomed_poll = rng.randrange(2, int(seconds / POLL_EVERY_S))
    restart_at = 0.0
    poller: subprocess.Popen[bytes] | None = None
    poll_kill_at = next_poll = 0.0
    began = time.monotonic()
    while (now := time.monotonic() - began) < seconds:
        if listener is None and now >= restart_at:
            listener = procs.spawn("listen", "--backfill-delay", "1")
            done.restarts += 1
        while plan and plan[0][0] <= now:
            _, what = plan.pop(0)
            aimed_at = what.startswith("aimed")  # if nothing listens already, so be it
            if what.endswith("kill"):
                if listener is not None:
                    os.kill(listener.pid, signal.SIGKILL)
                    listener.wait(timeout=10)
                    listener, restart_at = None, now + rng.uniform(0.1, 1.5)
                    done.kills += 1
                elif not aimed_at:  # down: kill the next one instead
                    plan.append((now + 0.3, what))
                if aimed_at:
                    restart_at = max(restart_at, send + rng.uniform(0.1, 1.0))
            elif what.endswith("drop"):
                if sb.drop_ws():
                    done.drops += 1
                elif not aimed_at:  # nothing connected: a bit later
                    plan.append((now + 0.5, what))
            else:
                sb.set_faults(ws_drop_every_s=rng.uniform(2.0, 3.5) if what == "timer on" else 0)
            plan.sort()
        if poller is not None and poller.poll() is not None:
            assert poller.returncode in (0, -signal.SIGKILL), procs.log_of(poller)
            poller = None
        if poller is not None and poll_kill_at and now >= poll_kill_at:
            os.kill(poller.pid, signal.SIGKILL)
            poll_kill_at = 0.0
            done.polls_killed += 1
        if poller is None and now >= next_poll:
            poller = procs.spawn("poll", "--once")
            done.polls += 1
            next_poll = now + POLL_EVERY_S
            if done.polls == doomed_poll:
                poll_kill_at = now + rng.uniform(0.3, 1.5)
        time.sleep(0.02)
    sb.set_faults(ws_drop_every_s=0)
    if poller is not None:
        assert procs.wait(poller, 60, "poll") in (0, -signal.SIGKILL), procs.log_of(poller)
    if listener is None:
        listener = procs.spawn("listen", "--backfill-delay", "1")
        done.restarts += 1
    return listener, done


def test_listener_drill_stores_every_chain_fill_once(db_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    rng = random.Random(LISTEN_SEED)
    with (
        testing.running_sandbox(
            seed=LISTEN_SEED,
            leaders=LISTEN_LEADERS,
            api_lag=API_LAG_S,
            chain_delay=CHAIN_DELAY_S,
        ) as sb,
        db.connect(db_url, autocommit=True) as conn,
    ):
        # The real clock is the system's: no OCULUS_CLOCK_URL, as in production. The
        # sandbox's runs up to a second behind it (its anchor is a whole second).
        procs = Processes(db_url, sb, tmp_path, OCULUS_RATE_LIMIT_RPS="200")
        behind_ms = time.time() * 1000 - sb.now_ms()
        try:
            now = datetime.now(tz=UTC)
            for i, wallet in enumerate(sb.leaders):
                users.add(conn, wallet, f"leader{i}", [], now)
            first = procs.spawn("listen", "--backfill-delay", "1")
            wait_for(lambda: subscribed(conn, first), 30, "the listener never subscribed")
            listen_from_ms = sb.now_ms()
            procs.run("poll")  # seeds every user, reaching back 15 minutes
            seeded = conn.execute("SELECT max(seeded_at) AS t FROM followed_user").fetchone()
            seed_ms = int(seeded["t"].timestamp() * 1000)
            start_ms = sb.now_ms()
            seconds = max(12.0, CHAOS_UNTIL_S - (start_ms - sb.anchor_ms) / 1000)
            sends = [
                (e["t_ms"] + CHAIN_DELAY_S * 1000 - start_ms) / 1000
                for e in sb.truth(until_ms=start_ms + int(seconds * 1000))["events"]
                if e["type"] == "TRADE" and e["t_ms"] + CHAIN_DELAY_S * 1000 > start_ms
            ]
            listener, done = chaos(sb, procs, rng, first, seconds, sends)
            cutoff_s = sb.now_ms() // 1000  # events before this second are checked
            wait_for(lambda: subscribed(conn, listener), 30, "the listener never came back")
            lo_s = (seed_ms - 15 * MINUTE) // 1000 + 5  # clear of the seed's reach-back edge
            events = [
                e
                for e in sb.truth(until_ms=cutoff_s * 1000 - 1)["events"]
                if e["t_ms"] // 1000 >= lo_s
            ]
            delivered = {
                (
                    e["tx_hash"],
                    e["log_index"],
                    e["asset"],
                    e["side"],
                    e["shares_micros"],
                    e["fee_micros"],
                )
                for e in events
                if e["type"] == "TRADE" and e["t_ms"] > listen_from_ms
            }
            with contextlib.suppress(AssertionError):
                wait_for(lambda: delivered <= set(chain_keys(conn)), 20, "chain identity")
            missing = delivered - set(chain_keys(conn))
            detail = missing_detail(conn, missing, events)
            assert not missing, f"fills the chain delivered lack their chain identity:\n{detail}"
            wait_for(lambda: sb.now_ms() > (cutoff_s + API_LAG_S + 1) * 1000, 10, "clock")
            procs.run("poll")  # the scheduler's next tick: the Data API has them all now
            listener.send_signal(signal.SIGTERM)
            assert procs.wait(listener, 10, "listen") == 0, procs.log_of(listener)
            drops = sb.state()["counts"].get("ws_drops", 0)
        finally:
            procs.close()
        late, checked = check_listener_drill(
            conn, events, delivered, seed_ms, (lo_s, cutoff_s), behind_ms
        )
        assert late >= 1, "nothing was replayed: the aimed kill and drop missed their fills"
    summary = (
        f"listener: {LISTEN_LEADERS} leaders, {seconds:.0f}s on a real clock; SIGKILL listen "
        f"{done.kills}, WebSocket drops {drops} ({done.drops} on demand, "
        f"{drops - done.drops} by a 2–3.5 s timer on for {seconds / 3:.0f}s), "
        f"poll runs {done.polls + 2} "
        f"({done.polls_killed} SIGKILLed); {len(events)} truth events stored once; "
        f"{len(delivered)} chain fills with their tx hash + log index ({late} recovered "
        f"after a kill or drop); the shadow entries of the {checked} events after the seed "
        f"equal the truth's; "
        f"{time.monotonic() - began:.0f}s"
    )
    print(f"\nfault drill — {summary}")


def check_listener_drill(
    conn: db.Conn,
    events: list[dict[str, Any]],
    delivered: set[Key],
    seed_ms: int,
    seconds: tuple[int, int],
    behind_ms: float,
) -> tuple[int, int]:
    """Every truth event once; every delivered fill with its chain identity; every event
    after the seed applied to the shadow book exactly as the truth has it. Returns how
    many delivered fills the listener got late (replayed after a kill or a drop), and how
    many events the shadow check covered."""
    bounds = {"lo": seconds[0], "hi": seconds[1]}  # the events' seconds: [lo, hi)
    trades = conn.execute(
        """SELECT * FROM trade_event WHERE reorg_state IS NULL
           AND event_time >= to_timestamp(%(lo)s) AND event_time < to_timestamp(%(hi)s)""",
        bounds,
    ).fetchall()
    acts = conn.execute(
        """SELECT * FROM activity_event
           WHERE event_time >= to_timestamp(%(lo)s) AND event_time < to_timestamp(%(hi)s)""",
        bounds,
    ).fetchall()
    got = Counter(
        (r["wallet"], r["tx_hash"], r["asset_id"], r["side"], r["share_micros"]) for r in trades
    )
    want = Counter(
        (e["wallet"], e["tx_hash"], e["asset"], e["side"], e["shares_micros"])
        for e in events
        if e["type"] == "TRADE"
    )
    assert got == want, f"fills: extra {got - want}, missing {want - got}"
    got_acts = Counter((r["wallet"], r["tx_hash"], r["activity_type"]) for r in acts)
    want_acts = Counter(
        (e["wallet"], e["tx_hash"], e["type"]) for e in events if e["type"] != "TRADE"
    )
    assert got_acts == want_acts
    keys = chain_keys(conn)
    assert len(keys) == len(set(keys)) and delivered <= set(keys)
    # The shadow ledger of each event after the seed equals the truth's deltas and cash.
    entries: dict[str, tuple[Counter[str], int]] = {}
    for e in conn.execute(
        """SELECT ref_id, asset_id, share_delta_micros, cash_delta_micros FROM ledger_entry
           WHERE portfolio_scope = 'SHADOW_USER'"""
    ):
        ref = ":".join(e["ref_id"].split(":")[:2])
        shares, cash = entries.setdefault(ref, (Counter(), 0))
        if e["asset_id"] and e["share_delta_micros"]:
            shares[e["asset_id"]] += e["share_delta_micros"]
        entries[ref] = (shares, cash + e["cash_delta_micros"])
    by_chain = {(r["tx_hash"], r["log_index"]): r for r in trades}
    by_tx = {(r["wallet"], r["tx_hash"], r["activity_type"]): r for r in acts}
    checked = 0
    for e in events:
        if e["t_ms"] <= seed_ms + 1_000 or e["type"] == "CONVERSION":
            continue
        if e["type"] == "TRADE":
            row, ref = by_chain.get((e["tx_hash"], e["log_index"])), "trade"
        else:
            row, ref = by_tx.get((e["wallet"], e["tx_hash"], e["type"])), "activity"
        assert row is not None and row["shadow_state"] == "APPLIED", (e, row)
        shares, cash = entries[f"{ref}:{row['id']}"]
        assert ({a: n for a, n in shares.items() if n}, cash) == (
            {a: n for a, n in e["deltas"].items() if n},
            e["cash_delta_micros"],
        ), e
        checked += 1
    assert checked >= 8, f"too few events after the seed to say anything: {checked}"
    late = 0  # got > 0.5 s after the chain sent it: replayed after a kill or a drop
    sent = {(e["tx_hash"], e["log_index"]): e["t_ms"] + CHAIN_DELAY_S * 1000 for e in events}
    for r in trades:
        key = (r["tx_hash"], r["log_index"], r["asset_id"], r["side"])
        if (*key, r["share_micros"], r["fee_micros"]) in delivered:
            seen = r["detect_time"] if r["source"] == "CHAIN" else r["confirmed_at"]
            late += seen.timestamp() * 1000 - behind_ms - sent[key[:2]] > 500
    return late, checked


# --- part 3: the database killed and restarted ---------------------------------------------

PROGRAMS = {
    "scheduler": "scheduler",
    "listen": "listen",
    "simulate": "simulate",
    "site": "site_builder",
}
PROGRAM_KEYS = ("command", "autorestart", "startsecs", "startretries", "stopsignal")
DB_DOWN_S = 8.0  # every program notices within ~3 s and is restarted while it is down
BACK_WITHIN_S = 30.0
MOST_NOISE = 6  # lines other than INFO a program may log about one outage


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A var dir for a Postgres cluster of the drill's own; stopped and removed after.
    Not tmp_path: as root the server runs as its own user, who must reach it."""
    path = Path(tempfile.mkdtemp(prefix="oculus-dbdrill-"))
    path.chmod(0o755)
    (path / "run").mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path / "run"))  # the wheel's start lock
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            db.stop_embedded(settings.Settings(var_dir=path))
        shutil.rmtree(path, ignore_errors=True)


def start_server(var_dir: Path) -> str:
    """Starts the embedded server under `var_dir` as a job would (`python -m common.store.db
    url`; retried while the killed server's backends are still exiting); returns the
    URL of its database `oculus`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "OCULUS_DATABASE_URL")}
    env["OCULUS_VAR_DIR"] = str(var_dir)
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "common.store.db", "url"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0:
            return done.stdout.strip()
        assert time.monotonic() < deadline, done.stderr[-3000:]
        time.sleep(0.5)


def postmaster_pid(var_dir: Path) -> int:
    return int((var_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def supervisord_conf(var_dir: Path, logs: Path) -> Path:
    """supervisord.conf's programs of the drill, with their own restart settings."""
    shipped = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    shipped.read(ROOT / "supervisord.conf")
    lines = [
        "[supervisord]",
        "nodaemon = true",
        "silent = true",
        f"logfile = {logs / 'supervisord.log'}",
        f"pidfile = {var_dir / 'supervisord.pid'}",
        f"childlogdir = {logs}",
        f"directory = {ROOT}",
    ]
    for program in PROGRAMS:
        section = shipped[f"program:{program}"]
        lines.append(f"[program:{program}]")
        for key in PROGRAM_KEYS:
            lines.append(f"{key} = {section[key].replace('%(here)s', str(ROOT))}")
        lines += [f"directory = {ROOT}", "redirect_stderr = true"]
        lines.append(f"stdout_logfile = {logs / (program + '.log')}")
    path = var_dir / "supervisord.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def beats(url: str) -> dict[str, tuple[int, datetime]]:
    """process → (pid, beat_at); empty while the database is down."""
    try:
        with db.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT process, pid, beat_at FROM process_heartbeat").fetchall()
            runs = conn.execute(
                "SELECT max(started_at) AS t FROM job_run WHERE job = 'scheduled_job'"
            ).fetchone()
    except (db.DatabaseUnavailable, psycopg.Error):
        return {}
    found = {r["process"]: (int(r["pid"]), r["beat_at"]) for r in rows}
    if runs and runs["t"] is not None:  # the scheduler processing: its runs start
        found["scheduled runs"] = (0, runs["t"])
    return found


def test_every_program_processes_again_after_the_database_is_killed_and_restarted(
    own_server: Path, tmp_path: Path
) -> None:
    began = time.monotonic()
    url = start_server(own_server)
    with db.connect(url, autocommit=True) as conn:
        migrate.apply(conn)
    logs = tmp_path / "logs"
    logs.mkdir()
    crontab = tmp_path / "crontab"
    crontab.write_text("* * * * * */2  30s  tests.scheduled_job --once\n")
    conf = supervisord_conf(own_server, logs)
    watched = ("scheduled runs", *(p for p in PROGRAMS.values() if p != "scheduler"))
    with testing.running_sandbox(seed=LISTEN_SEED, leaders=4) as sb:
        with db.connect(url, autocommit=True) as conn:
            for i, wallet in enumerate(sb.leaders):
                users.add(conn, wallet, f"leader{i}", [], datetime.now(tz=UTC))
        env = {
            **os.environ,
            **run_local.demo_environment(sb.port),
            "DATABASE_URL": url,
            "OCULUS_VAR_DIR": str(own_server),
            "OCULUS_PUBLIC_DIR": str(tmp_path / "public"),
            "OCULUS_CRONTAB_PATH": str(crontab),
        }
        supervisor = subprocess.Popen(
            [str(Path(sys.executable).parent / "supervisord"), "-n", "-c", str(conf)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: set(watched) <= set(beats(url)), 90, "the programs never all ran")
            marks = {name: len(read_log(logs, name)) for name in PROGRAMS}
            os.kill(postmaster_pid(own_server), signal.SIGKILL)
            killed = datetime.now(tz=UTC)
            time.sleep(DB_DOWN_S)
            url = start_server(own_server)  # the same socket: the programs' URL still holds
            with db.connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT pg_postmaster_start_time() AS t").fetchone()
            restarted_at = row["t"] if row else datetime.now(tz=UTC)
            back: dict[str, float] = {}  # seconds from the server's start to processing
            until = time.monotonic() + BACK_WITHIN_S + 5
            while len(back) < len(watched) and time.monotonic() < until:
                for name, (_, at) in beats(url).items():
                    if name in watched and name not in back and at > restarted_at:
                        back[name] = (at - restarted_at).total_seconds()
                time.sleep(0.1)
            noise = {}
            for name in PROGRAMS:
                lines = read_log(logs, name)[marks[name] :]
                noise[name] = [line for line in lines if " INFO " not in line]
            gave_up = [
                line
                for line in (logs / "supervisord.log").read_text().splitlines()
                if "gave up" in line or "FATAL" in line
            ]
            exits = Counter(
                m.group(1)
                for m in re.finditer(
                    r"exited: (\w+) \(exit status 69", (logs / "supervisord.log").read_text()
                )
            )
        finally:
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.wait()
    late = {name: back.get(name) for name in watched if back.get(name, 99.0) > BACK_WITHIN_S}
    assert not late, f"not processing again within {BACK_WITHIN_S:.0f}s: {late}, back: {back}"
    assert not gave_up, gave_up
    for name, lines in noise.items():
        assert len(lines) <= MOST_NOISE, f"{name} logged during the outage:\n" + "\n".join(lines)
    assert set(exits) == set(PROGRAMS), f"exits with 69: {exits}"  # each noticed and left
    summary = (
        f"database: SIGKILL of the postmaster at {killed:%H:%M:%S}, down {DB_DOWN_S:.0f}s; "
        "processing again after the restart: "
        + ", ".join(f"{name} {back[name]:.1f}s" for name in watched)
        + "; lines other than INFO during the outage: "
        + ", ".join(f"{name} {len(lines)}" for name, lines in noise.items())
        + f"; {time.monotonic() - began:.0f}s"
    )
    print(f"\nfault drill — {summary}")


def read_log(logs: Path, program: str) -> list[str]:
    path = logs / f"{program}.log"
    return path.read_text().splitlines() if path.exists() else []
