"""Exit overlays (SPEC §12), pure: which held positions of a portfolio must be sold now and
why, and the SELL decision that sells one, through the same `decide` (book walk and
guardrails) as a copied SELL.

The four rules, each off at 0 and judged on a long position (shares > 0) at the one mark
rule (`Portfolio.mark`: the newest stored mid, else our last fill price), exactly in
integers:

- EXIT_STOP_LOSS: shares × mark ≤ cost × (1 − stop_loss_bps / 10,000);
- EXIT_TAKE_PROFIT: shares × mark ≥ cost × (1 + take_profit_bps / 10,000);
- EXIT_BEFORE_CLOSE: now ≥ the market's end − exit_before_close_s;
- EXIT_MAX_HOLD: now ≥ the position's opening (`pnl.Position.opened_at`) + max_hold_s.

The threshold itself fires. When several apply the first in that order is the exit's
reason (a stop loss says why before a deadline does); the price rules need a position
with a positive cost and a mark.

An exit sells the whole position — in the global portfolio one SELL per followed user
whose signals brought shares of the asset in (each sells that user's shares, as a copied
SELL would) — at the mark as its reference price ("their price" of the guardrails). Its
key `exit:<user>:<asset>:<minute>` makes a second check in the same minute collide with
the first. The exit's code is the first of the decision's reasons, executed or not: an
executed exit carries it alone, a skipped one is followed by the codes that stopped it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.domain import copy_config, decide, money, portfolio, records

# The config fields (`copy_config.Config`), each off at 0.
FIELDS = ("take_profit_bps", "stop_loss_bps", "exit_before_close_s", "max_hold_s")
# Precedence, first wins.
CODES = ("EXIT_STOP_LOSS", "EXIT_TAKE_PROFIT", "EXIT_BEFORE_CLOSE", "EXIT_MAX_HOLD")
KEY_PREFIX = "exit:"


def enabled(cfg: copy_config.Config) -> bool:
    """Whether any exit overlay is on."""
    return any(getattr(cfg, f) for f in FIELDS)


def rule(
    shares: int,
    cost: int,
    mark: int | None,
    opened_at: datetime | None,
    end_time: datetime | None,
    cfg: copy_config.Config,
    now: datetime,
) -> str | None:
    """Returns the exit code that fires for a position (None: hold it)."""
    if shares <= 0:
        return None
    priced = mark is not None and cost > 0
    value = shares * (mark or 0) * 10_000  # USDC micros × 10^6 × 10^4, exact
    basis = cost * money.MICROS
    if priced and cfg.stop_loss_bps and value <= basis * (10_000 - cfg.stop_loss_bps):
        return "EXIT_STOP_LOSS"
    if priced and cfg.take_profit_bps and value >= basis * (10_000 + cfg.take_profit_bps):
        return "EXIT_TAKE_PROFIT"
    before = timedelta(seconds=cfg.exit_before_close_s)
    if cfg.exit_before_close_s and end_time is not None and now >= end_time - before:
        return "EXIT_BEFORE_CLOSE"
    held = timedelta(seconds=cfg.max_hold_s)
    if cfg.max_hold_s and opened_at is not None and now >= opened_at + held:
        return "EXIT_MAX_HOLD"
    return None


@dataclass(frozen=True)
class Exit:
    """One position to sell now: why, at what reference price, and whose shares."""

    asset_id: str
    condition_id: str | None
    code: str
    mark: int | None
    sellers: tuple[int, ...]  # the followed users whose attempts sell it


def sellers(p: portfolio.Portfolio, asset_id: str) -> tuple[int, ...]:
    """Whose shares an exit sells: the user of a per-user portfolio; in the global one
    every user whose copies hold shares of the asset."""
    if p.scope != "EXEC_GLOBAL":
        return () if p.user_id is None else (p.user_id,)
    return tuple(sorted(u for u, held in p.by_user.items() if held.get(asset_id, 0) > 0))


def plan(
    p: portfolio.Portfolio,
    marks: portfolio.Marks,
    markets: Mapping[str, records.Market | None],
    cfg: copy_config.Config,
    now: datetime,
) -> list[Exit]:
    """Returns the positions of `p` that must exit now, in asset order (pure)."""
    if not enabled(cfg):
        return []
    out = []
    for asset in sorted(p.positions):
        pos = p.positions[asset]
        market = markets.get(pos.condition_id or "")
        end = market.end_time if market is not None else None
        mark = p.mark(asset, marks)
        code = rule(pos.shares, pos.cost, mark, pos.opened_at, end, cfg, now)
        if code is not None:
            out.append(Exit(asset, pos.condition_id, code, mark, sellers(p, asset)))
    return out


def deadlines(
    p: portfolio.Portfolio, markets: Mapping[str, records.Market | None], cfg: copy_config.Config
) -> list[datetime]:
    """The moments the time rules (before close, max hold) start to fire for the long
    positions of `p`: between two of them, with the marks and positions unchanged, no
    check can decide otherwise (the what-if jumps from one to the next)."""
    out = []
    for pos in p.positions.values():
        if pos.shares <= 0:
            continue
        market = markets.get(pos.condition_id or "")
        if cfg.exit_before_close_s and market is not None and market.end_time is not None:
            out.append(market.end_time - timedelta(seconds=cfg.exit_before_close_s))
        if cfg.max_hold_s and pos.opened_at is not None:
            out.append(pos.opened_at + timedelta(seconds=cfg.max_hold_s))
    return out


def key(user_id: int, asset_id: str, now: datetime) -> str:
    """The exit's group key: one per user, asset and minute."""
    return f"{KEY_PREFIX}{user_id}:{asset_id}:{now:%Y-%m-%dT%H:%MZ}"


def group(ex: Exit, user_id: int, now: datetime) -> records.CopyGroup:
    """The SELL "group" an exit is decided as: no leader fills (id 0, their size 0, so
    `decide` sizes it as the whole position) and the mark as its reference price."""
    return records.CopyGroup(
        id=0,
        key=key(user_id, ex.asset_id, now),
        user_id=user_id,
        action="SELL",
        condition_id=ex.condition_id,
        asset_id=ex.asset_id,
        window_start=now,
        first_detect_time=now,
        close_time=now,
        decide_at=now,
        their_shares=money.Shares(0),
        their_notional=money.Usdc(0),
        their_price=None if ex.mark is None else money.Price(ex.mark),
    )


def decide_exit(
    ex: Exit,
    user_id: int,
    p: portfolio.Portfolio,
    cfg: copy_config.Config,
    sit: decide.Situation,
    marks: portfolio.Marks,
    now: datetime,
) -> decide.Decision:
    """Decides one seller's exit (checked at `now`, decided at `sit.now`, the book's
    time) with `decide` (their position 0: sell all we hold) and puts the exit's code
    first among its reasons."""
    g = group(ex, user_id, now)
    d = decide.decide(g, p, cfg, dataclasses.replace(sit, their_position=0), marks)
    return dataclasses.replace(d, reasons=(ex.code, *d.reasons))
