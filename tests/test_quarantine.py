"""Rejected payloads are kept with their reason; the same payload again is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.store import db, quarantine
from common.upstream import data_api, wire

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_bad_rows_are_kept_and_counted_good_rows_go_on(conn: db.Conn) -> None:
    good = {
        "proxyWallet": "0x" + "1" * 40,
        "side": "BUY",
        "asset": "123",
        "conditionId": "0x" + "c" * 64,
        "size": 10,
        "price": 0.5,
        "timestamp": 1788886609,
        "transactionHash": "0x" + "a" * 64,
    }
    rows = [
        good,
        {**good, "size": -3},
        {**good, "price": "abc"},
        {**good, "side": "HOLD"},
        {"junk": True},
        {**good, "price": 1.7},
    ]
    batch = wire.parse_rows(data_api.TradeRow, rows, "data_api/trades", {"user": "0xabc"})
    assert len(batch.items) == 1 and len(batch.rejects) == 5
    assert quarantine.record(conn, batch.rejects, NOW) == 5
    again = wire.parse_rows(data_api.TradeRow, rows, "data_api/trades", {"user": "0xabc"})
    quarantine.record(conn, again.rejects, NOW + timedelta(seconds=30))
    stored = conn.execute(
        "SELECT reason, seen_count, last_seen_at, context FROM quarantine ORDER BY id"
    ).fetchall()
    assert len(stored) == 5
    assert all(
        r["seen_count"] == 2 and r["last_seen_at"] == NOW + timedelta(seconds=30) for r in stored
    )
    reasons = " | ".join(r["reason"] for r in stored)
    assert "size: Value error, amount must be positive" in reasons
    assert "outside [0, 1]" in reasons and "side" in reasons
    assert stored[0]["context"] == {"user": "0xabc"}


def test_truncated_frames_and_nul_bytes_are_storable(conn: db.Conn) -> None:
    rejects = [
        wire.Reject("chain/ws", "not JSON", '{"jsonrpc": "2.0", "met'),
        wire.Reject("chain/ws", "not JSON", "bad\x00byte"),
    ]
    assert quarantine.record(conn, rejects, NOW) == 2
    payloads = [r["payload"] for r in conn.execute("SELECT payload FROM quarantine ORDER BY id")]
    assert payloads == ['{"jsonrpc": "2.0", "met', "bad\\u0000byte"]


# --- bounded (issue 13, item 9) ------------------------------------------------------


def test_a_huge_payload_keeps_a_prefix_and_the_hash_and_size_of_the_whole(conn: db.Conn) -> None:
    import hashlib

    frame = '{"jsonrpc": "2.0", "params": "' + "x" * (14 * 1024 * 1024) + '"}'
    reject = wire.Reject("chain/ws", "not JSON", frame)
    assert len(reject.payload) == wire.MAX_PAYLOAD_CHARS  # a Reject never holds the whole
    quarantine.record(conn, [reject], NOW)
    quarantine.record(conn, [wire.Reject("chain/ws", "not JSON", frame)], NOW)
    (row,) = conn.execute(
        "SELECT length(payload) AS kept, payload_bytes, payload_sha256, seen_count FROM quarantine"
    ).fetchall()
    assert row["kept"] == wire.MAX_PAYLOAD_CHARS
    assert row["payload_bytes"] == len(frame)
    assert row["payload_sha256"] == hashlib.sha256(frame.encode()).hexdigest()
    assert row["seen_count"] == 2


def test_a_flooding_source_is_rate_limited_and_counted_others_are_not(conn: db.Conn) -> None:
    flood = [wire.Reject("chain/ws", "junk", f"junk {i}") for i in range(250)]
    assert quarantine.record(conn, flood, NOW, limit=100) == 250
    quarantine.record(conn, [wire.Reject("data_api/trades", "bad", "row")], NOW, limit=100)
    again = [wire.Reject("chain/ws", "junk", "junk 3")]  # already kept: its own row counts it
    quarantine.record(conn, again, NOW + timedelta(seconds=1), limit=100)
    rows = conn.execute(
        "SELECT source, payload_sha256 LIKE 'rate-limited:%%' AS overflow, seen_count"
        " FROM quarantine ORDER BY id"
    ).fetchall()
    flood_rows = [r for r in rows if r["source"] == "chain/ws"]
    assert len(flood_rows) == 101
    assert sum(r["overflow"] for r in flood_rows) == 1
    assert sum(r["seen_count"] for r in flood_rows) == 251  # none lost: every one counted
    assert next(r for r in rows if r["source"] == "data_api/trades")["seen_count"] == 1
    # The next minute the source may add rows again.
    later = [wire.Reject("chain/ws", "junk", "new junk")]
    quarantine.record(conn, later, NOW + timedelta(minutes=2), limit=100)
    assert conn.execute("SELECT count(*) AS n FROM quarantine").fetchone() == {"n": 103}
