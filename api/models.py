"""Request bodies of the write API. Unknown fields are refused, and numbers are strict
("12", 1.5 or true are not integers) and bounded like the columns they go to, so a bad
value is a clear 422 here instead of a database error later."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Micros = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]  # bigint >= 0
Count = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]  # integer >= 0 (ms, s, ratios)
Bps = Annotated[StrictInt, Field(ge=0, le=10_000)]
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]


def _text(value: str) -> str:
    """Postgres text holds no NUL, and control characters only make trouble in a page."""
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value):
        raise ValueError("must not contain control characters")
    return value


Text = Annotated[str, AfterValidator(_text)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigFields(_Body):
    """Every field of `copy_config.GUARDRAIL_FIELDS` and `SIZING_FIELDS`, optional."""

    allow_null: ClassVar[bool] = True  # null = clear a user override (inherit)
    allow_empty: ClassVar[bool] = False

    max_worse_than_theirs_micros: Micros | None = None
    max_chase_vs_mid_micros: Micros | None = None
    max_spread_micros: Micros | None = None
    min_depth_ratio_bps: Count | None = None
    allow_partial_fills: StrictBool | None = None
    decision_delay_ms: Count | None = None
    decision_jitter_ms: Count | None = None
    group_window_ms: Annotated[StrictInt, Field(ge=1, le=INT32_MAX)] | None = None
    no_open_before_close_s: Count | None = None
    max_total_exposure_bps: Bps | None = None
    max_market_exposure_bps: Bps | None = None
    max_user_exposure_bps: Bps | None = None
    daily_loss_limit_bps: Bps | None = None
    weekly_loss_limit_bps: Bps | None = None
    max_drawdown_bps: Bps | None = None
    max_signal_age_s: Count | None = None
    copy_pct_bps: Annotated[StrictInt, Field(ge=0, le=100_000)] | None = None
    min_trade_notional_micros: Micros | None = None
    max_trade_notional_micros: Micros | None = None
    max_trade_equity_bps: Bps | None = None
    starting_cash_micros: Micros | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.model_fields_set and not self.allow_empty:
            raise ValueError("give at least one config field to change")
        nulls = sorted(k for k in self.model_fields_set if getattr(self, k) is None)
        if nulls and not self.allow_null:
            raise ValueError(f"null only clears a user override; give values for {nulls}")
        return self

    def changes(self) -> dict[str, Any]:
        """Returns the fields the body named, with their values (None = inherit)."""
        return {k: getattr(self, k) for k in sorted(self.model_fields_set)}


class UserConfigChange(ConfigFields):
    """A user's override: a value sets it, null clears it."""


class ConfigChange(ConfigFields):
    """A change of the global config: values only."""

    allow_null = False


class ProposedGlobal(ConfigFields):
    allow_null = False
    allow_empty = True


class ConfigTest(_Body):
    """A "Test config" request: the proposal and how many hours back to re-decide."""

    global_: ProposedGlobal = Field(default_factory=ProposedGlobal, alias="global")
    users: Annotated[dict[Id, UserConfigChange], Field(max_length=200)] = {}
    hours: Annotated[StrictInt, Field(ge=1, le=168)] = 24  # whole hours (no float columns)

    def proposal(self) -> dict[str, Any]:
        """Returns the proposal as stored: {"global": {...}, "users": {"<id>": {...}}}."""
        return {
            "global": self.global_.changes(),
            "users": {str(u): c.changes() for u, c in sorted(self.users.items())},
        }


class Pause(_Body):
    paused: StrictBool
    reason: Annotated[Text, Field(max_length=500)] | None = None


class Follow(_Body):
    wallet: Annotated[str, Field(max_length=100)]
    label: Annotated[Text, Field(min_length=1, max_length=100)]
    proxies: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=20)] = []


class UserUpdate(_Body):
    enabled: StrictBool | None = None
    copy_mode: Literal["ACTIVE", "BUY_ONLY", "SELL_ONLY", "PAUSED", "REMOVED"] | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.enabled is None and self.copy_mode is None:
            raise ValueError("give enabled and/or copy_mode")
        return self


class Blacklist(_Body):
    blacklisted: StrictBool


class Empty(_Body):
    """No fields: a body that must say nothing (revert)."""
