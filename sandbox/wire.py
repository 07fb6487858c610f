"""Renders records, books and markets into Polymarket's exact JSON shapes."""

import datetime as dt
import hashlib
import json
from typing import Any

from sandbox import money

ONE = money.MICRO


def iso(ms: int, millis: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _profile(leader: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": leader["name"],
        "pseudonym": leader["pseudonym"],
        "bio": leader["bio"],
        "profileImage": leader["profile_image"],
        "profileImageOptimized": "",
    }


def _market_labels(market: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": market["question"],
        "slug": market["slug"],
        "icon": f"https://example.invalid/icons/{market['slug']}.png",
        "eventSlug": market["event_slug"],
    }


def trade_row(rec: dict[str, Any], market: dict[str, Any], leader: dict[str, Any], anchor: int):
    """Returns a /trades row (v1: bare camelCase, numbers as JSON numbers)."""
    return {
        "proxyWallet": rec["wallet"],
        "side": rec["side"],
        "asset": rec["asset"],
        "conditionId": rec["condition_id"],
        "size": money.num(rec["shares_micros"]),
        "price": money.ratio(rec["usdc_micros"], rec["shares_micros"]),
        "timestamp": (anchor + rec["t_ms"]) // 1000,
        **_market_labels(market),
        "outcome": market["outcomes"][rec["outcome_index"]],
        "outcomeIndex": rec["outcome_index"],
        **_profile(leader),
        "transactionHash": rec["tx_hash"],
    }


def activity_row(rec: dict[str, Any], market: dict[str, Any], leader: dict[str, Any], anchor):
    """Returns an /activity row; non-trade rows use outcomeIndex 999 and empty strings."""
    trade = rec["type"] == "TRADE"
    price = money.ratio(rec["usdc_micros"], rec["shares_micros"]) if trade else 0
    return {
        "proxyWallet": rec["wallet"],
        "timestamp": (anchor + rec["t_ms"]) // 1000,
        "conditionId": rec["condition_id"],
        "type": rec["type"],
        "size": money.num(rec["shares_micros"]),
        "usdcSize": money.num(rec["usdc_micros"]),
        "transactionHash": rec["tx_hash"],
        "price": price,
        "asset": rec["asset"],
        "side": rec["side"],
        "outcomeIndex": rec["outcome_index"],
        **_market_labels(market),
        "outcome": market["outcomes"][rec["outcome_index"]] if trade else "",
        **_profile(leader),
    }


def book(market: dict[str, Any], outcome: int, sides, now_ms: int, last: str) -> dict[str, Any]:
    """Returns a /book object: strings everywhere, best bid and best ask LAST."""
    bids, asks = sides
    asset = market["tokens"][outcome]
    body = {
        "market": market["condition_id"],
        "asset_id": asset,
        "timestamp": str(now_ms),
        "hash": "",
        "bids": [{"price": money.text(p), "size": money.text(s)} for p, s in reversed(bids)],
        "asks": [{"price": money.text(p), "size": money.text(s)} for p, s in reversed(asks)],
        "min_order_size": str(market["min_size"]),
        "tick_size": money.text(market["tick_micros"]),
        "neg_risk": market["neg_risk"],
        "last_trade_price": last,
    }
    body["hash"] = summary_hash(body)
    return body


def summary_hash(summary: dict[str, Any]) -> str:
    """Returns the CLOB's book hash: SHA-1 of the compact JSON of the summary with `hash`
    blanked, in the server's field order, levels in wire order with their wire strings.

    The same payload as Polymarket/py-clob-client-v2 `generate_orderbook_summary_hash`,
    which reproduces real REST `/book` and WS `book` hashes. A WS `book` frame carries no
    `min_order_size` or `neg_risk`: pass the summary with them added (from REST or Gamma).
    """
    payload = {
        "market": summary.get("market"),
        "asset_id": summary.get("asset_id"),
        "timestamp": summary.get("timestamp"),
        "hash": "",
        "bids": [{"price": o["price"], "size": o["size"]} for o in summary.get("bids") or []],
        "asks": [{"price": o["price"], "size": o["size"]} for o in summary.get("asks") or []],
        "min_order_size": summary.get("min_order_size"),
        "tick_size": summary.get("tick_size"),
        "neg_risk": summary.get("neg_risk"),
        "last_trade_price": summary.get("last_trade_price"),
    }
    serialized = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(serialized.encode("utf-8"), usedforsecurity=False).hexdigest()


def fee_schedule(market: dict[str, Any]) -> dict[str, Any] | None:
    if not market["fee_rate_bps"]:
        return None
    return {
        "exponent": 1,
        "rate": market["fee_rate_bps"] / 10_000,
        "takerOnly": True,
        "rebateRate": 0,
    }


def gamma_market(market: dict[str, Any], anchor: int, now_ms: int, prices: list[str]):
    """Returns a Gamma market object; list-valued fields are JSON-encoded strings."""
    end_abs, resolve_abs = anchor + market["end_ms"], anchor + market["resolve_ms"]
    closed, resolved = now_ms >= end_abs, now_ms >= resolve_abs
    if resolved:
        prices = ["1", "0"] if market["winner"] == 0 else ["0", "1"]
        uma, statuses = "resolved", ["proposed", "resolved"]
    elif closed:
        uma, statuses = "proposed", ["proposed"]
    else:
        uma, statuses = None, []
    start = anchor - 30 * 86_400_000
    out = {
        "id": market["id"],
        "question": market["question"],
        "conditionId": market["condition_id"],
        "slug": market["slug"],
        "resolutionSource": "",
        "endDate": iso(end_abs),
        "startDate": iso(start, millis=True),
        "image": f"https://example.invalid/images/{market['slug']}.png",
        "icon": f"https://example.invalid/icons/{market['slug']}.png",
        "description": f"Sandbox market. {market['question']} Resolves at the end date.",
        "outcomes": json.dumps(market["outcomes"]),
        "outcomePrices": json.dumps(prices),
        "active": True,
        "closed": closed,
        "archived": False,
        "restricted": True,
        "questionID": market["question_id"],
        "enableOrderBook": True,
        "orderPriceMinTickSize": market["tick_micros"] / ONE,
        "orderMinSize": market["min_size"],
        "endDateIso": iso(end_abs)[:10],
        "startDateIso": iso(start)[:10],
        "clobTokenIds": json.dumps(market["tokens"]),
        "acceptingOrders": not closed,
        "negRisk": market["neg_risk"],
        "negRiskMarketID": market["neg_risk_market_id"] or None,
        "negRiskFeeBips": 0 if market["neg_risk"] else None,
        "negRiskOther": False,
        "umaResolutionStatus": uma,
        "umaResolutionStatuses": json.dumps(statuses),
        "feesEnabled": bool(market["fee_rate_bps"]),
        "feeType": "crypto_fees_v2" if market["fee_rate_bps"] else None,
        "feeSchedule": fee_schedule(market),
        "events": [
            {
                "id": str(int(market["event_slug"].encode().hex()[:8], 16) % 90_000 + 10_000),
                "slug": market["event_slug"],
                "title": market["event_title"],
                "negRisk": market["neg_risk"],
                "negRiskMarketID": market["neg_risk_market_id"] or None,
                "negRiskFeeBips": 0 if market["neg_risk"] else None,
                "closed": closed,
            }
        ],
    }
    if closed:
        out["closedTime"] = iso(end_abs).replace("T", " ").replace("Z", "+00")
    if market["neg_risk_market_id"] is None or not market["neg_risk"]:
        out.pop("negRiskMarketID")
        out.pop("negRiskFeeBips")
        out["events"][0].pop("negRiskMarketID")
        out["events"][0].pop("negRiskFeeBips")
    return out
