"""Per-wallet positions (Data API /positions) from leader records, by average cost."""

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from sandbox import money

ONE = money.MICRO


def _apply(book: dict[str, dict[str, int]], asset: str, shares: int, price: int) -> None:
    pos = book.setdefault(asset, {"size": 0, "cost": 0, "bought": 0, "realized": 0})
    if shares > 0:
        pos["size"] += shares
        pos["cost"] += money.mul(shares, price)
        pos["bought"] += shares
    elif shares < 0 and pos["size"] > 0:
        sold = min(-shares, pos["size"])
        basis = pos["cost"] * sold // pos["size"]
        pos["realized"] += money.mul(sold, price) - basis
        pos["cost"] -= basis
        pos["size"] -= sold


def replay(recs: Iterable[dict[str, Any]], payout: Callable[[str], int]) -> dict[str, dict]:
    """Returns {asset: {size, cost, bought, realized}} after applying the records.
    Splits and merges count at 0.5 a share, redemptions at the payout, conversions at 0."""
    book: dict[str, dict[str, int]] = {}
    for rec in recs:
        kind = rec["type"]
        for asset, delta in rec["deltas"].items():
            if kind == "TRADE":
                price = rec["usdc_micros"] * ONE // rec["shares_micros"]
            elif kind in ("SPLIT", "MERGE"):
                price = ONE // 2
            elif kind == "REDEEM":
                price = payout(asset)
            else:
                price = 0
            _apply(book, asset, delta, price)
    return book


def row(wallet: str, asset: str, pos: dict[str, int], info: dict[str, Any]) -> dict[str, Any]:
    """Returns a /positions row; info carries market labels, curPrice and flags."""
    size, cost, cur = pos["size"], pos["cost"], info["cur_price"]
    value = money.mul(size, cur)
    avg = cost * ONE // size if size else 0
    return {
        "proxyWallet": wallet,
        "asset": asset,
        "conditionId": info["condition_id"],
        "size": money.num(size),
        "avgPrice": money.ratio(cost, size),
        "initialValue": money.num(money.mul(size, avg)),
        "currentValue": money.num(value),
        "cashPnl": money.num(value - cost),
        "percentPnl": round((value - cost) * 100 / cost, 4) if cost else 0,
        "totalBought": money.num(pos["bought"]),
        "realizedPnl": money.num(pos["realized"]),
        "percentRealizedPnl": round(pos["realized"] * 100 / cost, 4) if cost else 0,
        "curPrice": money.num(cur),
        "redeemable": info["redeemable"],
        "mergeable": info["mergeable"],
        "title": info["title"],
        "slug": info["slug"],
        "icon": info["icon"],
        "eventSlug": info["event_slug"],
        "outcome": info["outcome"],
        "outcomeIndex": info["outcome_index"],
        "oppositeOutcome": info["opposite_outcome"],
        "oppositeAsset": info["opposite_asset"],
        "endDate": dt.datetime.fromtimestamp(info["end_ms"] / 1000, tz=dt.UTC).strftime("%Y-%m-%d"),
        "negativeRisk": info["neg_risk"],
    }
