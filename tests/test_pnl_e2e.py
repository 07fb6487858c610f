"""After an end-to-end sandbox run (poll → group → simulate), `price` marks every held
asset and `snapshot` writes one row per portfolio whose cash and positions are the sum
of that portfolio's ledger, with realized + unrealized = equity − contributed; a rebuild
reproduces every row; and every page built from that run adds up to its cards."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_poll import Harness, at
from test_simulate_e2e import ANCHOR_MS, LEADERS, run_pipeline

from common.runtime import clock, jobs
from common.store import db
from common.upstream import http
from functions import price, rollup, snapshot
from sandbox import testing
from site_builder import build, render
from site_builder.pages import common, portfolio

pytestmark = pytest.mark.sandbox


def test_snapshots_equal_the_ledgers_after_a_sandbox_run(db_url: str, tmp_path: Path) -> None:
    run_pipeline(db_url, seed=5, steps=24)
    with (
        testing.running_sandbox(
            seed=5, clock="manual", anchor_ms=ANCHOR_MS, api_lag=5, leaders=LEADERS
        ) as sb,
        db.connect(db_url, autocommit=True) as conn,
    ):
        sb.advance(25 * 60_000)
        h = Harness(conn, sb)
        source = clock.sandbox(sb.control_url)
        with http.make_upstreams(h.settings) as ups:
            ctx = jobs.Context(args=argparse.Namespace(), settings=h.settings, clock=source.now)
            ctx.resources["ups"] = ups
            marked = jobs.run_recorded(conn, "price", ctx, price.run_once)
            assert marked > 0
            jobs.run_recorded(conn, "snapshot", ctx, snapshot.run_once)
            sb.advance(60_000)
            jobs.run_recorded(conn, "price", ctx, price.run_once)
            jobs.run_recorded(conn, "snapshot", ctx, snapshot.run_once)
        source.close()
        h.close()
        held = conn.execute(
            """SELECT count(DISTINCT asset_id) AS n FROM (
                 SELECT asset_id FROM ledger_entry WHERE asset_id IS NOT NULL
                 GROUP BY portfolio_scope, followed_user_id, asset_id
                 HAVING sum(share_delta_micros) <> 0) h"""
        ).fetchone()
        marks = conn.execute(
            "SELECT count(DISTINCT asset_id) AS n FROM market_price_snapshot"
        ).fetchone()
        assert held is not None and marks is not None and 0 < marks["n"] <= held["n"]
        latest = conn.execute(
            """SELECT * FROM portfolio_snapshot
               WHERE bucket = (SELECT max(bucket) FROM portfolio_snapshot)"""
        ).fetchall()
        scopes = {r["portfolio_scope"] for r in latest}
        assert scopes == {"SHADOW_USER", "EXEC_USER", "EXEC_GLOBAL"}
        for r in latest:
            key = {"s": r["portfolio_scope"], "u": r["followed_user_id"]}
            ledger = conn.execute(
                """SELECT sum(cash_delta_micros)::bigint AS cash FROM ledger_entry
                   WHERE portfolio_scope = %(s)s
                     AND followed_user_id IS NOT DISTINCT FROM %(u)s""",
                key,
            ).fetchone()
            assert ledger is not None and r["cash_micros"] == ledger["cash"], key
            shares = conn.execute(
                """SELECT l.asset_id, sum(l.share_delta_micros)::bigint AS n,
                          max(p.share_micros) AS kept
                   FROM ledger_entry l LEFT JOIN portfolio_position p
                     ON p.portfolio_scope = l.portfolio_scope AND p.asset_id = l.asset_id
                    AND p.followed_user_id IS NOT DISTINCT FROM l.followed_user_id
                   WHERE l.portfolio_scope = %(s)s AND l.asset_id IS NOT NULL
                     AND l.followed_user_id IS NOT DISTINCT FROM %(u)s
                   GROUP BY l.asset_id""",
                key,
            ).fetchall()
            assert all(s["n"] == (s["kept"] or 0) for s in shares), key
            assert (
                r["realized_pnl_micros"] + r["unrealized_pnl_micros"]
                == r["equity_micros"] - r["contributed_micros"]
            ), key
        assert snapshot.rebuild(conn, latest[0]["bucket"] - timedelta(days=1))["differed"] == 0
        # The page rollups agree with the rows they summarize, and a rerun adds nothing.
        first = rollup.roll(conn, at(sb.now_ms()))
        assert first["attempts"] > 0 and rollup.roll(conn, at(sb.now_ms()))["attempts"] == 0
        sums = conn.execute(
            """SELECT sum(attempts) AS a, sum(executed) AS e FROM rollup_attempt_daily"""
        ).fetchone()
        truth = conn.execute(
            """SELECT count(*) AS a, count(*) FILTER (WHERE decision = 'EXECUTE') AS e
               FROM copy_attempt"""
        ).fetchone()
        assert sums == truth
        reasons: Counter[str] = Counter()
        for r in conn.execute("SELECT reasons FROM rollup_attempt_daily"):
            reasons.update(r["reasons"])
        want = conn.execute(
            "SELECT code, count(*) AS n FROM copy_attempt, unnest(reason_codes) code GROUP BY 1"
        ).fetchall()
        assert reasons == Counter({r["code"]: r["n"] for r in want})
        fills = conn.execute("SELECT sum(fills) AS n FROM rollup_detect_daily").fetchone()
        events = conn.execute(  # fills from before the follow were backfilled, not detected
            """SELECT count(*) AS n FROM trade_event t JOIN followed_user u
                 ON u.id = t.followed_user_id
               WHERE t.reorg_state IS NULL AND t.event_time >= u.followed_at"""
        ).fetchone()
        assert fills is not None and events is not None and fills["n"] == events["n"]
        # Exposure by user: the attributed shares add up to the global portfolio's.
        attributed = conn.execute(
            """SELECT asset_id, sum(share_micros)::bigint AS n FROM rollup_global_exposure
               GROUP BY 1 HAVING sum(share_micros) <> 0 ORDER BY 1"""
        ).fetchall()
        held_global = conn.execute(
            """SELECT asset_id, sum(share_delta_micros)::bigint AS n FROM ledger_entry
               WHERE portfolio_scope = 'EXEC_GLOBAL' AND asset_id IS NOT NULL
               GROUP BY 1 HAVING sum(share_delta_micros) <> 0 ORDER BY 1"""
        ).fetchall()
        assert attributed == held_global and held_global
        negative = conn.execute(
            "SELECT count(*) AS n FROM rollup_global_exposure WHERE share_micros < 0"
        ).fetchone()
        assert negative is not None and negative["n"] == 0  # a sell never leaves one negative
        _pages_add_up(conn, tmp_path, at(sb.now_ms()))


def _sum(html: str, name: str) -> str:
    """The text of the cell marked data-sum=name."""
    found = re.search(rf'data-sum="{re.escape(name)}">([^<]*)<', html)
    assert found is not None, name
    return found.group(1)


def _pages_add_up(conn: db.Conn, root: Path, now: datetime) -> None:
    """Every page built from this run: each table adds up to its card (the snapshot's
    number), an asset shows one mark everywhere, and the realized PnL is explained by
    the positions' realized PnL and the fees."""
    builder = build.Builder(root, clock=lambda: now)
    done = builder.build_all(conn)
    assert not done.failed and done.built
    snaps = common.snapshots_at(conn, common.latest_bucket(conn))
    g = snaps[("EXEC_GLOBAL", None)]
    page = (root / "portfolio.html").read_text()
    assert _sum(page, "equity") == render.usd(g["equity_micros"])
    assert _sum(page, "cash") == render.usd(g["cash_micros"])
    assert _sum(page, "positions") == render.usd(g["equity_micros"] - g["cash_micros"])
    assert _sum(page, "unrealized") == render.usd(g["unrealized_pnl_micros"], True)
    assert _sum(page, "realized") == render.usd(g["realized_pnl_micros"], True)
    assert _sum(page, "exposure") == render.usd(g["exposure_micros"])
    assert _sum((root / "index.html").read_text(), "exposure") == render.usd(g["exposure_micros"])
    # Exactly, in micros: the pages' rows against the snapshot rows.
    for (scope, user), snap in snaps.items():
        held = portfolio.positions(conn, scope, user, open=True)
        closed = portfolio.positions(conn, scope, user, open=False)
        assert sum(p["value_micros"] for p in held) + snap["cash_micros"] == snap["equity_micros"]
        assert sum(abs(p["value_micros"]) for p in held) == snap["exposure_micros"]
        assert sum(p["unrealized_micros"] for p in held) == snap["unrealized_pnl_micros"]
        assert len(held) == snap["open_positions"]
        # each closed position says how and when (the fold's entry type and time)
        assert all(p["closed_at"] is not None and p["closed_as"] for p in closed), closed
        explained = portfolio.realized(snap, held, closed)
        assert explained.total == snap["realized_pnl_micros"]
        assert explained.other == 0, (scope, user)  # all realized PnL is some position's
        if user is not None and scope == "EXEC_USER":
            html = (root / "users" / f"{user}.html").read_text()
            assert _sum(html, "EXEC_USER-equity") == render.usd(snap["equity_micros"])
            assert _sum(html, "EXEC_USER-unrealized") == render.usd(
                snap["unrealized_pnl_micros"], True
            )
    held = portfolio.positions(conn, "EXEC_GLOBAL", None, open=True)
    assert sum(u["value_micros"] for u in portfolio.by_user(conn, held)) == g["exposure_micros"]
    # One mark per asset: every page row of an asset shows the same mark.
    marks: dict[str, set[int | None]] = {}
    for scope, user in snaps:
        for p in portfolio.positions(conn, scope, user, open=True):
            if p["marked_by"] == "mid":
                marks.setdefault(p["asset_id"], set()).add(p["mark_micros"])
    assert marks and all(len(m) == 1 for m in marks.values())
