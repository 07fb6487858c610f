"""Rejected payloads are kept with their reason; the same payload again is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common import data_api, db, quarantine, wire

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
