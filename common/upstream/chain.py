"""Polygon logs: the `eth_subscribe` request for OrderFilled of followed wallets, the
JSON-RPC message parser, and the decoder of OrderFilled in both exchange layouts.

V1 (until 2026-04-28): data = makerAssetId, takerAssetId, makerAmountFilled,
takerAmountFilled, fee; asset id 0 is collateral, so BUY when makerAssetId == 0.
V2: data = side (0 BUY), tokenId, makerAmountFilled, takerAmountFilled, fee, builder,
metadata. In both, topics = [topic0, orderHash, maker, taker] and the order's owner is
the maker topic (topics[2]); the taker order's own event has the exchange as `taker`.
Amounts are 6-decimal integers: a BUY gives collateral (makerAmountFilled) for shares
(takerAmountFilled), a SELL the reverse.

The NegRiskAdapter's PositionsConverted(address indexed stakeholder, bytes32 indexed
marketId, uint256 indexed indexSet, uint256 amount): topics = [topic0, stakeholder,
marketId, indexSet], data = amount (`common.domain.negrisk` has what it moves). Its
owner is topics[1], so it needs a filter, and a subscription, of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from pydantic import AliasChoices, Field, ValidationError

from common.domain import money
from common.runtime import settings as settings_mod
from common.upstream import wire


class ChainLog(wire.WireModel):
    address: str
    topics: list[str]
    data: str
    block_number: str = Field(validation_alias=AliasChoices("blockNumber", "block_number"))
    transaction_hash: wire.Hash32 = Field(
        validation_alias=AliasChoices("transactionHash", "transaction_hash")
    )
    log_index: str = Field(validation_alias=AliasChoices("logIndex", "log_index"))
    block_hash: str | None = Field(default=None, validation_alias=AliasChoices("blockHash"))
    block_timestamp: str | None = Field(
        default=None, validation_alias=AliasChoices("blockTimestamp")
    )
    removed: bool = False


@dataclass(frozen=True)
class ChainFill:
    """One decoded OrderFilled: the fill of `owner`'s order, in micros."""

    version: Literal[1, 2]
    exchange: str
    order_hash: str
    owner: str
    counterparty: str
    side: Literal["BUY", "SELL"]
    asset_id: str
    share_micros: int
    collateral_micros: int
    fee_micros: int
    price_micros: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str | None
    block_time: datetime | None
    removed: bool

    @property
    def is_taker_order(self) -> bool:
        """True for the taker order's own event (its `taker` topic is the exchange)."""
        return self.counterparty == self.exchange


@dataclass(frozen=True)
class ChainConversion:
    """One decoded PositionsConverted: `owner` converted `amount` NO shares of each
    question in `index_set` of neg-risk market `market_id`."""

    adapter: str
    owner: str
    market_id: str
    index_set: int
    amount_micros: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str | None
    block_time: datetime | None
    removed: bool


class DecodeError(ValueError):
    pass


def _int(hex_text: str, what: str) -> int:
    if not isinstance(hex_text, str) or not hex_text.startswith("0x"):
        raise DecodeError(f"{what} is not a hex quantity: {hex_text!r}")
    try:
        return int(hex_text, 16)
    except ValueError as exc:
        raise DecodeError(f"{what} is not hex: {hex_text[:20]!r}") from exc


def _address_topic(topic: str, what: str) -> str:
    value = _int(topic, what)
    if len(topic) != 66 or value >> 160:
        raise DecodeError(f"{what} is not a 32-byte padded address")
    return f"0x{value:040x}"


def _words(data: str) -> list[int]:
    body = data[2:] if data.startswith("0x") else data
    if len(body) % 64:
        raise DecodeError(f"data is not whole 32-byte words ({len(body)} hex digits)")
    return [_int("0x" + body[i : i + 64], "data word") for i in range(0, len(body), 64)]


def decode_order_filled(log: ChainLog, s: settings_mod.Settings) -> ChainFill:
    """Returns the fill of an OrderFilled log; raises DecodeError with a reason."""
    if len(log.topics) != 4:
        raise DecodeError(f"OrderFilled has 4 topics, got {len(log.topics)}")
    topic0, address = log.topics[0].lower(), log.address.lower()
    if topic0 == s.order_filled_topic_v2 and address in s.exchange_addresses_v2:
        version: Literal[1, 2] = 2
    elif topic0 == s.order_filled_topic_v1 and address in s.exchange_addresses_v1:
        version = 1
    else:
        raise DecodeError(f"not an OrderFilled of a configured exchange: {address} {topic0}")
    words = _words(log.data)
    if version == 2:
        if len(words) != 7:
            raise DecodeError(f"V2 OrderFilled has 7 data words, got {len(words)}")
        side_code, token, maker_amount, taker_amount, fee = words[:5]
        if side_code not in (0, 1):
            raise DecodeError(f"V2 side must be 0 or 1, got {side_code}")
        side: Literal["BUY", "SELL"] = "BUY" if side_code == 0 else "SELL"
    else:
        if len(words) != 5:
            raise DecodeError(f"V1 OrderFilled has 5 data words, got {len(words)}")
        maker_asset, taker_asset, maker_amount, taker_amount, fee = words
        if (maker_asset == 0) == (taker_asset == 0):
            raise DecodeError("V1 OrderFilled must trade collateral (asset 0) for a token")
        side = "BUY" if maker_asset == 0 else "SELL"
        token = taker_asset if side == "BUY" else maker_asset
    collateral, shares = (
        (maker_amount, taker_amount) if side == "BUY" else (taker_amount, maker_amount)
    )
    if token == 0 or shares <= 0:
        raise DecodeError("fill without a token or without shares")
    if max(shares, collateral, fee) > wire.MAX_AMOUNT_MICROS:  # uint256 words: bigint columns
        raise DecodeError(f"amount past the ceiling of {wire.MAX_AMOUNT_UNITS:,} units")
    price = money.price_micros(collateral, shares)
    if not 0 < price <= money.MICROS:
        raise DecodeError(f"impossible price {money.format_micros(price)} (not in (0, 1])")
    return ChainFill(
        version=version,
        exchange=address,
        order_hash=log.topics[1].lower(),
        owner=_address_topic(log.topics[2], "maker topic"),
        counterparty=_address_topic(log.topics[3], "taker topic"),
        side=side,
        asset_id=str(token),
        share_micros=shares,
        collateral_micros=collateral,
        fee_micros=fee,
        price_micros=price,
        **_place(log),
    )


class Place(TypedDict):
    """Where a log is on the chain: what every decoded log carries."""

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str | None
    block_time: datetime | None
    removed: bool


def _place(log: ChainLog) -> Place:
    """The log's place; raises DecodeError (the block time is checked first)."""
    block_time = _block_time(log)
    return Place(
        tx_hash=log.transaction_hash,
        log_index=_int(log.log_index, "logIndex"),
        block_number=_int(log.block_number, "blockNumber"),
        block_hash=log.block_hash.lower() if log.block_hash else None,
        block_time=block_time,
        removed=log.removed,
    )


def _block_time(log: ChainLog) -> datetime | None:
    if not log.block_timestamp:
        return None
    seconds = _int(log.block_timestamp, "blockTimestamp")
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise DecodeError(f"blockTimestamp {seconds} is not a time") from exc


def is_conversion(log: ChainLog, s: settings_mod.Settings) -> bool:
    return bool(log.topics) and log.topics[0].lower() == s.positions_converted_topic


def decode_positions_converted(log: ChainLog, s: settings_mod.Settings) -> ChainConversion:
    """Returns the conversion of a PositionsConverted log; raises DecodeError."""
    address = log.address.lower()
    if not is_conversion(log, s) or address not in s.neg_risk_adapters:
        raise DecodeError(f"not a PositionsConverted of a configured adapter: {address}")
    if len(log.topics) != 4:
        raise DecodeError(f"PositionsConverted has 4 topics, got {len(log.topics)}")
    words = _words(log.data)
    if len(words) != 1:
        raise DecodeError(f"PositionsConverted has 1 data word, got {len(words)}")
    market = _int(log.topics[2], "marketId topic")
    index_set = _int(log.topics[3], "indexSet topic")
    amount = words[0]
    if len(log.topics[2]) != 66 or not market:
        raise DecodeError("marketId is not a 32-byte id")
    if not index_set:
        raise DecodeError("empty index set")
    if not 0 < amount <= wire.MAX_AMOUNT_MICROS:
        raise DecodeError(f"amount {amount} is zero or past {wire.MAX_AMOUNT_UNITS:,} units")
    return ChainConversion(
        adapter=address,
        owner=_address_topic(log.topics[1], "stakeholder topic"),
        market_id=log.topics[2].lower(),
        index_set=index_set,
        amount_micros=amount,
        **_place(log),
    )


def pad_address(wallet: str) -> str:
    return "0x" + wallet.lower().removeprefix("0x").rjust(64, "0")


def log_filter(wallets: list[str], s: settings_mod.Settings) -> dict[str, Any]:
    """Returns the logs filter for OrderFilled (V1 and V2) of the configured exchanges
    where one of `wallets` owns the order (topics[2]); eth_subscribe and eth_getLogs
    take the same filter."""
    return {
        "address": [*s.exchange_addresses_v1, *s.exchange_addresses_v2],
        "topics": [
            [s.order_filled_topic_v1, s.order_filled_topic_v2],
            None,
            sorted(pad_address(w) for w in wallets),
        ],
    }


def conversion_filter(wallets: list[str], s: settings_mod.Settings) -> dict[str, Any]:
    """Returns the logs filter for PositionsConverted of the configured NegRiskAdapters
    where one of `wallets` is the stakeholder (topics[1])."""
    return {
        "address": list(s.neg_risk_adapters),
        "topics": [[s.positions_converted_topic], sorted(pad_address(w) for w in wallets)],
    }


def log_filters(wallets: list[str], s: settings_mod.Settings) -> dict[str, dict[str, Any]]:
    """Every filter the listener subscribes to, by name: fills, then conversions (none
    when no adapter is configured)."""
    out = {"fills": log_filter(wallets, s)}
    if s.neg_risk_adapters:
        out["conversions"] = conversion_filter(wallets, s)
    return out


def subscribe_request(
    request_id: int,
    wallets: list[str],
    s: settings_mod.Settings,
    params: dict[str, Any] | None = None,
) -> str:
    """Returns the `eth_subscribe` logs request of `params` (default `log_filter(wallets)`)."""
    params = params if params is not None else log_filter(wallets, s)
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "eth_subscribe", "params": ["logs", params]}
    )


@dataclass(frozen=True)
class RpcReply:
    """An answer to one of our requests (e.g. the subscription id)."""

    id: Any
    result: Any
    error: Any


@dataclass(frozen=True)
class LogNotification:
    subscription: str
    log: ChainLog


def parse_message(text: str | bytes) -> RpcReply | LogNotification | wire.Reject:
    """Returns one parsed WebSocket message, or a Reject (bad JSON, truncated frame,
    unknown shape, a log that does not validate)."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    try:
        message = json.loads(raw)
    except ValueError as exc:
        return wire.Reject("chain/ws", f"not JSON ({exc})", raw)
    if not isinstance(message, dict):
        return wire.Reject("chain/ws", "message is not a JSON object", raw)
    if message.get("method") == "eth_subscription":
        params = message.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("result"), dict):
            return wire.Reject("chain/ws", "eth_subscription without a log", raw)
        try:
            log = ChainLog.model_validate(params["result"])
        except ValidationError as exc:
            return wire.Reject("chain/ws", wire.describe(exc), raw)
        return LogNotification(str(params.get("subscription")), log)
    if "id" in message and ("result" in message or "error" in message):
        return RpcReply(message["id"], message.get("result"), message.get("error"))
    return wire.Reject("chain/ws", "unknown JSON-RPC message", raw)
