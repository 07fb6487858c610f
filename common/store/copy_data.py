"""Rows in and out of the copy engine: closed groups, markets, stored books, users and
the pause switch as `decide` values; decisions written back as `copy_attempt`,
`executable_fill` and exec `ledger_entry` rows. The simulator and the what-if share it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import decide, ledger, portfolio, records
from common.runtime import settings
from common.store import db, marks, queries
from common.upstream import clob

GROUPS = queries.load("copy_group")
TRADES = queries.load("trade_event")
ATTEMPTS = queries.load("copy_attempt")
BOOKS = queries.load("order_book_snapshot")
LEDGER = queries.load("ledger_entry")
MARKET = queries.load("market")
StoredBook = records.OrderBookSnapshot


def closed_groups(conn: db.Conn, n: int) -> list[decide.Group]:
    """The groups waiting for a decision, FIFO, with the book each was decided on once
    stored (`book_id`)."""
    return [decide.Group.from_row(r) for r in conn.execute(GROUPS["closed"], {"n": n})]


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
        m = self.conn.execute(MARKET["by_condition"], {"c": condition_id}).fetchone()
        if m is None:
            return None
        return decide.Market.from_row({**m, "assets": tuple(m["assets"])})


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
    context: GroupContext | None = None,
) -> decide.Situation:
    return decide.Situation(
        now=at,
        paused=paused,
        user_enabled=user.enabled,
        user_mode=user.mode,
        market=market,
        book=stored.book if stored is not None else None,
        refs=refs,
        their_position=context.their_position if context is not None else None,
        leg_prices=context.leg_prices if context is not None else None,
    )


@dataclass(frozen=True)
class GroupContext:
    """What a group's decision reads besides the book and the portfolio: the leader's
    position before it (a SELL / MERGE is sized as a fraction of it) and the outcomes'
    marks at its moment (a SPLIT / MERGE allocates its cost by them)."""

    their_position: int | None = None
    leg_prices: dict[str, int] | None = None


def group_context(
    conn: db.Conn,
    g: decide.Group,
    market: decide.Market | None,
    at: datetime,
    now: datetime,
    fetch: marks.Fetch | None = None,
    holding: bool = True,
    their: int | None = None,
) -> GroupContext:
    """Reads the group's context (simulate, its replay and the what-if alike); `fetch`
    (live only) gets midpoints when the outcomes have no recent stored mark. Without
    `holding` (neither portfolio holds anything the reduction could sell, so it is
    NO_POSITION whatever the leader held) the leader's position is not read; `their`
    is that position when the caller read it already (a batch, `leader_positions`)."""
    reduces = g.action in ("SELL", "MERGE") and holding
    if their is None and reduces:
        their = leader_position(conn, g, at)
    elif not reduces:
        their = None
    prices = None
    if g.action in ("SPLIT", "MERGE") and market is not None and market.assets:
        prices = marks.at_moment(conn, market.assets, at, now, fetch)
    return GroupContext(their, prices)


def leader_position(conn: db.Conn, g: decide.Group, seen: datetime) -> int:
    """The leader's shares of the group's asset (SELL) or complete sets of its market
    (MERGE) just before the group, from their events detected by `seen` (the decision
    moment; see trade_event.sql)."""
    return leader_positions(conn, [(g, seen)])[g.id]


def leader_positions(
    conn: db.Conn, groups: Sequence[tuple[decide.Group, datetime]]
) -> dict[int, int]:
    """`leader_position` of each (group, decision moment), in one statement."""
    groups = [(g, seen) for g, seen in groups if g.action in ("SELL", "MERGE")]
    if not groups:
        return {}
    params = {
        "window": timedelta(seconds=settings.get().seed_window_s),
        "g": [g.id for g, _ in groups],
        "u": [g.user_id for g, _ in groups],
        "t": [g.window_start for g, _ in groups],
        "rank": [0 if g.action == "SELL" else 1 for g, _ in groups],
        "seen": [seen for _, seen in groups],
        "c": [g.condition_id for g, _ in groups],
        "asset": [g.asset_id if g.action == "SELL" else None for g, _ in groups],
    }
    legs: dict[int, dict[str, tuple[bool, int]]] = {g.id: {} for g, _ in groups}
    for r in conn.execute(TRADES["leader_positions_before"], params):
        legs[r["gid"]][r["asset_id"]] = (r["outcome"], int(r["shares"]))
    out = {}
    for g, _ in groups:
        mine = legs[g.id]
        if g.action == "MERGE":
            sets = [n for outcome, n in mine.values() if outcome]
            out[g.id] = max(0, min(sets)) if sets else 0
        else:
            out[g.id] = mine.get(g.asset_id or "", (False, 0))[1]
    return out


def load_books(conn: db.Conn, ids: list[int]) -> dict[int, StoredBook]:
    """Returns the stored books by id, levels best first as stored."""
    return {r["id"]: StoredBook.from_row(r) for r in conn.execute(BOOKS["by_ids"], {"ids": ids})}


def store_book(
    conn: db.Conn, ob: clob.OrderBook, fetched_at: datetime, source: str = "REST"
) -> StoredBook:
    """Stores a fetched book (sorted best first; `source`: REST, or LIVE for the book
    watcher's); returns it as stored, carried forward
    from the write (the existing row when the exchange served the same book before: its
    id, levels and first fetch time), so the decision needs no read-back."""
    row = conn.execute(
        BOOKS["insert"],
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
            "source": source,
        },
    ).fetchone()
    assert row is not None
    return StoredBook.from_row(row)


def set_book(conn: db.Conn, group_id: int, book_id: int | None) -> None:
    conn.execute(GROUPS["set_book"], {"b": book_id, "g": group_id})


def mark_done(conn: db.Conn, decisions: list[decide.Decision]) -> None:
    """Marks the groups of the first decision of each DONE, at its decision time."""
    conn.execute(
        GROUPS["mark_done"],
        {"id": [d.group.id for d in decisions], "at": [d.decided_at for d in decisions]},
    )


def exec_watermark(conn: db.Conn) -> int | None:
    """The newest executable ledger entry's id (another writer moved them if it changed)."""
    row = conn.execute(LEDGER["exec_watermark"]).fetchone()
    return None if row is None else row["id"]


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
        "gid": g.id or None,  # 0: an exit overlay's attempt, of no group
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
        "their_pos": d.their_position,
        "ideal_s": d.ideal_shares,
    }


def write_many(conn: db.Conn, rows: list[Row]) -> list[int]:
    """Writes decisions (attempts, one fill per level, ledger entries and any opening
    DEPOSIT) in the caller's transaction: the attempts in one pipelined batch, fills and
    entries by COPY. Raises if an attempt already existed (the caller's portfolios are
    then stale). Returns the attempt ids."""
    if not rows:
        return []
    with conn.cursor() as cur:
        cur.executemany(ATTEMPTS["insert"], [_attempt_params(r) for r in rows], returning=True)
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
            with cur.copy(ATTEMPTS["copy_fills"]) as copy:
                for fill in fills:
                    copy.write_row(fill)
        with cur.copy(LEDGER["copy_exec"]) as copy:
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
