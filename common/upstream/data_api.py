"""Polymarket Data API: `/trades`, `/activity`, `/positions` (v1 routes, bare arrays,
camelCase). The models also accept the v2 snake_case rows and the `{data, pagination}`
envelope, so either generation of the API parses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, model_validator

from common.domain import money
from common.upstream import http, wire

ACTIVITY_TYPES = ("TRADE", "SPLIT", "MERGE", "REDEEM", "CONVERSION")
MAX_LIMIT = 500
MAX_OFFSET = 5000  # the API answers 400 past this: page by time window instead
Clock = Callable[[], datetime]  # stamps each page as it arrives (a fill's detect time)

Seconds = Annotated[
    datetime, BeforeValidator(wire.seconds_to_datetime), BeforeValidator(wire.json_number)
]


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


def _alias(*names: str) -> Any:
    return Field(validation_alias=AliasChoices(*names))


def _opt_alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class TradeRow(wire.WireModel):
    """One fill of `proxy_wallet`, from `/trades` (or a TRADE row of `/activity`)."""

    proxy_wallet: wire.Wallet = _alias("proxyWallet", "proxy_wallet")
    side: Literal["BUY", "SELL"]
    asset: wire.AssetId = _alias("asset", "token_id")
    condition_id: wire.Hash32 = _alias("conditionId", "condition_id")
    size: wire.NumSharesMicros
    price: wire.NumFillPriceMicros
    timestamp: Seconds
    transaction_hash: wire.Hash32 = _alias("transactionHash", "transaction_hash")
    title: str | None = None
    slug: str | None = None
    event_slug: str | None = _opt_alias("eventSlug", "event_slug")
    outcome: str | None = None
    outcome_index: int | None = _opt_alias("outcomeIndex", "outcome_index")

    @property
    def notional_micros(self) -> int:
        """Collateral of the fill: price × size, half-to-even at the micro."""
        return money.mul_micros(self.price, self.size)


class ActivityRow(wire.WireModel):
    """One row of `/activity`: TRADE, or SPLIT / MERGE / REDEEM / CONVERSION, whose
    `asset`, `side` and `outcome` are empty strings on the wire (None here)."""

    proxy_wallet: wire.Wallet = _alias("proxyWallet", "proxy_wallet")
    timestamp: Seconds
    type: Literal["TRADE", "SPLIT", "MERGE", "REDEEM", "CONVERSION"]
    condition_id: wire.Hash32 = _alias("conditionId", "condition_id")
    size: wire.NumNonNegMicros
    usdc_size: wire.NumNonNegMicros = _alias("usdcSize", "usdc_size")
    transaction_hash: wire.Hash32 = _alias("transactionHash", "transaction_hash")
    price: Annotated[wire.NumPriceMicros | None, BeforeValidator(_blank_to_none)] = None
    asset: Annotated[wire.AssetId | None, BeforeValidator(_blank_to_none)] = _opt_alias(
        "asset", "token_id"
    )
    side: Annotated[Literal["BUY", "SELL"] | None, BeforeValidator(_blank_to_none)] = None
    outcome: Annotated[str | None, BeforeValidator(_blank_to_none)] = None
    outcome_index: int | None = _opt_alias("outcomeIndex", "outcome_index")
    is_combo: bool = Field(default=False, validation_alias=AliasChoices("isCombo", "is_combo"))
    title: str | None = None
    slug: str | None = None

    @model_validator(mode="after")
    def _trade_rows_are_fills(self) -> ActivityRow:
        if self.type == "TRADE":
            if self.asset is None or self.side is None:
                raise ValueError("TRADE row without asset or side")
            if self.size <= 0:
                raise ValueError("TRADE row with no shares")
            if self.price is None:
                raise ValueError("TRADE row without price")
            if self.price <= 0:
                raise ValueError("TRADE row at price 0")
        return self


class PositionRow(wire.WireModel):
    """One held outcome of `/positions` (v1 camelCase or v2 snake_case)."""

    proxy_wallet: wire.Wallet = _alias("proxyWallet", "proxy_wallet")
    asset: wire.AssetId = _alias("asset", "token_id")
    condition_id: wire.Hash32 = _alias("conditionId", "condition_id")
    size: wire.NonNegMicros = _alias("size", "current_size")
    avg_price: wire.PriceMicros | None = _opt_alias("avgPrice", "avg_price")
    cur_price: wire.PriceMicros | None = _opt_alias("curPrice", "current_price")
    redeemable: bool = False
    mergeable: bool = False
    outcome: str | None = None
    outcome_index: int | None = _opt_alias("outcomeIndex", "outcome_index")
    opposite_asset: Annotated[wire.AssetId | None, BeforeValidator(_blank_to_none)] = _opt_alias(
        "oppositeAsset", "opposite_token_id"
    )
    end_date: str | None = _opt_alias("endDate", "end_date")
    negative_risk: bool = Field(
        default=False, validation_alias=AliasChoices("negativeRisk", "negative_risk")
    )
    title: str | None = None


class PortfolioValue(wire.WireModel):
    """`/value`: the wallet's current position value."""

    proxy_wallet: wire.Wallet = _alias("proxyWallet", "proxy_wallet", "user")
    value: wire.NonNegMicros


class PricePoint(wire.WireModel):
    """One point of `/prices-history` (a mark fallback for assets with no book)."""

    timestamp: Seconds = _alias("t", "timestamp")
    price: wire.PriceMicros = _alias("p", "price")


class UmaResolution(wire.WireModel):
    """One UMA resolution row: `status` resolved/posed; prices and times are strings."""

    condition_id: wire.Hash32
    question_id: wire.Hash32 | None = None
    status: str
    price: str | None = None
    transaction_hash: wire.Hash32 | None = None
    last_update_timestamp: Annotated[datetime | None, BeforeValidator(wire.seconds_to_datetime)] = (
        None
    )


def unwrap(payload: Any, source: str) -> tuple[Any, wire.Reject | None]:
    """Returns the row list of a v1 bare array or a v2 `{data, pagination}` envelope;
    an envelope whose `has_more` and `next_cursor` disagree is rejected."""
    if isinstance(payload, dict) and "data" in payload:
        page = payload.get("pagination") or {}
        has_more, cursor = page.get("has_more"), page.get("next_cursor")
        if has_more is not None and bool(has_more) != bool(cursor):
            return None, wire.Reject(
                source, "pagination has_more and next_cursor disagree", wire.dump_payload(page)
            )
        return payload["data"], None
    return payload, None


def _fetch_rows(
    upstream: http.Upstream,
    path: str,
    params: dict[str, Any],
    model: type[wire.T],
    clock: Clock | None,
) -> wire.Batch[wire.T]:
    """One page; more rows than the `limit` asked for refuses the page (an upstream that
    ignores it would otherwise page and split windows without end)."""
    context = {k: v for k, v in params.items() if k in ("user", "start", "end", "offset")}
    return wire.fetch_rows(
        upstream,
        "GET",
        path,
        model,
        params=params,
        context=context,
        unwrap=unwrap,
        limit=params["limit"],
        clock=clock,
    )


def _page(limit: int, offset: int) -> dict[str, int]:
    if not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset {offset} is past the API's cap of {MAX_OFFSET}")
    return {"limit": max(1, min(limit, MAX_LIMIT)), "offset": offset}


def fetch_trades(
    upstream: http.Upstream,
    user: str,
    *,
    limit: int = MAX_LIMIT,
    offset: int = 0,
    side: str | None = None,
    market: str | None = None,
    clock: Clock | None = None,
) -> wire.Batch[TradeRow]:
    """Returns a page of the user's fills, newest first, maker fills included
    (`takerOnly=false`: the API's default of true hides them)."""
    params: dict[str, Any] = {"user": user, "takerOnly": "false", **_page(limit, offset)}
    if side:
        params["side"] = side
    if market:
        params["market"] = market
    return _fetch_rows(upstream, "/trades", params, TradeRow, clock)


def fetch_activity(
    upstream: http.Upstream,
    user: str,
    *,
    start: int | None = None,
    end: int | None = None,
    types: tuple[str, ...] = ACTIVITY_TYPES,
    limit: int = MAX_LIMIT,
    offset: int = 0,
    ascending: bool = True,
    clock: Clock | None = None,
) -> wire.Batch[ActivityRow]:
    """Returns a page of the user's activity in [start, end] (Unix seconds, inclusive)."""
    params: dict[str, Any] = {
        "user": user,
        "type": ",".join(types),
        "sortBy": "TIMESTAMP",
        "sortDirection": "ASC" if ascending else "DESC",
        **_page(limit, offset),
    }
    if start is not None:
        params["start"] = start
    if end is not None:
        params["end"] = end
    return _fetch_rows(upstream, "/activity", params, ActivityRow, clock)


def fetch_positions(
    upstream: http.Upstream,
    user: str,
    *,
    size_threshold: str = "0",
    limit: int = MAX_LIMIT,
    offset: int = 0,
) -> wire.Batch[PositionRow]:
    """Returns a page of the user's current positions (seeds a shadow book)."""
    params = {"user": user, "sizeThreshold": size_threshold, **_page(limit, offset)}
    return _fetch_rows(upstream, "/positions", params, PositionRow, None)
