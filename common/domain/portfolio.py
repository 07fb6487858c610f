"""The executable portfolios as the copy engine sees them: cash, shares per asset, the
shares the global portfolio copied from each user, marks, and the reference equities of
the circuit breakers. Loaded from the ledger (the truth), then kept in memory while a
batch of decisions is made, so a batch and a one-at-a-time run decide alike.

Equity = cash + Σ shares × mark (SPEC §6). A mark is the newest of the stored
`market_price_snapshot` mid and the mid of a stored decision book, at or before the
time asked for; an asset with neither is marked at our last fill price for it. Loading
them from the database is `store.portfolios`'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.domain import money

Key = tuple[str, int | None]  # (portfolio scope, followed user or None for global)


def deposit_ref(user_id: int | None) -> str:
    return "deposit" if user_id is None else f"deposit:user:{user_id}"


@dataclass
class Portfolio:
    scope: str
    user_id: int | None
    starting_cash: int
    cash: int = 0
    shares: dict[str, int] = field(default_factory=dict)
    market_of: dict[str, str] = field(default_factory=dict)
    last_price: dict[str, int] = field(default_factory=dict)
    by_user: dict[int, dict[str, int]] = field(default_factory=dict)  # global only
    funded: bool = False

    @property
    def key(self) -> Key:
        return (self.scope, self.user_id)

    def held(self, asset_id: str) -> int:
        return max(0, self.shares.get(asset_id, 0))

    def mark(self, asset_id: str, marks: Marks) -> int:
        """The asset's mark: the newest stored mid, else our last fill price."""
        mark = marks.get(asset_id)
        return self.last_price.get(asset_id, 0) if mark is None else mark

    def value(self, asset_id: str, marks: Marks) -> int:
        """Returns the marked value of the position in one asset."""
        n = self.shares.get(asset_id, 0)
        return money.mul_micros(n, self.mark(asset_id, marks)) if n else 0

    def totals(self, marks: Marks, condition_id: str | None = None) -> tuple[int, int, int]:
        """Returns (equity, exposure, exposure to `condition_id`) in one pass."""
        equity, exposure, market = self.cash, 0, 0
        for asset, n in self.shares.items():
            v = money.mul_micros(n, self.mark(asset, marks))
            equity += v
            exposure += abs(v)
            if condition_id is not None and self.market_of.get(asset) == condition_id:
                market += abs(v)
        return equity, exposure, market

    def equity(self, marks: Marks) -> int:
        return self.totals(marks)[0]

    def exposure(self, marks: Marks) -> int:
        return self.totals(marks)[1]

    def market_exposure(self, condition_id: str | None, marks: Marks) -> int:
        return self.totals(marks, condition_id)[2]

    def user_exposure(self, user_id: int, marks: Marks) -> int:
        """Global portfolio: the marked value of what was copied from this user (a user
        whose copies net short an asset another user bought counts zero there)."""
        return sum(
            money.mul_micros(n, self.mark(asset, marks))
            for asset, n in self.by_user.get(user_id, {}).items()
            if n > 0
        )

    def move(self, asset_id: str, condition_id: str | None, shares: int, user_id: int) -> None:
        """Applies a share change (and its attribution in the global portfolio); closed
        positions are dropped so the hot loops see only what is held."""
        _add(self.shares, asset_id, shares)
        if condition_id is not None:
            self.market_of[asset_id] = condition_id
        if self.scope == "EXEC_GLOBAL":
            _add(self.by_user.setdefault(user_id, {}), asset_id, shares)


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


def held_assets(portfolios: list[Portfolio]) -> set[str]:
    return {a for p in portfolios for a, n in p.shares.items() if n}
