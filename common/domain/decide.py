"""What a copy of one group would have done in one portfolio (SPEC §4, §5), as a pure
function of the group, the portfolio, the config, the situation at decision time (pause,
user mode, market, book, breaker references) and the marks. No I/O, no clock: the live
simulator, a replay and the what-if all call `decide`, then `apply`.

Order of judgement: the operator's switches and the market/signal rules, the circuit
breakers and the sizing bounds (all collected, so a SKIP names every rule that stopped
it); then, for an open, the risk caps and the cash clip the target (a clip below the
minimum trade skips with the cap's code); then the book walk. Reductions (SELL, MERGE)
pass the lifecycle, risk and breaker rules by design.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import book_walk, copy_config, ledger, money, portfolio, records

OPENS = ("BUY", "SPLIT")
ONE = money.MICROS


# The decision's inputs as read from the database (typed records, `records`).
Group = records.CopyGroup
Market = records.Market
Book = records.Book


@dataclass(frozen=True)
class Situation:
    now: datetime
    paused: bool
    user_enabled: bool
    user_mode: str
    market: Market | None
    book: Book | None
    refs: portfolio.BreakerRefs
    # The leader's shares of the asset (SELL) or complete sets of the market (MERGE)
    # just before the group, from the seed and their events ordered before it.
    their_position: int | None = None  # None: not read (nothing of ours to reduce)
    # Marks of the market's outcomes at decision time (fresh ones only): a SPLIT or
    # MERGE allocates its cost or proceeds by them.
    leg_prices: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Fill:
    level: int
    price: int
    shares: int
    notional: int
    fee: int


@dataclass(frozen=True)
class Decision:
    scope: str
    user_id: int | None  # None for the global portfolio
    group: Group
    decision: str  # EXECUTE / SKIP
    reasons: tuple[str, ...]
    target_notional: int = 0
    target_shares: int = 0
    best_bid: int | None = None
    best_ask: int | None = None
    mid: int | None = None
    depth: int | None = None  # notional inside the allowed price band at decision time
    fills: tuple[Fill, ...] = ()
    sets: int = 0  # MERGE / SPLIT: complete sets moved
    leg_prices: Mapping[str, int] | None = None  # MERGE / SPLIT: the outcomes' marks
    their_position: int | None = None  # SELL / MERGE: the leader's, before the group
    ideal_shares: int = 0  # T0: the target before clamps, caps and cash (SPEC §10)
    equity: int = 0
    cash: int = 0
    decided_at: datetime | None = None

    @property
    def filled_shares(self) -> int:
        return (
            self.sets
            if self.group.action in ("MERGE", "SPLIT")
            else sum(f.shares for f in self.fills)
        )

    @property
    def filled_notional(self) -> int:
        return (
            self.sets
            if self.group.action in ("MERGE", "SPLIT")
            else sum(f.notional for f in self.fills)
        )

    @property
    def fee(self) -> int:
        return sum(f.fee for f in self.fills)

    @property
    def vwap(self) -> int | None:
        shares = sum(f.shares for f in self.fills)
        return (
            money.div_round(sum(f.price * f.shares for f in self.fills), shares) if shares else None
        )

    @property
    def filled_ratio(self) -> int:
        if not self.target_shares:
            return 0
        return min(ONE, self.filled_shares * ONE // self.target_shares)

    @property
    def cash_delta(self) -> int:
        """Cash the decision moves (negative for a BUY or SPLIT), fees included."""
        sign = -1 if self.group.action in OPENS else 1
        return sign * self.filled_notional - self.fee


def _bps(amount: int, bps: int) -> int:
    return amount * bps // 10_000


def _switches(g: Group, sit: Situation, opens: bool) -> list[str]:
    reasons = []
    if sit.paused:
        reasons.append("PAUSED")
    if not sit.user_enabled or sit.user_mode == "REMOVED":
        reasons.append("USER_DISABLED")
    elif sit.user_mode == "PAUSED":
        reasons.append("MODE_PAUSED")
    elif sit.user_mode == "BUY_ONLY" and not opens:
        reasons.append("MODE_BUY_ONLY")
    elif sit.user_mode == "SELL_ONLY" and opens:
        reasons.append("MODE_SELL_ONLY")
    m = sit.market
    if m is None or (g.action in ("MERGE", "SPLIT") and not m.assets):
        reasons.append("UNKNOWN_MARKET")
    return reasons


def _open_rules(g: Group, sit: Situation, cfg: copy_config.Config, equity: int) -> list[str]:
    reasons = []
    m = sit.market
    if m is not None:
        if m.blacklisted:
            reasons.append("BLACKLISTED")
        closing = timedelta(seconds=cfg.no_open_before_close_s)
        if m.closed or (m.end_time is not None and m.end_time - sit.now < closing):
            reasons.append("MARKET_CLOSING")
    if g.first_detect_time - g.window_start > timedelta(seconds=cfg.max_signal_age_s):
        reasons.append("SIGNAL_TOO_OLD")
    refs = sit.refs
    if equity < refs.day_start - _bps(refs.day_start, cfg.daily_loss_limit_bps):
        reasons.append("CIRCUIT_DAILY")
    if equity < refs.week_start - _bps(refs.week_start, cfg.weekly_loss_limit_bps):
        reasons.append("CIRCUIT_WEEKLY")
    if equity < refs.peak - _bps(refs.peak, cfg.max_drawdown_bps):
        reasons.append("CIRCUIT_DRAWDOWN")
    return reasons


def _risk_room(
    g: Group,
    p: portfolio.Portfolio,
    cfg: copy_config.Config,
    totals: tuple[int, int, int],
    marks: portfolio.Marks,
) -> list[tuple[str, int]]:
    """Room left under each risk cap, as (reason code, notional)."""
    equity, exposure, market = totals
    room = [
        ("RISK_CAP_TOTAL", _bps(equity, cfg.max_total_exposure_bps) - exposure),
        ("RISK_CAP_MARKET", _bps(equity, cfg.max_market_exposure_bps) - market),
    ]
    if p.scope == "EXEC_GLOBAL":
        used = p.user_exposure(g.user_id, marks)
        room.append(("RISK_CAP_USER", _bps(equity, cfg.max_user_exposure_bps) - used))
    return room


def decide(
    g: Group,
    p: portfolio.Portfolio,
    cfg: copy_config.Config,
    sit: Situation,
    marks: portfolio.Marks,
) -> Decision:
    """Returns the decision for group `g` in portfolio `p` (pure)."""
    opens = g.action in OPENS
    totals = p.totals(marks, g.condition_id)
    equity = totals[0]
    base: dict[str, Any] = {
        "scope": p.scope,
        "user_id": p.user_id,
        "group": g,
        "equity": equity,
        "cash": p.cash,
        "decided_at": sit.now,
        "their_position": None if opens else sit.their_position,
    }
    raw = _bps(g.their_notional, cfg.copy_pct_bps)
    base["ideal_shares"] = ideal_shares(g, p, sit, raw)
    reasons = _switches(g, sit, opens)
    if opens:
        reasons += _open_rules(g, sit, cfg, equity)
    lo = cfg.min_trade_notional_micros
    hi = min(cfg.max_trade_notional_micros, _bps(max(equity, 0), cfg.max_trade_equity_bps))
    if opens and hi < lo:
        reasons.append("BELOW_MIN_NOTIONAL")
    target = min(max(raw, lo), hi)  # opens; a reduction is sized by its fraction instead
    if reasons:
        return _skip(base, reasons, target_notional=target if opens else 0)
    if not opens:
        return _reduce(g, p, cfg, sit, base)
    if opens:
        # Cash and every cap are judged together, so an empty wallet says
        # INSUFFICIENT_CASH even when (as it must) the total cap is exhausted too.
        room = _risk_room(g, p, cfg, totals, marks)
        blocked = [code for code, left in room if left < lo]
        if blocked and p.scope == "EXEC_GLOBAL":
            blocked.append("RISK_CAP_GLOBAL")
        if p.cash < lo:
            blocked.insert(0, "INSUFFICIENT_CASH")
        if blocked:
            return _skip(base, blocked, target_notional=target)
        target = min([target, p.cash, *(left for _, left in room)])
    if g.action == "SPLIT":
        return _sets(base, target, sit.leg_prices)
    return _buy(g, p, cfg, sit, base, target)


def ideal_shares(g: Group, p: portfolio.Portfolio, sit: Situation, raw: int) -> int:
    """T0 (SPEC §10): copy % × their notional at their price for a BUY (complete sets of
    that collateral for a SPLIT); for a SELL or MERGE the fraction of our shares (sets)
    the leader sold of theirs — before any clamp, cap, cash or minimum order."""
    if g.action == "BUY":
        return money.div_micros_floor(raw, max(1, g.their_price or 0))
    if g.action == "SPLIT":
        return raw
    if g.action == "MERGE":
        assets = sit.market.assets if sit.market is not None else ()
        held = min((ours(g, p, a) for a in assets), default=0)
    else:
        held = ours(g, p, g.asset_id) if g.asset_id is not None else 0
    return exit_size(held, g.their_shares, sit.their_position or 0)


def _skip(base: dict[str, Any], reasons: list[str], **extra: Any) -> Decision:
    return Decision(decision="SKIP", reasons=tuple(dict.fromkeys(reasons)), **base, **extra)


def ours(g: Group, p: portfolio.Portfolio, asset_id: str) -> int:
    """Our shares of the asset a reduction may sell: all we hold, or in the global
    portfolio what this user's signals brought in (never more than is held)."""
    held = p.held(asset_id)
    if p.scope == "EXEC_GLOBAL":
        return min(held, max(0, p.by_user.get(g.user_id, {}).get(asset_id, 0)))
    return held


def exit_size(ours: int, their_sold: int, their_before: int) -> int:
    """floor(fraction × ours), the fraction being the part of their position the leader
    sold: 1 when the group leaves them at or below zero (an exit)."""
    if ours <= 0:
        return 0
    if their_before <= their_sold:
        return ours
    return ours * max(their_sold, 0) // their_before


def _reduce(
    g: Group, p: portfolio.Portfolio, cfg: copy_config.Config, sit: Situation, base: dict[str, Any]
) -> Decision:
    """A SELL or MERGE sells the fraction of our position that the leader sold of theirs
    (SPEC §4): MIN does not apply, MAX does not cap it."""
    if g.action == "MERGE":
        assert sit.market is not None
        held = min(ours(g, p, a) for a in sit.market.assets)
        if held <= 0:
            return _skip(base, ["NO_POSITION"], target_notional=0)
        sets = exit_size(held, g.their_shares, sit.their_position or 0)
        if sets <= 0:  # their fraction of our sets rounds to nothing
            return _skip(base, ["BELOW_MIN_ORDER_SIZE"], target_notional=0)
        return _sets(base, sets, sit.leg_prices)
    assert g.asset_id is not None
    held = ours(g, p, g.asset_id)
    if held <= 0:
        return _skip(base, ["NO_POSITION"], target_notional=0)
    shares = exit_size(held, g.their_shares, sit.their_position or 0)
    their_price = max(1, g.their_price or 0)
    book = sit.book
    minimum = book.min_order_size if book is not None else 0
    if shares < max(minimum, 1):  # below the book's minimum, or rounds to nothing
        if held < minimum or not minimum:
            notional = money.mul_micros(shares, their_price)
            extra = {"target_notional": notional, "target_shares": shares}
            return _skip(base, ["BELOW_MIN_ORDER_SIZE"], **extra)
        shares = minimum
    if 0 < held - shares < minimum:  # what would be left could never be sold: sell it too
        shares = held
    return _walk(g, p, cfg, sit, base, money.mul_micros(shares, their_price), shares)


def _sets(base: dict[str, Any], sets: int, prices: Mapping[str, int] | None) -> Decision:
    return Decision(
        leg_prices=prices,
        decision="EXECUTE",
        reasons=(),
        target_notional=sets,
        target_shares=sets,
        sets=sets,
        **base,
    )


def _buy(
    g: Group,
    p: portfolio.Portfolio,
    cfg: copy_config.Config,
    sit: Situation,
    base: dict[str, Any],
    target: int,
) -> Decision:
    shares = money.div_micros_floor(target, max(1, g.their_price or 0))
    book = sit.book
    if book is not None and shares < book.min_order_size:
        extra = {"target_notional": target, "target_shares": shares}
        return _skip(base, ["BELOW_MIN_ORDER_SIZE"], **extra)
    return _walk(g, p, cfg, sit, base, target, shares)


def _walk(
    g: Group,
    p: portfolio.Portfolio,
    cfg: copy_config.Config,
    sit: Situation,
    base: dict[str, Any],
    target: int,
    shares: int,
) -> Decision:
    """Walks the book for `shares` (BUY or SELL) within the guardrails' bounds."""
    assert g.asset_id is not None
    their_price = max(1, g.their_price or 0)
    book = sit.book
    if book is None:
        return _skip(base, ["NO_BOOK"], target_notional=target, target_shares=shares)
    quotes: dict[str, Any] = {
        "best_bid": book.bids[0][0] if book.bids else None,
        "best_ask": book.asks[0][0] if book.asks else None,
    }
    side: book_walk.Side = "BUY" if g.action == "BUY" else "SELL"
    walk = book_walk.walk(side, book.bids, book.asks, their_price, shares, cfg.guards())
    extra: dict[str, Any] = {
        "target_notional": target,
        "target_shares": shares,
        "mid": walk.mid,
        "depth": walk.depth_notional if walk.mid is not None else None,
        **quotes,
    }
    if walk.reasons:
        return _skip(base, list(walk.reasons), **extra)
    m = sit.market
    fee_rate = m.fee_rate_micros if m is not None and m.fees_enabled else 0
    fee_exp = m.fee_exponent if m is not None else 1
    fills = _fills(walk.fills, fee_rate, fee_exp, p.cash if g.action == "BUY" else None)
    if not fills:
        return _skip(base, ["INSUFFICIENT_CASH"], **extra)
    return Decision(decision="EXECUTE", reasons=(), fills=tuple(fills), **base, **extra)


def _fill(level: int, price: int, shares: int, rate: int, exponent: int) -> Fill:
    fee = money.taker_fee(shares, price, rate, exponent) if rate else 0
    return Fill(level, price, shares, money.mul_micros(price, shares), fee)


def _fills(
    levels: tuple[tuple[int, int], ...], rate: int, exponent: int, budget: int | None
) -> list[Fill]:
    """Fills per level with their fees; with a cash budget (BUY), the last level taken
    is cut so notional + fees never exceed it."""
    out: list[Fill] = []
    left = budget
    for i, (price, shares) in enumerate(levels):
        f = _fill(i, price, shares, rate, exponent)
        if left is not None and f.notional + f.fee > left:
            lo, hi = 0, shares  # the most shares this level can take within the budget
            while lo < hi:
                mid = (lo + hi + 1) // 2
                g = _fill(i, price, mid, rate, exponent)
                lo, hi = (mid, hi) if g.notional + g.fee <= left else (lo, mid - 1)
            if lo:
                out.append(_fill(i, price, lo, rate, exponent))
            break
        out.append(f)
        if left is not None:
            left -= f.notional + f.fee
    return out


def entries(d: Decision, market_assets: tuple[str, ...]) -> list[ledger.Entry]:
    """The ledger entries of an executed decision (pure); refs derive from the group key."""
    g = d.group
    t = d.decided_at or g.decide_at
    out: list[ledger.Entry] = []
    if d.decision != "EXECUTE":
        return out
    if g.action in ("BUY", "SELL"):
        sign = 1 if g.action == "BUY" else -1
        for f in d.fills:
            ref = f"{g.key}:L{f.level}"
            out.append(
                ledger.Entry(
                    g.asset_id,
                    g.condition_id,
                    "TRADE_FILL",
                    sign * f.shares,
                    -sign * f.notional,
                    f.price,
                    ref,
                    t,
                )
            )
            if f.fee:
                out.append(ledger.Entry(g.asset_id, g.condition_id, "FEE", 0, -f.fee, None, ref, t))
        return out
    sign = 1 if g.action == "SPLIT" else -1
    prices = d.leg_prices or {}
    for a in market_assets:
        out.append(
            ledger.Entry(
                a,
                g.condition_id,
                g.action,
                sign * d.sets,
                0,
                prices.get(a),
                f"{g.key}:asset:{a}",
                t,
            )
        )
    out.append(ledger.Entry(None, g.condition_id, g.action, 0, -sign * d.sets, None, g.key, t))
    return out


def apply(
    p: portfolio.Portfolio,
    d: Decision,
    market_assets: tuple[str, ...],
    made: list[ledger.Entry] | None = None,
) -> list[ledger.Entry]:
    """Moves the in-memory portfolio by an executed decision's entries (`made`, when the
    caller has them already; computed once either way) by the one fold, and returns
    them."""
    made = entries(d, market_assets) if made is None else made
    for e in made:
        p.apply(e, d.group.user_id)
    p.funded = True
    return made
