"""Request bodies of the write API. Unknown fields are refused, numbers are strict ("12",
1.5 or true are not integers), and every config field has a sane range (`CONFIG_RANGES`,
documented in docs/config.md), well inside its column's, so a bad value is a clear 422
here instead of a database error or an absurd simulation later."""

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

Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
ZERO_ADDRESS = "0x" + "0" * 40
MAX_CASH_MICROS = 10**15  # 1e9 USDC: more than any copy portfolio, far from bigint's limit
# Characters that reorder the text around them: in a label they can make one user's name
# read as another's (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069).
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _within(low: int, high: int) -> Any:
    return Field(ge=low, le=high)


# The config fields' ranges, in each field's own unit (docs/config.md lists them).
PriceDistance = Annotated[StrictInt, _within(0, 1_000_000)]  # at most the whole 0..1 range
ShareOfEquity = Annotated[StrictInt, _within(0, 10_000)]  # bps: at most all of it
DelayMs = Annotated[StrictInt, _within(0, 600_000)]  # 10 min
WindowMs = Annotated[StrictInt, _within(1, 60_000)]  # 1 min
DepthRatio = Annotated[StrictInt, _within(0, 100_000)]  # bps of the target: up to 10 x
CopyRatio = Annotated[StrictInt, _within(0, 100_000)]  # bps of their size: up to 10 x
BeforeClose = Annotated[StrictInt, _within(0, 604_800)]  # 7 days
SignalAge = Annotated[StrictInt, _within(0, 86_400)]  # 1 day
TakeProfit = Annotated[StrictInt, _within(0, 1_000_000)]  # bps of cost: up to +10,000 %
StopLoss = Annotated[StrictInt, _within(0, 10_000)]  # bps of cost: at most all of it
ExitBeforeClose = Annotated[StrictInt, _within(0, 2_592_000)]  # 30 days
MaxHold = Annotated[StrictInt, _within(0, 31_536_000)]  # 365 days
Notional = Annotated[StrictInt, _within(0, MAX_CASH_MICROS)]
Cash = Annotated[StrictInt, _within(1_000_000, MAX_CASH_MICROS)]  # 1 USDC .. 1e9 USDC


def _text(value: str) -> str:
    """Postgres text holds no NUL, control characters only make trouble in a page, and
    bidi controls make text read as something else."""
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value):
        raise ValueError("must not contain control characters")
    if any(c in BIDI_CONTROLS for c in value):
        raise ValueError("must not contain bidirectional control characters (U+202E ...)")
    return value


def _visible(value: str) -> str:
    """A name must show: at least one letter, digit, punctuation mark or symbol, not
    only spaces, zero-width or format characters, or marks with nothing to sit on."""
    if not any(unicodedata.category(c)[0] in "LNPS" for c in value):
        raise ValueError("must contain a visible character")
    return value


def _wallet(value: str) -> str:
    """The zero address is no one's wallet (its "fills" would be mints and burns)."""
    if value.strip().lower() == ZERO_ADDRESS:
        raise ValueError("the zero address is not a wallet")
    return value


Text = Annotated[str, AfterValidator(_text)]
Label = Annotated[Text, AfterValidator(_visible)]
Wallet = Annotated[str, Field(max_length=100), AfterValidator(_wallet)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigFields(_Body):
    """Every field of `copy_config.GUARDRAIL_FIELDS` and `SIZING_FIELDS`, optional."""

    allow_null: ClassVar[bool] = True  # null = clear a user override (inherit)
    allow_empty: ClassVar[bool] = False

    max_worse_than_theirs_micros: PriceDistance | None = None
    max_chase_vs_mid_micros: PriceDistance | None = None
    max_spread_micros: PriceDistance | None = None
    min_depth_ratio_bps: DepthRatio | None = None
    allow_partial_fills: StrictBool | None = None
    decision_delay_ms: DelayMs | None = None
    decision_jitter_ms: DelayMs | None = None
    group_window_ms: WindowMs | None = None
    no_open_before_close_s: BeforeClose | None = None
    max_total_exposure_bps: ShareOfEquity | None = None
    max_market_exposure_bps: ShareOfEquity | None = None
    max_user_exposure_bps: ShareOfEquity | None = None
    daily_loss_limit_bps: ShareOfEquity | None = None
    weekly_loss_limit_bps: ShareOfEquity | None = None
    max_drawdown_bps: ShareOfEquity | None = None
    max_signal_age_s: SignalAge | None = None
    take_profit_bps: TakeProfit | None = None
    stop_loss_bps: StopLoss | None = None
    exit_before_close_s: ExitBeforeClose | None = None
    max_hold_s: MaxHold | None = None
    copy_pct_bps: CopyRatio | None = None
    min_trade_notional_micros: Notional | None = None
    max_trade_notional_micros: Notional | None = None
    max_trade_equity_bps: ShareOfEquity | None = None
    starting_cash_micros: Cash | None = None

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

    @classmethod
    def range_of(cls, name: str) -> tuple[int, int] | None:
        """Returns the (lowest, highest) value a config field takes (None: a bool)."""
        schema = cls.model_json_schema()["properties"][name]
        (value,) = (s for s in schema.get("anyOf", [schema]) if s.get("type") != "null")
        return (value["minimum"], value["maximum"]) if "minimum" in value else None


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
    wallet: Wallet
    label: Annotated[Label, Field(min_length=1, max_length=100)]
    proxies: Annotated[list[Wallet], Field(max_length=20)] = []


class UserUpdate(_Body):
    enabled: StrictBool | None = None
    copy_mode: Literal["ACTIVE", "BUY_ONLY", "SELL_ONLY", "PAUSED", "REMOVED"] | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.enabled is None and self.copy_mode is None:
            raise ValueError("give enabled and/or copy_mode")
        return self


class CopyOf(_Body):
    """Marks a followed user as the admin's copy wallet of `leader` (a followed user's
    id), or unmarks it (`leader` null)."""

    leader: Id | None


class Blacklist(_Body):
    blacklisted: StrictBool


class Silence(_Body):
    """Silences a rule's alerts whose labels include `labels` ({}: all of the rule's) for
    `minutes` (1 minute .. 30 days); 0 lifts the silence."""

    rule: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
    labels: Annotated[
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=200)]],
        Field(max_length=10),
    ] = {}
    minutes: Annotated[StrictInt, Field(ge=0, le=30 * 24 * 60)]
    reason: Annotated[Text, Field(max_length=500)] | None = None


class Empty(_Body):
    """No fields: a body that must say nothing (revert)."""
