"""The copy engine end to end against the sandbox: poll → group → simulate, on the
sandbox's manual clock (simulate moves it to each decision time). Two runs with the same
seed write identical per-user and global ledgers, attempts and fills; so does a run
whose `simulate` process is killed with SIGKILL in the middle of a batch."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_poll import MINUTE, Harness

import run_local
from common.runtime import clock, jobs
from common.store import db
from common.upstream import http
from functions import simulate
from sandbox import testing

pytestmark = pytest.mark.sandbox
ANCHOR_MS = 1_790_000_000_000  # fixed, so both runs see the same absolute times
STEPS = 36
STEP_MS = 5_000  # the poll cadence
LEADERS = 8


def _ctx(source: clock.Clock, h: Harness, ups: http.Upstreams) -> jobs.Context:
    ctx = jobs.Context(
        args=argparse.Namespace(wait=30.0, replay=False, batch=1),
        settings=h.settings,
        clock=source.now,
        wait_until=source.wait_until,
    )
    ctx.resources["ups"] = ups
    return ctx


def _attempts(conn: db.Conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM copy_attempt").fetchone()
    return int(row["n"]) if row else 0


def _killed_run(db_url: str, sb: testing.RunningSandbox) -> None:
    """Runs simulate as a process, kills it (SIGKILL) once it has written a few
    attempts, then runs it again to the end."""
    env = {
        **os.environ,
        **run_local.demo_environment(sb.port),
        "DATABASE_URL": db_url,
        "OCULUS_CLOCK_URL": sb.control_url,
    }
    command = [sys.executable, "-m", "functions.simulate", "--once", "--wait", "30"]
    sb.set_faults(slow_rate=1.0, slow_ms=300)  # every book takes a while: kill mid-batch
    with db.connect(db_url, autocommit=True) as conn:
        before = _attempts(conn)
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _attempts(conn) == before:
            assert proc.poll() is None, "simulate ended before it could be killed"
            assert time.monotonic() < deadline, "simulate wrote nothing"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = _attempts(conn)
    sb.set_faults(slow_rate=0.0)
    subprocess.run(command, env=env, check=True, timeout=120, stderr=subprocess.DEVNULL)
    with db.connect(db_url, autocommit=True) as conn:
        assert _attempts(conn) > killed_at


def run_pipeline(
    db_url: str, seed: int, kill_at_step: int | None = None, steps: int = STEPS
) -> dict[str, Any]:
    """Follows the sandbox's leaders, then each minute polls and simulates; returns what
    the exec portfolios hold."""
    with (
        testing.running_sandbox(
            seed=seed, clock="manual", anchor_ms=ANCHOR_MS, api_lag=5, leaders=LEADERS
        ) as sb,
        db.connect(db_url, autocommit=True) as conn,
    ):
        sb.advance(20 * MINUTE)
        decided: list[int] = []
        h = Harness(conn, sb, shadow_chain_grace_s=0)
        h.follow_leaders()
        source = clock.sandbox(sb.control_url)
        with http.make_upstreams(h.settings) as ups:
            ctx = _ctx(source, h, ups)
            for step in range(steps):
                sb.advance(STEP_MS)
                h.poll()
                if step == kill_at_step:
                    _killed_run(db_url, sb)
                else:
                    decided.append(jobs.run_recorded(conn, "simulate", ctx, simulate.run_once))
        h.close()
        source.close()
        return {**outcome(conn), "decided": decided}


def outcome(conn: db.Conn) -> dict[str, Any]:
    ledger = conn.execute(
        """SELECT portfolio_scope, followed_user_id, ref_id, entry_type, asset_id,
                  share_delta_micros, cash_delta_micros, price_micros, effective_time
           FROM ledger_entry WHERE portfolio_scope <> 'SHADOW_USER'
           ORDER BY portfolio_scope, ref_id, entry_type"""
    ).fetchall()
    attempts = conn.execute(
        """SELECT portfolio_scope, followed_user_id, group_key, decision, reason_codes,
                  target_notional_micros, target_share_micros, vwap_micros,
                  filled_share_micros, fee_micros, decision_time, mid_micros
           FROM copy_attempt ORDER BY portfolio_scope, group_key"""
    ).fetchall()
    fills = conn.execute(
        """SELECT a.portfolio_scope, a.group_key, f.level_index, f.price_micros,
                  f.share_micros, f.fee_micros
           FROM executable_fill f JOIN copy_attempt a ON a.id = f.copy_attempt_id
           ORDER BY 1, 2, 3"""
    ).fetchall()
    groups = conn.execute("SELECT state, count(*) AS n FROM copy_group GROUP BY 1").fetchall()
    return {
        "ledger": ledger,
        "attempts": attempts,
        "fills": fills,
        "groups": {r["state"]: r["n"] for r in groups},
    }


def replay_from_scratch(db_url: str) -> dict[str, Any]:
    """Forgets every decision and re-decides all groups with `simulate --replay` (stored
    books, 500 groups per transaction); returns the outcome."""
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger_entry WHERE portfolio_scope <> 'SHADOW_USER'")
        conn.execute("DELETE FROM executable_fill")
        conn.execute("DELETE FROM copy_attempt")
        conn.execute("UPDATE copy_group SET state = 'CLOSED', done_at = NULL WHERE state = 'DONE'")
    subprocess.run(
        [sys.executable, "-m", "functions.simulate", "--replay", "--database-url", db_url],
        check=True,
        timeout=120,
        stderr=subprocess.DEVNULL,
    )
    with db.connect(db_url, autocommit=True) as conn:
        return outcome(conn)


def test_same_seed_same_ledgers_even_after_kill(new_db: Callable[[], str]) -> None:
    first_url = new_db()
    first = run_pipeline(first_url, seed=5)
    # Sanity: the run copied trades, skipped some with reasons, and left nothing pending.
    decisions = {(a["portfolio_scope"], a["decision"]) for a in first["attempts"]}
    assert ("EXEC_USER", "EXECUTE") in decisions and ("EXEC_GLOBAL", "EXECUTE") in decisions
    assert set(first["groups"]) <= {"DONE", "VOID"}
    assert len(first["attempts"]) == 2 * first["groups"]["DONE"]
    assert first["fills"] and first["ledger"]
    # Kill the run of the busiest step, once it has committed its first group.
    busiest = max(range(STEPS), key=lambda i: first["decided"][i])
    assert first["decided"][busiest] >= 2
    second = run_pipeline(new_db(), seed=5, kill_at_step=busiest)
    for part in ("groups", "attempts", "fills", "ledger"):
        assert second[part] == first[part], part
    # Replaying every group in batches on the stored books decides the same way.
    replayed = replay_from_scratch(first_url)
    for part in ("groups", "attempts", "fills", "ledger"):
        assert replayed[part] == first[part], part
