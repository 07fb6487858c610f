"""The named queries (`common/store/sql/<table>.sql`): each file parses, every query is
used by some module, and every one plans against the migrated schema; the typed records
take the rows those queries return."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from common.domain import records
from common.store import db, queries, real_copies

ROOT = Path(__file__).resolve().parents[1]
CODE = "\n".join(
    p.read_text()
    for folder in ("common", "functions", "api", "site_builder")
    for p in (ROOT / folder).rglob("*.py")
)


def test_every_file_parses_and_names_its_queries() -> None:
    assert queries.tables() == [
        "activity_event",
        "copy_attempt",
        "copy_attribution",
        "copy_group",
        "ledger_entry",
        "market",
        "market_price_snapshot",
        "neg_risk_market",
        "order_book_snapshot",
        "portfolio",
        "real_copy_fill",
        "trade_event",
    ]
    for table in queries.tables():
        assert len(queries.load(table)) >= 1


def test_a_malformed_file_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"t\.sql: SQL before"):
        queries.parse("t", "SELECT 1;\n-- a --\nSELECT 2;")
    with pytest.raises(ValueError, match="named twice"):
        queries.parse("t", "-- a --\nSELECT 1;\n-- a --\nSELECT 2;")
    with pytest.raises(ValueError, match="is empty"):
        queries.parse("t", "-- a --\n-- only a comment\n")
    q = queries.parse("t", "-- header\n\n-- a --\n-- what it does\nSELECT 1;\n")
    assert dict(q) == {"a": "SELECT 1"}
    with pytest.raises(KeyError, match=r"t\.sql has no query 'b' \(it has: a\)"):
        q["b"]


def test_every_named_query_is_used() -> None:
    """Each name is quoted somewhere in the code (`TABLE["name"]`, or passed on)."""
    unused = [
        f"{table}.{name}"
        for table in queries.tables()
        for name in queries.load(table)
        if not re.search(rf"""["']{name}["']""", CODE)
    ]
    assert unused == []


def test_every_named_query_plans_against_the_schema(conn: db.Conn) -> None:
    """EXPLAIN each statement with every parameter NULL (COPY has no plan: its table
    and columns are checked by copying nothing). The score job's temp tables are made
    first, as the job makes them (`db.copy_like`)."""
    for like in ("copy_attribution", "execution_score", "real_copy_attribution", "real_copy_score"):
        conn.execute(f"CREATE TEMP TABLE score_{like} (LIKE {like})")
    conn.execute(real_copies.IMPORT_MAKE)
    for table in queries.tables():
        for name, sql in queries.load(table).items():
            try:
                if sql.startswith("COPY"):
                    with conn.transaction(), conn.cursor() as cur, cur.copy(sql):
                        pass
                    continue
                names = set(re.findall(r"%\((\w+)\)s", sql))
                params: dict[str, None] | tuple[None, ...] = dict.fromkeys(names)
                if not names:
                    params = (None,) * sql.count("%s")
                with conn.transaction():
                    conn.execute("EXPLAIN " + sql, params or None)
            except psycopg.Error as exc:
                pytest.fail(f"{table}.{name}: {exc}")


def test_records_read_the_rows_their_queries_return(conn: db.Conn) -> None:
    """A record built from an empty result's columns: every field a query selects is
    one the record has, and every required field is selected."""
    cases = {
        ("trade_event", "pending_for_user"): records.TradeEvent,
        ("activity_event", "pending_for_user"): records.ActivityEvent,
        ("market", "outcome_assets"): records.OutcomeAsset,
        ("ledger_entry", "portfolio_entries"): records.LedgerEntry,
        ("ledger_entry", "between_ids"): records.LedgerEntry,
        ("copy_group", "closed"): records.CopyGroup,
        ("copy_attempt", "of_groups_between"): records.CopyAttempt,
        ("portfolio", "states"): records.PortfolioState,
        ("portfolio", "open_positions"): records.PositionRow,
    }
    for (table, name), record in cases.items():
        sql = queries.load(table)[name]
        params = dict.fromkeys(re.findall(r"%\((\w+)\)s", sql))
        cur = conn.execute(sql, params or None)
        columns = [c.name for c in cur.description or []]
        names = {f for f in record.__dataclass_fields__}  # type: ignore[attr-defined]
        if record is records.CopyGroup:
            names = {"id", "group_key", "followed_user_id", "action", "condition_id"}
            names |= {"asset_id", "window_start", "first_detect_time", "close_time"}
            names |= {"decide_at", "their_share_micros", "their_notional_micros"}
            names |= {"their_price_micros", "order_book_snapshot_id"}
        assert set(columns) <= names, (table, name, set(columns) - names)
        record.from_row(dict.fromkeys(columns))  # no required field missing
