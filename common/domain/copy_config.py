"""The effective copy configuration: the newest GLOBAL version of `guardrail_config` and
`copy_sizing_config`, with the newest USER override of each field laid over it (NULL
inherits). Rows are versioned, never updated, so a decision can name what it used.
Reading them is `store.copy_configs`'; merging them is here (pure)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from common.domain import book_walk

GUARDRAIL_FIELDS = (
    "max_worse_than_theirs_micros",
    "max_chase_vs_mid_micros",
    "max_spread_micros",
    "min_depth_ratio_bps",
    "allow_partial_fills",
    "decision_delay_ms",
    "decision_jitter_ms",
    "group_window_ms",
    "no_open_before_close_s",
    "max_total_exposure_bps",
    "max_market_exposure_bps",
    "max_user_exposure_bps",
    "daily_loss_limit_bps",
    "weekly_loss_limit_bps",
    "max_drawdown_bps",
    "max_signal_age_s",
    "take_profit_bps",
    "stop_loss_bps",
    "exit_before_close_s",
    "max_hold_s",
)
SIZING_FIELDS = (
    "copy_pct_bps",
    "min_trade_notional_micros",
    "max_trade_notional_micros",
    "max_trade_equity_bps",
    "starting_cash_micros",
)


@dataclass(frozen=True)
class Config:
    """Every knob a decision reads, in micros / basis points / ms (SPEC §4, §5 defaults)."""

    max_worse_than_theirs_micros: int = 10_000
    max_chase_vs_mid_micros: int = 15_000
    max_spread_micros: int = 20_000
    min_depth_ratio_bps: int = 12_500
    allow_partial_fills: bool = True
    decision_delay_ms: int = 750
    decision_jitter_ms: int = 250
    group_window_ms: int = 2_000
    no_open_before_close_s: int = 1_800
    max_total_exposure_bps: int = 7_000
    max_market_exposure_bps: int = 500
    max_user_exposure_bps: int = 2_000
    daily_loss_limit_bps: int = 300
    weekly_loss_limit_bps: int = 800
    max_drawdown_bps: int = 1_200
    max_signal_age_s: int = 300
    # Exit overlays (SPEC §12), 0 = off: take profit / stop loss in bps of the average
    # cost, exit this long before the market's end, exit after holding this long.
    take_profit_bps: int = 0
    stop_loss_bps: int = 0
    exit_before_close_s: int = 0
    max_hold_s: int = 0
    copy_pct_bps: int = 100
    min_trade_notional_micros: int = 5_000_000
    max_trade_notional_micros: int = 250_000_000
    max_trade_equity_bps: int = 75
    starting_cash_micros: int = 10_000_000_000
    # Which rows made it (copy_attempt records them); None for a proposed config.
    guardrail_id: int | None = None
    sizing_id: int | None = None
    guardrail_override_id: int | None = None
    sizing_override_id: int | None = None

    def guards(self) -> book_walk.Guards:
        return book_walk.Guards(
            max_worse_than_theirs=self.max_worse_than_theirs_micros,
            max_chase_vs_mid=self.max_chase_vs_mid_micros,
            max_spread=self.max_spread_micros,
            min_depth_ratio_bps=self.min_depth_ratio_bps,
            allow_partial=self.allow_partial_fills,
        )

    def with_values(self, values: dict[str, Any]) -> Config:
        """Returns a copy with the given fields replaced (unknown names raise)."""
        check_names(values)
        return dataclasses.replace(self, **values)


def check_names(values: dict[str, Any]) -> None:
    """Raises ValueError naming the fields that are not config fields."""
    unknown = set(values) - set(GUARDRAIL_FIELDS) - set(SIZING_FIELDS)
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")


@dataclass(frozen=True)
class ConfigSet:
    """The global config and every user's effective one (users without overrides use
    `base`)."""

    base: Config
    users: dict[int, Config]

    def for_user(self, user_id: int) -> Config:
        return self.users.get(user_id, self.base)


def merge(guardrails: list[dict[str, Any]], sizings: list[dict[str, Any]]) -> ConfigSet:
    """Builds the ConfigSet from the newest row per (scope, user) of each table (pure)."""
    values: dict[str, Any] = {}
    ids: dict[str, Any] = {}
    for rows, fields, id_name in (
        (guardrails, GUARDRAIL_FIELDS, "guardrail"),
        (sizings, SIZING_FIELDS, "sizing"),
    ):
        for r in rows:
            if r["scope"] == "GLOBAL":
                values.update({f: r[f] for f in fields if r.get(f) is not None})
                ids[f"{id_name}_id"] = r["id"]
    base = Config(**values, **ids)
    overrides: dict[int, dict[str, Any]] = {}
    for rows, fields, id_name in (
        (guardrails, GUARDRAIL_FIELDS, "guardrail_override_id"),
        (sizings, SIZING_FIELDS, "sizing_override_id"),
    ):
        for r in rows:
            if r["scope"] == "USER":
                mine = overrides.setdefault(r["followed_user_id"], {})
                mine.update({f: r[f] for f in fields if r.get(f) is not None})
                mine[id_name] = r["id"]
    return ConfigSet(base, {u: dataclasses.replace(base, **v) for u, v in overrides.items()})
