"""The book ladder (SPEC §12, `book_ladder`): which copy groups still wait for theirs,
and writing one. functions/watch_books.py takes the books from its live history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from common.domain import live_book
from common.store import db

_PENDING = """
SELECT g.id, g.asset_id, g.window_start, g.first_detect_time FROM copy_group g
WHERE g.window_start >= %(since)s AND g.window_start <= %(due)s
  AND g.action IN ('BUY', 'SELL') AND g.asset_id = ANY(%(assets)s)
  AND NOT EXISTS (SELECT 1 FROM book_ladder l WHERE l.copy_group_id = g.id)
ORDER BY g.window_start LIMIT %(n)s
"""


def pending(
    conn: db.Conn, assets: Iterable[str], since: datetime, due: datetime, limit: int = 200
) -> list[dict[str, Any]]:
    """The BUY/SELL groups of `assets` whose first fill is between `since` and `due`
    (its last delay has passed) and that have no ladder yet, oldest first."""
    params = {"assets": sorted(assets), "since": since, "due": due, "n": limit}
    return conn.execute(_PENDING, params).fetchall()


def write(conn: db.Conn, group_id: int, rungs: Iterable[live_book.Rung], taken_at: datetime) -> int:
    """Stores a group's rungs (a rerun adds none twice); returns how many were new."""
    n = 0
    for r in rungs:
        at = datetime.fromtimestamp(r.at_ms / 1000, UTC)
        cur = conn.execute(
            """INSERT INTO book_ladder (copy_group_id, delay_ms, book_at, source,
                   best_bid_micros, best_ask_micros, bids, asks, taken_at)
               VALUES (%(g)s, %(d)s, %(at)s, %(src)s, %(bb)s, %(ba)s, %(bids)s, %(asks)s,
                   %(now)s)
               ON CONFLICT (copy_group_id, delay_ms) DO NOTHING""",
            {"g": group_id, "d": r.delay_ms, "at": at, "src": r.source,
             "bb": r.levels.best_bid, "ba": r.levels.best_ask,
             "bids": Jsonb([list(lv) for lv in r.levels.bids]),
             "asks": Jsonb([list(lv) for lv in r.levels.asks]), "now": taken_at},
        )  # fmt: skip
        n += cur.rowcount
    return n
