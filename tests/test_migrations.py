"""The migrations build SPEC §3's whole data model on an empty database, and its
uniqueness and money rules are constraints, not conventions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from common.store import db, migrate

SPEC_TABLES = {
    "followed_user",
    "followed_user_proxy_wallet",
    "guardrail_config",
    "copy_sizing_config",
    "market",
    "outcome_asset",
    "trade_event",
    "activity_event",
    "copy_attempt",
    "executable_fill",
    "ledger_entry",
    "portfolio_snapshot",
    "market_price_snapshot",
    "system_checkpoint",
    "audit_log",
    "job_run",
    "quarantine",
    "order_book_snapshot",
}
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WALLET = "0x" + "ab" * 20


def test_applies_to_empty_database_then_is_a_no_op(empty_db_url: str) -> None:
    with db.connect(empty_db_url, autocommit=True) as conn:
        first = migrate.apply(conn)
        assert first == [m.name for m in migrate.discover()]
        assert migrate.apply(conn) == []
        tables = {
            r["table_name"]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert tables >= SPEC_TABLES


def test_cli_reports_up_to_date(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate.main(["--database-url", db_url]) == 0
    assert "up to date" in capsys.readouterr().out


def test_edited_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t (id int);")
    with db.connect(empty_db_url, autocommit=True) as conn:
        migrate.apply(conn, migrate.discover(tmp_path))
        (tmp_path / "0001_first.sql").write_text("CREATE TABLE t (id bigint);")
        with pytest.raises(migrate.MigrationError, match="edited after it was applied"):
            migrate.apply(conn, migrate.discover(tmp_path))


def test_failed_migration_leaves_nothing_half_applied(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE b (id int); SELECT * FROM nowhere;")
    with db.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            migrate.apply(conn, migrate.discover(tmp_path))
        versions = [r["version"] for r in conn.execute("SELECT version FROM schema_migration")]
        assert versions == [1]
        assert conn.execute("SELECT to_regclass('b') AS t").fetchone() == {"t": None}


def test_misnamed_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match=r"NNNN_name\.sql"):
        migrate.discover(tmp_path)


def test_no_float_columns(conn: db.Conn) -> None:
    rows = conn.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'public'
             AND data_type IN ('real', 'double precision', 'numeric')"""
    ).fetchall()
    assert rows == []
    money = conn.execute(
        """SELECT table_name, column_name, data_type FROM information_schema.columns
           WHERE table_schema = 'public' AND column_name LIKE '%%_micros'
             AND data_type NOT IN ('bigint', 'ARRAY')"""
    ).fetchall()
    assert money == []


def _user(conn: db.Conn) -> int:
    row = conn.execute(
        "INSERT INTO followed_user (label, profile_wallet, followed_at)"
        " VALUES ('lead', %(w)s, %(t)s) RETURNING id",
        {"w": WALLET, "t": NOW},
    ).fetchone()
    assert row is not None
    return int(row["id"])


def test_defaults_are_seeded_as_version_one(conn: db.Conn) -> None:
    g = conn.execute("SELECT * FROM guardrail_config WHERE scope = 'GLOBAL'").fetchone()
    s = conn.execute("SELECT * FROM copy_sizing_config WHERE scope = 'GLOBAL'").fetchone()
    assert g is not None and s is not None
    assert (g["version"], g["max_spread_micros"], g["max_total_exposure_bps"]) == (1, 20000, 7000)
    assert (s["copy_pct_bps"], s["min_trade_notional_micros"]) == (100, 5_000_000)
    assert s["max_trade_notional_micros"] == 250_000_000
    assert s["starting_cash_micros"] == 10_000_000_000


def test_wallets_must_be_lowercase_addresses(conn: db.Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO followed_user (label, profile_wallet, followed_at)"
            " VALUES ('x', '0xABC', %(t)s)",
            {"t": NOW},
        )


def test_skip_needs_a_reason_and_attempts_are_unique(conn: db.Conn) -> None:
    user = _user(conn)
    attempt = """INSERT INTO copy_attempt (portfolio_scope, followed_user_id, group_key, action,
        their_notional_micros, target_notional_micros, target_share_micros, decision,
        reason_codes, group_close_time, decision_time)
        VALUES (%(scope)s, %(u)s, 'g1', 'BUY', 1, 0, 0, %(d)s, %(r)s, %(t)s, %(t)s)"""
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(attempt, {"scope": "EXEC_USER", "u": user, "d": "SKIP", "r": [], "t": NOW})
    params = {"scope": "EXEC_USER", "u": user, "d": "SKIP", "r": ["PAUSED"], "t": NOW}
    conn.execute(attempt, params)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(attempt, params)
    conn.execute(attempt, {**params, "scope": "EXEC_GLOBAL"})  # same group, other portfolio


def test_ledger_key_collides_on_replay(conn: db.Conn) -> None:
    user = _user(conn)
    entry = """INSERT INTO ledger_entry (portfolio_scope, followed_user_id, entry_type,
        share_delta_micros, cash_delta_micros, ref_id, effective_time)
        VALUES (%(s)s, %(u)s, 'TRADE_FILL', 1000000, -470000, 'trade:1', %(t)s)
        ON CONFLICT (portfolio_scope, ref_id, entry_type) DO NOTHING RETURNING id"""
    assert conn.execute(entry, {"s": "SHADOW_USER", "u": user, "t": NOW}).fetchone() is not None
    assert conn.execute(entry, {"s": "SHADOW_USER", "u": user, "t": NOW}).fetchone() is None
    with pytest.raises(psycopg.errors.CheckViolation):  # global has no user
        conn.execute(entry, {"s": "EXEC_GLOBAL", "u": user, "t": NOW})


def test_trade_event_keys(conn: db.Conn) -> None:
    user = _user(conn)
    tx = "0x" + "12" * 32
    insert = """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, asset_id,
        side, price_micros, share_micros, usdc_notional_micros, tx_hash, log_index,
        event_time, detect_time)
        VALUES (%(src)s, %(sid)s, %(u)s, %(w)s, '123', 'BUY', 470000, 1000000, 470000,
                %(tx)s, %(li)s, %(t)s, %(t)s)"""
    base = {"u": user, "w": WALLET, "tx": tx, "t": NOW}
    conn.execute(insert, {**base, "src": "CHAIN", "sid": f"{tx}:5", "li": 5})
    with pytest.raises(psycopg.errors.UniqueViolation):  # same chain log, other source id
        conn.execute(insert, {**base, "src": "CHAIN", "sid": "other", "li": 5})
    with pytest.raises(psycopg.errors.CheckViolation):  # price above 1
        conn.execute(
            insert.replace("470000, 1000000", "1470000, 1000000"),
            {**base, "src": "DATA_API", "sid": "x", "li": None},
        )


def test_global_config_must_be_complete(conn: db.Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO copy_sizing_config (scope, version, copy_pct_bps) VALUES ('GLOBAL', 2, 50)"
        )
    user = _user(conn)
    conn.execute(
        "INSERT INTO copy_sizing_config (scope, followed_user_id, version, copy_pct_bps)"
        " VALUES ('USER', %(u)s, 1, 50)",
        {"u": user},
    )
