"""The book walk (SPEC §4, §5): what a copy order of `target_shares` would have filled
against one L2 book, under price protection, spread and depth guardrails. Pure: plain
integers in, a Walk out; no I/O, no clock.

Reading of SPEC §5 taken here (issue 4 may refine it):
- the price bound is on the running VWAP: BUY VWAP ≤ min(their + max_worse, mid +
  max_chase); SELL VWAP ≥ max(their − max_worse, mid − max_chase). A level beyond the
  bound may still be taken in part while the VWAP stays inside it;
- depth = notional of the levels priced inside the bound, which must be ≥
  min_depth_ratio × the target notional (at their price);
- a fill may be partial when allowed; filling nothing is NO_LIQUIDITY_WITHIN_BOUNDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.domain import money

Side = Literal["BUY", "SELL"]


@dataclass(frozen=True)
class Guards:
    max_worse_than_theirs: int = 10_000  # micros of price
    max_chase_vs_mid: int = 15_000
    max_spread: int = 20_000
    min_depth_ratio_bps: int = 12_500  # 1.25 ×
    allow_partial: bool = True


@dataclass(frozen=True)
class Walk:
    """The outcome: levels consumed as (price, shares), or the reasons it may not trade."""

    fills: tuple[tuple[int, int], ...] = ()
    reasons: tuple[str, ...] = ()
    mid: int | None = None
    bound: int | None = None
    depth_notional: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def shares(self) -> int:
        return sum(q for _, q in self.fills)

    @property
    def cost(self) -> int:
        """Σ price × shares, exact (micros²), so tiny fills do not round away."""
        return sum(p * q for p, q in self.fills)

    @property
    def notional(self) -> int:
        return money.div_round(self.cost, money.MICROS)

    @property
    def vwap(self) -> int | None:
        return money.div_round(self.cost, self.shares) if self.shares else None


def _take_within_bound(
    side: Side, price: int, available: int, cost: int, filled: int, bound: int, want: int
) -> int:
    """Shares of one level that keep the running VWAP inside the bound."""
    take = min(available, want)
    if (side == "BUY" and price <= bound) or (side == "SELL" and price >= bound):
        return take
    # BUY: (cost + p·q) / (filled + q) ≤ bound  ⇔  q ≤ (bound·filled − cost) / (p − bound)
    slack = bound * filled - cost if side == "BUY" else cost - bound * filled
    gap = abs(price - bound)
    return max(0, min(take, slack // gap))


def walk(
    side: Side,
    bids: tuple[tuple[int, int], ...],
    asks: tuple[tuple[int, int], ...],
    their_price: int,
    target_shares: int,
    guards: Guards,
) -> Walk:
    """Walks the side of the book a copy order takes (asks for a BUY, bids for a SELL),
    best level first (`bids` descending, `asks` ascending, as OrderBook holds them)."""
    levels = asks if side == "BUY" else bids
    if not bids or not asks or not levels:
        return Walk(reasons=("NO_BOOK",))
    best_bid, best_ask = bids[0][0], asks[0][0]
    mid = money.div_round(best_bid + best_ask, 2)
    reasons = []
    if best_ask - best_bid > guards.max_spread:
        reasons.append("SPREAD_TOO_WIDE")
    if side == "BUY":
        theirs, chase = their_price + guards.max_worse_than_theirs, mid + guards.max_chase_vs_mid
        bound = min(theirs, chase)
        if levels[0][0] > theirs:
            reasons.append("PRICE_WORSE_THAN_THEIRS")
        if levels[0][0] > chase:
            reasons.append("CHASE_VS_MID")
        inside = [(p, q) for p, q in levels if p <= bound]
    else:
        theirs, chase = their_price - guards.max_worse_than_theirs, mid - guards.max_chase_vs_mid
        bound = max(theirs, chase)
        if levels[0][0] < theirs:
            reasons.append("PRICE_WORSE_THAN_THEIRS")
        if levels[0][0] < chase:
            reasons.append("CHASE_VS_MID")
        inside = [(p, q) for p, q in levels if p >= bound]
    depth = sum(money.mul_micros(p, q) for p, q in inside)
    needed = money.mul_micros(
        money.mul_micros(their_price, target_shares), guards.min_depth_ratio_bps * 100
    )
    if not reasons and depth < needed:
        reasons.append("INSUFFICIENT_DEPTH")
    if reasons:
        return Walk(reasons=tuple(reasons), mid=mid, bound=bound, depth_notional=depth)
    fills: list[tuple[int, int]] = []
    cost = filled = 0
    for price, available in levels:
        want = target_shares - filled
        if want <= 0:
            break
        q = _take_within_bound(side, price, available, cost, filled, bound, want)
        if q <= 0:
            break
        fills.append((price, q))
        cost += price * q
        filled += q
    if not fills:
        return Walk(
            reasons=("NO_LIQUIDITY_WITHIN_BOUNDS",), mid=mid, bound=bound, depth_notional=depth
        )
    if filled < target_shares and not guards.allow_partial:
        return Walk(reasons=("INSUFFICIENT_DEPTH",), mid=mid, bound=bound, depth_notional=depth)
    return Walk(fills=tuple(fills), mid=mid, bound=bound, depth_notional=depth)
