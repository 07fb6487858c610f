"""Order books as a pure function of (market, outcome, time): O(1), no stored history.

Internally a side is a best-first list of (price_micros, size_micros). The Yes book is
generated; the No book is its complement (No bids = 1 − Yes asks, same sizes).
"""

import math
import random
from typing import Any

from sandbox import rand

Level = tuple[int, int]
Side = list[Level]
ONE = 1_000_000
_CACHE: dict[tuple[int, int], tuple[Side, Side]] = {}
_DRIFT_MS = 1_800_000  # the last 30 min before close lean towards the winner


def yes_mid(market: dict[str, Any], t_ms: int) -> float:
    """Returns the smooth Yes mid (0..1) of the market at scenario offset t_ms."""
    params = market["book"]
    sec = t_ms // 1000
    x = params["x0_milli"] / 1000
    for amp, period, phase in params["waves"]:
        x += amp / 1000 * math.sin(2 * math.pi * sec / period + phase / 1000)
    x += (rand.derive(params["seed"], "noise", sec) / 2**64 - 0.5) * 0.06
    mid = 1 / (1 + math.exp(-x))
    lean_from = market["end_ms"] - _DRIFT_MS
    if t_ms > lean_from:
        weight = min(1.0, (t_ms - lean_from) / _DRIFT_MS)
        target = 0.97 if market["winner"] == 0 else 0.03
        mid = mid * (1 - weight) + target * weight
    return min(0.98, max(0.02, mid))


def _levels(r: random.Random, best: int, step_sign: int, tick: int, thin: bool) -> Side:
    out: Side = []
    price = best
    max_step = 3 if tick >= 10_000 else 10
    for _ in range(r.randint(3, 12)):
        if not tick <= price <= ONE - tick:
            break
        if thin:
            size = r.randint(500, 4_000) * 10_000
        else:
            size = int(r.lognormvariate(5.0, 1.1) * 100) * 10_000 + 5 * ONE
        out.append((price, size))
        price += step_sign * tick * r.randint(1, max_step)
    return out


def yes_book(market: dict[str, Any], t_ms: int) -> tuple[Side, Side]:
    """Returns (bids, asks) of the Yes token, best first, for the second containing t_ms."""
    sec = t_ms // 1000
    key = (market["book"]["seed"], sec)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    tick = market["tick_micros"]
    r = rand.rng(market["book"]["seed"], "levels", sec)
    mid = round(yes_mid(market, t_ms) * ONE)
    roll = r.random()
    if roll < 0.9:
        spread = tick * r.randint(1, 3) if tick >= 10_000 else tick * r.randint(2, 25)
    else:
        spread = r.randint(3, 8) * 10_000  # wide: more than 2 cents
    bid = max(tick, (mid - spread // 2) // tick * tick)
    ask = min(ONE - tick, bid + max(tick, spread // tick * tick))
    if ask <= bid:
        bid = ask - tick
    thin = r.random() < 0.06
    book = (_levels(r, bid, -1, tick, thin), _levels(r, ask, 1, tick, thin))
    if len(_CACHE) > 200_000:
        _CACHE.clear()
    _CACHE[key] = book
    return book


def book(market: dict[str, Any], outcome: int, t_ms: int) -> tuple[Side, Side]:
    """Returns (bids, asks) best first for outcome 0 (Yes) or 1 (No)."""
    bids, asks = yes_book(market, t_ms)
    if outcome == 0:
        return bids, asks
    return [(ONE - p, s) for p, s in asks], [(ONE - p, s) for p, s in bids]


def mid_micros(market: dict[str, Any], outcome: int, t_ms: int) -> int:
    """Returns (best bid + best ask) / 2 in micros, rounded half up to a micro."""
    bids, asks = book(market, outcome, t_ms)
    return (bids[0][0] + asks[0][0] + 1) // 2
