"""The exit overlays (SPEC §12), pure: each rule at its boundary (just short of it holds,
the threshold itself exits), off at 0, the precedence when several apply, whose shares a
global exit sells, the decision through the same book walk and guardrails with the exit's
code first, and the fold's opening time a max hold counts from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.domain import copy_config, decide, exits, ledger, portfolio, reasons, records

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
COND = "0x" + "e" * 64
ASSET = "31"
SHARES = 10_000_000  # 10 shares
COST = 5_000_000  # at 0.50 each
OFF = copy_config.Config()
MARKET = records.Market(COND, (ASSET, "32"), end_time=NOW + timedelta(days=1))


def cfg(**values: int) -> copy_config.Config:
    return OFF.with_values(values)


def fires(
    mark: int | None = 500_000,
    *,
    opened: datetime | None = NOW - timedelta(minutes=5),
    end: datetime | None = NOW + timedelta(days=1),
    at: datetime = NOW,
    shares: int = SHARES,
    cost: int = COST,
    **values: int,
) -> str | None:
    return exits.rule(shares, cost, mark, opened, end, cfg(**values), at)


@pytest.mark.parametrize(
    ("code", "holds", "exits_at"),
    [
        # +20 %: 0.60 is the threshold, one micro below it holds.
        ("EXIT_TAKE_PROFIT", {"mark": 599_999}, {"mark": 600_000}),
        # −20 %: 0.40 is the threshold, one micro above it holds.
        ("EXIT_STOP_LOSS", {"mark": 400_001}, {"mark": 400_000}),
        # 1 h before the end: a microsecond earlier holds.
        (
            "EXIT_BEFORE_CLOSE",
            {"at": NOW + timedelta(days=1, hours=-1, microseconds=-1)},
            {"at": NOW + timedelta(days=1, hours=-1)},
        ),
        # held 1 h: a microsecond short of it holds.
        (
            "EXIT_MAX_HOLD",
            {"opened": NOW - timedelta(hours=1) + timedelta(microseconds=1)},
            {"opened": NOW - timedelta(hours=1)},
        ),
    ],
)
def test_each_rule_fires_at_its_threshold_and_not_before(
    code: str, holds: dict[str, object], exits_at: dict[str, object]
) -> None:
    setting = {
        "EXIT_TAKE_PROFIT": {"take_profit_bps": 2_000},
        "EXIT_STOP_LOSS": {"stop_loss_bps": 2_000},
        "EXIT_BEFORE_CLOSE": {"exit_before_close_s": 3_600},
        "EXIT_MAX_HOLD": {"max_hold_s": 3_600},
    }[code]
    assert fires(**holds, **setting) is None  # type: ignore[arg-type]
    assert fires(**exits_at, **setting) == code  # type: ignore[arg-type]
    assert fires(**exits_at) is None  # type: ignore[arg-type]  # off by default


def test_the_price_rules_are_exact_on_an_odd_average_cost() -> None:
    # 3 shares for 1.00: 0.3333… each; +50 % is 0.50 exactly (1.50 / 3 shares).
    at = {"shares": 3_000_000, "cost": 1_000_000, "take_profit_bps": 5_000}
    assert fires(mark=499_999, **at) is None
    assert fires(mark=500_000, **at) == "EXIT_TAKE_PROFIT"


def test_price_rules_need_a_mark_a_cost_and_a_long_position() -> None:
    both = {"take_profit_bps": 1, "stop_loss_bps": 1}
    assert fires(mark=None, **both) is None
    assert fires(mark=900_000, cost=0, **both) is None  # free shares: no basis
    assert fires(mark=100_000, shares=-SHARES, **both) is None
    assert fires(end=None, exit_before_close_s=10**6) is None
    assert fires(opened=None, max_hold_s=1) is None


def test_a_stop_loss_wins_then_take_profit_then_close_then_hold() -> None:
    every = {
        "take_profit_bps": 2_000,
        "stop_loss_bps": 2_000,
        "exit_before_close_s": 2 * 86_400,
        "max_hold_s": 60,
    }
    assert fires(mark=400_000, **every) == "EXIT_STOP_LOSS"
    assert fires(mark=600_000, **every) == "EXIT_TAKE_PROFIT"
    assert fires(mark=500_000, **every) == "EXIT_BEFORE_CLOSE"
    time_only = {"exit_before_close_s": 60, "max_hold_s": 60}
    assert fires(**time_only) == "EXIT_MAX_HOLD"
    assert fires(end=NOW, **time_only) == "EXIT_BEFORE_CLOSE"
    assert exits.CODES == reasons.EXITS
    assert set(exits.CODES) <= set(reasons.REASONS)


def _held(scope: str = "EXEC_USER", user: int | None = 7) -> portfolio.Portfolio:
    p = portfolio.Portfolio(scope, user, 0)
    t = NOW - timedelta(hours=2)
    p.apply(ledger.Entry(None, None, "DEPOSIT", 0, 100_000_000, None, "d", t))
    if scope == "EXEC_GLOBAL":
        p.apply(ledger.Entry(ASSET, COND, "TRADE_FILL", 6_000_000, -3_000_000, 500_000, "a", t), 3)
        p.apply(ledger.Entry(ASSET, COND, "TRADE_FILL", 4_000_000, -2_000_000, 500_000, "b", t), 5)
    else:
        p.apply(ledger.Entry(ASSET, COND, "TRADE_FILL", SHARES, -COST, 500_000, "a", t))
    return p


def _marks(mid: int) -> portfolio.Marks:
    m = portfolio.Marks()
    m.observe(ASSET, NOW, mid)
    return m


def test_the_fold_keeps_when_a_position_opened_and_reopened() -> None:
    p = _held()
    pos = p.positions[ASSET]
    assert pos.opened_at == NOW - timedelta(hours=2)
    later = NOW - timedelta(hours=1)
    p.apply(ledger.Entry(ASSET, COND, "TRADE_FILL", 1_000_000, -500_000, 500_000, "c", later))
    assert p.positions[ASSET].opened_at == NOW - timedelta(hours=2)  # an add keeps it
    p.apply(ledger.Entry(ASSET, COND, "TRADE_FILL", -11_000_000, 5_500_000, 500_000, "e", later))
    p.apply(ledger.Entry(ASSET, COND, "TRADE_FILL", 1_000_000, -500_000, 500_000, "f", NOW))
    assert p.positions[ASSET].opened_at == NOW  # closed, then opened again


def test_plan_names_the_positions_and_a_global_exit_sells_each_user_s_shares() -> None:
    stop = cfg(stop_loss_bps=2_000)
    markets = {COND: MARKET}
    assert exits.plan(_held(), _marks(400_001), markets, stop, NOW) == []
    (ex,) = exits.plan(_held(), _marks(400_000), markets, stop, NOW)
    assert (ex.asset_id, ex.code, ex.mark, ex.sellers) == (ASSET, "EXIT_STOP_LOSS", 400_000, (7,))
    (g,) = exits.plan(_held("EXEC_GLOBAL", None), _marks(400_000), markets, stop, NOW)
    assert g.sellers == (3, 5)
    assert exits.plan(_held(), _marks(100_000), markets, OFF, NOW) == []


def _sit(book: records.Book | None, paused: bool = False) -> decide.Situation:
    return decide.Situation(
        now=NOW,
        paused=paused,
        user_enabled=True,
        user_mode="ACTIVE",
        market=MARKET,
        book=book,
        refs=portfolio.BreakerRefs(0, 0, 0),
    )


def _decide(p: portfolio.Portfolio, book: records.Book | None, **kw: bool) -> list[decide.Decision]:
    marks = _marks(400_000)
    stop = cfg(stop_loss_bps=2_000)
    (ex,) = exits.plan(p, marks, {COND: MARKET}, stop, NOW)
    return [exits.decide_exit(ex, u, p, stop, _sit(book, **kw), marks, NOW) for u in ex.sellers]


DEEP = records.Book(bids=((400_000, 50_000_000),), asks=((410_000, 50_000_000),))


def test_an_executed_exit_sells_the_whole_position_and_carries_its_code_alone() -> None:
    p = _held()
    (d,) = _decide(p, DEEP)
    assert d.decision == "EXECUTE" and d.reasons == ("EXIT_STOP_LOSS",)
    assert d.group.action == "SELL" and d.group.key == f"exit:7:{ASSET}:2026-11-02T12:00Z"
    assert d.filled_shares == SHARES and d.vwap == 400_000 and d.group.id == 0
    decide.apply(p, d, MARKET.assets)
    assert p.held(ASSET) == 0


def test_a_global_exit_sells_each_user_s_shares_once() -> None:
    p = _held("EXEC_GLOBAL", None)
    made = []
    for d in _decide(p, DEEP):
        made.append((d.group.user_id, d.filled_shares))
        decide.apply(p, d, MARKET.assets)
    assert made == [(3, 6_000_000), (5, 4_000_000)]
    assert p.held(ASSET) == 0


@pytest.mark.parametrize(
    ("book", "paused", "stopped_by"),
    [
        (
            records.Book(bids=((400_000, 50_000_000),), asks=((450_000, 1),)),
            False,
            "SPREAD_TOO_WIDE",
        ),
        (None, False, "NO_BOOK"),
        (DEEP, True, "PAUSED"),
    ],
)
def test_a_guardrail_skips_an_exit_with_the_exit_s_code_first(
    book: records.Book | None, paused: bool, stopped_by: str
) -> None:
    p = _held()
    (d,) = _decide(p, book, paused=paused)
    assert d.decision == "SKIP" and d.reasons[0] == "EXIT_STOP_LOSS" and stopped_by in d.reasons
    assert not d.fills and p.held(ASSET) == SHARES


def test_the_what_ifs_exit_checks_never_go_back_in_time() -> None:
    """Groups come in detection order, so their moments may run backwards: a change
    behind the last check is seen at the next boundary, never at one checked already."""
    from common.store import whatif

    inputs = whatif.Inputs(groups=[], books={}, markets={}, users={}, paused=False,
                           portfolios={}, marks=portfolio.Marks())  # fmt: skip
    configs = copy_config.ConfigSet(copy_config.Config(), {})
    ex = whatif._Exits(inputs, configs, {}, {}, {s: whatif.Outcome() for s in whatif.SCOPES})
    t0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    marks = portfolio.Marks()
    ex.until(t0, marks)
    assert ex.last == t0  # the first boundary: the start
    ex.changed = t0 + timedelta(minutes=5, seconds=10)
    ex.until(t0 + timedelta(minutes=8), marks)
    assert ex.last == t0 + timedelta(minutes=6) and ex.changed is None
    ex.changed = t0 + timedelta(minutes=2, seconds=30)  # a later group's earlier moment
    assert ex._next(t0 + timedelta(minutes=10), t0) == t0 + timedelta(minutes=7)
    ex.until(t0 + timedelta(minutes=6, seconds=59), marks)
    assert ex.last == t0 + timedelta(minutes=6)  # nothing due yet: no boundary twice
