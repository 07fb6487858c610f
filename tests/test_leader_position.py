"""The leader's position just before a copy group (`trade_event.sql`
`leader_positions_before`, through `copy_data.leader_position`), against Postgres:
the seed, their fills, SPLITs and MERGEs ordered before the group's first event, a REDEEM
leaving nothing, history the seed holds left out, and only what the live decision could
have seen."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

from common.domain import decide
from common.store import copy_data, db

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WALLET = "0x" + "a" * 40
COND = "0x" + "c" * 64
YES, NO = "11", "12"
M = 1_000_000
_ids = itertools.count(1)


def setup(conn: db.Conn) -> int:
    row = conn.execute(
        """INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at)
           VALUES ('lead', %(w)s, %(t)s, %(t)s) RETURNING id""",
        {"w": WALLET, "t": T0},
    ).fetchone()
    assert row is not None
    conn.execute("INSERT INTO market (condition_id) VALUES (%s)", (COND,))
    conn.execute(
        "INSERT INTO outcome_asset (asset_id, condition_id, outcome_index) VALUES"
        " (%(y)s, %(c)s, 0), (%(n)s, %(c)s, 1)",
        {"y": YES, "n": NO, "c": COND},
    )
    conn.execute(
        """INSERT INTO ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id,
               entry_type, share_delta_micros, cash_delta_micros, price_micros, ref_id,
               effective_time)
           VALUES ('SHADOW_USER', %(u)s, %(c)s, %(a)s, 'SEED', %(q)s, 0, 500000, 'seed:y',
               %(t)s)""",
        {"u": row["id"], "c": COND, "a": YES, "q": 100 * M, "t": T0},
    )
    return int(row["id"])


def fill(
    conn: db.Conn, user: int, side: str, shares: int, s: float, seen: float | None = None,
    **extra: object,
) -> int:  # fmt: skip
    i = next(_ids)
    t = T0 + timedelta(seconds=s)
    row = conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id,
               asset_id, side, price_micros, share_micros, usdc_notional_micros, event_time,
               detect_time, shadow_state, tx_hash)
           VALUES ('DATA_API', %(sid)s, %(u)s, %(w)s, %(c)s, %(a)s, %(side)s, 500000, %(q)s,
               %(q)s / 2, %(t)s, %(d)s, %(shadow)s, %(tx)s) RETURNING id""",
        {
            "sid": f"f{i}",
            "u": user,
            "w": WALLET,
            "c": COND,
            "a": extra.get("asset", YES),
            "side": side,
            "q": shares * M,
            "t": t,
            "d": t + timedelta(seconds=seen if seen is not None else 1),
            "shadow": extra.get("shadow"),
            "tx": extra.get("tx"),
        },
    ).fetchone()
    assert row is not None
    return int(row["id"])


def act(conn: db.Conn, user: int, kind: str, shares: int, s: float) -> int:
    i = next(_ids)
    t = T0 + timedelta(seconds=s)
    row = conn.execute(
        """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
               activity_type, condition_id, share_micros, usdc_micros, event_time, detect_time)
           VALUES ('DATA_API', %(sid)s, %(u)s, %(w)s, %(k)s, %(c)s, %(q)s, %(q)s, %(t)s, %(t)s)
           RETURNING id""",
        {"sid": f"a{i}", "u": user, "w": WALLET, "k": kind, "c": COND, "q": shares * M, "t": t},
    ).fetchone()
    assert row is not None
    return int(row["id"])


def group(conn: db.Conn, user: int, action: str, first_ids: list[int], s: float) -> decide.Group:
    """A copy group holding the given events (its window starts at `s`)."""
    t = T0 + timedelta(seconds=s)
    row = conn.execute(
        """INSERT INTO copy_group (group_key, followed_user_id, action, condition_id, asset_id,
               window_start, window_end, first_detect_time, close_time, decide_at, state)
           VALUES (%(k)s, %(u)s, %(a)s, %(c)s, %(asset)s, %(t)s, %(t)s, %(t)s, %(t)s, %(t)s,
               'CLOSED')
           RETURNING id""",
        {"k": f"g{next(_ids)}", "u": user, "a": action, "c": COND,
         "asset": YES if action == "SELL" else None, "t": t},
    ).fetchone()  # fmt: skip
    assert row is not None
    table = "trade_event" if action == "SELL" else "activity_event"
    conn.execute(
        f"UPDATE {table} SET copy_group_id = %(g)s WHERE id = ANY(%(ids)s)",  # noqa: S608
        {"g": row["id"], "ids": first_ids},
    )
    return decide.Group(
        row["id"], "k", user, action, COND, YES if action == "SELL" else None,
        t, t, t, t, 0, 0, None,
    )  # fmt: skip


def test_the_seed_fills_and_sets_before_the_group(conn: db.Conn) -> None:
    user = setup(conn)
    fill(conn, user, "BUY", 50, 10)
    fill(conn, user, "SELL", 30, 20)
    fill(conn, user, "BUY", 7, 20, asset=NO)  # another outcome: not in YES
    act(conn, user, "SPLIT", 40, 30)  # +40 of each outcome
    act(conn, user, "MERGE", 5, 40)  # −5 of each
    fill(conn, user, "BUY", 1, 40)  # same second as the MERGE: fills come first
    sell = fill(conn, user, "SELL", 20, 50)
    fill(conn, user, "BUY", 999, 60)  # after the group
    g = group(conn, user, "SELL", [sell], 50)
    assert (
        copy_data.leader_position(conn, g, T0 + timedelta(hours=1))
        == (100 + 50 - 30 + 40 - 5 + 1) * M
    )
    merge_id = act(conn, user, "MERGE", 10, 55)
    merge = group(conn, user, "MERGE", [merge_id], 55)
    # complete sets: min(YES 156 + 20 sold... , NO 7 + 40 − 5) before the MERGE
    yes = (100 + 50 - 30 + 40 - 5 + 1 - 20) * M
    assert copy_data.leader_position(conn, merge, T0 + timedelta(hours=1)) == min(yes, 42 * M)


def test_a_redeem_leaves_nothing_and_history_the_seed_holds_is_left_out(conn: db.Conn) -> None:
    user = setup(conn)
    fill(conn, user, "BUY", 500, -3600 * 24 * 10)  # long before the seed window
    fill(conn, user, "BUY", 3, 5, shadow="COVERED_BY_SEED")  # inside the seed already
    fill(conn, user, "BUY", 10, 10)
    act(conn, user, "REDEEM", 0, 20)  # everything before it is gone, the seed too
    fill(conn, user, "BUY", 4, 30)
    sell = fill(conn, user, "SELL", 2, 40)
    g = group(conn, user, "SELL", [sell], 40)
    assert copy_data.leader_position(conn, g, T0 + timedelta(hours=1)) == 4 * M


def test_only_what_the_live_decision_could_see_counts(conn: db.Conn) -> None:
    user = setup(conn)
    fill(conn, user, "BUY", 10, 10, seen=1)
    fill(conn, user, "BUY", 20, 20, seen=300)  # indexed late: seen 5 min after
    sell = fill(conn, user, "SELL", 5, 30)
    g = group(conn, user, "SELL", [sell], 30)
    assert copy_data.leader_position(conn, g, T0 + timedelta(seconds=60)) == 110 * M
    assert copy_data.leader_position(conn, g, T0 + timedelta(hours=1)) == 130 * M


def test_a_data_api_fill_the_chain_contradicts_is_not_counted(conn: db.Conn) -> None:
    user = setup(conn)
    tx = "0x" + "d" * 64
    fill(conn, user, "BUY", 10, 10, tx=tx)  # the API row, with no log of its own
    conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id,
               asset_id, side, price_micros, share_micros, usdc_notional_micros, event_time,
               detect_time, tx_hash, log_index)
           VALUES ('CHAIN', 'c1', %(u)s, %(w)s, %(c)s, %(a)s, 'BUY', 500000, 6000000, 3000000,
               %(t)s, %(t)s, %(tx)s, 4)""",
        {"u": user, "w": WALLET, "c": COND, "a": YES, "t": T0 + timedelta(seconds=10), "tx": tx},
    )  # the chain's one log of that tx: 6 shares, so the API's 10 have no room
    sell = fill(conn, user, "SELL", 1, 30)
    g = group(conn, user, "SELL", [sell], 30)
    assert copy_data.leader_position(conn, g, T0 + timedelta(hours=1)) == (100 + 6) * M


def test_a_chain_conversion_moves_no_shares_out_and_yes_shares_in(conn: db.Conn) -> None:
    """PositionsConverted of question 0 (the group's market, index set 0b01) of a
    two-question neg-risk market with a 1 % fee: its NO leaves, the other question's YES
    arrives less the fee; a conversion the decision could not see yet does not count."""
    user = setup(conn)
    market_id, other = "0x" + "e" * 64, "0x" + "d" * 64
    conn.execute(
        "UPDATE market SET neg_risk_market_id = %(m)s, question_index = 0", {"m": market_id}
    )
    conn.execute(
        "INSERT INTO market (condition_id, neg_risk_market_id, question_index)"
        " VALUES (%(c)s, %(m)s, 1)",
        {"c": other, "m": market_id},
    )
    conn.execute(
        "INSERT INTO outcome_asset (asset_id, condition_id, outcome_index)"
        " VALUES ('21', %(c)s, 0), ('22', %(c)s, 1)",
        {"c": other},
    )
    conn.execute(
        "INSERT INTO neg_risk_market (market_id, question_count, fee_bips, probed_at)"
        " VALUES (%(m)s, 2, 100, %(t)s)",
        {"m": market_id, "t": T0},
    )
    fill(conn, user, "BUY", 30, 10, asset=NO)

    def convert(index_set: str, s: float, seen: float) -> None:
        conn.execute(
            """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
                   activity_type, condition_id, share_micros, usdc_micros, event_time,
                   detect_time, neg_risk_market_id, index_set)
               VALUES ('CHAIN', %(sid)s, %(u)s, %(w)s, 'CONVERSION', %(m)s, %(q)s, 0, %(t)s,
                   %(d)s, %(m)s, %(i)s)""",
            {
                "sid": f"c{next(_ids)}", "u": user, "w": WALLET, "m": market_id,
                "q": 20 * M, "t": T0 + timedelta(seconds=s),
                "d": T0 + timedelta(seconds=seen), "i": index_set,
            },
        )  # fmt: skip

    convert("0x1", 20, 21)
    convert("0x1", 22, 300)  # seen only 5 min later
    sell = fill(conn, user, "SELL", 1, 30, asset=NO)
    g = group(conn, user, "SELL", [sell], 30)
    g = dataclasses.replace(g, asset_id=NO)  # the SELL is of the NO asset
    assert copy_data.leader_position(conn, g, T0 + timedelta(seconds=60)) == (30 - 20) * M
    assert copy_data.leader_position(conn, g, T0 + timedelta(hours=1)) == (30 - 40) * M
    # The other question's YES arrived, less the 1 % fee, as a group of it reads it.
    yes = dataclasses.replace(g, condition_id=other, asset_id="21")
    assert copy_data.leader_position(conn, yes, T0 + timedelta(seconds=60)) == 19_800_000
    # Until every question is known the conversion is not applied, so not counted.
    conn.execute("UPDATE neg_risk_market SET question_count = NULL")
    assert copy_data.leader_position(conn, g, T0 + timedelta(seconds=60)) == 30 * M
