"""One copy attempt (attempts/<id>.html): the leader's fills it copied, the decision and
its reasons, and the order book at decision with the walk drawn — the levels taken, the
price bound and the VWAP — recomputed from the stored book under the configuration the
decision names (and said so when it differs from what was recorded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.domain import book_walk, money, reasons
from common.store import copy_configs, copy_data, db
from site_builder.pages import common

Row = dict[str, Any]
PAGES = 300  # the newest attempts get a page (the trades page lists about as many)
LEVELS = 15  # book levels shown on the walked side


@dataclass(frozen=True)
class Level:
    price: int
    size: int
    taken: int  # shares the walk took here
    inside: bool  # priced within the bound


@dataclass(frozen=True)
class WalkView:
    side: str
    levels: list[Level]  # the side the order walks, best first
    other: Sequence[tuple[int, int]]  # the other side's best levels
    walk: book_walk.Walk
    matches: bool  # the recomputed walk filled what the attempt recorded (an executed one)
    fetched_at: datetime
    more: int  # levels beyond those shown
    source: str = "REST"  # REST /book, or LIVE: the book watcher's live book

    @property
    def widest(self) -> int:
        return max([lv.size for lv in self.levels] or [1])


@dataclass(frozen=True)
class AttemptContext:
    frame: common.Frame
    attempt: Row
    fills: list[Row]
    reasons: list[tuple[str, str]]
    book: WalkView | None


_ATTEMPT = """
SELECT a.*, u.label, m.question, o.outcome, g.window_start, g.window_end, g.event_count,
       g.first_detect_time
FROM copy_attempt a
JOIN followed_user u ON u.id = a.followed_user_id
LEFT JOIN copy_group g ON g.id = a.copy_group_id
LEFT JOIN market m ON m.condition_id = a.condition_id
LEFT JOIN outcome_asset o ON o.asset_id = a.asset_id
WHERE a.id = %(id)s
"""
_FILLS = """
SELECT t.id, t.event_time, t.detect_time, t.source, t.side, t.price_micros, t.share_micros,
       t.usdc_notional_micros, t.tx_hash, t.source_id, t.reorg_state, o.outcome
FROM trade_event t LEFT JOIN outcome_asset o ON o.asset_id = t.asset_id
WHERE t.copy_group_id = %(g)s ORDER BY t.event_time, t.id
"""


def newest(conn: db.Conn, now: datetime) -> list[str]:
    """The attempts that have a page: the newest PAGES."""
    rows = conn.execute("SELECT id FROM copy_attempt ORDER BY id DESC LIMIT %(n)s", {"n": PAGES})
    return [str(r["id"]) for r in rows]


_FLOOR: dict[tuple[int, datetime, int], int] = {}


def floor(conn: db.Conn, now: datetime) -> int:
    """The lowest attempt id with a page (links to older attempts are not drawn); read
    once per build round (`now` is the round's time), not once per market page."""
    key = (id(conn), now, PAGES)
    if key not in _FLOOR:
        row = conn.execute(
            "SELECT min(id) AS id FROM"
            " (SELECT id FROM copy_attempt ORDER BY id DESC LIMIT %(n)s) a",
            {"n": PAGES},
        ).fetchone()
        _FLOOR.clear()  # one round's value at a time
        _FLOOR[key] = int(row["id"]) if row and row["id"] is not None else 0
    return _FLOOR[key]


def _walk(conn: db.Conn, a: Row) -> WalkView | None:
    """The stored book at decision, walked again under the attempt's configuration."""
    if a["order_book_snapshot_id"] is None or a["action"] not in ("BUY", "SELL"):
        return None
    stored = copy_data.load_books(conn, [a["order_book_snapshot_id"]]).get(
        a["order_book_snapshot_id"]
    )
    if stored is None:  # pruned
        return None
    config = copy_configs.used_by(
        conn,
        a["followed_user_id"],
        [a["guardrail_config_id"], a["guardrail_override_id"]],
        [a["copy_sizing_config_id"], a["sizing_override_id"]],
    )
    side = a["action"]
    book = stored.book
    w = book_walk.walk(
        side, book.bids, book.asks, max(1, a["their_price_micros"] or 0), a["target_share_micros"],
        config.guards(),
    )  # fmt: skip
    taken: dict[int, int] = {}
    for price, q in w.fills:
        taken[price] = taken.get(price, 0) + q
    walked = book.asks if side == "BUY" else book.bids
    bound = w.bound

    def inside(price: int) -> bool:
        if bound is None:
            return False
        return price <= bound if side == "BUY" else price >= bound

    levels = [Level(p, q, taken.get(p, 0), inside(p)) for p, q in walked[:LEVELS]]
    other = (book.bids if side == "BUY" else book.asks)[:5]
    recorded = a["filled_share_micros"]
    return WalkView(
        side=side,
        levels=levels,
        other=other,
        walk=w,
        matches=w.shares == recorded,
        fetched_at=stored.fetched_at,
        more=max(0, len(walked) - LEVELS),
        source=_source(conn, a["order_book_snapshot_id"]),
    )


def _source(conn: db.Conn, book_id: int) -> str:
    row = conn.execute(
        "SELECT source FROM order_book_snapshot WHERE id = %(i)s", {"i": book_id}
    ).fetchone()
    return str(row["source"]) if row else "REST"


def context(conn: db.Conn, attempt_id: int, now: datetime) -> AttemptContext | None:
    a = conn.execute(_ATTEMPT, {"id": attempt_id}).fetchone()
    if a is None:
        return None
    fills = list(conn.execute(_FILLS, {"g": a["copy_group_id"]})) if a["copy_group_id"] else []
    return AttemptContext(
        frame=common.frame(conn, now),
        attempt=a,
        fills=fills,
        reasons=[(code, reasons.describe(code)) for code in a["reason_codes"]],
        book=_walk(conn, a),
    )


def latency_ms(a: Row, fills: list[Row]) -> float | None:
    """Their first fill → our decision."""
    if not fills:
        return None
    gap: float = (a["decision_time"] - fills[0]["event_time"]).total_seconds()
    return gap * 1000


def notional(price: int, size: int) -> int:
    return money.mul_micros(price, size)
