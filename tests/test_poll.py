"""Polling end to end against the sandbox: every followed fill lands exactly once, the
shadow books equal the sandbox's ground truth, bad rows are quarantined, reruns change
nothing, and faults are survived."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import run_local
from common.runtime import jobs, settings
from common.store import db, polling, users
from common.upstream import http
from functions import poll
from sandbox import testing

pytestmark = pytest.mark.sandbox
LAG_MS = 5_000
MINUTE = 60_000


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def make_settings(sb: testing.RunningSandbox, **extra: Any) -> settings.Settings:
    return run_local.demo_settings(sb.port, **extra)


class Harness:
    """Runs poll the way the job frame does, on the sandbox's clock."""

    def __init__(self, conn: db.Conn, sb: testing.RunningSandbox, **extra: Any) -> None:
        self.conn, self.sb = conn, sb
        self.settings = make_settings(sb, **extra)
        self.ups = http.make_upstreams(self.settings)
        for up in (self.ups.data_api, self.ups.gamma, self.ups.clob):
            up.backoff_base_s = up.backoff_cap_s = 0.01
        self.ctx = jobs.Context(
            args=argparse.Namespace(backfill=None),
            settings=self.settings,
            clock=lambda: at(self.sb.now_ms()),
        )
        self.ctx.resources["ups"] = self.ups

    def follow_leaders(self) -> list[int]:
        now = at(self.sb.now_ms())
        ids = [
            users.add(self.conn, w, f"leader{i}", [], now) for i, w in enumerate(self.sb.leaders)
        ]
        for user in polling.followed_users(self.conn):
            polling.seed_user(self.conn, self.ups, user, now)
        return ids

    def poll(self) -> int:
        return jobs.run_recorded(self.conn, "poll", self.ctx, poll.run_once)

    def close(self) -> None:
        self.ups.close()


@pytest.fixture
def sandbox() -> Iterator[testing.RunningSandbox]:
    with testing.running_sandbox(seed=21, clock="manual", api_lag=LAG_MS / 1000) as sb:
        sb.advance(20 * MINUTE)
        yield sb


def stored_fills(conn: db.Conn) -> Counter[tuple[str, str, str, str, int]]:
    rows = conn.execute(
        "SELECT wallet, tx_hash, asset_id, side, share_micros FROM trade_event"
        " WHERE reorg_state IS NULL"
    ).fetchall()
    return Counter(
        (r["wallet"], r["tx_hash"], r["asset_id"], r["side"], r["share_micros"]) for r in rows
    )


def truth_fills(
    events: list[dict[str, Any]], lo_ms: int, hi_ms: int
) -> Counter[tuple[str, str, str, str, int]]:
    return Counter(
        (e["wallet"], e["tx_hash"], e["asset"], e["side"], e["shares_micros"])
        for e in events
        if e["type"] == "TRADE" and lo_ms <= e["t_ms"] <= hi_ms
    )


def shadow_positions(conn: db.Conn) -> dict[str, dict[str, int]]:
    rows = conn.execute(
        """SELECT w.wallet, l.asset_id, sum(l.share_delta_micros)::bigint AS shares
           FROM ledger_entry l JOIN followed_user_proxy_wallet w USING (followed_user_id)
           WHERE l.portfolio_scope = 'SHADOW_USER' AND l.asset_id IS NOT NULL
           GROUP BY 1, 2"""
    ).fetchall()
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        if r["shares"]:
            out[r["wallet"]][r["asset_id"]] = int(r["shares"])
    return out


def expected_positions(
    sb: testing.RunningSandbox, seed_ms: int, until_ms: int, conversions: bool = False
) -> tuple[dict[str, dict[str, int]], set[str]]:
    """Truth positions at the seed (what /positions showed) plus every later event, and
    the assets a CONVERSION touched: polling alone cannot apply one (the Data API row
    does not name its legs), so they are left out of the comparison unless
    `conversions` (the listener ran: the chain's PositionsConverted names them)."""
    seen = sb.truth(until_ms=seed_ms - LAG_MS)
    positions = {w: dict(v["positions"]) for w, v in seen["leaders"].items()}
    skipped: set[str] = set()
    for e in sb.truth(until_ms=until_ms)["events"]:
        if e["t_ms"] <= seed_ms - LAG_MS:
            continue
        if e["type"] == "CONVERSION" and not conversions:
            skipped |= set(e["deltas"])
            continue
        mine = positions.setdefault(e["wallet"], {})
        for asset, delta in e["deltas"].items():
            mine[asset] = mine.get(asset, 0) + delta
    return {w: {a: n for a, n in p.items() if n} for w, p in positions.items()}, skipped


def without(positions: dict[str, dict[str, int]], assets: set[str]) -> dict[str, dict[str, int]]:
    return {w: {a: n for a, n in p.items() if a not in assets} for w, p in positions.items()}


def test_poll_ingests_every_fill_once_and_shadow_matches_truth(
    conn: db.Conn, sandbox: testing.RunningSandbox
) -> None:
    h = Harness(conn, sandbox, shadow_chain_grace_s=0)  # polling only: nothing to wait for
    seed_ms = sandbox.now_ms()
    h.follow_leaders()
    for _ in range(6):  # half an hour of trading, polled every five minutes
        sandbox.advance(5 * MINUTE)
        h.poll()
    now_ms = sandbox.now_ms()
    truth = sandbox.truth(until_ms=now_ms)["events"]
    # The seed read 15 minutes back; every poll after it read up to now - lag.
    expected = truth_fills(truth, seed_ms - 15 * MINUTE, now_ms - LAG_MS)
    got = stored_fills(conn)
    assert got == expected
    assert sum(got.values()) > 50
    identical = [k for k, n in expected.items() if n > 1]
    assert identical, "the scenario should contain identical fills in one transaction"
    activity = conn.execute(
        "SELECT activity_type, count(*) AS n FROM activity_event GROUP BY 1"
    ).fetchall()
    assert {r["activity_type"] for r in activity} >= {"SPLIT", "MERGE"}
    positions, skipped = expected_positions(sandbox, seed_ms, now_ms - LAG_MS)
    assert without(shadow_positions(conn), skipped) == without(positions, skipped)
    pending = conn.execute(
        "SELECT count(*) AS n FROM trade_event WHERE shadow_applied_at IS NULL"
    ).fetchone()
    assert pending == {"n": 0}
    h.close()


def test_rerun_changes_nothing(conn: db.Conn, sandbox: testing.RunningSandbox) -> None:
    h = Harness(conn, sandbox)
    h.follow_leaders()
    sandbox.advance(10 * MINUTE)
    h.poll()

    def snapshot() -> tuple[Any, ...]:
        return tuple(
            conn.execute(
                f"SELECT count(*) AS n, coalesce(sum(hashtext(t::text)), 0) AS h"  # noqa: S608
                f" FROM {table} t"
            ).fetchone()["h"]
            for table in ("trade_event", "activity_event", "ledger_entry", "market")
        )

    first = snapshot()
    assert h.poll() == 0
    assert snapshot() == first
    h.close()


def test_faults_and_junk_rows_lose_nothing(conn: db.Conn, sandbox: testing.RunningSandbox) -> None:
    h = Harness(conn, sandbox, http_max_retries=6, breaker_threshold=20)
    seed_ms = sandbox.now_ms()
    h.follow_leaders()
    sandbox.set_faults(rate_429=0.05, rate_5xx=0.1, malformed_rate=0.3)
    for _ in range(4):
        sandbox.advance(5 * MINUTE)
        h.poll()
    sandbox.set_faults(rate_429=0.0, rate_5xx=0.0, malformed_rate=0.0)
    h.poll()  # a clean pass catches up with anything a breaker skipped
    now_ms = sandbox.now_ms()
    truth = sandbox.truth(until_ms=now_ms)["events"]
    assert stored_fills(conn) == truth_fills(truth, seed_ms - 15 * MINUTE, now_ms - LAG_MS)
    quarantined = conn.execute("SELECT source, reason FROM quarantine ORDER BY id").fetchall()
    assert quarantined, "malformed rows must be kept"
    reasons = " ".join(q["reason"] for q in quarantined)
    assert "outcome of market" in reasons or "unknown market" in reasons or "size" in reasons
    h.close()
