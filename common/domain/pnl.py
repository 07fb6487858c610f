"""PnL by average cost (SPEC §6): the arithmetic of the portfolio fold
(`portfolio.Portfolio.apply`, over ledger entries in id order).

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

from dataclasses import dataclass
from datetime import datetime

from common.domain import money


@dataclass(slots=True)
class Position:
    shares: int = 0
    cost: int = 0
    condition_id: str | None = None
    last_price: int | None = None
    realized: int = 0  # the PnL this asset has realized (all its lifetimes)
    closed_by: str | None = None  # the entry type that last closed it (TRADE_FILL, MERGE, …)
    closed_at: datetime | None = None  # and that entry's effective time
    opened_at: datetime | None = None  # when it last opened from zero (or flipped side)


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
