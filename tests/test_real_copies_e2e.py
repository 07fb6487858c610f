"""The real copy end to end on the sandbox: its copier wallet trades after its first
leader (its own delay, its own slippage); followed as the admin's copy wallet, its fills
are polled like any leader's but never copied, and the score job pairs them with the
leader's groups, attributes and scores them; the leader's page shows both copies."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
from test_poll import MINUTE, Harness, at

import run_local
from common.runtime import clock, jobs
from common.store import db, polling
from common.store import real_copies as store
from common.upstream import http
from functions import price, score, simulate
from sandbox import testing

pytestmark = pytest.mark.sandbox
SEED = 7
STEPS = 60
STEP_MS = 5_000


def test_the_copier_s_fills_pair_with_its_leader_s_groups(
    new_db: Callable[[], str], tmp_path: Path
) -> None:
    from site_builder import build

    url = new_db()
    with (
        testing.running_sandbox(seed=SEED, clock="manual", api_lag=2, copiers=1) as sb,
        db.connect(url, autocommit=True) as conn,
    ):
        sb.advance(20 * MINUTE)
        copier = sb.leaders and sb.scenario()["leaders"][-1]
        assert copier["copier_of"] == sb.scenario()["leaders"][0]["wallet"]
        run_local.follow_sandbox_leaders(url, SEED, 3, 1)
        ids = {
            r["wallet"]: r["followed_user_id"]
            for r in conn.execute("SELECT wallet, followed_user_id FROM followed_user_proxy_wallet")
        }
        leader, mine = ids[copier["copier_of"]], ids[copier["wallet"]]
        h = Harness(conn, sb, shadow_chain_grace_s=0)
        now = at(sb.now_ms())
        for user in polling.followed_users(conn):
            polling.seed_user(conn, h.ups, user, now)
        source = clock.sandbox(sb.control_url)
        with http.make_upstreams(h.settings) as ups:
            ctx = jobs.Context(
                args=argparse.Namespace(wait=30.0, replay=False, batch=1),
                settings=h.settings,
                clock=source.now,
                wait_until=source.wait_until,
            )
            ctx.resources["ups"] = ups
            for _ in range(STEPS):
                sb.advance(STEP_MS)
                h.poll()
                jobs.run_recorded(conn, "simulate", ctx, simulate.run_once)
            pctx = jobs.Context(args=argparse.Namespace(), settings=h.settings, clock=source.now)
            pctx.resources["ups"] = ups
            jobs.run_recorded(conn, "price", pctx, price.run_once)
            sctx = jobs.Context(args=argparse.Namespace(), settings=h.settings, clock=source.now)
            jobs.run_recorded(conn, "score", sctx, score.run_once)
        h.close()
        built_at = source.now()
        source.close()
        counts = sctx.counts
        # the copier's fills were polled, never grouped nor copied
        fills = conn.execute(
            "SELECT count(*) AS n, count(*) FILTER (WHERE group_state IS NULL"
            " OR group_state = 'GROUPED') AS grouped FROM trade_event WHERE followed_user_id = %s",
            (mine,),
        ).fetchone()
        assert fills["n"] > 5 and fills["grouped"] == 0
        assert (
            conn.execute(
                "SELECT count(*) AS n FROM copy_group WHERE followed_user_id = %s", (mine,)
            ).fetchone()["n"]
            == 0
        )
        s = store.summary(conn, leader)
        assert s.wallet == fills["n"] == counts["real_added"]
        assert s.pending == 0
        # after the leader's seed its fills have groups: nearly every copy pairs (not the
        # copier's own trades); before it, none can
        by_seed = conn.execute(
            """SELECT f.event_time >= u.seeded_at + interval '10 seconds' AS after_seed,
                      count(*) AS n, count(f.copy_group_id) AS paired
               FROM real_copy_fill f JOIN followed_user u ON u.id = f.leader_user_id
               WHERE f.leader_user_id = %s GROUP BY 1""",
            (leader,),
        ).fetchall()
        split = {r["after_seed"]: (r["n"], r["paired"]) for r in by_seed}
        n, paired = split[True]
        assert n >= 10 and paired >= 0.85 * n and split.get(False, (0, 0))[1] == 0
        # each pair is with a group of its leader, same asset and side, that began
        # before it, at most 15 minutes before
        bad = conn.execute(
            """SELECT count(*) AS n FROM real_copy_fill f
               JOIN copy_group g ON g.id = f.copy_group_id
               WHERE g.followed_user_id <> f.leader_user_id OR g.asset_id <> f.asset_id
                  OR g.action <> f.side OR g.window_start > f.event_time
                  OR f.event_time - g.window_start > interval '15 minutes'"""
        ).fetchone()
        assert bad["n"] == 0
        attributed = conn.execute(
            """SELECT count(*) AS n, count(*) FILTER (WHERE latency_micros IS NOT NULL) AS booked,
                      count(*) FILTER (WHERE ideal_micros - exec_micros
                        <> coalesce(latency_micros, 0) + slippage_micros + fee_micros) AS off
               FROM real_copy_attribution"""
        ).fetchone()
        assert attributed["n"] == counts["real_attributed"] > 0 and attributed["off"] == 0
        assert attributed["booked"] > 0  # a stored book within 30 s of some real fills
        assert counts["real_scored"] == s.paired
        out = tmp_path / "site"
        assert not build.Builder(out, clock=lambda: built_at).build_all(conn).failed
        page = (out / f"users/{leader}.html").read_text()
        assert f"{s.paired} real fills paired" in page
        assert "sandbox-copier-1" not in (out / "leaders.html").read_text()
