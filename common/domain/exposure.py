"""Whose signal holds the global portfolio's shares (the "exposure by user" view), pure:
a user's buys add to their own holding; a user's sells come out of their own holding
first, then out of the other holders' in proportion to what each holds. So the holdings
of an asset always add up to the portfolio's shares and none is negative (a sell on one
user's signal of shares bought on another's no longer shows as negative exposure)."""

from __future__ import annotations

from collections.abc import Mapping


def _take(holdings: dict[int, int], amount: int) -> None:
    """Takes `amount` out of `holdings` in proportion to each (largest remainders get
    the leftover micros, ties to the lower user id)."""
    total = sum(holdings.values())
    if amount <= 0 or total <= 0:
        return
    amount = min(amount, total)
    shares = {u: h * amount // total for u, h in holdings.items()}
    left = amount - sum(shares.values())
    order = sorted(holdings, key=lambda u: (-(holdings[u] * amount % total), u))
    for u in order[:left]:
        shares[u] += 1
    for u, s in shares.items():
        holdings[u] -= s


def allocate(holdings: Mapping[int, int], deltas: Mapping[int, int]) -> dict[int, int]:
    """The holdings of one asset after `deltas` (user → net share change): buys first,
    then each seller's sale out of their own holding, the rest pro rata out of the
    others'. Negative holdings an older rule left are first netted against the others."""
    out = dict(holdings)
    debt = -sum(h for h in out.values() if h < 0)
    for u, h in out.items():
        if h < 0:
            out[u] = 0
    _take(out, debt)
    for u, d in deltas.items():
        if d > 0:
            out[u] = out.get(u, 0) + d
    for u, d in sorted(deltas.items()):
        if d >= 0:
            continue
        own = min(-d, out.get(u, 0))
        out[u] = out.get(u, 0) - own
        others = {v: h for v, h in out.items() if v != u}
        _take(others, -d - own)  # a long-only book never sells more than all hold
        out.update(others)
    return out
