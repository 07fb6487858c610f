"""The latency sweep's figures (SPEC §12), pure: what one (portfolio, delay) kept of
the copies decided at that delay, and the half-life of a leader's alpha.

At each ladder delay the same `decide` runs on the book as it was that long after the
leader's first fill. Each BUY/SELL decision is attributed as SPEC §10 does, at the
asset's mark now (X; its payout once resolved), so every delay is valued at the same
marks and only the book, and so the fills, differ:
    ideal = σ·T0·(X − P)        exec = σ·F·(X − V) − fee
- **PnL** at a delay = Σ exec (what the copies made, valued at X), plus, with exit
  overlays on, what their sales made against holding to X;
- **retention** = Σ exec / Σ ideal (`attribution.retention_ratio`: n/a unless Σ ideal
  > 0 and at least 10 attempts);
- **fill rate** = executed / attempts;
- **median slippage** = the median over the executed of σ·(V − P)/P in bps (against
  their price, as the league table's);
- **half-life** = the smallest delay at which retention falls to half its value at the
  smallest delay, linearly interpolated between delays; "> the last delay" when it
  never does; none when retention at the smallest delay is n/a or not positive.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from statistics import median_low

from common.domain import attribution, decide, money


@dataclass
class Point:
    """One portfolio at one delay."""

    delay_ms: int
    attempts: int = 0
    executed: int = 0
    attributed: int = 0  # the attempts valued at a mark X (an unmarked asset is not)
    ideal: int = 0  # Σ ideal, micros
    exec: int = 0  # Σ exec, micros (the PnL at X)
    fees: int = 0
    slippage_bps: list[int] = field(default_factory=list)  # one per executed BUY/SELL
    exits: int = 0  # exit overlays' sales executed (not copies: not in attempts)
    exit_pnl: int = 0  # their Σ exec: selling at V instead of holding to X (in `pnl`)

    def add_exit(self, d: decide.Decision, mark: int | None) -> None:
        """Counts an exit overlay's sale: in the PnL (−F·(X − V) − fee, what selling
        then made against holding to the mark X), never in attempts, fills or
        retention, which are the copies' (SPEC §10)."""
        if d.decision != "EXECUTE" or mark is None:
            return
        self.exits += 1
        self.exit_pnl += -money.mul_micros(d.filled_shares, mark - (d.vwap or 0)) - d.fee

    def add(self, d: decide.Decision, mark: int | None, a: attribution.Attempt) -> None:
        """Counts one copy decision; an unmarked asset (no X) counts in attempts only."""
        self.attempts += 1
        if d.decision == "EXECUTE":
            self.executed += 1
            self.fees += d.fee
            if a.vwap is not None and a.their_price > 0:
                self.slippage_bps.append(_bps(a.sigma * (a.vwap - a.their_price), a.their_price))
        if mark is not None and a.action in attribution.SCORED:
            t = attribution.attribute(a, mark)
            self.attributed += 1
            self.ideal += t.ideal
            self.exec += t.exec

    @property
    def retention(self) -> Decimal | None:
        return attribution.retention_ratio(self.attributed, self.ideal, self.exec)

    @property
    def fill_rate(self) -> Decimal | None:
        if not self.attempts:
            return None
        return (Decimal(self.executed) / self.attempts).quantize(Decimal("0.0001"))

    @property
    def median_slippage_bps(self) -> int | None:
        return median_low(self.slippage_bps) if self.slippage_bps else None

    def as_dict(self) -> dict[str, object]:
        r, f = self.retention, self.fill_rate
        return {
            "delay_ms": self.delay_ms,
            "attempts": self.attempts,
            "executed": self.executed,
            "attributed": self.attributed,
            "fill_rate": None if f is None else str(f),
            "pnl_micros": self.exec + self.exit_pnl,
            "exits": self.exits,
            "exit_pnl_micros": self.exit_pnl,
            "ideal_micros": self.ideal,
            "fees_micros": self.fees,
            "retention": None if r is None else str(r),
            "median_slippage_bps": self.median_slippage_bps,
        }


def _bps(num: int, den: int) -> int:
    return int((Decimal(num) * 10_000 / den).to_integral_value(ROUND_HALF_EVEN))


def attempt_of(d: decide.Decision) -> attribution.Attempt:
    """The attribution's view of a decision not stored (as `functions/score.py` builds
    it from a stored attempt)."""
    g = d.group
    assert d.decided_at is not None
    return attribution.Attempt(
        action=g.action,
        decision=d.decision,
        reasons=d.reasons,
        ideal_shares=d.ideal_shares,
        target_shares=d.target_shares,
        target_notional=d.target_notional,
        filled_shares=d.filled_shares,
        filled_notional=d.filled_notional,
        their_price=g.their_price or 0,
        vwap=d.vwap,
        mid=d.mid,
        best_bid=d.best_bid,
        best_ask=d.best_ask,
        depth=d.depth,
        fee=d.fee,
        decided_at=d.decided_at,
        first_fill_at=g.window_start,
    )


@dataclass(frozen=True)
class HalfLife:
    """`seconds` when retention halves within the sweep; `beyond_s` (the last delay)
    when it never does; both None when it cannot be told."""

    seconds: Decimal | None = None
    beyond_s: Decimal | None = None

    def label(self) -> str:
        if self.seconds is not None:
            return f"{self.seconds:g} s"
        if self.beyond_s is not None:
            return f"> {self.beyond_s:g} s"
        return "n/a"

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": None if self.seconds is None else str(self.seconds),
            "beyond_s": None if self.beyond_s is None else str(self.beyond_s),
            "label": self.label(),
        }


def half_life(points: list[tuple[int, Decimal | None]]) -> HalfLife:
    """The half-life of retention over (delay ms, retention) points: none when the
    smallest delay's retention is n/a or not positive; later delays whose retention is
    n/a are passed over (interpolated across); "> the last delay" if it never halves."""
    ordered = sorted(points, key=lambda p: p[0])
    if not ordered or ordered[0][1] is None or ordered[0][1] <= 0:
        return HalfLife()  # no base: retention at the smallest delay is n/a or no gain
    known = [(d, r) for d, r in ordered if r is not None]
    half = known[0][1] / 2
    for (d0, r0), (d1, r1) in itertools.pairwise(known):
        if r1 <= half:
            t = Decimal(d0) + (Decimal(d1 - d0) * (r0 - half) / (r0 - r1))
            return HalfLife(seconds=(t / 1000).quantize(Decimal("0.1"), ROUND_HALF_EVEN))
    return HalfLife(beyond_s=Decimal(ordered[-1][0]) / 1000)
