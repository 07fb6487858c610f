"""Polymarket Gamma market metadata. `outcomes`, `outcomePrices` and `clobTokenIds`
arrive as JSON-encoded strings and are decoded here; index i of `clobTokenIds` is
`outcomes[i]`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, model_validator

from common.domain import money
from common.upstream import http, wire

IDS_PER_CALL = 50


def _json_list(value: Any) -> Any:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not a JSON-encoded list: {value[:60]!r}") from exc
    return value


def _hash_or_none(value: Any) -> str | None:
    """An optional 32-byte id: kept when it is one, else None. These ids only matter for
    neg-risk conversions; a malformed one must not cost the market its other metadata."""
    if isinstance(value, str) and len(value) == 66 and value[:2] == "0x":
        try:
            int(value[2:], 16)
        except ValueError:
            return None
        return value.lower()
    return None


def _bips_or_none(value: Any) -> int | None:
    """Gamma's negRiskFeeBips, kept when it is a whole number of basis points in
    [0, 10,000] (the adapter's own bound), else None, like the ids above."""
    if isinstance(value, bool):
        return None
    try:
        bips = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return bips if 0 <= bips <= 10_000 and bips == value else None


def _alias(*names: str, default: Any = None) -> Any:
    return Field(default=default, validation_alias=AliasChoices(*names))


class FeeSchedule(wire.WireModel):
    exponent: int = 1
    rate: wire.NonNegMicros = 0
    taker_only: bool = _alias("takerOnly", "taker_only", default=True)
    rebate_rate: wire.NonNegMicros | None = _alias("rebateRate", "rebate_rate")


class GammaMarket(wire.WireModel):
    id: Annotated[str, BeforeValidator(str)]
    condition_id: wire.Hash32 = Field(validation_alias=AliasChoices("conditionId", "condition_id"))
    question: str | None = None
    slug: str | None = None
    end_date: datetime | None = _alias("endDate", "end_date")
    active: bool | None = None
    closed: bool = False
    accepting_orders: bool | None = _alias("acceptingOrders", "accepting_orders")
    neg_risk: bool = _alias("negRisk", "neg_risk", default=False)
    tick_size: wire.PriceMicros | None = _alias("orderPriceMinTickSize", "tick_size")
    min_order_size: wire.NonNegMicros | None = _alias("orderMinSize", "min_order_size")
    fees_enabled: bool = _alias("feesEnabled", "fees_enabled", default=False)
    fee_schedule: FeeSchedule | None = _alias("feeSchedule", "fee_schedule")
    outcomes: Annotated[list[str], BeforeValidator(_json_list)] = Field(default_factory=list)
    outcome_prices: Annotated[list[wire.PriceMicros], BeforeValidator(_json_list)] = _alias(
        "outcomePrices", "outcome_prices", default=[]
    )
    clob_token_ids: Annotated[list[wire.AssetId], BeforeValidator(_json_list)] = _alias(
        "clobTokenIds", "clob_token_ids", default=[]
    )
    uma_resolution_status: str | None = _alias("umaResolutionStatus", "uma_resolution_status")
    # A neg-risk market's id in the NegRiskAdapter and this question's id in it (the
    # market id with its last byte set to the question's index): what a CONVERSION names.
    neg_risk_market_id: Annotated[str | None, BeforeValidator(_hash_or_none)] = _alias(
        "negRiskMarketID", "neg_risk_market_id"
    )
    question_id: Annotated[str | None, BeforeValidator(_hash_or_none)] = _alias(
        "questionID", "question_id"
    )
    # The adapter's conversion fee of the neg-risk market, on the market or its event.
    neg_risk_fee_bips: Annotated[int | None, BeforeValidator(_bips_or_none)] = _alias(
        "negRiskFeeBips", "neg_risk_fee_bips"
    )

    @model_validator(mode="before")
    @classmethod
    def _fee_bips_from_event(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("negRiskFeeBips") is None:
            events = data.get("events")
            if isinstance(events, list) and events and isinstance(events[0], dict):
                bips = events[0].get("negRiskFeeBips")
                if bips is not None:
                    return {**data, "negRiskFeeBips": bips}
        return data

    @model_validator(mode="after")
    def _outcomes_match_tokens(self) -> GammaMarket:
        if self.clob_token_ids and len(self.outcomes) != len(self.clob_token_ids):
            raise ValueError(
                f"{len(self.outcomes)} outcomes but {len(self.clob_token_ids)} clobTokenIds"
            )
        if self.outcome_prices and len(self.outcome_prices) != len(self.outcomes):
            raise ValueError("outcomePrices and outcomes differ in length")
        return self

    @property
    def question_index(self) -> int | None:
        """This question's index in its neg-risk market (the question id's last byte)."""
        if self.question_id is None or self.neg_risk_market_id is None:
            return None
        return int(self.question_id[-2:], 16)

    @property
    def resolved(self) -> bool:
        """Closed with every outcome priced exactly 0 or 1 (one of them 1)."""
        prices = self.outcome_prices
        return (
            self.closed
            and bool(prices)
            and all(p in (0, money.MICROS) for p in prices)
            and prices.count(money.MICROS) == 1
        )

    def payouts(self) -> dict[str, int]:
        """Returns {asset: payout micros} for a resolved market, else {}."""
        if not self.resolved:
            return {}
        return dict(zip(self.clob_token_ids, self.outcome_prices, strict=True))

    @property
    def fee_rate(self) -> int:
        """Taker fee rate in micros (0.04 → 40000); 0 when fees are off."""
        if not self.fees_enabled or self.fee_schedule is None:
            return 0
        return self.fee_schedule.rate


def fetch_markets(
    upstream: http.Upstream,
    *,
    condition_ids: list[str] | None = None,
    clob_token_ids: list[str] | None = None,
) -> wire.Batch[GammaMarket]:
    """Returns the markets for the given condition ids or token ids (repeated query
    parameters, at most IDS_PER_CALL per call)."""
    key, ids = (
        ("condition_ids", condition_ids) if condition_ids else ("clob_token_ids", clob_token_ids)
    )
    batch: wire.Batch[GammaMarket] = wire.Batch()
    for start in range(0, len(ids or []), IDS_PER_CALL):
        chunk = (ids or [])[start : start + IDS_PER_CALL]
        params = [(key, i) for i in chunk] + [("limit", str(len(chunk) * 2))]
        wire.fetch_rows(
            upstream,
            "GET",
            "/markets",
            GammaMarket,
            params=params,
            context={key: chunk[:5]},
            into=batch,
        )
    return batch
