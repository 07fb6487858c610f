"""Portfolios — shadow, executable per user, global — as one fold of ledger entries
(`Portfolio.apply`), their marks, and the reference equities of the circuit breakers.
The copy engine loads an executable portfolio by folding its ledger (the truth,
`store.portfolios`), then moves it in memory by each decision's entries, so a batch and
a one-at-a-time run decide alike; the snapshot job carries the same fold forward from
its saved state; a replay and the what-if fold from the range's start.

Equity = cash + Σ shares × mark (SPEC §6). A mark is the newest of the stored
`market_price_snapshot` mid and the mid of a stored decision book, at or before the
time asked for; an asset with neither is marked at our last fill price for it, and one
never filled (a SPLIT leg) at its cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from common.domain import money, pnl

Key = tuple[str, int | None]  # (portfolio scope, followed user or None for global)


def deposit_ref(user_id: int | None) -> str:
    return "deposit" if user_id is None else f"deposit:user:{user_id}"


class Movement(Protocol):
    """What the fold reads of a ledger entry: `ledger.Entry` (about to be written) and
    `records.LedgerEntry` (stored) both are one."""

    @property
    def entry_type(self) -> str: ...
    @property
    def asset_id(self) -> str | None: ...
    @property
    def condition_id(self) -> str | None: ...
    @property
    def share_delta_micros(self) -> int: ...
    @property
    def cash_delta_micros(self) -> int: ...
    @property
    def price_micros(self) -> int | None: ...
    @property
    def effective_time(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Valuation:
    """A portfolio at a set of marks."""

    equity: int
    exposure: int  # Σ |shares × mark|
    unrealized: int  # Σ (shares × mark − cost)
    open_positions: int
    market_exposure: int = 0  # exposure to the one market asked for


@dataclass
class Portfolio:
    """One portfolio as the fold of its ledger entries in id order (`apply`): cash,
    contributed capital, realized PnL and fees, and per asset the shares, their cost at
    average cost, the market and the last fill price (kept after a position closes: it
    marks the asset if it reopens). The global portfolio also keeps, per followed user,
    the shares copied from them. The copy engine, a replay, the what-if and the snapshot
    job all move portfolios by this one fold, and value them by `value`."""

    scope: str
    user_id: int | None
    starting_cash: int = 0
    cash: int = 0
    contributed: int = 0
    realized: int = 0
    fees: int = 0
    positions: dict[str, pnl.Position] = field(default_factory=dict)  # open (shares ≠ 0)
    closed: dict[str, pnl.Position] = field(default_factory=dict)  # shares 0, kept for prices
    by_user: dict[int, dict[str, int]] = field(default_factory=dict)  # global only
    funded: bool = False  # a DEPOSIT is in the ledger
    # The share legs of a SPLIT / MERGE / REDEEM seen before the event's cash leg.
    legs: list[Leg] = field(default_factory=list)
    # the effective time of the entry being folded (transient: not part of its state)
    at: datetime | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> Key:
        return (self.scope, self.user_id)

    @property
    def shares(self) -> dict[str, int]:
        """The shares of every asset held (long or short)."""
        return {a: pos.shares for a, pos in self.positions.items()}

    def position(self, asset_id: str) -> pnl.Position | None:
        """The asset's position, open or closed (None if never held)."""
        return self.positions.get(asset_id) or self.closed.get(asset_id)

    def put(self, asset_id: str, pos: pnl.Position) -> None:
        """Files a position read from saved state as open or closed."""
        (self.positions if pos.shares else self.closed)[asset_id] = pos
        (self.closed if pos.shares else self.positions).pop(asset_id, None)

    def apply(self, e: Movement, copied_from: int | None = None) -> None:
        """Folds one ledger entry into the state (SPEC §6, `pnl`). `copied_from` is the
        followed user a global portfolio's copy came from (its attribution).

        The share legs of a SPLIT / MERGE / REDEEM move no cash; its cash leg (no asset)
        comes right after them and is allocated across them in proportion to shares ×
        the leg's price (the outcomes' marks for a SPLIT / MERGE, the payout for a
        REDEEM), equally per share when a leg has no price, the remainder to the last:
        each leg then trades at its part. So a SPLIT opens every outcome at a cost that
        sums to its collateral and realizes nothing, and a MERGE or REDEEM closes each
        leg at its proceeds against its average cost."""
        kind, cash, dq = e.entry_type, e.cash_delta_micros, e.share_delta_micros
        asset = e.asset_id
        if kind in LEGGED and not cash and asset is not None:
            self.legs.append(Leg(asset, e.condition_id, dq, e.price_micros, copied_from, kind))
            self.at = e.effective_time
            return
        if self.legs and not (kind in LEGGED and asset is None):
            self.flush_legs()  # never written so: legs without their cash leg
        self.at = e.effective_time
        self.cash += cash
        if kind in LEGGED and asset is None:
            self._allocate(cash, kind)
            return
        if kind == "DEPOSIT":
            self.contributed += cash
            self.starting_cash = (self.starting_cash if self.funded else 0) + cash
            self.funded = True
            return
        if kind == "FEE":
            self.realized += cash
            self.fees -= cash
            return
        if asset is None:  # cash with no asset and no legs: realized as it comes
            self.realized += cash
            return
        price = e.price_micros if kind in ("TRADE_FILL", "SEED") else None
        self._move(asset, e.condition_id, dq, cash, price, copied_from, kind)

    def _move(
        self,
        asset: str,
        condition_id: str | None,
        dq: int,
        cash: int,
        price: int | None,
        copied_from: int | None,
        kind: str,
    ) -> None:
        """Moves one asset by `dq` shares for `cash`; the PnL it realizes is also kept on
        the position, and `kind` (the entry type) is what closed it when it closes."""
        pos = self.positions.get(asset)
        if pos is None:
            pos = self.closed.pop(asset, None) or pnl.Position()
            self.positions[asset] = pos
        if condition_id:
            pos.condition_id = condition_id
        if price is not None:
            pos.last_price = price
        if dq and copied_from is not None and self.scope == "EXEC_GLOBAL":
            _add(self.by_user.setdefault(copied_from, {}), asset, dq)
        realized, before = 0, pos.shares
        if kind == "SEED":
            value = money.mul_micros(dq, price or 0)
            pos.shares += dq
            pos.cost += value
            self.contributed += value
        else:
            realized = pnl.trade(pos, dq, cash)
        if pos.shares and (before == 0 or (before > 0) != (pos.shares > 0)):
            pos.opened_at = self.at  # the exit overlays' holding time starts here
        if not pos.shares:  # closed: any cost left leaves with the last share, realized
            realized -= pos.cost
            pos.cost = 0
            pos.closed_by, pos.closed_at = kind, self.at
            self.closed[asset] = self.positions.pop(asset)
        self.realized += realized
        pos.realized += realized

    def _allocate(self, cash: int, kind: str = "") -> None:
        """Moves the pending legs by their parts of the event's cash (see `apply`)."""
        legs, self.legs = self.legs, []
        if not legs:
            self.realized += cash
            return
        if kind == "CONVERSION":
            self._convert(legs, cash)
            return
        weights = [abs(leg.dq) for leg in legs]
        if all(leg.price is not None for leg in legs):
            priced = [w * (leg.price or 0) for w, leg in zip(weights, legs, strict=True)]
            if sum(priced):
                weights = priced
        for leg, part in zip(legs, allocate(cash, weights), strict=True):
            self._move(leg.asset, leg.condition_id, leg.dq, part, None, leg.copied_from, kind)

    def _convert(self, legs: list[Leg], cash: int) -> None:
        """A neg-risk CONVERSION (NegRiskAdapter.convertPositions): NO legs leave, YES
        legs arrive, and `cash` of collateral comes back. The NO shares leave at their
        average cost, so they realize nothing; the YES legs open at the cost that left
        less the collateral, split by shares (the remainder to the last), as Polymarket's
        own PnL subgraph does. With no YES leg (every question converted) the NO legs
        close at the collateral instead, realizing the difference."""
        outs = [leg for leg in legs if leg.dq < 0]
        ins = [leg for leg in legs if leg.dq > 0]
        if not ins:
            for leg, part in zip(outs, allocate(cash, [-leg.dq for leg in outs]), strict=True):
                self._move(
                    leg.asset, leg.condition_id, leg.dq, part, None, leg.copied_from, "CONVERSION"
                )
            return
        removed = 0
        for leg in outs:
            part = self._average_cost(leg.asset, -leg.dq)
            removed += part
            self._move(
                leg.asset, leg.condition_id, leg.dq, part, None, leg.copied_from, "CONVERSION"
            )
        parts = allocate(cash - removed, [leg.dq for leg in ins])
        for leg, part in zip(ins, parts, strict=True):
            self._move(
                leg.asset, leg.condition_id, leg.dq, part, None, leg.copied_from, "CONVERSION"
            )

    def _average_cost(self, asset: str, shares: int) -> int:
        """The cost `shares` of a long position take with them (0 if none is held)."""
        pos = self.positions.get(asset)
        if pos is None or pos.shares <= 0:
            return 0
        closing = min(shares, pos.shares)
        if closing == pos.shares:
            return pos.cost
        return money.div_round(pos.cost * closing, pos.shares)

    def flush_legs(self) -> None:
        """Moves legs still waiting for a cash leg at no cash (a cut never splits an
        event's entries: they are written in one transaction)."""
        legs, self.legs = self.legs, []
        for leg in legs:
            self._move(leg.asset, leg.condition_id, leg.dq, 0, None, leg.copied_from, leg.kind)

    def held(self, asset_id: str) -> int:
        pos = self.positions.get(asset_id)
        return max(0, pos.shares) if pos is not None else 0

    def mark(self, asset_id: str, marks: Marks) -> int | None:
        """The asset's mark: the newest stored mid, else our last fill price (None
        without either: the position is then valued at its cost)."""
        mark = marks.get(asset_id)
        if mark is not None:
            return mark
        pos = self.position(asset_id)
        return None if pos is None else pos.last_price

    def value(self, marks: Marks, condition_id: str | None = None) -> Valuation:
        """Values every open position by `valued`, in one pass."""
        equity, exposure, unrealized, open_positions, market = self.cash, 0, 0, 0, 0
        for asset, pos in self.positions.items():
            v, _ = valued(pos, marks.get(asset))
            equity += v
            exposure += abs(v)
            unrealized += v - pos.cost
            open_positions += 1
            if condition_id is not None and pos.condition_id == condition_id:
                market += abs(v)
        return Valuation(equity, exposure, unrealized, open_positions, market)

    def totals(self, marks: Marks, condition_id: str | None = None) -> tuple[int, int, int]:
        """Returns (equity, exposure, exposure to `condition_id`)."""
        v = self.value(marks, condition_id)
        return v.equity, v.exposure, v.market_exposure

    def equity(self, marks: Marks) -> int:
        return self.value(marks).equity

    def exposure(self, marks: Marks) -> int:
        return self.value(marks).exposure

    def market_exposure(self, condition_id: str | None, marks: Marks) -> int:
        return self.value(marks, condition_id).market_exposure

    def user_exposure(self, user_id: int, marks: Marks) -> int:
        """Global portfolio: the marked value of what was copied from this user (a user
        whose copies net short an asset another user bought counts zero there)."""
        total = 0
        for asset, n in self.by_user.get(user_id, {}).items():
            if n <= 0:
                continue
            mark = self.mark(asset, marks)
            if mark is not None:
                total += money.mul_micros(n, mark)
            elif (pos := self.positions.get(asset)) is not None and pos.shares:
                total += money.div_round(pos.cost * n, pos.shares)  # at cost, as `value`
        return total


def valued(pos: pnl.Position, mark: int | None) -> tuple[int, int | None]:
    """The one valuation rule of a position (SPEC §6), for the fold and every page: its
    shares at the asset's mark (the newest stored mid), else at our last fill price for
    it, else at its cost (a SPLIT leg never filled). Returns (value, price used: None
    when at cost)."""
    price = pos.last_price if mark is None else mark
    if price is None:
        return pos.cost, None
    return money.mul_micros(pos.shares, price), price


LEGGED = ("SPLIT", "MERGE", "REDEEM", "CONVERSION")


@dataclass(frozen=True, slots=True)
class Leg:
    asset: str
    condition_id: str | None
    dq: int
    price: int | None
    copied_from: int | None
    kind: str = ""  # its entry type (SPLIT, MERGE, REDEEM, CONVERSION)


def allocate(total: int, weights: list[int]) -> list[int]:
    """Splits `total` in proportion to non-negative `weights` (equally when they sum to
    zero), each part rounded toward zero, the remainder to the last: the parts sum to
    `total`."""
    if not weights:
        return []
    if not sum(weights):
        weights = [1] * len(weights)
    whole, sign = sum(weights), -1 if total < 0 else 1
    parts = [sign * (abs(total) * w // whole) for w in weights[:-1]]
    return [*parts, total - sum(parts)]


def _add(book: dict[str, int], key: str, delta: int) -> None:
    n = book.get(key, 0) + delta
    if n:
        book[key] = n
    else:
        book.pop(key, None)


class Marks:
    """Newest mid per asset, as of the time the caller has reached."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[datetime, int, int]] = {}

    def get(self, asset_id: str) -> int | None:
        hit = self._latest.get(asset_id)
        return None if hit is None else hit[2]

    def observe(self, asset_id: str, at: datetime, mid: int | None, order: int = 0) -> None:
        if mid is None:
            return
        hit = self._latest.get(asset_id)
        if hit is None or (at, order) >= hit[:2]:
            self._latest[asset_id] = (at, order, mid)

    def merge(self, other: Marks) -> None:
        for asset, (at, order, mid) in other._latest.items():
            self.observe(asset, at, mid, order)


@dataclass(frozen=True)
class BreakerRefs:
    """Equities the circuit breakers compare against: at the start of the UTC day and of
    the ISO week, and the peak so far."""

    day_start: int
    week_start: int
    peak: int


def day_start(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def week_start(t: datetime) -> datetime:
    return day_start(t) - timedelta(days=t.weekday())


def held_assets(portfolios: Iterable[Portfolio]) -> set[str]:
    return {a for p in portfolios for a in p.positions}
