"""Leader records: the canonical (post-reorg) events of followed wallets, in scenario
offsets. Both the Data API rows and the ground truth are rendered from these."""

from typing import Any

TRADE_ROLE_TAKER = "taker"
TRADE_ROLE_MAKER = "maker"


def canonical_slot(tx: dict[str, Any]) -> dict[str, Any] | None:
    """Returns the inclusion that stays on chain (t_ms, block, indexes), or None if the
    transaction was reorged out for good."""
    reorg = tx["reorg"]
    if not reorg:
        return tx
    return reorg["reinclude"] or None


def _trade(tx, slot, market, order, role, log_index) -> dict[str, Any]:
    shares, collateral, fee = order["shares"], order["collateral"], order["fee"]
    asset = market["tokens"][tx["outcome"]]
    if order["side"] == "BUY":
        cash = -collateral - fee
        deltas = {asset: shares}
    else:
        cash = collateral - fee
        deltas = {asset: -shares}
    return {
        "type": "TRADE",
        "role": role,
        "side": order["side"],
        "asset": asset,
        "outcome_index": tx["outcome"],
        "price_micros": order["price_micros"],
        "shares_micros": shares,
        "usdc_micros": collateral,
        "fee_micros": fee,
        "deltas": deltas,
        "cash_delta_micros": cash,
        "log_index": log_index,
    }


def _other(tx: dict[str, Any], markets: list[dict[str, Any]]) -> dict[str, Any]:
    market = markets[tx["market"]]
    yes, no = market["tokens"]
    kind = tx["kind"]
    if kind == "split":
        amount = tx["amount"]
        deltas, cash, shares, usdc = {yes: amount, no: amount}, -amount, amount, amount
    elif kind == "merge":
        amount = tx["amount"]
        deltas, cash, shares, usdc = {yes: -amount, no: -amount}, amount, amount, amount
    elif kind == "redeem":
        held = tx["shares"]
        deltas = {tok: -n for tok, n in zip(market["tokens"], held, strict=True) if n}
        cash, shares, usdc = tx["payout"], sum(held), tx["payout"]
    else:  # conversion: No of one neg-risk market into Yes of every other in the group
        amount = tx["amount"]
        deltas = {no: -amount}
        for other in tx["targets"]:
            deltas[markets[other]["tokens"][0]] = amount
        cash, shares, usdc = 0, amount, 0  # one No converted: k − 1 = 0 collateral back
    return {
        "type": kind.upper(),
        "role": None,
        "side": "",
        "asset": "",
        "outcome_index": 999,
        "price_micros": 0,
        "shares_micros": shares,
        "usdc_micros": usdc,
        "fee_micros": 0,
        "deltas": deltas,
        "cash_delta_micros": cash,
        "log_index": None,
    }


def build(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """Returns every leader record in (t_ms, log_index) order, with offsets in t_ms."""
    markets = scenario["markets"]
    wallets = {leader["wallet"] for leader in scenario["leaders"]}
    out: list[dict[str, Any]] = []
    for tx in scenario["txs"]:
        slot = canonical_slot(tx)
        if slot is None:
            continue
        market = markets[tx["market"]]
        common = {
            "tx_hash": tx["hash"],
            "block_number": slot["block"],
            "t_ms": slot["t_ms"],
            "market": tx["market"],
            "condition_id": market["condition_id"],
        }
        if tx["kind"] == "match":
            orders = [*tx["makers"], tx["taker"]]
            for i, order in enumerate(orders):
                if order["wallet"] not in wallets:
                    continue
                role = TRADE_ROLE_TAKER if i == len(orders) - 1 else TRADE_ROLE_MAKER
                record = _trade(tx, slot, market, order, role, slot["log_index"] + i)
                out.append({**common, "wallet": order["wallet"], **record})
        else:
            record = _other(tx, markets)
            record["log_index"] = slot["log_index"]
            out.append({**common, "wallet": tx["wallet"], **record})
    out.sort(key=lambda rec: (rec["t_ms"], rec["log_index"]))
    return out
