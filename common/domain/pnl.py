"""PnL by average cost (SPEC §6), as a pure fold over ledger entries in id order.

Every entry moves cash, and the moved cash lands in exactly one of: the cost basis of an
asset (opening or adding to a position), realized PnL (closing part of one, fees, the
cash leg of a MERGE / SPLIT / REDEEM), or contributed capital (DEPOSIT, and the cost of
a SEED position, which moves no cash). So, exactly, to the micro:

    cash = contributed + realized − Σ cost
    equity = cash + Σ shares × mark
    unrealized = Σ (shares × mark − cost)      ⇒  realized + unrealized = equity − contributed

A reduction removes cost in proportion (average cost, rounded half-to-even); a trade
that flips a position closes the old side first. Legs that move shares without cash
(MERGE, REDEEM, SPLIT legs) close at zero proceeds or open at zero cost; their cash leg
is realized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.domain import money


@dataclass
class Position:
    shares: int = 0
    cost: int = 0
    condition_id: str | None = None
    last_price: int | None = None


@dataclass
class Book:
    """One portfolio's running state."""

    cash: int = 0
    contributed: int = 0
    realized: int = 0
    fees: int = 0
    positions: dict[str, Position] = field(default_factory=dict)

    def apply(self, e: dict[str, Any]) -> None:
        """Folds one ledger entry (a row with entry_type, asset_id, share_delta_micros,
        cash_delta_micros, price_micros, condition_id) into the state."""
        kind, cash, dq = e["entry_type"], e["cash_delta_micros"], e["share_delta_micros"]
        self.cash += cash
        asset = e["asset_id"]
        if kind == "DEPOSIT":
            self.contributed += cash
            return
        if kind == "FEE":
            self.realized += cash
            self.fees -= cash
            return
        if asset is None:  # the cash leg of a MERGE / SPLIT / REDEEM
            self.realized += cash
            return
        pos = self.positions.setdefault(asset, Position())
        if e.get("condition_id"):
            pos.condition_id = e["condition_id"]
        if e.get("price_micros") is not None and kind in ("TRADE_FILL", "SEED"):
            pos.last_price = e["price_micros"]
        if kind == "SEED":
            value = money.mul_micros(dq, e["price_micros"] or 0)
            pos.shares += dq
            pos.cost += value
            self.contributed += value
            return
        self.realized += trade(pos, dq, cash)

    def value(self, marks: dict[str, int]) -> tuple[int, int, int, int]:
        """Returns (equity, exposure, unrealized, open positions) at the given marks (an
        asset without a mark is valued at its last fill price, else at cost)."""
        equity, exposure, unrealized, open_positions = self.cash, 0, 0, 0
        for asset, pos in self.positions.items():
            if not pos.shares:
                continue
            mark = marks.get(asset, pos.last_price)
            v = pos.cost if mark is None else money.mul_micros(pos.shares, mark)
            equity += v
            exposure += abs(v)
            unrealized += v - pos.cost
            open_positions += 1
        return equity, exposure, unrealized, open_positions


def trade(pos: Position, dq: int, cash: int) -> int:
    """Moves a position by `dq` shares for `cash` (negative when paying); returns the PnL
    it realizes."""
    held = pos.shares
    if dq == 0:  # a cash-only correction: part of the cost while held, else realized
        if held:
            pos.cost -= cash
            return 0
        return cash
    if held == 0 or (held > 0) == (dq > 0):
        pos.shares += dq
        pos.cost -= cash
        return 0
    closing = min(abs(dq), abs(held))
    if closing == abs(dq):  # a pure reduction
        removed = money.div_round(pos.cost * closing, abs(held))
        pos.shares += dq
        pos.cost -= removed
        if pos.shares == 0:
            removed += pos.cost  # rounding leftovers leave with the last share
            pos.cost = 0
        return cash - removed
    cash_closing = money.div_round(cash * closing, abs(dq))  # a flip: close, then open
    realized = cash_closing - pos.cost
    pos.shares += dq
    pos.cost = -(cash - cash_closing)
    return realized
