"""Polygon log encoding (CTF Exchange V2 events) and Ethereum log-filter semantics."""

from typing import Any

from sandbox import fills, keccak, rand
from sandbox.markets import NEG_RISK_ADAPTER

ORDER_FILLED = keccak.topic(
    "OrderFilled(bytes32,address,address,uint8,uint256,uint256,uint256,uint256,bytes32,bytes32)"
)
ORDERS_MATCHED = keccak.topic("OrdersMatched(bytes32,address,uint256,uint256,uint256,uint256)")
POSITIONS_CONVERTED = keccak.topic("PositionsConverted(address,bytes32,uint256,uint256)")
EXCHANGE = "0xe111180000d2663c0091e4f400237545b87b996b"
NEG_RISK_EXCHANGE = "0xe2222d279d744050d28e00520010520000310f59"
CHAIN_ID = "0x89"


def word(value: int | str) -> str:
    """Returns a 32-byte word (64 hex chars, no prefix) for an int or a 0x hex string."""
    if isinstance(value, str):
        return value[2:].lower().rjust(64, "0")
    return f"{value:064x}"


def padded(address: str) -> str:
    return "0x" + word(address)


def block_hash(seed: int, number: int) -> str:
    return rand.hex_bytes(rand.rng(seed, "blockhash", number), 32)


def match_logs(tx: dict[str, Any], market: dict[str, Any]) -> list[dict[str, Any]]:
    """Returns (address, topics, data) of a match's logs, in emission order: one OrderFilled
    per maker order, one for the taker order (taker topic = the exchange), OrdersMatched."""
    exchange = NEG_RISK_EXCHANGE if market["neg_risk"] else EXCHANGE
    token = int(market["tokens"][tx["outcome"]])
    taker = tx["taker"]
    out = []
    for order, counterparty in [(m, taker["wallet"]) for m in tx["makers"]] + [(taker, exchange)]:
        maker_amount, taker_amount = fills.amounts(order)
        side = 0 if order["side"] == "BUY" else 1
        words = [side, token, maker_amount, taker_amount, order["fee"], 0, 0]
        topics = [ORDER_FILLED, order["hash"], padded(order["wallet"]), padded(counterparty)]
        out.append({"address": exchange, "topics": topics, "data": words})
    maker_amount, taker_amount = fills.amounts(taker)
    assets = (0, token) if taker["side"] == "BUY" else (token, 0)
    words = [*assets, maker_amount, taker_amount]
    topics = [ORDERS_MATCHED, taker["hash"], padded(taker["wallet"])]
    out.append({"address": exchange, "topics": topics, "data": words})
    return out


def conversion_log(tx: dict[str, Any], markets: list[dict[str, Any]]) -> dict[str, Any]:
    """The NegRiskAdapter's PositionsConverted of a conversion: the NO shares of the
    converted question(s) (bit i = question index i of the neg-risk market)."""
    market = markets[tx["market"]]
    index_set = 1 << market["question_index"]
    topics = [POSITIONS_CONVERTED, padded(tx["wallet"]), market["neg_risk_market_id"]]
    topics.append("0x" + word(index_set))
    return {"address": NEG_RISK_ADAPTER, "topics": topics, "data": [tx["amount"]]}


def render(
    raw: dict[str, Any], slot: dict[str, Any], offset: int, tx_hash: str, seed: int, anchor: int
) -> dict[str, Any]:
    """Returns the JSON-RPC log object (all hex strings) for one raw log of an inclusion."""
    return {
        "address": raw["address"],
        "topics": raw["topics"],
        "data": "0x" + "".join(word(w) for w in raw["data"]),
        "blockNumber": hex(slot["block"]),
        "blockHash": block_hash(seed, slot["block"]),
        "blockTimestamp": hex((anchor + slot["t_ms"]) // 1000),
        "transactionHash": tx_hash,
        "transactionIndex": hex(slot["tx_index"]),
        "logIndex": hex(slot["log_index"] + offset),
        "removed": False,
    }


def normalise_filter(spec: dict[str, Any]) -> tuple[set[str] | None, list[set[str] | None]]:
    """Returns (addresses or None, per-position topic sets or None) from an RPC filter.
    Raises ValueError on a malformed filter."""
    address = spec.get("address")
    if address is None:
        addresses = None
    elif isinstance(address, str):
        addresses = {address.lower()}
    elif isinstance(address, list) and all(isinstance(a, str) for a in address):
        addresses = {a.lower() for a in address}
    else:
        raise ValueError("invalid address filter")
    topics: list[set[str] | None] = []
    for entry in spec.get("topics") or []:
        if entry is None or entry == []:
            topics.append(None)
        elif isinstance(entry, str):
            topics.append({entry.lower()})
        elif isinstance(entry, list) and all(isinstance(t, str) for t in entry):
            topics.append({t.lower() for t in entry})
        else:
            raise ValueError("invalid topics filter")
    return addresses, topics


def matches(log: dict[str, Any], flt: tuple[set[str] | None, list[set[str] | None]]) -> bool:
    addresses, topics = flt
    if addresses is not None and log["address"] not in addresses:
        return False
    if len(topics) > len(log["topics"]):
        return False  # geth: a filter longer than the log's topics never matches
    return all(
        want is None or got in want for want, got in zip(topics, log["topics"], strict=False)
    )


def decode_order_filled(log: dict[str, Any]) -> dict[str, Any]:
    """Returns the decoded fields of an OrderFilled log (used by tests and the bench)."""
    data = log["data"][2:]
    words = [int(data[i : i + 64], 16) for i in range(0, len(data), 64)]
    return {
        "order_hash": log["topics"][1],
        "maker": "0x" + log["topics"][2][-40:],
        "taker": "0x" + log["topics"][3][-40:],
        "side": words[0],
        "token_id": str(words[1]),
        "maker_amount": words[2],
        "taker_amount": words[3],
        "fee": words[4],
    }
