"""Builds CLOB matches (one taker order against one or more maker orders) from books."""

import random
from typing import Any

from sandbox import books, money, rand

CENT_SHARE = 10_000  # sizes are generated in 0.01-share steps


def _order(r: random.Random, wallet: str, side: str, price: int, shares: int) -> dict[str, Any]:
    return {
        "hash": rand.hex_bytes(r, 32),
        "wallet": wallet,
        "side": side,
        "price_micros": price,
        "shares": shares,
        "collateral": money.mul(shares, price),
        "fee": 0,
    }


def _taker_total(
    r: random.Random, wallet: str, side: str, makers: list[dict[str, Any]], rate_bps: int
) -> dict[str, Any]:
    shares = sum(m["shares"] for m in makers)
    collateral = sum(m["collateral"] for m in makers)
    fee = sum(money.taker_fee(m["shares"], m["price_micros"], rate_bps) for m in makers)
    return {
        "hash": rand.hex_bytes(r, 32),
        "wallet": wallet,
        "side": side,
        "price_micros": round(collateral * money.MICRO / shares),
        "shares": shares,
        "collateral": collateral,
        "fee": fee,
    }


def _match(market: dict[str, Any], outcome: int, taker: dict[str, Any], makers: list) -> dict:
    return {
        "kind": "match",
        "market": market["index"],
        "outcome": outcome,
        "taker": taker,
        "makers": makers,
    }


def taker_match(
    r: random.Random,
    market: dict[str, Any],
    outcome: int,
    side: str,
    t_ms: int,
    wallet: str,
    want: int,
    pool: list[str],
) -> dict[str, Any] | None:
    """Returns a match where `wallet` takes liquidity; `want` is collateral for BUY, shares
    for SELL. The taker walks the book at t_ms (at most five levels); None if nothing fills."""
    bids, asks = books.book(market, outcome, t_ms)
    levels = asks if side == "BUY" else bids
    maker_side = "SELL" if side == "BUY" else "BUY"
    makers: list[dict[str, Any]] = []
    left = want
    for price, size in levels[:5]:
        cap = left * money.MICRO // price if side == "BUY" else left
        take = min(size, cap) // CENT_SHARE * CENT_SHARE
        if take < CENT_SHARE:
            break
        makers.append(_order(r, r.choice(pool), maker_side, price, take))
        left -= money.mul(take, price) if side == "BUY" else take
    if not makers:
        return None
    taker = _taker_total(r, wallet, side, makers, market["fee_rate_bps"])
    return _match(market, outcome, taker, makers)


def maker_match(
    r: random.Random,
    market: dict[str, Any],
    outcome: int,
    side: str,
    t_ms: int,
    wallet: str,
    shares: int,
    pool: list[str],
    twin: bool,
) -> dict[str, Any]:
    """Returns a match where `wallet`'s resting order (at the touch) is hit by a random
    taker. With `twin`, the wallet has two identical orders filled in the same match."""
    bids, asks = books.book(market, outcome, t_ms)
    price = bids[0][0] if side == "BUY" else asks[0][0]
    makers = [_order(r, wallet, side, price, shares)]
    if twin:
        makers.append(_order(r, wallet, side, price, shares))
    if r.random() < 0.3:
        extra = _order(r, r.choice(pool), side, price, r.randint(5, 300) * money.MICRO)
        makers.insert(r.randrange(len(makers) + 1), extra)
    taker_side = "SELL" if side == "BUY" else "BUY"
    taker = _taker_total(r, r.choice(pool), taker_side, makers, market["fee_rate_bps"])
    return _match(market, outcome, taker, makers)


def amounts(order: dict[str, Any]) -> tuple[int, int]:
    """Returns (makerAmountFilled, takerAmountFilled): BUY gives collateral, gets shares."""
    if order["side"] == "BUY":
        return order["collateral"], order["shares"]
    return order["shares"], order["collateral"]
