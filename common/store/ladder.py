"""The book ladder (SPEC §12, `book_ladder`): which copy groups still wait for theirs,
and writing one. functions/watch_books.py takes the books from its live history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from common.domain import live_book
from common.store import db

_PENDING = """
SELECT g.id, g.asset_id, g.window_start, g.first_detect_time FROM copy_group g
WHERE g.first_detect_time >= %(since)s AND g.window_start <= %(due)s
  AND g.window_start >= %(oldest)s AND g.id <> ALL(%(tried)s)
  AND g.action IN ('BUY', 'SELL') AND g.asset_id = ANY(%(assets)s)
  AND NOT EXISTS (SELECT 1 FROM book_ladder l WHERE l.copy_group_id = g.id)
ORDER BY g.window_start LIMIT %(n)s
"""


def pending(
    conn: db.Conn,
    assets: Iterable[str],
    since: datetime,
    due: datetime,
    oldest: datetime | None = None,
    tried: Iterable[int] = (),
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The BUY/SELL groups of `assets` detected since `since`, whose first fill is
    before `due` (its last delay has passed) and not before `oldest` (default `since`),
    that have no ladder yet and are not in `tried` (taken before, with no rung), oldest
    first. A group detected late — its fill long before — still gets what can be
    taken (+0 as the first book after detection)."""
    params = {"assets": sorted(assets), "since": since, "due": due, "n": limit,
              "oldest": since if oldest is None else oldest, "tried": list(tried)}  # fmt: skip
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


_LOAD = """
SELECT copy_group_id, delay_ms, book_at, source, bids, asks FROM book_ladder
WHERE copy_group_id = ANY(%(ids)s) AND delay_ms = ANY(%(delays)s)
ORDER BY copy_group_id, delay_ms
"""


def load(
    conn: db.Conn, group_ids: Iterable[int], delays_ms: Iterable[int]
) -> dict[int, dict[int, Stored]]:
    """The stored rungs of `group_ids` at `delays_ms`: group id → delay → rung."""
    out: dict[int, dict[int, Stored]] = {}
    params = {"ids": sorted(set(group_ids)), "delays": sorted(set(delays_ms))}
    for r in conn.execute(_LOAD, params):
        bids = tuple((int(p), int(s)) for p, s in r["bids"])
        asks = tuple((int(p), int(s)) for p, s in r["asks"])
        out.setdefault(r["copy_group_id"], {})[r["delay_ms"]] = Stored(
            r["book_at"], r["source"], live_book.Levels(bids, asks)
        )
    return out


@dataclass(frozen=True)
class Stored:
    """One stored rung: the moment its book is of, its source, the compact levels."""

    book_at: datetime
    source: str
    levels: live_book.Levels
