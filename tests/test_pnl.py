"""PnL by average cost: the identity realized + unrealized = equity − contributed holds to
the micro over any sequence of entries; a round trip at one price loses exactly the
fees; settlement happens once; snapshots are incremental and a rebuild reproduces them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain import ledger, money, portfolio, records
from common.runtime import jobs
from common.runtime import settings as settings_mod
from common.store import db
from common.store import shadow as shadow_mod
from functions import price, rollup, snapshot

ASSETS = ("1", "2", "3")
M = money.MICROS


def entry(
    kind: str, asset: str | None, dq: int, cash: int, p: int | None = None
) -> records.LedgerEntry:
    return records.LedgerEntry.from_row(
        {
            "portfolio_scope": "SHADOW_USER",
            "followed_user_id": 1,
            "entry_type": kind,
            "asset_id": asset,
            "condition_id": None,
            "share_delta_micros": dq,
            "cash_delta_micros": cash,
            "price_micros": p,
        }
    )


def book_() -> portfolio.Portfolio:
    return portfolio.Portfolio("SHADOW_USER", 1)


def marks_of(mids: dict[str, int]) -> portfolio.Marks:
    marks = portfolio.Marks()
    for asset, mid in mids.items():
        marks.observe(asset, T0, mid)
    return marks


@st.composite
def entries(draw: st.DrawFn) -> list[records.LedgerEntry]:
    out = [entry("DEPOSIT", None, 0, draw(st.integers(0, 10**10)))]
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(
            st.sampled_from(["TRADE_FILL", "FEE", "SEED", "MERGE", "SPLIT", "FIX", "REDEEM"])
        )
        asset = draw(st.sampled_from(ASSETS))
        q = draw(st.integers(1, 10**9))
        p = draw(st.integers(0, 10**6))
        if kind == "TRADE_FILL":
            sign = draw(st.sampled_from([1, -1]))  # shorts and flips included
            out.append(entry(kind, asset, sign * q, -sign * money.mul_micros(q, p), p))
        elif kind == "FEE":
            out.append(entry(kind, asset, 0, -draw(st.integers(0, 10**6))))
        elif kind == "SEED":
            out.append(entry(kind, asset, q, 0, p))
        elif kind == "FIX":  # a chain correction of a fill's cash
            out.append(entry("TRADE_FILL", asset, 0, draw(st.integers(-1000, 1000))))
        elif kind == "REDEEM":  # legs at their payout, cash their sum
            payouts = draw(st.sampled_from([(M, 0), (0, M), (M // 2, M // 2)]))
            held = [draw(st.integers(0, 10**9)) for _ in payouts]
            out += [
                entry(kind, a, -n, 0, pay) for a, n, pay in zip(ASSETS, held, payouts, strict=False)
            ]
            out.append(
                entry(
                    kind,
                    None,
                    0,
                    sum(money.mul_micros(n, x) for n, x in zip(held, payouts, strict=True)),
                )
            )
        else:  # legs priced at the outcomes' marks, or not at all (equal)
            sign = 1 if kind == "SPLIT" else -1
            prices = draw(st.none() | st.tuples(st.integers(0, M), st.integers(0, M)))
            out += [
                entry(kind, a, sign * q, 0, None if prices is None else prices[i])
                for i, a in enumerate(ASSETS[:2])
            ]
            out.append(entry(kind, None, 0, -sign * q))
    return out


@settings(max_examples=300, deadline=None)
@given(entries(), st.dictionaries(st.sampled_from(ASSETS), st.integers(0, 10**6)))
def test_realized_plus_unrealized_is_the_equity_change(
    seq: list[records.LedgerEntry], marks: dict[str, int]
) -> None:
    book = book_()
    for e in seq:
        book.apply(e)
        assert book.cash == book.contributed + book.realized - sum(
            p.cost for p in book.positions.values()
        )
    v = book.value(marks_of(marks))
    assert book.realized + v.unrealized == v.equity - book.contributed
    assert book.cash == sum(e.cash_delta_micros for e in seq)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10**9), st.integers(1, 10**6)), min_size=1, max_size=10),
    st.integers(0, 10**6),
    st.integers(0, 40_000),
)
def test_buying_and_selling_back_at_one_price_loses_the_fees(
    buys: list[tuple[int, int]], price_: int, rate: int
) -> None:
    book = book_()
    fees = 0
    for q, _ in buys:
        book.apply(entry("TRADE_FILL", "1", q, -money.mul_micros(q, price_), price_))
        fee = money.taker_fee(q, price_, rate)
        book.apply(entry("FEE", "1", 0, -fee))
        fees += fee
    total = sum(q for q, _ in buys)
    cost = sum(money.mul_micros(q, price_) for q, _ in buys)
    book.apply(entry("TRADE_FILL", "1", -total, cost, price_))  # sold back for what it cost
    assert book.realized == -fees and book.fees == fees
    assert "1" not in book.positions and book.closed["1"].cost == 0


def test_average_cost_realizes_against_the_mean_price() -> None:
    book = book_()
    book.apply(entry("TRADE_FILL", "1", 10_000_000, -4_000_000, 400_000))  # 10 @ 0.40
    book.apply(entry("TRADE_FILL", "1", 10_000_000, -6_000_000, 600_000))  # 10 @ 0.60
    book.apply(entry("TRADE_FILL", "1", -5_000_000, 3_500_000, 700_000))  # 5 @ 0.70
    assert book.realized == 3_500_000 - 2_500_000  # average cost 0.50
    v = book.value(marks_of({"1": 800_000}))
    assert (v.unrealized, v.open_positions) == (15 * 800_000 - 7_500_000, 1)


# --- settlement and snapshots against Postgres ---------------------------------------

T0 = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
COND = "0x" + "e" * 64


def seed_portfolios(conn: db.Conn) -> int:
    user = conn.execute(
        """INSERT INTO followed_user (label, profile_wallet, followed_at) VALUES
           ('u', '0x' || repeat('1', 40), %(t)s) RETURNING id""",
        {"t": T0},
    ).fetchone()
    assert user is not None
    conn.execute("INSERT INTO market (condition_id, end_time) VALUES (%s, %s)", (COND, T0))
    conn.execute(
        """INSERT INTO outcome_asset (asset_id, condition_id, outcome_index) VALUES
           ('31', %(c)s, 0), ('32', %(c)s, 1)""",
        {"c": COND},
    )
    rows = [
        ("EXEC_USER", user["id"], None, "DEPOSIT", 0, 10_000_000_000, None, "deposit:user:1"),
        ("EXEC_USER", user["id"], "31", "TRADE_FILL", 20_000_000, -8_000_000, 400_000, "g1:L0"),
        ("EXEC_USER", user["id"], "31", "FEE", 0, -50_000, None, "g1:L0"),
        ("EXEC_GLOBAL", None, None, "DEPOSIT", 0, 10_000_000_000, None, "deposit"),
        ("EXEC_GLOBAL", None, "32", "TRADE_FILL", 10_000_000, -6_000_000, 600_000, "g2:L0"),
        ("SHADOW_USER", user["id"], "31", "TRADE_FILL", 100_000_000, -40_000_000, 400_000, "t:1"),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO ledger_entry (portfolio_scope, followed_user_id, asset_id, condition_id,
                   entry_type, share_delta_micros, cash_delta_micros, price_micros, ref_id,
                   effective_time)
               VALUES (%s, %s, %s, CASE WHEN %s::text IS NULL THEN NULL ELSE %s END,
                   %s, %s, %s, %s, %s, %s)""",
            [(s, u, a, a, COND, k, q, c, p, ref, T0) for s, u, a, k, q, c, p, ref in rows],
        )
    return int(user["id"])


def ctx_at(now: datetime, **args: Any) -> jobs.Context:
    return jobs.Context(
        args=argparse.Namespace(**args), settings=settings_mod.Settings(), clock=lambda: now
    )


def test_settlement_happens_once(conn: db.Conn) -> None:
    user = seed_portfolios(conn)
    assert price.settle(conn, T0) == 0  # not resolved yet
    conn.execute("UPDATE outcome_asset SET payout_micros = 1000000 WHERE asset_id = '31'")
    conn.execute("UPDATE outcome_asset SET payout_micros = 0 WHERE asset_id = '32'")
    conn.execute("UPDATE market SET closed = true, resolved_at = %s", (T0,))
    assert price.settle(conn, T0) == 2  # exec user's 31 and the global's 32; never shadow
    assert price.settle(conn, T0 + timedelta(minutes=1)) == 0
    conn.execute("UPDATE market SET resolved_at = %s", (T0 + timedelta(hours=1),))  # again
    assert price.settle(conn, T0 + timedelta(hours=2)) == 0
    rows = conn.execute(
        """SELECT portfolio_scope, followed_user_id, sum(share_delta_micros)::bigint AS q,
                  sum(cash_delta_micros)::bigint AS cash FROM ledger_entry
           WHERE asset_id IS NOT NULL OR entry_type = 'DEPOSIT' OR entry_type = 'FEE'
           GROUP BY 1, 2 ORDER BY 1"""
    ).fetchall()
    by = {(r["portfolio_scope"], r["followed_user_id"]): r for r in rows}
    assert by[("EXEC_USER", user)]["cash"] == 10_000_000_000 - 8_050_000 + 20_000_000
    assert by[("EXEC_USER", user)]["q"] == 0
    assert by[("EXEC_GLOBAL", None)]["cash"] == 10_000_000_000 - 6_000_000
    assert by[("SHADOW_USER", user)]["q"] == 100_000_000  # the shadow settles on REDEEM


def test_snapshots_are_incremental_and_a_rebuild_reproduces_them(conn: db.Conn) -> None:
    user = seed_portfolios(conn)
    conn.execute(
        """INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,
               observed_at) VALUES ('31', %(t)s, 450000, 'MIDPOINT', %(t)s)""",
        {"t": T0},
    )
    first = jobs.run_recorded(
        conn, "snapshot", ctx_at(T0 + timedelta(seconds=5)), snapshot.run_once
    )
    assert first == 3
    exec_user = conn.execute(
        "SELECT * FROM portfolio_snapshot WHERE portfolio_scope = 'EXEC_USER'"
    ).fetchone()
    assert exec_user is not None
    assert exec_user["cash_micros"] == 10_000_000_000 - 8_050_000
    assert exec_user["equity_micros"] == exec_user["cash_micros"] + 9_000_000  # 20 @ 0.45
    assert exec_user["unrealized_pnl_micros"] == 1_000_000
    assert exec_user["realized_pnl_micros"] == -50_000  # the fee
    conn.execute("UPDATE outcome_asset SET payout_micros = 1000000 WHERE asset_id = '31'")
    conn.execute("UPDATE outcome_asset SET payout_micros = 0 WHERE asset_id = '32'")
    conn.execute("UPDATE market SET closed = true, resolved_at = %s", (T0,))
    price.settle(conn, T0 + timedelta(minutes=1))
    ctx = ctx_at(T0 + timedelta(minutes=1, seconds=5))
    jobs.run_recorded(conn, "snapshot", ctx, snapshot.run_once)
    done = jobs.run_recorded(conn, "snapshot", ctx_at(T0 + timedelta(minutes=2)), snapshot.run_once)
    assert done == 3
    runs = conn.execute("SELECT counts FROM job_run WHERE job = 'snapshot' ORDER BY id").fetchall()
    assert [r["counts"].get("entries", 0) for r in runs] == [6, 2, 0]  # only new entries
    last = conn.execute(
        """SELECT * FROM portfolio_snapshot WHERE portfolio_scope = 'EXEC_USER'
           ORDER BY bucket DESC LIMIT 1"""
    ).fetchone()
    assert last is not None
    assert last["realized_pnl_micros"] == 20_000_000 - 8_000_000 - 50_000  # won at 1.00
    assert last["unrealized_pnl_micros"] == 0 and last["open_positions"] == 0
    # The sum of the ledger equals the snapshot, for every portfolio.
    for r in conn.execute(
        """SELECT s.portfolio_scope, s.followed_user_id, s.cash_micros,
                  (SELECT sum(cash_delta_micros) FROM ledger_entry l
                   WHERE l.portfolio_scope = s.portfolio_scope
                     AND l.followed_user_id IS NOT DISTINCT FROM s.followed_user_id) AS ledger
           FROM portfolio_snapshot s WHERE s.bucket = %(b)s""",
        {"b": T0 + timedelta(minutes=2)},
    ):
        assert r["cash_micros"] == r["ledger"], r
    before = conn.execute(
        "SELECT * FROM portfolio_snapshot ORDER BY portfolio_scope, followed_user_id, bucket"
    ).fetchall()
    counts = snapshot.rebuild(conn, T0 - timedelta(days=1))
    assert counts == {"rows": len(before), "differed": 0}
    after = conn.execute(
        "SELECT * FROM portfolio_snapshot ORDER BY portfolio_scope, followed_user_id, bucket"
    ).fetchall()
    assert after == before
    assert user


def test_an_unredeemed_shadow_position_settles_and_a_late_redeem_undoes_it(
    conn: db.Conn,
) -> None:
    user = seed_portfolios(conn)
    conn.execute("UPDATE outcome_asset SET payout_micros = 1000000 WHERE asset_id = '31'")
    conn.execute("UPDATE outcome_asset SET payout_micros = 0 WHERE asset_id = '32'")
    conn.execute("UPDATE market SET closed = true, resolved_at = %s", (T0,))
    day = timedelta(days=1)
    assert price.settle_unredeemed(conn, T0 + timedelta(hours=23), day) == 0  # grace
    assert price.settle_unredeemed(conn, T0 + 2 * day, day) == 1
    assert price.settle_unredeemed(conn, T0 + 3 * day, day) == 0  # once

    def shadow() -> tuple[int, int]:
        r = conn.execute(
            """SELECT coalesce(sum(share_delta_micros), 0)::bigint AS q,
                      sum(cash_delta_micros)::bigint AS cash FROM ledger_entry
               WHERE portfolio_scope = 'SHADOW_USER'"""
        ).fetchone()
        assert r is not None
        return int(r["q"]), int(r["cash"])

    assert shadow() == (0, -40_000_000 + 100_000_000)  # flagged: settled by us at 1.00
    rollup.roll(conn, T0 + 2 * day)
    flagged = conn.execute("SELECT outcome, unredeemed FROM rollup_resolution").fetchall()
    assert [(r["outcome"], r["unredeemed"]) for r in flagged] == [("WON", True)]
    conn.execute(
        """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
               activity_type, condition_id, share_micros, usdc_micros, event_time, detect_time)
           VALUES ('DATA_API', 'r1', %(u)s, '0x' || repeat('1', 40), 'REDEEM', %(c)s,
               100000000, 100000000, %(t)s, %(t)s)""",
        {"u": user, "c": COND, "t": T0 + 3 * day},
    )
    counts = shadow_mod.apply_user(conn, user, T0 - day, T0 + 3 * day, timedelta(0))
    assert counts["activities_applied"] == 1
    assert shadow() == (0, -40_000_000 + 100_000_000)  # the REDEEM replaced our settlement
    kinds = conn.execute(
        """SELECT entry_type, ref_id FROM ledger_entry WHERE portfolio_scope = 'SHADOW_USER'
           AND entry_type IN ('SETTLEMENT', 'REDEEM') ORDER BY id"""
    ).fetchall()
    assert [k["entry_type"] for k in kinds] == ["SETTLEMENT", "SETTLEMENT", "REDEEM", "REDEEM"]
    assert kinds[1]["ref_id"] == kinds[0]["ref_id"] + ":undo"
    rollup.roll(conn, T0 + 3 * day)
    after = conn.execute("SELECT outcome, unredeemed FROM rollup_resolution").fetchall()
    assert [(r["outcome"], r["unredeemed"]) for r in after] == [("WON", False)]  # redeemed


def test_a_portfolio_loads_the_same_from_the_saved_fold_as_from_the_whole_ledger(
    conn: db.Conn,
) -> None:
    """store.portfolios.load starts from the snapshot job's saved state and folds only
    the entries after its cut; it must equal folding the whole ledger — open and closed
    positions, cost, last prices, cash, realized, fees — across a close and a reopen."""
    from common.store import portfolios

    user = seed_portfolios(conn)

    def add(rows: list[tuple[str, int, int, int | None, str]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO ledger_entry (portfolio_scope, followed_user_id, asset_id,
                       condition_id, entry_type, share_delta_micros, cash_delta_micros,
                       price_micros, ref_id, effective_time)
                   VALUES ('EXEC_USER', %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [(user, a, COND, k, q, c, p, ref, T0) for a, q, c, p, k, ref in rows],
            )

    def compare() -> None:
        saved = portfolios.load(conn, "EXEC_USER", user, 1)
        whole = portfolios.load(conn, "EXEC_USER", user, 1, until=T0 + timedelta(days=1))
        assert saved == whole
        assert (saved.funded, saved.starting_cash) == (True, 10_000_000_000)

    add([("31", -20_000_000, 9_000_000, 450_000, "TRADE_FILL", "g3:L0")])  # 31 closes
    compare()  # no saved state yet: the whole fold
    snapshot.take(conn, T0 + timedelta(minutes=1))  # the fold's checkpoint: 31 closed
    compare()
    closed = conn.execute(
        """SELECT share_micros, realized_micros, closed_by, closed_at FROM portfolio_position
           WHERE portfolio_scope = 'EXEC_USER' AND followed_user_id = %s AND asset_id = '31'""",
        (user,),
    ).fetchone()  # what it realized, how and when it closed, saved by the snapshot job
    assert closed is not None and (closed["share_micros"], closed["closed_by"]) == (0, "TRADE_FILL")
    assert closed["closed_at"] == T0 and closed["realized_micros"] != 0
    add(
        [
            ("31", 5_000_000, -2_500_000, 500_000, "TRADE_FILL", "g4:L0"),  # reopened
            ("32", 7_000_000, -3_500_000, 500_000, "TRADE_FILL", "g5:L0"),
            ("32", -2_000_000, 1_200_000, 600_000, "TRADE_FILL", "g6:L0"),
        ]
    )
    compare()  # state at the cut + the entries after it
    loaded = portfolios.load(conn, "EXEC_USER", user, 1)
    assert set(loaded.positions) == {"31", "32"} and loaded.positions["32"].shares == 5_000_000
    snapshot.take(conn, T0 + timedelta(minutes=2))
    compare()


def _conv(book: portfolio.Portfolio, entries: list[Any]) -> None:
    for e in entries:
        book.apply(e)


def test_a_conversion_moves_cost_from_the_no_legs_to_the_yes_legs() -> None:
    """Four questions A–D; the leader holds 100 NO of B, C, D (cost 0.60 each) and
    converts them: 100 YES of A arrive and 2 × 100 USDC come back. The NO legs leave at
    their cost (nothing realized); YES A opens at 180 − 200 = −20 USDC of cost."""
    book = book_()
    for a in ("noB", "noC", "noD"):
        book.apply(entry("TRADE_FILL", a, 100 * M, -60 * M, 600_000))
    before = (book.cash, book.realized, book.contributed)
    made = ledger.conversion_entries("conv:1", T0, [(None, a) for a in ("noB", "noC", "noD")],
                                     [(None, "yesA")], 100 * M)  # fmt: skip
    assert [(e.asset_id, e.share_delta_micros, e.cash_delta_micros) for e in made] == [
        ("noB", -100 * M, 0),
        ("noC", -100 * M, 0),
        ("noD", -100 * M, 0),
        ("yesA", 100 * M, 0),
        (None, 0, 200 * M),
    ]
    _conv(book, made)
    assert book.cash == before[0] + 200 * M and book.realized == before[1] == 0
    assert set(book.positions) == {"yesA"} and book.positions["yesA"].cost == -20 * M
    assert book.cash == book.contributed + book.realized - sum(
        p.cost for p in book.positions.values()
    )


def test_a_conversion_of_every_question_realizes_the_collateral_against_the_cost() -> None:
    book = book_()
    for a in ("noA", "noB"):
        book.apply(entry("TRADE_FILL", a, 10 * M, -4 * M, 400_000))
    _conv(book, ledger.conversion_entries("c", T0, [(None, "noA"), (None, "noB")], [], 10 * M, 100))
    # fee 1%: 9.9 USDC back for 8 USDC of cost
    assert book.realized == 9_900_000 - 8 * M and not book.positions


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 500), min_size=2, max_size=5),
    st.integers(1, 400),
    st.integers(0, 200),
    st.integers(1, 4),
)
def test_conversions_keep_the_pnl_identities(
    held: list[int], amount: int, fee: int, converted: int
) -> None:
    book = book_()
    nos = [f"no{i}" for i in range(len(held))]
    for a, n in zip(nos, held, strict=True):
        if n:
            book.apply(entry("TRADE_FILL", a, n * M, -money.mul_micros(n * M, 300_000), 300_000))
    k = min(converted, len(nos))
    made = ledger.conversion_entries(
        "c", T0, [(None, a) for a in nos[:k]], [(None, f"yes{i}") for i in range(k, len(nos))],
        amount * M, fee,
    )  # fmt: skip
    _conv(book, made)
    assert not book.legs
    assert book.cash == book.contributed + book.realized - sum(
        p.cost for p in book.positions.values()
    )
    v = book.value(portfolio.Marks())
    assert book.realized + v.unrealized == v.equity - book.contributed
