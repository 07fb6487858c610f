"""What changed since the last build round, as page keys to rebuild.

Each round reads a handful of watermarks (newest ids, checkpoint times; index-only
look-ups), and for the append-only tables turns the id range since the last round into
the users and markets it touched. Pages are keys: "overview", "users", "user:3",
"market:0x…", "config-test:7", …; "*" means every page, "user:*" every user page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.store import db
from site_builder import registry

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
  (SELECT max(updated_at) FROM system_checkpoint WHERE name = 'score.attribution')
    AS attribution_at,
  (SELECT max(updated_at) FROM system_checkpoint WHERE name = 'snapshot.ledger') AS snapshot_at,
  (SELECT coalesce(max(cursor_int), 0) FROM system_checkpoint
    WHERE name = 'rollup.copy_attempt') AS rollup_attempt,
  (SELECT coalesce(max(cursor_int), 0) FROM system_checkpoint
    WHERE name = 'rollup.trade_event') AS rollup_trade,
  (SELECT coalesce(max(cursor_int), 0) FROM system_checkpoint
    WHERE name = 'rollup.ledger_entry') AS rollup_ledger,
  (SELECT max(updated_at) FROM alert) AS alert_at,
  (SELECT max(evaluated_at) FROM alert_rule_eval) AS alert_eval_at,
  (SELECT coalesce(max(id), 0) FROM notification_attempt) AS delivery_at,
  (SELECT coalesce(max(id), 0) FROM latency_sweep) AS sweep_at
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


def dirty(conn: db.Conn, old: Marks | None, new: Marks) -> set[str]:
    """Returns the page keys whose inputs moved from `old` to `new` (None: everything),
    as the page registry declares them."""
    if old is None or new.moved(old, *registry.EVERYTHING):
        return {ALL}
    moved = {name for name in new.values if new.values[name] != old.values[name]}
    moved.add(registry.ALWAYS)
    keys: set[str] = set()
    for page in registry.PAGES:
        if moved.intersection(page.inputs):
            keys.add(page.kind if page.every is None else f"{page.kind}:*")
        for mark, subjects in page.touched.items():
            if mark in moved:
                keys |= {f"{page.kind}:{s}" for s in subjects(conn, old.values, new.values)}
    return keys
