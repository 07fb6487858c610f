"""The latency sweep (SPEC §12): the half-life's arithmetic, and the sweep against a
database the real pipeline filled (sandbox → poll → group → simulate) with a ladder
for every BUY/SELL group: at +0, on the very book each group was decided on, the sweep
executes what the what-if executes; the books worsening with the delay, fills fall and
slippage rises; the same rows give the same report, through the job, the CLI and the
Test config path alike."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb
from test_simulate_e2e import run_pipeline

from common.domain import decide, latency, live_book
from common.runtime import jobs, settings
from common.store import copy_configs, db, ladder, sweep, whatif
from functions import config_test
from functions import sweep as sweep_job

ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
DELAYS = (0, 2_000, 5_000, 10_000, 30_000, 60_000)
TICK = 10_000


def D(text: str) -> Decimal:
    return Decimal(text)


def test_half_life_is_interpolated_between_delays() -> None:
    pts = [(0, D("0.8")), (2_000, D("0.6")), (5_000, D("0.2")), (10_000, D("0.1"))]
    # half of 0.8 is 0.4: between +2 s (0.6) and +5 s (0.2), at 2 + 3 × 0.2/0.4 = 3.5 s
    assert latency.half_life(pts) == latency.HalfLife(seconds=D("3.5"))
    assert latency.half_life(pts).label() == "3.5 s"
    # exactly half at a delay: that delay
    assert latency.half_life([(0, D("0.8")), (2_000, D("0.4"))]).seconds == D("2.0")
    # never half: "> the last delay"
    never = latency.half_life([(0, D("0.8")), (60_000, D("0.41"))])
    assert never == latency.HalfLife(beyond_s=D("60")) and never.label() == "> 60 s"
    # n/a points are passed over; a first retention that is n/a, zero or negative: none
    got = latency.half_life([(0, D("0.5")), (2_000, None), (5_000, D("0.1"))])
    assert got.seconds == D("3.1")  # 5 × 0.25 / 0.4 = 3.125 s, to a tenth (half to even)
    # no base: n/a at the smallest delay (never the first known one instead)
    assert latency.half_life([(0, None), (2_000, D("0.8")), (5_000, D("0.3"))]) == (
        latency.HalfLife()
    )
    # "> the last delay", even when the last delay's retention is n/a
    tail = [(0, D("0.8")), (2_000, D("0.7")), (30_000, D("0.6")), (60_000, None)]
    assert latency.half_life(tail).label() == "> 60 s"
    assert latency.half_life([(0, D("0")), (2_000, D("-1"))]).label() == "n/a"
    assert latency.half_life([]).label() == "n/a"
    assert latency.half_life([(0, D("-0.2")), (2_000, D("-0.5"))]).label() == "n/a"


def _moved(levels: list[tuple[int, int]], ticks: int) -> tuple[tuple[int, int], ...]:
    moved = [(p + ticks * TICK, s) for p, s in levels]
    return tuple((p, s) for p, s in moved if 0 < p < 1_000_000)


def _add_ladders(conn: db.Conn) -> int:
    """A rung at each delay for every BUY/SELL group: +0 its own decision book, then
    the whole book moved one more tick against the copier at each delay (up after a
    BUY, down after a SELL: the price runs away, the spread stays); and a mark for each
    asset (its newest stored book's mid), so every attempt is valued."""
    rows = conn.execute(
        """SELECT g.id, g.action, g.window_start, b.bid_prices_micros AS bp,
                  b.bid_sizes_micros AS bs, b.ask_prices_micros AS ap, b.ask_sizes_micros AS az
           FROM copy_group g JOIN order_book_snapshot b ON b.id = g.order_book_snapshot_id
           WHERE g.action IN ('BUY', 'SELL')"""
    ).fetchall()
    for r in rows:
        bids = list(zip(r["bp"], r["bs"], strict=True))
        asks = list(zip(r["ap"], r["az"], strict=True))
        first = int(r["window_start"].timestamp() * 1000)
        sign = 1 if r["action"] == "BUY" else -1
        rungs = [
            live_book.Rung(d, first + d, "LIVE",
                           live_book.Levels(_moved(bids, sign * i), _moved(asks, sign * i)))
            for i, d in enumerate(DELAYS)
        ]  # fmt: skip
        assert ladder.write(conn, r["id"], rungs, r["window_start"]) == len(DELAYS)
    conn.execute(
        """INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,
                                              observed_at)
           SELECT DISTINCT ON (asset_id) asset_id, date_trunc('minute', fetched_at),
                  (bid_prices_micros[1] + ask_prices_micros[1]) / 2, 'MIDPOINT', fetched_at
           FROM order_book_snapshot
           WHERE bid_prices_micros <> '{}' AND ask_prices_micros <> '{}'
           ORDER BY asset_id, fetched_at DESC
           ON CONFLICT (asset_id, bucket) DO NOTHING"""
    )
    return len(rows)


pytestmark = pytest.mark.sandbox


def test_the_sweep_on_the_pipelines_groups(db_url: str) -> None:
    run_pipeline(db_url, seed=5, steps=24)
    with db.connect(db_url, autocommit=True) as conn:
        n = _add_ladders(conn)
        assert n > 5
        configs = copy_configs.load(conn)
        inputs = whatif.load(conn, *ALL_TIME)
        end = datetime.now(tz=UTC)  # the marks' freshness is judged at this moment
        s = settings.Settings(score_mark_max_age_s=10 * 365 * 86400)
        got = sweep.report(conn, inputs, configs, DELAYS, end, s.score_mark_max_age_s)
        assert got["groups"] == n and got["groups_without_ladder"] == 0
        assert got["delays_ms"] == list(DELAYS)
        # +0 on the decision books: the sweep executes what the what-if executes
        executed: dict[str, int] = {"EXEC_USER": 0, "EXEC_GLOBAL": 0}

        def count(scope: str, d: decide.Decision) -> None:
            if d.group.action in ("BUY", "SELL") and d.decision == "EXECUTE":
                executed[scope] += 1

        whatif.evaluate(inputs, configs, count)
        glob = got["global"]["points"]
        assert glob[0]["executed"] == executed["EXEC_GLOBAL"] > 0
        assert (
            sum(v["points"][0]["executed"] for v in got["leaders"].values())
            == executed["EXEC_USER"]
        )
        # the books worsen with the delay: fewer fills, more slippage
        fills = [p["executed"] for p in glob]
        assert fills == sorted(fills, reverse=True) and fills[-1] < fills[0]
        slips = [p["median_slippage_bps"] for p in glob if p["median_slippage_bps"] is not None]
        assert slips == sorted(slips) and slips[-1] > slips[0]
        assert glob[0]["attributed"] == glob[0]["attempts"]  # every asset has a mark X
        assert glob[0]["ideal_micros"] != 0 and glob[0]["pnl_micros"] != 0
        for p in glob:  # nothing executed, nothing made or paid
            if p["executed"] == 0:
                assert p["pnl_micros"] == 0 and p["fees_micros"] == 0
        for p in glob:  # every delay decides the same groups
            assert p["attempts"] == glob[0]["attempts"]
        # reproducible: the same rows, the same report
        again = sweep.report(conn, whatif.load(conn, *ALL_TIME), configs, DELAYS, end,
                             s.score_mark_max_age_s)  # fmt: skip
        assert json.dumps(again, sort_keys=True) == json.dumps(got, sort_keys=True)
        # the job stores that same report; Test config (no change) and the CLI give it too
        t0 = datetime.now(tz=UTC)
        hours = (t0 - min(g.decide_at for g in inputs.groups)).total_seconds() / 3600 + 1
        js = s.model_copy(update={"sweep_hours": hours, "ladder_delays_s": "0,2,5,10,30,60"})
        ctx = jobs.Context(args=argparse.Namespace(), settings=js, clock=lambda: t0)
        assert sweep_job.run_once(conn, ctx) == 1
        latest = sweep.latest(conn)
        assert latest is not None and latest.report["groups"] == n
        assert latest.report["global"] == got["global"]
        assert latest.report["leaders"] == got["leaders"]
        tested = config_test.evaluate(conn, {}, int(hours) + 1, t0, js)
        assert tested["sweep"]["global"] == got["global"]
        cli = subprocess.run(
            [sys.executable, "-m", "functions.whatif", "--sweep", "--database-url", db_url,
             "--start", ALL_TIME[0].isoformat(), "--end", ALL_TIME[1].isoformat()],
            capture_output=True, text=True, check=True,
            env={**os.environ, "OCULUS_SCORE_MARK_MAX_AGE_S": str(10 * 365 * 86400)},
        )  # fmt: skip
        printed = json.loads(cli.stdout)
        assert printed["global"] == got["global"] and printed["leaders"] == got["leaders"]
        # a group whose +0 book is later than its +2 s moment (detected late, the asset not
        # watched before) is left out of every delay, and counted
        gid = conn.execute("SELECT max(copy_group_id) AS g FROM book_ladder").fetchone()
        assert gid is not None
        conn.execute(
            """UPDATE book_ladder l SET book_at = g.window_start + interval '3 s'
               FROM copy_group g WHERE g.id = l.copy_group_id AND l.copy_group_id = %(g)s
                 AND l.delay_ms = 0""",
            {"g": gid["g"]},
        )
        late = sweep.report(conn, inputs, configs, DELAYS, end, s.score_mark_max_age_s)
        assert late["groups"] == n - 1 and late["groups_late_base"] == 1
        assert late["groups_without_ladder"] == 0
        # a group whose ladder misses a delay is left out of every delay, and counted
        gid = conn.execute("SELECT min(copy_group_id) AS g FROM book_ladder").fetchone()
        assert gid is not None
        conn.execute("DELETE FROM book_ladder WHERE copy_group_id = %(g)s AND delay_ms = 5000",
                     {"g": gid["g"]})  # fmt: skip
        fewer = sweep.report(conn, inputs, configs, DELAYS, end, s.score_mark_max_age_s)
        assert fewer["groups"] == n - 2 and fewer["groups_without_ladder"] == 1


def test_a_malformed_stored_sweep_is_passed_over(conn: db.Conn) -> None:
    good = {"delays_ms": [0, 2000], "groups": 1, "groups_without_ladder": 0,
            "global": {"points": [latency.Point(0).as_dict()],
                       "half_life": latency.HalfLife().as_dict()},
            "leaders": {}}  # fmt: skip
    t = datetime(2026, 12, 1, tzinfo=UTC)
    for n, report in enumerate([good, {"leaders": {}}, {**good, "global": {"points": [{}]}}]):
        conn.execute(
            """INSERT INTO latency_sweep (taken_at, range_start, range_end, groups, report,
                   cpu_ms) VALUES (%(t)s, %(t)s, %(t)s, 0, %(r)s, 0)""",
            {"t": t.replace(hour=n), "r": Jsonb(report)},
        )
    got = sweep.latest(conn)
    assert got is not None and got.report == good  # the two newer ones are malformed
    assert sweep.well_formed(good) and not sweep.well_formed([]) and not sweep.well_formed(None)
