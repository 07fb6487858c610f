"""Real copies (SPEC §10), pure: pairing the admin's real copy fills with the leader's
groups, and the attribution and execution score of a pair, by the same formulas as a
simulated attempt (common/domain/attribution.py) with T0 = T = F.

Pairing: a real fill pairs with the leader's group of the same asset and side whose
first fill precedes it (or is at the same instant), nearest in time, within
PAIR_WITHIN (15 min); several fills may pair with one group; the rest stay unpaired.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.domain import attribution, book_walk, money

PAIR_WITHIN = timedelta(minutes=15)
BOOK_WITHIN = timedelta(seconds=30)  # M and the spread: the stored book nearest the fill


@dataclass(frozen=True)
class Fill:
    id: int
    asset_id: str
    side: str  # BUY / SELL
    at: datetime


@dataclass(frozen=True)
class Group:
    id: int
    asset_id: str
    side: str
    first_fill_at: datetime  # the group's window start (the leader's first fill)


def pair(
    fills: Iterable[Fill], groups: Iterable[Group], within: timedelta = PAIR_WITHIN
) -> dict[int, int | None]:
    """Returns each fill's group id (None: unpaired): the group of its asset and side
    whose first fill is at or before the fill and nearest to it, no more than `within`
    before; ties go to the lower group id."""
    by_key: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_key[(g.asset_id, g.side)].append(g)
    out: dict[int, int | None] = {}
    for f in fills:
        best: Group | None = None
        for g in by_key.get((f.asset_id, f.side), ()):
            if not (f.at - within <= g.first_fill_at <= f.at):
                continue
            if best is None or (g.first_fill_at, -g.id) > (best.first_fill_at, -best.id):
                best = g
        out[f.id] = best.id if best is not None else None
    return out


@dataclass(frozen=True)
class Book:
    """What a pair reads of the stored book nearest its fill (None fields: none)."""

    mid: int | None
    best_bid: int | None
    best_ask: int | None
    depth: int | None  # notional inside the leader's price band (the copy's guardrails)


NO_BOOK = Book(None, None, None, None)


def book_at(
    side: str,
    bids: tuple[tuple[int, int], ...],
    asks: tuple[tuple[int, int], ...],
    their_price: int,
    shares: int,
    guards: book_walk.Guards,
) -> Book:
    """The mid, touch and depth in band of a stored book for a real fill, as the copy
    engine measures them for a simulated attempt (`book_walk.walk`)."""
    if not bids or not asks:
        return NO_BOOK
    walk = book_walk.walk(
        "BUY" if side == "BUY" else "SELL", bids, asks, their_price, shares, guards
    )
    return Book(walk.mid, bids[0][0], asks[0][0], walk.depth_notional)


def attempt(
    side: str,
    price: int,
    shares: int,
    fee: int,
    at: datetime,
    their_price: int,
    first_fill_at: datetime,
    book: Book,
) -> attribution.Attempt:
    """A real fill as the attempt it stands for: EXECUTE, T0 = T = F = its shares, V its
    price, M and the touch from `book`."""
    return attribution.Attempt(
        action=side,
        decision="EXECUTE",
        reasons=(),
        ideal_shares=shares,
        target_shares=shares,
        target_notional=money.mul_micros(shares, price),
        filled_shares=shares,
        filled_notional=money.mul_micros(shares, price),
        their_price=their_price,
        vwap=price,
        mid=book.mid,
        best_bid=book.best_bid,
        best_ask=book.best_ask,
        depth=book.depth,
        fee=fee,
        decided_at=at,
        first_fill_at=first_fill_at,
    )


@dataclass(frozen=True)
class Score:
    """A real pair's score: cost and congestion need the book (None: unknown), and so
    does the total."""

    version: str
    timing: int  # hundredths of a point
    financial: int
    cost: int | None
    congestion: int | None
    total: int | None


def score(a: attribution.Attempt) -> Score | None:
    """The execution score of a real pair (None when nothing filled)."""
    s = attribution.score(a)
    if s is None:
        return None
    known = a.mid is not None  # else the spread and depth are unknown, not zero
    h = attribution.hundredths
    return Score(
        version=s.version,
        timing=h(s.timing),
        financial=h(s.financial),
        cost=h(s.cost) if known else None,
        congestion=h(s.congestion) if known else None,
        total=h(s.total) if known else None,
    )
