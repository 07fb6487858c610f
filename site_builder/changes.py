"""What changed since the last build round, as page keys to rebuild.

Each round reads a handful of watermarks (newest ids, checkpoint times; index-only
look-ups), and for the append-only tables turns the id range since the last round into
the users and markets it touched. Pages are keys: "overview", "users", "user:3",
"market:0x…", "config-test:7", …; "*" means every page, "user:*" every user page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.store import db

ALL = "*"
ALL_USERS = "user:*"
ALL_MARKETS = "market:*"

_MARKS = """
SELECT
  (SELECT coalesce(max(id), 0) FROM trade_event) AS trade_event,
  (SELECT coalesce(max(id), 0) FROM activity_event) AS activity_event,
  (SELECT coalesce(max(id), 0) FROM copy_attempt) AS copy_attempt,
  (SELECT coalesce(max(id), 0) FROM audit_log) AS audit_log,
  (SELECT coalesce(max(id), 0) FROM config_test) AS config_test,
  (SELECT count(*) FROM config_test WHERE state IN ('DONE', 'FAILED')) AS config_test_done,
  (SELECT max(updated_at) FROM followed_user) AS users_at,
  (SELECT count(*) FROM followed_user) AS users_n,
  (SELECT max(updated_at) FROM system_control) AS control_at,
  (SELECT max(metadata_fetched_at) FROM market) AS markets_at,
  (SELECT count(*) FROM market) AS markets_n,
  (SELECT count(*) FROM market WHERE blacklisted) AS blacklisted_n,
  (SELECT max(updated_at) FROM system_checkpoint WHERE name = 'snapshot.ledger') AS snapshot_at,
  (SELECT coalesce(max(cursor_int), 0) FROM system_checkpoint
    WHERE name = 'rollup.copy_attempt') AS rollup_attempt,
  (SELECT coalesce(max(cursor_int), 0) FROM system_checkpoint
    WHERE name = 'rollup.trade_event') AS rollup_trade,
  (SELECT coalesce(max(cursor_int), 0) FROM system_checkpoint
    WHERE name = 'rollup.ledger_entry') AS rollup_ledger
"""


@dataclass(frozen=True)
class Marks:
    values: dict[str, Any]

    def moved(self, other: Marks, *names: str) -> bool:
        return any(self.values[n] != other.values[n] for n in names)


def read(conn: db.Conn) -> Marks:
    row = conn.execute(_MARKS).fetchone()
    assert row is not None
    return Marks(dict(row))


def _users(conn: db.Conn, table: str, lo: int, hi: int) -> set[str]:
    query = {
        "trade_event": "SELECT DISTINCT followed_user_id AS u FROM trade_event"
        " WHERE id > %(lo)s AND id <= %(hi)s",
        "activity_event": "SELECT DISTINCT followed_user_id AS u FROM activity_event"
        " WHERE id > %(lo)s AND id <= %(hi)s",
    }[table]
    return {f"user:{r['u']}" for r in conn.execute(query, {"lo": lo, "hi": hi})}


def _attempts(conn: db.Conn, lo: int, hi: int) -> set[str]:
    rows = conn.execute(
        """SELECT DISTINCT followed_user_id AS u, condition_id AS c FROM copy_attempt
           WHERE id > %(lo)s AND id <= %(hi)s""",
        {"lo": lo, "hi": hi},
    )
    keys: set[str] = set()
    for r in rows:
        keys.add(f"user:{r['u']}")
        if r["c"]:
            keys.add(f"market:{r['c']}")
    return keys


def _markets_since(conn: db.Conn, since: datetime | None) -> set[str]:
    rows = conn.execute(
        """SELECT condition_id FROM market
           WHERE %(t)s::timestamptz IS NULL OR metadata_fetched_at > %(t)s""",
        {"t": since},
    )
    return {f"market:{r['condition_id']}" for r in rows}


def dirty(conn: db.Conn, old: Marks | None, new: Marks) -> set[str]:
    """Returns the page keys whose inputs moved from `old` to `new` (None: everything)."""
    if old is None or new.moved(old, "audit_log", "users_at", "users_n", "control_at"):
        return {ALL}
    o, n = old.values, new.values
    keys = {"status"}
    for table in ("trade_event", "activity_event"):
        if n[table] != o[table]:
            keys |= {"trades", "overview"} | _users(conn, table, o[table], n[table])
    if n["copy_attempt"] != o["copy_attempt"]:
        keys |= {"trades", "markets"} | _attempts(conn, o["copy_attempt"], n["copy_attempt"])
    if new.moved(old, "snapshot_at"):
        keys |= {"overview", "users", "portfolio", "markets", ALL_USERS}
    if n["rollup_attempt"] != o["rollup_attempt"]:
        keys |= {"overview", "users", "markets"}
        keys |= _attempts(conn, o["rollup_attempt"], n["rollup_attempt"])
    if n["rollup_trade"] != o["rollup_trade"]:
        keys |= {"overview"} | _users(conn, "trade_event", o["rollup_trade"], n["rollup_trade"])
    if n["rollup_ledger"] != o["rollup_ledger"]:
        keys |= {"overview", "portfolio"}
    if new.moved(old, "markets_at", "markets_n", "blacklisted_n"):
        keys |= {"markets", "config"} | _markets_since(conn, o["markets_at"])
    if new.moved(old, "config_test", "config_test_done"):
        keys |= {"config", "config-test:*"}
    return keys
