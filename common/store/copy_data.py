"""Rows in and out of the copy engine: closed groups, markets, stored books, users and
the pause switch as `decide` values; decisions written back as `copy_attempt`,
`executable_fill` and exec `ledger_entry` rows. The simulator and the what-if share it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.domain import decide, ledger, money, portfolio
from common.store import db
from common.upstream import clob

CLOSED_GROUPS = """
SELECT id, group_key, followed_user_id, action, condition_id, asset_id, window_start,
       first_detect_time, close_time, decide_at, their_share_micros, their_notional_micros,
       their_price_micros, order_book_snapshot_id
FROM copy_group WHERE state = 'CLOSED'
ORDER BY first_detect_time, window_start, group_key
LIMIT %(n)s
"""


def group_of(r: dict[str, Any]) -> decide.Group:
    return decide.Group(
        id=r["id"],
        key=r["group_key"],
        user_id=r["followed_user_id"],
        action=r["action"],
        condition_id=r["condition_id"],
        asset_id=r["asset_id"],
        window_start=r["window_start"],
        first_detect_time=r["first_detect_time"],
        close_time=r["close_time"],
        decide_at=r["decide_at"],
        their_shares=r["their_share_micros"],
        their_notional=r["their_notional_micros"],
        their_price=r["their_price_micros"],
    )


@dataclass(frozen=True)
class User:
    enabled: bool
    mode: str


def users(conn: db.Conn) -> dict[int, User]:
    return {
        r["id"]: User(r["enabled"], r["copy_mode"])
        for r in conn.execute("SELECT id, enabled, copy_mode FROM followed_user")
    }


def paused(conn: db.Conn) -> bool:
    row = conn.execute("SELECT paused FROM system_control WHERE id = 1").fetchone()
    return bool(row and row["paused"])


class Markets:
    """Market metadata by condition, read once per run."""

    def __init__(self, conn: db.Conn) -> None:
        self.conn = conn
        self._cache: dict[str, decide.Market | None] = {}

    def get(self, condition_id: str | None) -> decide.Market | None:
        if condition_id is None:
            return None
        if condition_id not in self._cache:
            self._cache[condition_id] = self._load(condition_id)
        return self._cache[condition_id]

    def _load(self, condition_id: str) -> decide.Market | None:
        m = self.conn.execute(
            """SELECT end_time, closed, blacklisted, fees_enabled, fee_rate_micros, fee_exponent,
                      array(SELECT asset_id FROM outcome_asset o
                            WHERE o.condition_id = market.condition_id
                            ORDER BY outcome_index) AS assets
               FROM market WHERE condition_id = %s""",
            (condition_id,),
        ).fetchone()
        if m is None:
            return None
        return decide.Market(
            condition_id=condition_id,
            assets=tuple(m["assets"]),
            end_time=m["end_time"],
            closed=m["closed"],
            blacklisted=m["blacklisted"],
            fees_enabled=m["fees_enabled"],
            fee_rate_micros=m["fee_rate_micros"],
            fee_exponent=m["fee_exponent"],
        )


@dataclass(frozen=True)
class StoredBook:
    book: decide.Book
    asset_id: str
    fetched_at: datetime

    @property
    def mid(self) -> int | None:
        b = self.book
        if not b.bids or not b.asks:
            return None
        return money.div_round(b.bids[0][0] + b.asks[0][0], 2)


def moment(g: decide.Group, stored: StoredBook | None, marks: portfolio.Marks) -> datetime:
    """Returns when the group is decided — its book's fetch time, else its decide_at —
    after moving the marks by that book."""
    if stored is None:
        return g.decide_at
    if g.asset_id is not None:
        marks.observe(g.asset_id, stored.fetched_at, stored.mid, stored.book.snapshot_id or 0)
    return stored.fetched_at


def situation(
    at: datetime,
    paused: bool,
    user: User,
    market: decide.Market | None,
    stored: StoredBook | None,
    refs: portfolio.BreakerRefs,
) -> decide.Situation:
    return decide.Situation(
        now=at,
        paused=paused,
        user_enabled=user.enabled,
        user_mode=user.mode,
        market=market,
        book=stored.book if stored is not None else None,
        refs=refs,
    )


_BOOK = """SELECT id, asset_id, fetched_at, bid_prices_micros, bid_sizes_micros,
ask_prices_micros, ask_sizes_micros FROM order_book_snapshot WHERE id = ANY(%(ids)s)"""


def load_books(conn: db.Conn, ids: list[int]) -> dict[int, StoredBook]:
    """Returns the stored books by id, levels best first as stored."""
    return {r["id"]: _stored(r) for r in conn.execute(_BOOK, {"ids": ids})}


_STORE_BOOK = """
INSERT INTO order_book_snapshot (asset_id, condition_id, book_hash, book_time, fetched_at,
    bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros, tick_size_micros,
    min_order_size_micros, neg_risk, last_trade_price_micros)
VALUES (%(asset)s, %(cond)s, %(hash)s, %(time)s, %(at)s, %(bp)s, %(bs)s, %(ap)s, %(as)s,
    %(tick)s, %(min)s, %(neg)s, %(last)s)
ON CONFLICT (asset_id, book_time, book_hash) DO UPDATE SET asset_id = EXCLUDED.asset_id
RETURNING id, fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros,
    ask_sizes_micros, asset_id
"""


def store_book(conn: db.Conn, ob: clob.OrderBook, fetched_at: datetime) -> StoredBook:
    """Stores a fetched book (sorted best first); returns it as stored, carried forward
    from the write (the existing row when the exchange served the same book before: its
    id, levels and first fetch time), so the decision needs no read-back."""
    row = conn.execute(
        _STORE_BOOK,
        {
            "asset": ob.asset_id,
            "cond": ob.market,
            "hash": ob.hash,
            "time": ob.book_time,
            "at": fetched_at,
            "bp": [p for p, _ in ob.bids],
            "bs": [q for _, q in ob.bids],
            "ap": [p for p, _ in ob.asks],
            "as": [q for _, q in ob.asks],
            "tick": ob.tick_size,
            "min": ob.min_order_size,
            "neg": ob.neg_risk,
            "last": ob.last_trade_price,
        },
    ).fetchone()
    assert row is not None
    return _stored(row)


def _stored(r: dict[str, Any]) -> StoredBook:
    book = decide.Book(
        bids=tuple(zip(r["bid_prices_micros"], r["bid_sizes_micros"], strict=True)),
        asks=tuple(zip(r["ask_prices_micros"], r["ask_sizes_micros"], strict=True)),
        snapshot_id=r["id"],
    )
    return StoredBook(book, r["asset_id"], r["fetched_at"])


_ATTEMPT = """
INSERT INTO copy_attempt (portfolio_scope, followed_user_id, group_key, copy_group_id, action,
    condition_id, asset_id, guardrail_config_id, copy_sizing_config_id, guardrail_override_id,
    sizing_override_id, their_notional_micros, their_price_micros, target_notional_micros,
    target_share_micros, decision, reason_codes, best_bid_micros, best_ask_micros, mid_micros,
    vwap_micros, filled_share_micros, filled_notional_micros, filled_ratio_micros, fee_micros,
    group_close_time, decision_time, order_book_snapshot_id, equity_micros, cash_micros,
    depth_in_band_micros)
VALUES (%(scope)s, %(u)s, %(key)s, %(gid)s, %(action)s, %(cond)s, %(asset)s, %(gc)s, %(sc)s,
    %(go)s, %(so)s, %(their_n)s, %(their_p)s, %(target_n)s, %(target_s)s, %(decision)s,
    %(reasons)s, %(bid)s, %(ask)s, %(mid)s, %(vwap)s, %(filled_s)s, %(filled_n)s, %(ratio)s,
    %(fee)s, %(close)s, %(at)s, %(book)s, %(equity)s, %(cash)s, %(depth)s)
ON CONFLICT (portfolio_scope, followed_user_id, group_key) DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class Row:
    """One decision to write, with what it was decided under."""

    decision: decide.Decision
    config_ids: dict[str, int | None]
    book_id: int | None
    market_assets: tuple[str, ...]
    deposit: int | None  # the portfolio's opening DEPOSIT, when it has none yet
    entries: list[ledger.Entry] | None = None  # the decision's, when computed already


def _attempt_params(r: Row) -> dict[str, Any]:
    d, g = r.decision, r.decision.group
    return {
        "scope": d.scope,
        "u": g.user_id,
        "key": g.key,
        "gid": g.id,
        "action": g.action,
        "cond": g.condition_id,
        "asset": g.asset_id,
        "gc": r.config_ids.get("guardrail_id"),
        "sc": r.config_ids.get("sizing_id"),
        "go": r.config_ids.get("guardrail_override_id"),
        "so": r.config_ids.get("sizing_override_id"),
        "their_n": g.their_notional,
        "their_p": g.their_price,
        "target_n": d.target_notional,
        "target_s": d.target_shares,
        "decision": d.decision,
        "reasons": list(d.reasons),
        "bid": d.best_bid,
        "ask": d.best_ask,
        "mid": d.mid,
        "vwap": d.vwap,
        "filled_s": d.filled_shares,
        "filled_n": d.filled_notional,
        "ratio": d.filled_ratio,
        "fee": d.fee,
        "close": g.close_time,
        "at": d.decided_at or g.decide_at,
        "book": r.book_id,
        "equity": d.equity,
        "cash": d.cash,
        "depth": d.depth,
    }


_FILL_COLUMNS = (
    "copy_attempt_id, level_index, price_micros, share_micros, notional_micros, fee_micros"
)
_LEDGER_COLUMNS = (
    "portfolio_scope, followed_user_id, condition_id, asset_id, entry_type, share_delta_micros,"
    " cash_delta_micros, price_micros, ref_id, effective_time, copy_attempt_id"
)
_COPY_FILLS = "COPY executable_fill (" + _FILL_COLUMNS + ") FROM STDIN"
_COPY_LEDGER = "COPY ledger_entry (" + _LEDGER_COLUMNS + ") FROM STDIN"


def write_many(conn: db.Conn, rows: list[Row]) -> list[int]:
    """Writes decisions (attempts, one fill per level, ledger entries and any opening
    DEPOSIT) in the caller's transaction: the attempts in one pipelined batch, fills and
    entries by COPY. Raises if an attempt already existed (the caller's portfolios are
    then stale). Returns the attempt ids."""
    if not rows:
        return []
    with conn.cursor() as cur:
        cur.executemany(_ATTEMPT, [_attempt_params(r) for r in rows], returning=True)
        ids: list[int] = []
        for r in rows:
            got = cur.fetchone()
            if got is None:
                g = r.decision.group
                raise RuntimeError(f"attempt for {g.key} in {r.decision.scope} already exists")
            ids.append(int(got["id"]))
            cur.nextset()
        fills = [
            (i, f.level, f.price, f.shares, f.notional, f.fee)
            for i, r in zip(ids, rows, strict=True)
            for f in r.decision.fills
        ]
        if fills:
            with cur.copy(_COPY_FILLS) as copy:
                for fill in fills:
                    copy.write_row(fill)
        with cur.copy(_COPY_LEDGER) as copy:
            for i, r in zip(ids, rows, strict=True):
                d = r.decision
                for e in _entries(r):
                    copy.write_row(
                        (
                            d.scope,
                            d.user_id,
                            e.condition_id,
                            e.asset_id,
                            e.entry_type,
                            e.share_delta_micros,
                            e.cash_delta_micros,
                            e.price_micros,
                            e.ref_id,
                            e.effective_time,
                            None if e.entry_type == "DEPOSIT" else i,
                        )
                    )
    return ids


def _entries(r: Row) -> list[ledger.Entry]:
    d = r.decision
    entries = list(r.entries) if r.entries is not None else decide.entries(d, r.market_assets)
    if r.deposit is not None:
        at = d.decided_at or d.group.decide_at
        ref = portfolio.deposit_ref(d.user_id)
        entries.insert(0, ledger.Entry(None, None, "DEPOSIT", 0, r.deposit, None, ref, at))
    return entries
