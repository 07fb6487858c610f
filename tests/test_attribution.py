"""Where the creator's alpha is lost (SPEC §10): the attribution identity over random
attempts (hypothesis), each execution score part at its boundaries, and the score job
against Postgres — rows at the mark, a rerun that writes nothing, a moved mark that
rewrites only its asset's rows, a stale mark that makes rows wait, a resolution that
freezes them, and a new score version beside the old."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.domain import attribution
from common.runtime import jobs, settings
from common.store import attributions, db
from functions import score as score_job
from tests import site_data

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SQL_WAITING = score_job.SQL["waiting"]
price = st.integers(min_value=0, max_value=1_000_000)
shares = st.integers(min_value=0, max_value=10**12)


def attempt(**kw: object) -> attribution.Attempt:
    base: dict[str, object] = {
        "action": "BUY",
        "decision": "EXECUTE",
        "reasons": (),
        "ideal_shares": 100_000_000,
        "target_shares": 80_000_000,
        "target_notional": 40_000_000,
        "filled_shares": 60_000_000,
        "filled_notional": 31_200_000,
        "their_price": 500_000,
        "vwap": 520_000,
        "mid": 510_000,
        "best_bid": 500_000,
        "best_ask": 520_000,
        "depth": 120_000_000,
        "fee": 100_000,
        "decided_at": T + timedelta(seconds=5),
        "first_fill_at": T,
    }
    return attribution.Attempt(**{**base, **kw})  # type: ignore[arg-type]


@given(
    action=st.sampled_from(["BUY", "SELL"]),
    executed=st.booleans(),
    t0=shares,
    t=shares,
    f=shares,
    p=price,
    v=st.one_of(st.none(), price),
    m=st.one_of(st.none(), price),
    x=price,
    fee=st.integers(min_value=0, max_value=10**9),
)
def test_ideal_minus_exec_is_the_sum_of_the_terms_to_a_micro_per_term(
    action: str,
    executed: bool,
    t0: int,
    t: int,
    f: int,
    p: int,
    v: int | None,
    m: int | None,
    x: int,
    fee: int,
) -> None:
    a = attempt(
        action=action,
        decision="EXECUTE" if executed else "SKIP",
        reasons=() if executed else ("SPREAD_TOO_WIDE", "CHASE_VS_MID"),
        ideal_shares=t0,
        target_shares=t,
        filled_shares=f if executed else 0,
        their_price=p,
        vwap=v,
        mid=m,
        fee=fee if executed else 0,
    )
    terms = attribution.attribute(a, x)
    assert abs((terms.ideal - terms.exec) - terms.lost) <= 6  # six rounded products
    if not executed:
        assert terms.exec == 0 and terms.unfilled == 0 and terms.skip_reason == "SPREAD_TOO_WIDE"
    else:
        assert terms.skip == 0 and terms.skip_reason is None


def test_a_worked_buy_splits_its_loss_as_the_spec_says() -> None:
    # T0 100, T 80, F 60 shares; P 0.50, M 0.51, V 0.52, fee 0.10; the mark X is 0.60
    t = attribution.attribute(attempt(), 600_000)
    assert t.ideal == 10_000_000  # 100 × (0.60 − 0.50)
    assert t.exec == 4_700_000  # 60 × (0.60 − 0.52) − 0.10
    assert (t.sizing, t.unfilled, t.latency, t.slippage, t.fee) == (
        2_000_000,  # 20 × 0.10: clamps, caps, cash
        2_000_000,  # 20 × 0.10: not filled
        600_000,  # 60 × 0.01: the mid moved before we decided
        600_000,  # 60 × 0.01: walking the book
        100_000,
    )
    assert t.ideal - t.exec == t.lost
    sold = attribution.attribute(attempt(action="SELL", vwap=480_000, mid=490_000), 400_000)
    assert sold.ideal == 10_000_000 and sold.latency == 600_000 and sold.slippage == 600_000


def test_a_skip_judged_before_sizing_is_counted_at_its_clamped_target() -> None:
    a = attempt(decision="SKIP", reasons=("PAUSED",), target_shares=0, filled_shares=0, fee=0)
    t = attribution.attribute(a, 600_000)
    assert t.skip == 8_000_000  # T = 40 USDC at 0.50 = 80 shares
    assert t.sizing == 2_000_000 and t.skip_reason == "PAUSED" and t.exec == 0


@pytest.mark.parametrize(
    ("seconds", "want"),
    [(0, "40.00"), (5, "40.00"), (35, "20.00"), (65, "0.00"), (600, "0.00")],
)
def test_timing_is_full_to_5_s_and_none_from_65_s(seconds: float, want: str) -> None:
    s = attribution.score(attempt(decided_at=T + timedelta(seconds=seconds)))
    assert s is not None and s.timing == Decimal(want)


@pytest.mark.parametrize(
    ("action", "vwap", "want"),
    [
        ("BUY", 500_000, "35.00"),  # their price
        ("BUY", 490_000, "35.00"),  # better than theirs: full, not more
        ("BUY", 502_500, "26.25"),  # 50 bps worse
        ("BUY", 505_000, "17.50"),  # 100 bps worse
        ("BUY", 510_000, "0.00"),  # 200 bps worse
        ("SELL", 510_000, "35.00"),  # a SELL above their price is better
        ("SELL", 497_500, "26.25"),
    ],
)
def test_financial_falls_to_zero_at_200_bps_worse_than_theirs(
    action: str, vwap: int, want: str
) -> None:
    s = attribution.score(attempt(action=action, vwap=vwap))
    assert s is not None and s.financial == Decimal(want)


@pytest.mark.parametrize(
    ("fee", "bid", "ask", "want"),
    [
        (0, 510_000, 510_000, "15.00"),  # no fee, no spread
        (0, 504_900, 515_100, "0.00"),  # half-spread 100 bps
        (312_000, 510_000, 510_000, "0.00"),  # a fee of 100 bps of the 31.20 filled
        (156_000, 510_000, 510_000, "7.50"),  # 50 bps
        (78_000, 504_900 + 2_550, 515_100 - 2_550, "3.75"),  # 25 bps + 50 bps half-spread
    ],
)
def test_cost_falls_to_zero_at_100_bps(fee: int, bid: int, ask: int, want: str) -> None:
    s = attribution.score(attempt(fee=fee, best_bid=bid, best_ask=ask))
    assert s is not None and s.cost == Decimal(want)


@pytest.mark.parametrize(
    ("filled", "target", "depth", "want"),
    [
        (60_000_000, 60_000_000, None, "0.00"),  # no depth known: no congestion points
        (60_000_000, 60_000_000, 10**15, "10.00"),  # all filled, a sliver of the depth
        (60_000_000, 120_000_000, 10**15, "5.00"),  # half filled
        (60_000_000, 60_000_000, 31_200_000, "0.00"),  # took the whole band
    ],
)
def test_congestion_rewards_filling_without_taking_the_band(
    filled: int, target: int, depth: int | None, want: str
) -> None:
    s = attribution.score(attempt(filled_shares=filled, target_shares=target, depth=depth))
    assert s is not None and s.congestion == Decimal(want)


def test_only_fills_of_buys_and_sells_are_scored_and_the_total_adds_up() -> None:
    assert attribution.score(attempt(decision="SKIP")) is None
    assert attribution.score(attempt(action="MERGE")) is None
    assert attribution.score(attempt(filled_shares=0)) is None
    s = attribution.score(attempt())
    assert s is not None and s.version == "1.0.0"
    assert s.total == s.timing + s.financial + s.cost + s.congestion
    assert Decimal(0) <= s.total <= Decimal(100)


# The job, against Postgres (the site's fixed dataset: attempts of both decisions).


def run(conn: db.Conn, at: datetime) -> dict[str, int]:
    ctx = jobs.Context(args=argparse.Namespace(), settings=settings.get(), clock=lambda: at)
    score_job.run_once(conn, ctx)
    return ctx.counts


def mark(conn: db.Conn, asset: str, mid: int, at: datetime) -> None:
    conn.execute(
        "INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,"
        " observed_at) VALUES (%s, date_bin('30 seconds', %s::timestamptz, 'epoch'), %s,"
        " 'MIDPOINT', %s) ON CONFLICT (asset_id, bucket) DO UPDATE SET mid_micros ="
        " EXCLUDED.mid_micros, observed_at = EXCLUDED.observed_at",
        (asset, at, mid, at),
    )


def marked_dataset(conn: db.Conn) -> datetime:
    """The site's dataset, its assets freshly marked (Yes 0.38, No 0.56); returns now."""
    site_data.load(conn)
    now = site_data.NOW
    for pair in site_data.ASSETS.values():
        for i, a in enumerate(pair):
            mark(conn, a, 560_000 if i else 380_000, now - timedelta(seconds=5))
    return now


def rows(conn: db.Conn) -> dict[int, dict[str, object]]:
    got = conn.execute(
        "SELECT c.*, a.asset_id FROM copy_attribution c"
        " JOIN copy_attempt a ON a.id = c.copy_attempt_id ORDER BY 1"
    ).fetchall()
    return {r["copy_attempt_id"]: r for r in got}


def test_the_job_marks_each_attempt_rewrites_moved_marks_only_and_freezes_resolved_ones(
    conn: db.Conn,
) -> None:
    site_data.load(conn)
    now = site_data.NOW
    buys_sells = conn.execute(
        "SELECT count(*) AS n FROM copy_attempt WHERE action IN ('BUY', 'SELL')"
    ).fetchone()["n"]
    assets = [a for pair in site_data.ASSETS.values() for a in pair]
    got = run(conn, now)
    assert got["ideal_filled"] > 0  # the dataset's attempts predate T0
    # no asset they were decided on has a mark: every attempt waits for its mark
    assert "attributed" not in got and got["waiting_for_mark"] == buys_sells > 0
    assert got["scored"] > 0  # a score needs no mark
    for a in assets:
        mark(conn, a, 600_000, now - timedelta(hours=1))  # stale: still no mark
    assert run(conn, now).get("attributed", 0) == 0
    assert conn.execute(SQL_WAITING).fetchone()["n"] == buys_sells
    for a in assets:
        mark(conn, a, 600_000, now - timedelta(seconds=10))
    got = run(conn, now)
    assert got["attributed"] == buys_sells and "scored" not in got
    first = rows(conn)
    assert all(r["mark_micros"] == 600_000 and not r["final"] for r in first.values())
    assert all(
        r["ideal_micros"] - r["exec_micros"]
        - sum(
            int(r[k] or 0)  # type: ignore[call-overload]
            for k in (
                "sizing_micros", "skip_micros", "unfilled_micros", "latency_micros",
                "slippage_micros", "fee_micros",
            )
        )
        in range(-6, 7)
        for r in first.values()
    )  # fmt: skip
    again = run(conn, now + timedelta(seconds=60))
    assert again.get("attributed", 0) == 0 and again.get("scored", 0) == 0  # idempotent
    moved = first[min(first)]["asset_id"]
    mark(conn, moved, 700_000, now + timedelta(seconds=60))
    got = run(conn, now + timedelta(seconds=61))
    of_moved = [i for i, r in first.items() if r["asset_id"] == moved]
    assert got["attributed"] == len(of_moved) > 0
    after = rows(conn)
    assert all(after[i]["mark_micros"] == 700_000 for i in of_moved)
    assert all(after[i] == first[i] for i in first if i not in of_moved)
    # the market resolves: its assets are marked at the payout, once and for good
    cid = next(c for c, pair in site_data.ASSETS.items() if moved in pair)
    conn.execute(
        "UPDATE market SET resolved_at = %s, closed = true WHERE condition_id = %s",
        (now + timedelta(seconds=90), cid),
    )
    for i, a in enumerate(site_data.ASSETS[cid]):
        conn.execute(
            "UPDATE outcome_asset SET payout_micros = %s WHERE asset_id = %s",
            (1_000_000 if i == 0 else 0, a),
        )
    run(conn, now + timedelta(seconds=120))
    resolved = rows(conn)
    for r in resolved.values():
        if r["asset_id"] in site_data.ASSETS[cid]:
            assert r["final"] and r["mark_micros"] in (0, 1_000_000)
    mark(conn, moved, 100_000, now + timedelta(seconds=150))  # a stray mark after it
    assert run(conn, now + timedelta(seconds=151)).get("attributed", 0) == 0
    # a new score version scores history beside the old rows
    scored = conn.execute("SELECT count(*) AS n FROM execution_score").fetchone()["n"]
    old = attribution.VERSION
    try:
        attribution.VERSION = "1.1.0"  # type: ignore[misc]
        got = run(conn, now + timedelta(seconds=180))
    finally:
        attribution.VERSION = old  # type: ignore[misc]
    versions = conn.execute(
        "SELECT version, count(*) AS n FROM execution_score GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [(v["version"], v["n"]) for v in versions] == [("1.0.0", scored), ("1.1.0", scored)]


def test_retention_is_exec_over_ideal_only_with_ten_attempts_and_a_gain() -> None:
    def r(n: int, ideal: int, exec_: int) -> attribution.Retention:
        return attribution.Retention("30d", n + 2, n, ideal, exec_, 0, (), 0, 0, 0, 0)

    assert r(10, 4_000_000, 3_000_000).ratio == Decimal("0.75")
    assert r(9, 4_000_000, 3_000_000).ratio is None  # too few
    assert r(10, -4_000_000, 3_000_000).ratio is None  # the ideal lost: no ratio
    assert r(10, 4_000_000, 3_000_000).waiting == 2


def test_the_job_s_sums_feed_the_pages_retention_and_its_waterfall_adds_up(
    conn: db.Conn,
) -> None:
    now = marked_dataset(conn)
    run(conn, now)
    for user in (None, 1):
        got = attributions.retention(conn, now, user)
        assert list(got) == ["24h", "7d", "30d"]
        r = got["30d"]
        scope = "EXEC_GLOBAL" if user is None else "EXEC_USER"
        want = conn.execute(
            "SELECT count(*) AS n, sum(c.ideal_micros) AS ideal, sum(c.exec_micros) AS exec"
            " FROM copy_attribution c JOIN copy_attempt a ON a.id = c.copy_attempt_id"
            " WHERE a.portfolio_scope = %s AND (%s::bigint IS NULL OR a.followed_user_id = %s)",
            (scope, user, user),
        ).fetchone()
        assert (r.n, r.ideal, r.exec) == (want["n"], want["ideal"], want["exec"]) and r.n > 0
        # the waterfall's steps take the ideal to the exec (within a micro per row and term)
        assert abs(r.ideal + sum(v for _, v in r.steps()) - r.exec) <= 6 * r.n


def test_the_ideal_copy_is_the_sum_of_ideal_and_its_curve_gets_a_point_an_hour(
    conn: db.Conn,
) -> None:
    now = marked_dataset(conn)
    got = run(conn, now)
    totals = attributions.totals(conn)
    want = conn.execute(
        "SELECT a.followed_user_id AS u, sum(c.ideal_micros) AS ideal FROM copy_attribution c"
        " JOIN copy_attempt a ON a.id = c.copy_attempt_id"
        " WHERE a.portfolio_scope = 'EXEC_USER' GROUP BY 1"
    ).fetchall()
    assert {("EXEC_USER", r["u"]): r["ideal"] for r in want}.items() <= totals.items()
    assert ("EXEC_GLOBAL", None) in totals
    assert got["ideal_points"] == len(totals)  # one point per portfolio this hour
    hour = now.replace(minute=0, second=0, microsecond=0)
    assert attributions.ideal_series(conn, 1, hour) == [(hour, totals[("EXEC_USER", 1)])]
    # later in the hour the marks move: the hour's point stays; the next hour gets one
    for pair in site_data.ASSETS.values():
        for a in pair:
            mark(conn, a, 500_000, now + timedelta(minutes=10))
    assert "ideal_points" not in run(conn, now + timedelta(minutes=10, seconds=5))
    assert attributions.ideal_series(conn, 1, hour)[0] == (hour, totals[("EXEC_USER", 1)])
    later = run(conn, now + timedelta(hours=1))
    assert later["ideal_points"] == len(totals)
    assert len(attributions.ideal_series(conn, 1, hour)) == 2


def test_a_run_cut_short_between_pages_is_finished_by_the_next(conn: db.Conn) -> None:
    """`due` looks at an asset's rows only when its newest attempt is due: a run that
    wrote its first pages (the lower ids) at a new mark and stopped leaves the newest
    rows at the old one, so the next run finishes the asset."""
    now = marked_dataset(conn)
    run(conn, now)
    asset, n = max(
        (r["asset_id"], r["n"])
        for r in conn.execute(
            "SELECT asset_id, count(*) AS n FROM copy_attempt WHERE action IN ('BUY', 'SELL')"
            " GROUP BY 1 HAVING count(*) > 1"
        )
    )
    mark(conn, asset, 700_000, now + timedelta(seconds=30))
    ids = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM copy_attempt WHERE asset_id = %s AND action IN ('BUY', 'SELL')"
            " ORDER BY id",
            (asset,),
        )
    ]
    conn.execute(  # the first page written at the new mark, then the run died
        "UPDATE copy_attribution SET mark_micros = 700000 WHERE copy_attempt_id = ANY(%s)",
        (ids[:-1],),
    )
    got = run(conn, now + timedelta(seconds=40))
    assert got["attributed"] == 1  # the newest row, the only one still at the old mark
    marks = {r["asset_id"]: r["mark_micros"] for r in rows(conn).values() if r["asset_id"] == asset}
    assert marks == {asset: 700_000} and n == len(ids)
    assert run(conn, now + timedelta(seconds=50)).get("attributed", 0) == 0
