"""Grouping: the pure plan (windows anchored at the first event, open only until first
detect + window, keys from the first event) and the job against Postgres (closing,
decision times, what is not grouped and why, reruns)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.store import db, groups

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
W = timedelta(milliseconds=2000)
_ids = itertools.count(1)


def ev(
    t_ms: int,
    seen_ms: int,
    *,
    user: int = 1,
    action: str = "BUY",
    asset: str = "11",
    kind: str = "trade",
) -> groups.Event:
    i = next(_ids)
    return groups.Event(
        kind,
        i,
        user,
        action,
        asset if kind == "trade" else None,
        "0x" + "c" * 64,
        T0 + timedelta(milliseconds=t_ms),
        T0 + timedelta(milliseconds=seen_ms),
        f"DATA_API:{i}",
    )


def members(groups: list[groups.OpenGroup]) -> list[list[int]]:
    return [[e.id for e in g.members] for g in groups]


def test_one_window_one_group_and_its_edges() -> None:
    a, b, c = ev(0, 5000), ev(1999, 5000), ev(2000, 5000)  # c is past the window
    late = ev(500, 7000)  # inside a's window but seen after the group closed (5 s + 2 s)
    other_side, other_asset = ev(10, 5000, action="SELL"), ev(10, 5000, asset="12")
    created = groups.plan([a, b, c, other_side, other_asset, late], [], {1: W})
    assert members(created) == [[a.id, b.id], [c.id], [other_side.id], [other_asset.id], [late.id]]
    first = created[0]
    assert first.window_start == a.event_time and first.window_end == a.event_time + W
    assert first.close_time == a.detect_time + W  # the window, shifted by our detect lag
    assert first.key == groups.group_key(a)


def test_merge_and_split_group_by_market() -> None:
    m1 = ev(0, 3000, action="MERGE", kind="activity")
    m2 = ev(100, 3100, action="MERGE", kind="activity")
    s1 = ev(100, 3100, action="SPLIT", kind="activity")
    assert members(groups.plan([m1, m2, s1], [], {1: W})) == [[m1.id, m2.id], [s1.id]]


def test_jitter_is_derived_from_the_key() -> None:
    values = {groups.jitter_ms(f"k{i}", 250) for i in range(500)}
    assert min(values) >= 0 and max(values) <= 250 and len(values) > 100
    assert groups.jitter_ms("k1", 250) == groups.jitter_ms("k1", 250)
    assert groups.jitter_ms("k1", 0) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(0, 8_000), st.sampled_from(["BUY", "SELL"])),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 29),
)
def test_splitting_the_batch_forms_the_same_groups(
    raw: list[tuple[int, int, str]], cut: int
) -> None:
    events = sorted(
        (ev(t, t + lag, action=side) for t, lag, side in raw),
        key=lambda e: (e.detect_time, e.event_time, e.id),
    )
    whole = groups.plan(events, [], {1: W})
    first = groups.plan(events[:cut], [], {1: W})
    split = {g.key: [e.id for e in g.members] for g in first}
    for g in first:  # stored, still OPEN: the next batch starts from them
        g.members = []
    for g in first + groups.plan(events[cut:], first, {1: W}):
        split[g.key] = split.get(g.key, []) + [e.id for e in g.members]
    assert {g.key: [e.id for e in g.members] for g in whole} == split


# --- the job against Postgres -------------------------------------------------------------

WALLET = "0x" + "a" * 40
COND = "0x" + "b" * 64


def add_user(conn: db.Conn, seeded_at: datetime | None = T0) -> int:
    row = conn.execute(
        """INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at)
           VALUES ('u', %(w)s, %(t)s, %(s)s) RETURNING id""",
        {"w": WALLET, "t": T0, "s": seeded_at},
    ).fetchone()
    assert row is not None
    return int(row["id"])


def add_fill(
    conn: db.Conn, user: int, t_ms: int, seen_ms: int, shares: int, price: int, **extra: object
) -> int:
    i = next(_ids)
    row = conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id,
               asset_id, side, price_micros, share_micros, usdc_notional_micros, event_time,
               detect_time, tx_hash, reorg_state, shadow_state)
           VALUES ('DATA_API', %(sid)s, %(u)s, %(w)s, %(c)s, '11', %(side)s, %(p)s, %(q)s,
               %(n)s, %(t)s, %(d)s, %(tx)s, %(reorg)s, %(shadow)s) RETURNING id""",
        {
            "sid": f"s{i}",
            "u": user,
            "w": WALLET,
            "c": COND,
            "side": extra.get("side", "BUY"),
            "p": price,
            "q": shares,
            "n": shares * price // 1_000_000,
            "t": T0 + timedelta(milliseconds=t_ms),
            "d": T0 + timedelta(milliseconds=seen_ms),
            "tx": "0x" + f"{i:064x}",
            "reorg": extra.get("reorg"),
            "shadow": extra.get("shadow"),
        },
    ).fetchone()
    assert row is not None
    return int(row["id"])


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def test_job_groups_closes_and_sets_decision_time(conn: db.Conn) -> None:
    user = add_user(conn)
    add_fill(conn, user, 10_000, 12_000, 10_000_000, 400_000)
    add_fill(conn, user, 11_000, 12_500, 30_000_000, 600_000)
    add_fill(conn, user, -60_000, 12_000, 5_000_000, 500_000)  # before the seed: history
    add_fill(conn, user, 10_500, 12_000, 5_000_000, 500_000, reorg="REMOVED")
    counts = groups.step(conn, at(13_000))
    assert counts == {"grouped": 2, "closed": 0, "void": 0}
    assert groups.step(conn, at(13_999))["closed"] == 0  # closes at first detect + 2 s
    assert groups.step(conn, at(14_000)) == {"grouped": 0, "closed": 1, "void": 0}
    g = conn.execute("SELECT * FROM copy_group").fetchone()
    assert g is not None and g["state"] == "CLOSED" and g["event_count"] == 2
    assert g["their_share_micros"] == 40_000_000
    assert g["their_notional_micros"] == 4_000_000 + 18_000_000
    assert g["their_price_micros"] == 550_000  # the group's VWAP
    jitter = groups.jitter_ms(g["group_key"], 250)
    assert g["decide_at"] == at(14_000 + 750 + jitter)
    states = conn.execute(
        "SELECT group_state, count(*) AS n FROM trade_event GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert {r["group_state"]: r["n"] for r in states} == {"GROUPED": 2, "HISTORY": 1, "REMOVED": 1}
    assert groups.step(conn, at(20_000)) == {"grouped": 0, "closed": 0, "void": 0}  # rerun


def test_unseeded_users_wait_and_reorged_groups_go_void(conn: db.Conn) -> None:
    user = add_user(conn, seeded_at=None)
    fill = add_fill(conn, user, 10_000, 11_000, 10_000_000, 400_000)
    assert groups.step(conn, at(20_000))["grouped"] == 0
    conn.execute("UPDATE followed_user SET seeded_at = %s", (T0,))
    assert groups.step(conn, at(12_000))["grouped"] == 1
    conn.execute("UPDATE trade_event SET reorg_state = 'REMOVED' WHERE id = %s", (fill,))
    assert groups.step(conn, at(20_000))["void"] == 1


@pytest.mark.parametrize("kind", ["REDEEM", "CONVERSION"])
def test_settlement_activity_is_not_copied(conn: db.Conn, kind: str) -> None:
    user = add_user(conn)
    conn.execute(
        """INSERT INTO activity_event (source, source_id, followed_user_id, wallet, activity_type,
               condition_id, share_micros, usdc_micros, event_time, detect_time)
           VALUES ('DATA_API', 'a1', %(u)s, %(w)s, %(k)s, %(c)s, 1, 1, %(t)s, %(t)s)""",
        {"u": user, "w": WALLET, "k": kind, "c": COND, "t": at(5_000)},
    )
    groups.step(conn, at(10_000))
    row = conn.execute("SELECT group_state FROM activity_event").fetchone()
    assert row is not None and row["group_state"] == "NOT_COPIED"
