"""Ledger entries (SPEC §4): what a fill, a SPLIT / MERGE / REDEEM, a seed or a
correction does to a portfolio, as pure functions of the event. The shadow ledger
(`store.shadow`) and the copy engine (`domain.decide`) both write these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.domain.records import ActivityEvent, TradeEvent


@dataclass(frozen=True)
class Entry:
    asset_id: str | None
    condition_id: str | None
    entry_type: str
    share_delta_micros: int
    cash_delta_micros: int
    price_micros: int | None
    ref_id: str
    effective_time: datetime


def fill_entries(event: TradeEvent) -> list[Entry]:
    """Entries of one trade_event row (pure)."""
    sign = 1 if event.side == "BUY" else -1
    ref, t = f"trade:{event.id}", event.event_time
    asset, cond = event.asset_id, event.condition_id
    entries = [
        Entry(
            asset,
            cond,
            "TRADE_FILL",
            sign * event.share_micros,
            -sign * event.usdc_notional_micros,
            event.price_micros,
            ref,
            t,
        ),
    ]
    if event.fee_micros:
        entries.append(Entry(asset, cond, "FEE", 0, -event.fee_micros, None, ref, t))
    return entries


def correction_entries(event: TradeEvent, usdc_micros: int, fee_micros: int) -> list[Entry]:
    """Entries that bring an applied fill from the Data API's amounts (`event`) to the
    chain's exact ones (pure): the cash difference, and the fee the API does not show."""
    sign = 1 if event.side == "BUY" else -1
    ref, t = f"trade:{event.id}:chain", event.event_time
    asset, cond = event.asset_id, event.condition_id
    out = []
    cash = -sign * (usdc_micros - event.usdc_notional_micros)
    if cash:
        out.append(Entry(asset, cond, "TRADE_FILL", 0, cash, None, ref, t))
    if fee_micros != event.fee_micros:
        out.append(Entry(asset, cond, "FEE", 0, -(fee_micros - event.fee_micros), None, ref, t))
    return out


def activity_entries(
    activity: ActivityEvent,
    assets: Sequence[str],
    held: Mapping[str, int],
    payouts: Mapping[str, int | None],
    marks: Mapping[str, int] | None = None,
) -> list[Entry]:
    """Entries of one SPLIT / MERGE / REDEEM (pure). `assets` are the market's outcome
    assets, `held` the user's current shares of them, `marks` their marks at that
    moment (a SPLIT / MERGE leg carries its mark as its price: the fold allocates the
    cash leg by them, equally without). A REDEEM leg carries its payout."""
    kind, ref = activity.activity_type, f"activity:{activity.id}"
    cond, t = activity.condition_id, activity.event_time
    legs: dict[str, int]
    if kind == "SPLIT":
        legs = {a: activity.share_micros for a in assets}
        cash = -activity.usdc_micros
    elif kind == "MERGE":
        legs = {a: -activity.share_micros for a in assets}
        cash = activity.usdc_micros
    elif kind == "REDEEM":
        legs = {a: -held.get(a, 0) for a in assets if held.get(a, 0)}
        cash = activity.usdc_micros
    else:
        raise ValueError(f"no shadow rule for {kind}")
    entries = [
        Entry(
            a,
            cond,
            kind,
            delta,
            0,
            payouts.get(a) if kind == "REDEEM" else (marks or {}).get(a),
            f"{ref}:asset:{a}",
            t,
        )
        for a, delta in sorted(legs.items())
    ]
    entries.append(Entry(None, cond, kind, 0, cash, None, ref, t))
    return entries


def void_entries(event: TradeEvent) -> list[Entry]:
    """Entries that take an applied fill back out of the shadow book (pure): its own
    entries negated, under refs of their own so a rerun collides."""
    return [
        Entry(
            e.asset_id,
            e.condition_id,
            e.entry_type,
            -e.share_delta_micros,
            -e.cash_delta_micros,
            e.price_micros,
            f"{e.ref_id}:void",
            e.effective_time,
        )
        for e in fill_entries(event)
    ]


def seed_entries(user_id: int, positions: Sequence[Any], at: datetime) -> list[Entry]:
    """SEED entries for the positions a user held when followed (pure)."""
    return [
        Entry(
            p.asset, p.condition_id, "SEED", p.size, 0, p.avg_price, f"seed:{user_id}:{p.asset}", at
        )
        for p in positions
        if p.size > 0
    ]


def conversion_entries(
    ref: str,
    at: datetime,
    no_legs: Sequence[tuple[str | None, str]],
    yes_legs: Sequence[tuple[str | None, str]],
    amount: int,
    fee_bips: int = 0,
) -> list[Entry]:
    """Entries of one neg-risk CONVERSION (pure), as NegRiskAdapter.convertPositions
    moves tokens: `amount` of the NO token of every question in the index set leaves
    (`no_legs`: (condition, asset)); `amount − fee` of the YES token of every other
    question arrives (`yes_legs`); and (no count − 1) × (amount − fee) of collateral
    comes back. fee = amount × feeBips / 10,000 (the market's fee in the adapter)."""
    out_amount = amount - amount * fee_bips // 10_000
    entries = [
        Entry(asset, cond, "CONVERSION", -amount, 0, None, f"{ref}:asset:{asset}", at)
        for cond, asset in no_legs
    ]
    entries += [
        Entry(asset, cond, "CONVERSION", out_amount, 0, None, f"{ref}:asset:{asset}", at)
        for cond, asset in yes_legs
    ]
    collateral = (len(no_legs) - 1) * out_amount if len(no_legs) > 1 else 0
    entries.append(Entry(None, None, "CONVERSION", 0, collateral, None, ref, at))
    return entries
