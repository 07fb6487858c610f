"""A small fixed dataset covering every page: three followed users (one with markup in
its label), two markets (one blacklisted), fills, groups, attempts of both decisions,
three days of snapshots, positions, rollups, heartbeats, job runs, failures, quarantine,
an audit row and a finished config test. Times hang off NOW, so pages built with a clock
fixed at NOW are byte-for-byte stable (the golden tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from common.store import db

NOW = datetime(2026, 11, 20, 12, 0, 30, tzinfo=UTC)
M1 = "0x" + "a1" * 32
M2 = "0x" + "b2" * 32
ASSETS = {M1: ("1001", "1002"), M2: ("2001", "2002")}
USERS = (
    ("alpha", "0x" + "11" * 20),
    ("Ann <b>&amp;</b> co", "0x" + "22" * 20),
    ("gamma", "0x" + "33" * 20),
)


def _one(conn: db.Conn, query: str, params: dict[str, Any]) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row["id"]


def _markets(conn: db.Conn) -> None:
    for cid, question, blacklisted in (
        (M1, "Will ETH trade above $5,000 by Friday?", False),
        (M2, "Will the <Senate> pass the bill?", True),
    ):
        conn.execute(
            """INSERT INTO market (condition_id, question, slug, end_time, active, tick_size_micros,
                   fees_enabled, fee_rate_micros, blacklisted, metadata_fetched_at)
               VALUES (%(c)s, %(q)s, %(s)s, %(e)s, true, 10000, %(f)s, 20000, %(b)s, %(t)s)""",
            {
                "c": cid,
                "q": question,
                "s": question.lower().replace(" ", "-")[:30],
                "e": NOW + timedelta(days=3),
                "f": cid == M2,
                "b": blacklisted,
                "t": NOW - timedelta(minutes=5),
            },
        )
        for i, asset in enumerate(ASSETS[cid]):
            conn.execute(
                "INSERT INTO outcome_asset (asset_id, condition_id, outcome, outcome_index)"
                " VALUES (%(a)s, %(c)s, %(o)s, %(i)s)",
                {"a": asset, "c": cid, "o": ("Yes", "No")[i], "i": i},
            )


def _users(conn: db.Conn) -> list[int]:
    ids = []
    for label, wallet in USERS:
        uid = _one(
            conn,
            """INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at,
                   created_at, updated_at)
               VALUES (%(l)s, %(w)s, %(t)s, %(t)s, %(t)s, %(t)s) RETURNING id""",
            {"l": label, "w": wallet, "t": NOW - timedelta(days=3)},
        )
        conn.execute(
            "INSERT INTO followed_user_proxy_wallet (followed_user_id, wallet, created_at)"
            " VALUES (%(u)s, %(w)s, %(t)s)",
            {"u": uid, "w": wallet, "t": NOW - timedelta(days=3)},
        )
        ids.append(uid)
    conn.execute("UPDATE followed_user SET copy_mode = 'BUY_ONLY' WHERE id = %(u)s", {"u": ids[2]})
    return ids


def add_fill(
    conn: db.Conn, user: int, n: int, *, decision: str = "EXECUTE", at: datetime | None = None
) -> int:
    """One fill of `user` (at `at`, by default n − 40 minutes from NOW), its group and
    both copy attempts; returns the trade id."""
    cid = M1 if n % 2 else M2
    asset = ASSETS[cid][n % 2]
    at = NOW - timedelta(minutes=40 - n) if at is None else at
    side = "BUY" if n % 3 else "SELL"
    price = 400_000 + 10_000 * n
    group = _one(
        conn,
        """INSERT INTO copy_group (group_key, followed_user_id, action, condition_id, asset_id,
               window_start, window_end, first_detect_time, close_time, decide_at, state,
               event_count, their_share_micros, their_notional_micros, their_price_micros,
               closed_at, done_at, created_at)
           VALUES (%(k)s, %(u)s, %(s)s, %(c)s, %(a)s, %(t)s, %(t2)s, %(d)s, %(t2)s, %(t3)s,
               'DONE', 1, 50000000, %(n)s, %(p)s, %(t2)s, %(t3)s, %(t)s) RETURNING id""",
        {
            "k": f"g:{user}:{n}",
            "u": user,
            "s": side,
            "c": cid,
            "a": asset,
            "t": at,
            "t2": at + timedelta(seconds=2),
            "t3": at + timedelta(seconds=3),
            "d": at + timedelta(seconds=1),
            "n": 50 * price,
            "p": price,
        },
    )
    trade = _one(
        conn,
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id,
               asset_id, side, role, price_micros, share_micros, usdc_notional_micros,
               event_time, detect_time, copy_group_id, group_state, shadow_state,
               shadow_applied_at)
           VALUES ('CHAIN', %(sid)s, %(u)s, %(w)s, %(c)s, %(a)s, %(s)s, 'TAKER', %(p)s,
               50000000, %(n)s, %(t)s, %(d)s, %(g)s, 'GROUPED', 'APPLIED', %(d)s)
           RETURNING id""",
        {
            "sid": f"0x{n:064x}:{user}",
            "u": user,
            "w": USERS[(user - 1) % 3][1],
            "c": cid,
            "a": asset,
            "s": side,
            "p": price,
            "n": 50 * price,
            "t": at,
            "d": at + timedelta(milliseconds=900 + 300 * n),
            "g": group,
        },
    )
    # The book at decision: a BUY takes 7 shares at +0.005 and 5 at +0.010 (its bound,
    # their price + 0.010), a SELL the same down the bids: 12 shares at ±0.007083.
    book = _one(
        conn,
        """INSERT INTO order_book_snapshot (asset_id, condition_id, book_hash, book_time,
               fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros,
               ask_sizes_micros, tick_size_micros, min_order_size_micros, neg_risk)
           VALUES (%(a)s, %(c)s, %(h)s, %(t)s, %(t)s, %(bp)s, %(q)s, %(ap)s, %(q)s, 1000,
               5000000, false) RETURNING id""",
        {
            "a": asset,
            "c": cid,
            "h": f"h{user}-{n}",
            "t": at + timedelta(seconds=3),
            "bp": [price - 5_000, price - 10_000, price - 20_000],
            "ap": [price + 5_000, price + 10_000, price + 20_000],
            "q": [7_000_000, 20_000_000, 50_000_000],
        },
    )
    for scope in ("EXEC_USER", "EXEC_GLOBAL"):
        executed = decision == "EXECUTE"
        conn.execute(
            """INSERT INTO copy_attempt (portfolio_scope, followed_user_id, group_key, action,
                   condition_id, asset_id, their_notional_micros, their_price_micros,
                   target_notional_micros, target_share_micros, decision, reason_codes,
                   best_bid_micros, best_ask_micros, mid_micros, vwap_micros,
                   filled_share_micros, filled_notional_micros, filled_ratio_micros,
                   group_close_time, decision_time, copy_group_id, depth_in_band_micros,
                   created_at, order_book_snapshot_id)
               VALUES (%(scope)s, %(u)s, %(k)s, %(s)s, %(c)s, %(a)s, %(n)s, %(p)s, 5000000,
                   12000000, %(dec)s, %(r)s, %(bid)s, %(ask)s, %(mid)s, %(vwap)s, %(fs)s,
                   %(fn)s, %(fr)s, %(t2)s, %(t3)s, %(g)s, 40000000, %(t3)s, %(book)s)""",
            {
                "scope": scope,
                "u": user,
                "k": f"g:{user}:{n}",
                "s": side,
                "c": cid,
                "a": asset,
                "n": 50 * price,
                "p": price,
                "dec": decision,
                "r": [] if executed else ["SPREAD_TOO_WIDE", "PRICE_WORSE_THAN_THEIRS"],
                "bid": price - 5_000,
                "ask": price + 5_000,
                "mid": price,
                "vwap": (price + 7_083 if side == "BUY" else price - 7_083) if executed else None,
                "fs": 12_000_000 if executed else 0,
                "fn": (3_000_000 if n == 3 else 5_000_000) if executed else 0,
                "fr": (600_000 if n == 3 else 1_000_000) if executed else 0,
                "t2": at + timedelta(seconds=2),
                "t3": at + timedelta(seconds=3),
                "g": group,
                "book": book,
            },
        )
    return int(trade)


def _snapshots(conn: db.Conn, users: list[int]) -> None:
    buckets = [NOW.replace(second=0) - timedelta(hours=h) for h in range(72, 0, -1)]
    buckets += [NOW.replace(second=0) - timedelta(minutes=m) for m in range(59, -1, -1)]
    portfolios: list[tuple[str, int | None, int, int]] = [("EXEC_GLOBAL", None, 10_000, 7)]
    for i, u in enumerate(users):
        portfolios += [("SHADOW_USER", u, 50_000, 13 + i), ("EXEC_USER", u, 10_000, 3 + i)]
    rows = []
    for scope, user, base, wiggle in portfolios:
        for k, b in enumerate(buckets):
            equity = (base + ((k * wiggle) % 97) - 40 + k // 4) * 1_000_000
            rows.append(
                {
                    "s": scope,
                    "u": user,
                    "b": b,
                    "e": equity,
                    "c": equity // 2,
                    "x": equity // 10,
                    "un": (k % 11) * 100_000,
                    "r": (k % 7) * 50_000,
                    "o": 2,
                    "cb": base * 1_000_000,
                }
            )
        # The newest row is what its positions say (`_positions_and_rollups`): they are
        # worth HELD_VALUE, with HELD_UNREALIZED, and the closed one realized it all.
        rows[-1].update(c=rows[-1]["e"] - HELD_VALUE, x=HELD_VALUE, un=HELD_UNREALIZED)
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO portfolio_snapshot (portfolio_scope, followed_user_id, bucket,
                   equity_micros, cash_micros, exposure_micros, unrealized_pnl_micros,
                   realized_pnl_micros, open_positions, contributed_micros, as_of)
               VALUES (%(s)s, %(u)s, %(b)s, %(e)s, %(c)s, %(x)s, %(un)s, %(r)s, %(o)s, %(cb)s,
                   %(b)s)""",
            rows,
        )
    conn.execute(
        """INSERT INTO system_checkpoint (name, cursor_int, updated_at)
           VALUES ('snapshot.ledger', 0, %(t)s)""",
        {"t": NOW - timedelta(seconds=20)},
    )


# Every portfolio holds 120 of 1001 (cost 54, marked 0.470 by its stored mid) and 30 of
# 2002 (cost 18, no mid: its last fill 0.550), and has closed 1002 at its settlement.
HELD_VALUE = 120 * 470_000 + 30 * 550_000
HELD_UNREALIZED = HELD_VALUE - 72_000_000


def _positions_and_rollups(conn: db.Conn, users: list[int]) -> None:
    day = NOW.date()
    last = conn.execute(
        """SELECT portfolio_scope AS s, followed_user_id AS u, realized_pnl_micros AS r
           FROM portfolio_snapshot WHERE bucket = (SELECT max(bucket) FROM portfolio_snapshot)"""
    ).fetchall()
    for row in last:
        conn.execute(
            """INSERT INTO portfolio_position (portfolio_scope, followed_user_id, asset_id,
                   condition_id, share_micros, cost_micros, last_price_micros, realized_micros,
                   closed_by, closed_at)
               VALUES (%(s)s, %(u)s, '1002', %(c)s, 0, 0, 480000, %(r)s, 'SETTLEMENT', %(t)s)""",
            {**row, "c": M1, "t": NOW - timedelta(hours=2)},
        )
    for scope, user in [("EXEC_GLOBAL", None)] + [
        (s, u) for u in users for s in ("SHADOW_USER", "EXEC_USER")
    ]:
        for cid, asset, shares, cost, mark in (
            (M1, "1001", 120_000_000, 54_000_000, 470_000),
            (M2, "2002", 30_000_000, 18_000_000, 550_000),
        ):
            conn.execute(
                """INSERT INTO portfolio_position (portfolio_scope, followed_user_id, asset_id,
                       condition_id, share_micros, cost_micros, last_price_micros)
                   VALUES (%(s)s, %(u)s, %(a)s, %(c)s, %(sh)s, %(co)s, %(m)s)""",
                {"s": scope, "u": user, "a": asset, "c": cid, "sh": shares, "co": cost, "m": mark},
            )
    for i, u in enumerate(users):
        for scope in ("EXEC_USER", "EXEC_GLOBAL"):
            conn.execute(
                """INSERT INTO rollup_attempt_daily (portfolio_scope, followed_user_id, day,
                       attempts, executed, partial, target_notional_micros,
                       filled_notional_micros, fees_micros, reasons, slip_their_bps,
                       slip_mid_bps)
                   VALUES (%(s)s, %(u)s, %(d)s, 10, 6, 1, 50000000, 28000000, 120000, %(r)s,
                       %(h)s, %(h)s)""",
                {
                    "s": scope,
                    "u": u,
                    "d": day,
                    "r": Jsonb({"SPREAD_TOO_WIDE": 3 + i, "PRICE_WORSE_THAN_THEIRS": 1}),
                    "h": Jsonb({"-5": 1, "0": 2, "5": 2, "20": 1}),
                },
            )
        for source, lag in (("CHAIN", {"1000": 5, "2000": 2}), ("DATA_API", {"10000": 4})):
            conn.execute(
                """INSERT INTO rollup_detect_daily (followed_user_id, source, day, fills, lag_ms)
                   VALUES (%(u)s, %(s)s, %(d)s, %(n)s, %(l)s)""",
                {"u": u, "s": source, "d": day, "n": sum(lag.values()), "l": Jsonb(lag)},
            )
        conn.execute(
            """INSERT INTO rollup_global_exposure (followed_user_id, asset_id, condition_id,
                   share_micros) VALUES (%(u)s, '1001', %(c)s, %(s)s)""",
            {"u": u, "c": M1, "s": (40 - 10 * i) * 1_000_000},
        )
    for cid in (M1, M2):
        conn.execute(
            """INSERT INTO rollup_market_daily (condition_id, day, decisions, executed,
                   spread_sum_micros, spread_n, depth_sum_micros, depth_n, slip_their_bps)
               VALUES (%(c)s, %(d)s, 8, 5, 160000, 8, 320000000, 8, %(h)s)""",
            {"c": cid, "d": day, "h": Jsonb({"0": 3, "10": 2})},
        )
    for k, outcome in enumerate(("WON", "WON", "LOST")):
        conn.execute(
            """INSERT INTO rollup_resolution (portfolio_scope, asset_id, condition_id, ref_id,
                   outcome, share_micros, payout_micros, resolved_at)
               VALUES ('EXEC_GLOBAL', '1002', %(c)s, %(r)s, %(o)s, 1000000, 1000000, %(t)s)""",
            {"c": M1, "r": f"res:{k}", "o": outcome, "t": NOW},
        )


def _operations(conn: db.Conn, users: list[int]) -> None:
    conn.execute(
        """INSERT INTO process_heartbeat (process, pid, host, started_at, beat_at, info)
           VALUES ('listen', 101, 'box', %(s)s, %(b)s, %(i)s),
                  ('poll', 102, 'box', %(s)s, %(old)s, %(u)s)""",
        {
            "s": NOW - timedelta(hours=2),
            "b": NOW - timedelta(seconds=2),
            "old": NOW - timedelta(minutes=10),
            "i": Jsonb({"connected": True, "logs": 12}),
            "u": Jsonb({"items": 0, "upstreams": {"data_api": {"requests": 200, "http_429": 3}}}),
        },
    )
    for job, status, minutes in (("reconcile", "OK", 1), ("poll", "FAILED", 2), ("poll", "OK", 3)):
        conn.execute(
            """INSERT INTO job_run (job, started_at, finished_at, status, items, error)
               VALUES (%(j)s, %(s)s, %(f)s, %(st)s, 3, %(e)s)""",
            {
                "j": job,
                "s": NOW - timedelta(minutes=minutes),
                "f": NOW - timedelta(minutes=minutes) + timedelta(milliseconds=420),
                "st": status,
                "e": "UpstreamError: 503 from data_api" if status == "FAILED" else None,
            },
        )
    conn.execute(
        """INSERT INTO failed_item (stage, item_key, error, first_failed_at, last_failed_at)
           VALUES ('seed', 'user:3', 'UpstreamError: 500', %(t)s, %(t)s)""",
        {"t": NOW - timedelta(minutes=7)},
    )
    conn.execute(
        """INSERT INTO quarantine (source, reason, payload, payload_sha256, first_seen_at,
               last_seen_at) VALUES ('data_api.trades', 'price: not a number',
               '{"price": "<NaN>"}', 'abc', %(t)s, %(t)s)""",
        {"t": NOW - timedelta(minutes=9)},
    )
    conn.execute(
        """INSERT INTO audit_log (at, actor, action, target_type, target_id, before, after)
           VALUES (%(t)s, 'admin', 'control.pause', 'system_control', '1', %(b)s, %(a)s)""",
        {
            "t": NOW - timedelta(hours=1),
            "b": Jsonb({"paused": False}),
            "a": Jsonb({"paused": True}),
        },
    )
    report = {
        "start": (NOW - timedelta(hours=24)).isoformat(),
        "end": NOW.isoformat(),
        "groups": 12,
        "groups_with_book": 10,
        "scopes": {
            scope: {
                "current": {"executed": 6, "skipped": 6, "by_reason": {"SPREAD_TOO_WIDE": 6}},
                "proposed": {"executed": 9, "skipped": 3, "by_reason": {"SPREAD_TOO_WIDE": 3}},
                "recorded": {"executed": 6, "skipped": 6, "by_reason": {"SPREAD_TOO_WIDE": 6}},
                "pnl_difference_micros": -1_250_000,
            }
            for scope in ("EXEC_USER", "EXEC_GLOBAL")
        },
        "sweep": sweep_report(users),
        "exit_overlays": {
            "enabled": True,
            "scopes": {
                scope: {
                    "without": {
                        "executed": 9,
                        "skipped": 3,
                        "pnl_micros": 2_000_000,
                        "by_reason": {"SPREAD_TOO_WIDE": 3},
                    },
                    "with": {
                        "executed": 11,
                        "skipped": 4,
                        "pnl_micros": 2_400_000,
                        "by_reason": {"EXIT_STOP_LOSS": 3, "SPREAD_TOO_WIDE": 4},
                    },
                    "pnl_difference_micros": 400_000,
                }
                for scope in ("EXEC_USER", "EXEC_GLOBAL")
            },
        },
    }
    conn.execute(
        """INSERT INTO config_test (requested_at, requested_by, proposal, hours, state,
               started_at, finished_at, report)
           VALUES (%(t)s, 'admin', %(p)s, 24, 'DONE', %(t)s, %(t)s, %(r)s)""",
        {
            "t": NOW - timedelta(minutes=30),
            "p": Jsonb({"global": {"max_spread_micros": 30000}}),
            "r": Jsonb(report),
        },
    )
    conn.execute(
        """INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,
               observed_at) VALUES ('1001', %(b)s, 470000, 'MIDPOINT', %(b)s)""",
        {"b": NOW.replace(second=0)},
    )


def _alerts(conn: db.Conn, users: list[int]) -> None:
    """One alert firing (leader 1's low retention, silenced), one resolved with its
    transitions, two delivery attempts (a 429, then sent), a rule's evaluation."""
    rows = (  # rule, labels, severity, state, since (min ago), fired, resolved, value
        ("low_retention", {"user": str(users[0])}, "warn", "FIRING", 30, 20, None, 0.31),
        ("listener_down", {}, "critical", "RESOLVED", 90, 87, 60, 0),
    )
    for rule, labels, sev, state, since, fired, resolved, value in rows:
        a = _one(
            conn,
            """INSERT INTO alert (rule, labels, severity, state, since, fired_at, resolved_at,
                                  value_micros, message, notified, updated_at)
               VALUES (%(r)s, %(l)s, %(sev)s, %(st)s, %(since)s, %(fired)s, %(res)s, %(v)s,
                       %(m)s, true, %(since)s) RETURNING id""",
            {"r": rule, "l": Jsonb(labels), "sev": sev, "st": state,
             "since": NOW - timedelta(minutes=since), "fired": NOW - timedelta(minutes=fired),
             "res": None if resolved is None else NOW - timedelta(minutes=resolved),
             "v": round(value * 1_000_000), "m": f"{rule} <b>{value}</b>"},
        )  # fmt: skip
        steps = [(None, "PENDING", since), ("PENDING", "FIRING", fired)]
        if resolved is not None:
            steps.append(("FIRING", "RESOLVED", resolved))
        for before, after, ago in steps:
            conn.execute(
                """INSERT INTO alert_transition (alert_id, at, from_state, to_state, value_micros)
                   VALUES (%(a)s, %(at)s, %(f)s, %(t)s, %(v)s)""",
                {"a": a, "at": NOW - timedelta(minutes=ago), "f": before, "t": after,
                 "v": round(value * 1_000_000)},
            )  # fmt: skip
    n = _one(
        conn,
        """INSERT INTO notification (message_id, channel, payload, created_at, next_at,
                                     attempts, status, sent_at)
           VALUES ('oculus-2-log', 'log', %(p)s, %(at)s, %(at)s, 2, 'SENT', %(at)s)
           RETURNING id""",
        {"p": Jsonb({"rule": "listener_down", "state": "FIRING"}),
         "at": NOW - timedelta(minutes=87)},
    )  # fmt: skip
    for ok, status, retry in ((False, 429, 30), (True, None, None)):
        conn.execute(
            """INSERT INTO notification_attempt (notification_id, channel, at, ok, status,
                                                 error, retry_after_s, duration_micros)
               VALUES (%(n)s, 'log', %(at)s, %(ok)s, %(s)s, %(e)s, %(ra)s, 1500)""",
            {"n": n, "at": NOW - timedelta(minutes=87), "ok": ok, "s": status,
             "e": None if ok else "429 Too Many Requests", "ra": retry},
        )  # fmt: skip
    conn.execute(
        """INSERT INTO alert_silence (rule, labels, until, reason, created_by, created_at)
           VALUES ('low_retention', %(l)s, %(u)s, 'looking into it', 'admin', %(c)s)""",
        {"l": Jsonb({"user": str(users[0])}), "u": NOW + timedelta(hours=3),
         "c": NOW - timedelta(minutes=5)},
    )  # fmt: skip
    threshold = {"line": 20, "condition": "listener.connected < 1 for 2m",
                 "severity": "critical", "cooldown_s": 600, "channels": ["log", "ops"],
                 "sql": None, "action": None}  # fmt: skip
    sql_rule = {"line": 31, "condition": "SQL, schedule */5 * * * * 0", "severity": "warn",
                "cooldown_s": 90, "channels": ["log"], "sql": "SELECT 1 AS key <b>",
                "action": {"set_mode": "BUY_ONLY", "dry_run": True,
                           "revert_when_ok": False}}  # fmt: skip
    evals = (  # rule, kind, ok, error, definition
        ("listener_down", "threshold", True, None, threshold),
        ("slow_sql", "sql", False, "cancelled: it ran past 5 s", sql_rule),
        ("rules.yaml #1", "file", False, "line 40: rule 'x': unknown metric 'y'", None),
    )
    for rule, kind, ok, error, definition in evals:
        conn.execute(
            """INSERT INTO alert_rule_eval (rule, kind, evaluated_at, ok, error, series,
                                            holding, cpu_micros, definition)
               VALUES (%(r)s, %(k)s, %(at)s, %(ok)s, %(e)s, 1, 0, 420, %(d)s)""",
            {"r": rule, "k": kind, "at": NOW - timedelta(seconds=38), "ok": ok, "e": error,
             "d": None if definition is None else Jsonb(definition)},
        )  # fmt: skip


def load(conn: db.Conn) -> list[int]:
    """Fills an empty migrated database; returns the user ids."""
    with conn.transaction():
        _markets(conn)
        users = _users(conn)
        for n in range(1, 7):
            add_fill(conn, users[n % 3], n, decision="SKIP" if n % 4 == 0 else "EXECUTE")
        _snapshots(conn, users)
        _positions_and_rollups(conn, users)
        _operations(conn, users)
        _alerts(conn, users)
        _sweep(conn, users)
    return users


COPY_WALLET = "0x" + "99" * 20


def add_real_copy(conn: db.Conn, leader: int) -> int:
    """The admin's copy wallet of `leader` ("my copy"): one fill 6 s after each of the
    leader's BUY/SELL groups (0.01 worse than their price, 3 shares, fee 0.001), and one
    that no group precedes; every asset freshly marked at 0.60 (so the score job can
    attribute the pairs). Returns the wallet's user id."""
    mine = _one(
        conn,
        """INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at,
               copy_of_user_id, created_at, updated_at)
           VALUES ('my copy', %(w)s, %(t)s, %(t)s, %(l)s, %(t)s, %(t)s) RETURNING id""",
        {"w": COPY_WALLET, "t": NOW - timedelta(days=3), "l": leader},
    )
    conn.execute(
        "INSERT INTO followed_user_proxy_wallet (followed_user_id, wallet) VALUES (%s, %s)",
        (mine, COPY_WALLET),
    )
    groups = conn.execute(
        "SELECT asset_id, action, window_start, their_price_micros FROM copy_group"
        " WHERE followed_user_id = %s AND action IN ('BUY', 'SELL') ORDER BY id",
        (leader,),
    ).fetchall()
    stray = {**groups[0], "window_start": NOW - timedelta(days=2)}
    for n, g in enumerate([*groups, stray]):
        price = g["their_price_micros"] + (10_000 if g["action"] == "BUY" else -10_000)
        conn.execute(
            """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, asset_id,
                   side, price_micros, share_micros, usdc_notional_micros, fee_micros,
                   event_time, detect_time)
               VALUES ('DATA_API', %s, %s, %s, %s, %s, %s, 3000000, %s, 1000, %s, %s)""",
            (
                f"copy-{n}", mine, COPY_WALLET, g["asset_id"], g["action"], price, 3 * price,
                g["window_start"] + timedelta(seconds=6), NOW,
            ),
        )  # fmt: skip
    for pair in ASSETS.values():
        for asset in pair:
            conn.execute(
                "INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,"
                " observed_at) VALUES (%s, date_bin('30 seconds', %s::timestamptz, 'epoch'),"
                " 600000, 'MIDPOINT', %s) ON CONFLICT (asset_id, bucket) DO UPDATE"
                " SET mid_micros = EXCLUDED.mid_micros, observed_at = EXCLUDED.observed_at",
                (asset, NOW, NOW),
            )
    return int(mine)


def sweep_report(users: list[int]) -> dict[str, Any]:
    """A stored latency sweep's report (functions.sweep's shape): the first leader's
    retention halves between +2 s and +5 s, the second's never does."""

    def point(d: int, n: int, ex: int, pnl: int, ideal: int, ret: str | None) -> dict[str, Any]:
        return {
            "delay_ms": d,
            "attempts": n,
            "executed": ex,
            "attributed": n,
            "fill_rate": f"{ex / n:.4f}",
            "pnl_micros": pnl,
            "ideal_micros": ideal,
            "fees_micros": 0,
            "retention": ret,
            "median_slippage_bps": 12 + d // 1000,
        }

    def half(seconds: str | None, beyond: str | None, label: str) -> dict[str, Any]:
        return {"seconds": seconds, "beyond_s": beyond, "label": label}

    delays = [0, 2_000, 5_000, 10_000, 30_000, 60_000]
    first = [
        point(d, 12, 12 - i, 9_000_000 - 1_500_000 * i, 10_000_000, f"{0.9 - 0.15 * i:.4f}")
        for i, d in enumerate(delays)
    ]
    second = [point(d, 10, 10, 4_000_000, 5_000_000, "0.8000") for d in delays]
    glob = [
        point(d, 22, 22 - i, 13_000_000 - 1_500_000 * i, 15_000_000, f"{0.86 - 0.1 * i:.4f}")
        for i, d in enumerate(delays)
    ]
    return {
        "delays_ms": delays,
        "groups": 22,
        "groups_without_ladder": 2,
        "global": {"points": glob, "half_life": half("15.0", None, "15 s")},
        "leaders": {
            str(users[0]): {"points": first, "half_life": half("4.5", None, "4.5 s")},
            str(users[1]): {"points": second, "half_life": half(None, "60", "> 60 s")},
        },
    }


def _sweep(conn: db.Conn, users: list[int]) -> None:
    conn.execute(
        """INSERT INTO latency_sweep (taken_at, range_start, range_end, groups, report, cpu_ms)
           VALUES (%(t)s, %(s)s, %(t)s, 22, %(r)s, 812)""",
        {"t": NOW - timedelta(minutes=7), "s": NOW - timedelta(minutes=7, hours=24),
         "r": Jsonb(sweep_report(users))},
    )  # fmt: skip
