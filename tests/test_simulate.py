"""The simulator against Postgres, without an exchange: groups are decided FIFO by
detect time (not by their jittered decision times), live runs wait for each decision
time, a rerun writes nothing, the pause and the user's mode reach every decision, and
both portfolios are funded once."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.runtime import jobs, settings
from common.store import checkpoints, db, groups
from functions import simulate

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
COND = "0x" + "d" * 64
ASSET = "21"


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def setup(conn: db.Conn, users: int = 2) -> list[int]:
    conn.execute(
        """INSERT INTO market (condition_id, end_time, tick_size_micros)
           VALUES (%(c)s, %(end)s, 10000)""",
        {"c": COND, "end": T0 + timedelta(days=3)},
    )
    conn.execute(
        """INSERT INTO outcome_asset (asset_id, condition_id, outcome, outcome_index)
           VALUES (%(a)s, %(c)s, 'Yes', 0), ('22', %(c)s, 'No', 1)""",
        {"a": ASSET, "c": COND},
    )
    book = conn.execute(
        """INSERT INTO order_book_snapshot (asset_id, condition_id, book_time, fetched_at,
               bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros)
           VALUES (%(a)s, %(c)s, %(t)s, %(t)s, '{490000,480000}', '{900000000,900000000}',
                   '{500000,510000}', '{900000000,900000000}') RETURNING id""",
        {"a": ASSET, "c": COND, "t": T0},
    ).fetchone()
    assert book is not None
    ids = []
    for i in range(users):
        row = conn.execute(
            """INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at)
               VALUES (%(l)s, %(w)s, %(t)s, %(t)s) RETURNING id""",
            {"l": f"u{i}", "w": "0x" + f"{i:040x}", "t": T0 - timedelta(hours=1)},
        ).fetchone()
        assert row is not None
        ids.append(int(row["id"]))
    return ids


def fill(conn: db.Conn, user: int, t_ms: int, seen_ms: int, n: int) -> None:
    conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id,
               asset_id, side, price_micros, share_micros, usdc_notional_micros, event_time,
               detect_time)
           VALUES ('DATA_API', %(s)s, %(u)s, %(w)s, %(c)s, %(a)s, 'BUY', 500000,
                   %(q)s, %(q)s / 2, %(t)s, %(d)s)""",
        {
            "s": f"f{user}-{t_ms}-{n}",
            "u": user,
            "w": "0x" + f"{user - 1:040x}",
            "c": COND,
            "a": ASSET,
            "q": n * 1_000_000,
            "t": at(t_ms),
            "d": at(seen_ms),
        },
    )


def attach_books(conn: db.Conn) -> None:
    conn.execute(
        "UPDATE copy_group SET order_book_snapshot_id = (SELECT min(id) FROM order_book_snapshot)"
    )


def ctx_at(now: datetime, waits: list[datetime]) -> jobs.Context:
    clock = [now]

    def wait_until(t: datetime) -> None:
        waits.append(t)
        clock[0] = max(clock[0], t)

    return jobs.Context(
        args=argparse.Namespace(wait=5.0, replay=False, batch=1),
        settings=settings.Settings(),
        clock=lambda: clock[0],
        wait_until=wait_until,
    )


def test_fifo_by_detect_time_waits_for_each_decision_and_reruns_are_no_ops(
    conn: db.Conn,
) -> None:
    u1, u2 = setup(conn)
    for k in range(12):  # alternating users, each group seen 40 ms after the last
        fill(conn, u1 if k % 2 else u2, 1_000 * k, 5_000 + 40 * k, 100 + k)
    groups.step(conn, at(5_000 + 40 * 11))
    groups.step(conn, at(60_000))
    attach_books(conn)
    waits: list[datetime] = []
    ctx = ctx_at(at(5_000 + 40 * 11 + 2_000), waits)
    assert jobs.run_recorded(conn, "simulate", ctx, simulate.run_once) == 12
    fifo = [
        r["group_key"]
        for r in conn.execute(
            "SELECT group_key FROM copy_group ORDER BY first_detect_time, window_start, group_key"
        )
    ]
    written = [
        r["group_key"]
        for r in conn.execute(
            "SELECT group_key FROM copy_attempt WHERE portfolio_scope = 'EXEC_GLOBAL' ORDER BY id"
        )
    ]
    assert written == fifo
    decide_at = [
        r["decide_at"]
        for r in conn.execute(
            "SELECT decide_at FROM copy_group ORDER BY first_detect_time, window_start, group_key"
        )
    ]
    assert sorted(decide_at) != decide_at  # the jitter reorders them; FIFO did not follow
    assert waits and all(w in decide_at for w in waits)  # it waited for decision times
    deposits = conn.execute(
        "SELECT portfolio_scope, count(*) AS n FROM ledger_entry WHERE entry_type = 'DEPOSIT'"
        " GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [(r["portfolio_scope"], r["n"]) for r in deposits] == [
        ("EXEC_GLOBAL", 1),
        ("EXEC_USER", 2),
    ]
    before = conn.execute("SELECT count(*) AS n FROM ledger_entry").fetchone()
    assert jobs.run_recorded(conn, "simulate", ctx, simulate.run_once) == 0
    after = conn.execute("SELECT count(*) AS n FROM ledger_entry").fetchone()
    assert before == after


def test_pause_and_modes_reach_every_decision(conn: db.Conn) -> None:
    u1, u2 = setup(conn)
    conn.execute("UPDATE followed_user SET copy_mode = 'SELL_ONLY' WHERE id = %s", (u2,))
    fill(conn, u1, 0, 1_000, 100)
    fill(conn, u2, 0, 1_000, 100)
    groups.step(conn, at(1_000))
    groups.step(conn, at(3_000))
    attach_books(conn)
    ctx = ctx_at(at(10_000), [])
    conn.execute("UPDATE system_control SET paused = true")
    jobs.run_recorded(conn, "simulate", ctx, simulate.run_once)
    rows = conn.execute(
        "SELECT followed_user_id AS u, decision, reason_codes FROM copy_attempt ORDER BY id"
    ).fetchall()
    assert len(rows) == 4 and all(r["decision"] == "SKIP" for r in rows)
    assert all("PAUSED" in r["reason_codes"] for r in rows)
    assert all("MODE_SELL_ONLY" in r["reason_codes"] for r in rows if r["u"] == u2)
    conn.execute("UPDATE system_control SET paused = false")
    fill(conn, u1, 10_000, 11_000, 100)
    groups.step(conn, at(11_000))
    groups.step(conn, at(13_000))
    attach_books(conn)
    jobs.run_recorded(conn, "simulate", ctx_at(at(20_000), []), simulate.run_once)
    last = conn.execute(
        "SELECT decision FROM copy_attempt WHERE followed_user_id = %s ORDER BY id DESC LIMIT 1",
        (u1,),
    ).fetchone()
    assert last is not None and last["decision"] == "EXECUTE"


def test_waits_hold_no_ledger_lock_and_a_write_meanwhile_is_decided_on_again(
    db_url: str, conn: db.Conn
) -> None:
    """While the engine waits for a decision time it holds only its own lock: a
    consistent cut (snapshot, rollup) is had at once, and a settlement can write. The
    engine then sees the exec ledgers moved, rereads its portfolios and decides the
    pending group again, so its books never miss the other writer's entry."""
    u1, u2 = setup(conn)
    for k in range(4):
        fill(conn, u1 if k % 2 else u2, 1_000 * k, 5_000 + 40 * k, 100 + k)
    groups.step(conn, at(60_000))
    attach_books(conn)
    cuts: list[object] = []

    with db.connect(db_url, autocommit=True) as other:

        def meanwhile(t: datetime) -> None:
            cuts.append(checkpoints.committed_max_ids(other, ("ledger_entry",), wait_s=0.2))
            if len(cuts) == 2:  # another writer of the exec ledgers, between two decisions
                with other.transaction():
                    db.lock_exec_ledgers(other)
                    other.execute(
                        """INSERT INTO ledger_entry (portfolio_scope, entry_type,
                               cash_delta_micros, ref_id, effective_time)
                           VALUES ('EXEC_GLOBAL', 'DEPOSIT', 1000000, 'extra', %(t)s)""",
                        {"t": t},
                    )
            clock[0] = max(clock[0], t)

        clock = [at(5_000 + 40 * 3)]
        ctx = jobs.Context(
            args=argparse.Namespace(wait=60.0, replay=False, batch=1),
            settings=settings.Settings(),
            clock=lambda: clock[0],
            wait_until=meanwhile,
        )
        assert jobs.run_recorded(conn, "simulate", ctx, simulate.run_once) == 4
    assert len(cuts) >= 2 and all(c is not None for c in cuts)  # never blocked
    run = conn.execute("SELECT counts FROM job_run WHERE job = 'simulate'").fetchone()
    assert run is not None and run["counts"]["decided_again"] >= 1
    engine = ctx.resources["engine"]
    cash = conn.execute(
        "SELECT sum(cash_delta_micros) AS c FROM ledger_entry WHERE portfolio_scope = 'EXEC_GLOBAL'"
    ).fetchone()
    assert engine.portfolios[("EXEC_GLOBAL", None)].cash == cash["c"]  # the extra $1 in


def test_a_failure_while_deciding_again_drops_the_portfolios(
    db_url: str, conn: db.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deciding again after another writer moved the ledgers moves the portfolios in
    memory; if it fails halfway they are dropped (reread on next use), never kept ahead
    of the ledger for the next run."""
    u1, u2 = setup(conn)
    fill(conn, u1, 0, 5_000, 100)
    fill(conn, u2, 1_000, 5_040, 100)
    groups.step(conn, at(60_000))
    attach_books(conn)
    now = at(60_000)  # both due: decided in one batch, no wait between them

    def another_writer() -> None:
        with db.connect(db_url, autocommit=True) as other, other.transaction():
            db.lock_exec_ledgers(other)
            other.execute(
                """INSERT INTO ledger_entry (portfolio_scope, entry_type, cash_delta_micros,
                       ref_id, effective_time)
                   VALUES ('EXEC_GLOBAL', 'DEPOSIT', 1000000, 'extra', %(t)s)""",
                {"t": now},
            )

    ctx = jobs.Context(
        args=argparse.Namespace(wait=60.0, replay=False, batch=2),
        settings=settings.Settings(),
        clock=lambda: now,
    )
    engine = simulate.Engine(conn, ctx.clock, batch=2)
    ctx.resources["engine"] = engine
    original = engine.decide_group
    calls = [0]

    def flaky(g: Any, book: Any) -> Any:
        calls[0] += 1
        if calls[0] == 4:  # the second group's decision again, after the Stale write
            raise RuntimeError("boom")
        got = original(g, book)
        if calls[0] == 2:
            another_writer()  # between the batch's decisions and its write
        return got

    monkeypatch.setattr(engine, "decide_group", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        simulate.run_once(conn, ctx)
    assert calls[0] == 4
    assert engine.portfolios == {}  # the first group's move again is not kept
    assert conn.execute("SELECT count(*) AS n FROM copy_attempt").fetchone() == {"n": 0}
