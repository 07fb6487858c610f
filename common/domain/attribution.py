"""Where the creator's alpha is lost (SPEC §10), as pure functions of one copy attempt's
stored fields and the asset's mark X: the attribution of a BUY or SELL attempt, and the
execution score of an EXECUTE. No I/O: `functions/score.py` reads and writes the rows.

With σ = +1 for a BUY, −1 for a SELL, P their price (the group's VWAP), T0 the target
shares before clamps, caps and cash, T after them, F filled, V our VWAP, M the mid at
decision and `fee` ours:
    ideal = σ·T0·(X − P)        exec = σ·F·(X − V) − fee
    ideal − exec = sizing + skip + unfilled + latency + slippage + fee
    sizing = σ(T0 − T)(X − P)   skip = σ·T·(X − P) on a SKIP (its first reason)
    unfilled = σ(T − F)(X − P) on an EXECUTE
    latency = σ·F·(M − P)       slippage = σ·F·(V − M)
Each product is rounded half-to-even to the micro, so the identity holds to within one
micro per term. Positive terms are what was lost against the ideal; negative ones gained.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from common.domain import money

SCORED = ("BUY", "SELL")  # MERGE / SPLIT are counted, not scored
VERSION = "1.0.0"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Attempt:
    """What attribution and the score read of one `copy_attempt` (and its group)."""

    action: str  # BUY / SELL
    decision: str  # EXECUTE / SKIP
    reasons: tuple[str, ...]
    ideal_shares: int  # T0
    target_shares: int  # as stored (0 on a SKIP judged before sizing)
    target_notional: int
    filled_shares: int  # F
    filled_notional: int
    their_price: int  # P
    vwap: int | None  # V
    mid: int | None  # M
    best_bid: int | None
    best_ask: int | None
    depth: int | None  # notional inside the price band at decision
    fee: int
    decided_at: datetime
    first_fill_at: datetime  # the group's first leader fill (window start)

    @property
    def sigma(self) -> int:
        return 1 if self.action == "BUY" else -1

    @property
    def planned_shares(self) -> int:
        """T: the target after clamps, caps and cash. A SKIP judged before its size was
        worked out stores none: an open's is its clamped notional at their price, an
        exit's is T0 (an exit is never clamped)."""
        if self.target_shares > 0:
            return self.target_shares
        if self.action == "BUY" and self.target_notional > 0:
            return money.div_micros_floor(self.target_notional, max(1, self.their_price))
        return self.ideal_shares if self.action == "SELL" else 0


@dataclass(frozen=True)
class Terms:
    mark: int
    ideal: int
    exec: int
    sizing: int
    skip: int
    skip_reason: str | None
    unfilled: int
    latency: int | None  # None: no mid at decision (then slippage holds V − P whole)
    slippage: int | None
    fee: int

    @property
    def lost(self) -> int:
        """ideal − exec, as the sum of the terms."""
        return (
            self.sizing
            + self.skip
            + self.unfilled
            + (self.latency or 0)
            + (self.slippage or 0)
            + self.fee
        )


def _p(sigma: int, shares: int, price_delta: int) -> int:
    return money.mul_micros(sigma * shares, price_delta)


def attribute(a: Attempt, mark: int) -> Terms:
    """The attribution of attempt `a` at mark X = `mark` (SPEC §10)."""
    s, x, p = a.sigma, mark, a.their_price
    t0, t = a.ideal_shares, a.planned_shares
    executed = a.decision == "EXECUTE"
    f = a.filled_shares if executed else 0
    v = a.vwap if a.vwap is not None else p
    fee = a.fee if executed else 0
    latency: int | None
    slippage: int | None
    if f and a.mid is not None:
        latency, slippage = _p(s, f, a.mid - p), _p(s, f, v - a.mid)
    elif f:
        latency, slippage = None, _p(s, f, v - p)
    else:
        latency, slippage = 0, 0
    return Terms(
        mark=x,
        ideal=_p(s, t0, x - p),
        exec=_p(s, f, x - v) - fee,
        sizing=_p(s, t0 - t, x - p),
        skip=0 if executed else _p(s, t, x - p),
        skip_reason=None if executed else (a.reasons[0] if a.reasons else None),
        unfilled=_p(s, t - f, x - p) if executed else 0,
        latency=latency,
        slippage=slippage,
        fee=fee,
    )


@dataclass(frozen=True)
class Score:
    version: str
    timing: Decimal
    financial: Decimal
    cost: Decimal
    congestion: Decimal

    @property
    def total(self) -> Decimal:
        return (self.timing + self.financial + self.cost + self.congestion).quantize(
            CENT, ROUND_HALF_EVEN
        )


def hundredths(points: Decimal) -> int:
    """Points to the cent as an integer (how `execution_score` stores them)."""
    return int(points * 100)


def _part(weight: int, value: Decimal) -> Decimal:
    """weight × value, clamped to [0, weight], to the cent."""
    got = Decimal(weight) * value
    return min(Decimal(weight), max(Decimal(0), got)).quantize(CENT, ROUND_HALF_EVEN)


def score(a: Attempt) -> Score | None:
    """Execution score v1.0.0 of an EXECUTE BUY/SELL attempt that filled (None else):
    - Timing 40 × (65 − d)/60, d = decision − the group's first leader fill, seconds;
    - Financial 35 × (1 − s/200), s = σ(V − P)/P in bps (better than theirs: full);
    - Cost 15 × (1 − c/100), c = fee/(F·V) + (ask − bid)/(2M) in bps;
    - Congestion 10 × r × (1 − u), r = F/T, u = F·V / the notional inside the band.
    Each part clamped to [0, its weight]; the total to 0.01."""
    if a.action not in SCORED or a.decision != "EXECUTE" or a.filled_shares <= 0:
        return None
    d = Decimal((a.decided_at - a.first_fill_at).total_seconds())
    timing = _part(40, (Decimal(65) - d) / 60)
    p = Decimal(max(1, a.their_price))
    v = Decimal(a.vwap if a.vwap is not None else a.their_price)
    s = Decimal(a.sigma) * (v - p) / p * 10_000
    financial = _part(35, 1 - s / 200)
    spread = Decimal(0)
    if a.best_bid is not None and a.best_ask is not None and a.mid:
        spread = Decimal(a.best_ask - a.best_bid) / (2 * Decimal(a.mid))
    fee = Decimal(a.fee) / Decimal(a.filled_notional) if a.filled_notional else Decimal(0)
    cost = _part(15, 1 - (fee + spread) * 10_000 / 100)
    t = a.planned_shares
    r = min(Decimal(1), Decimal(a.filled_shares) / Decimal(t)) if t else Decimal(1)
    u = Decimal(1)
    if a.depth:
        u = min(Decimal(1), Decimal(a.filled_notional) / Decimal(a.depth))
    congestion = _part(10, r * (1 - u))
    return Score(VERSION, timing, financial, cost, congestion)


# Retention over a window (SPEC §10): Σ exec / Σ ideal over the attempts decided in it.

MIN_ATTEMPTS = 10  # fewer attributed attempts: no ratio ("n/a", with both sums)


def retention_ratio(n: int, ideal: int, exec_: int) -> Decimal | None:
    """Σ exec / Σ ideal over n attributed attempts, when Σ ideal > 0 and n ≥
    MIN_ATTEMPTS; None otherwise ("n/a", shown with both sums)."""
    if ideal <= 0 or n < MIN_ATTEMPTS:
        return None
    return (Decimal(exec_) / Decimal(ideal)).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class Retention:
    """The attribution summed over one portfolio's BUY/SELL attempts decided in a window
    (`attempts`: all of them; `n`: those attributed, at the same marks)."""

    window: str  # "24h" / "7d" / "30d"
    attempts: int
    n: int
    ideal: int
    exec: int
    sizing: int
    skips: tuple[tuple[str, int], ...]  # by first reason code, largest loss first
    unfilled: int
    latency: int
    slippage: int
    fee: int

    @property
    def ratio(self) -> Decimal | None:
        return retention_ratio(self.n, self.ideal, self.exec)

    @property
    def waiting(self) -> int:
        """Attempts not attributed yet (their asset has no fresh mark)."""
        return self.attempts - self.n

    def steps(self) -> list[tuple[str, int]]:
        """The waterfall from ideal to exec: each loss as a negative step (a gain is a
        positive one), skips by reason; the steps and the ends add up to the micro
        but for each term's own rounding."""
        out = [("sizing", -self.sizing)]
        out += [(f"skip {reason}", -amount) for reason, amount in self.skips]
        out += [
            ("unfilled", -self.unfilled),
            ("latency", -self.latency),
            ("slippage", -self.slippage),
            ("fees", -self.fee),
        ]
        return out
