"""The pure copy decision (SPEC §4, §5): one table row per reason code, guardrail
boundaries, sizing, risk/cash clips, fees, MERGE/SPLIT, and hypothesis properties over
sequences of decisions applied to one portfolio (cash and shares never negative, fills
inside the book and the VWAP bound, the portfolio equal to the sum of its entries)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain import copy_config, decide, ledger, money, portfolio, reasons

M = money.MICROS
K = 10_000 * M  # the default equity
NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
CFG = copy_config.Config()
USER, GLOBAL = "EXEC_USER", "EXEC_GLOBAL"
MKT, YES, NO = "cond-a", "yes-a", "no-a"
OTHER_MKT, OTHER, OTHER_NO = "cond-b", "yes-b", "no-b"
MARKET_OF = {YES: MKT, NO: MKT, OTHER: OTHER_MKT, OTHER_NO: OTHER_MKT}
HELD = ((YES, 100), (NO, 100))  # 200 shares of each outcome of MKT, marked at 0.50
CAPS_OFF = {f"max_{k}_exposure_bps": 10_000 for k in ("total", "market", "user")}
FEES: dict[str, Any] = {"fees_enabled": True, "fee_rate_micros": 40_000}
WIDE = {"max_spread_micros": 50_000}
NO_DEPTH = {"min_depth_ratio_bps": 0}
Refs = portfolio.BreakerRefs


def usd(x: float | str) -> int:
    return money.to_micros(x)


def mkt(assets: tuple[str, ...] = (YES, NO), **kw: Any) -> decide.Market:
    kw.setdefault("end_time", NOW + timedelta(days=30))
    return decide.Market(MKT, assets, **kw)


def levels(text: str) -> tuple[tuple[int, int], ...]:
    """'0.50x25 0.52' → ((500000, 25 shares), (520000, 10,000 shares)), best first."""
    out = [[*lv.split("x"), "10000"][:2] for lv in text.split()]
    return tuple((usd(p), usd(q)) for p, q in out)


def bk(bids: str = "0.49", asks: str = "0.51", min_size: float = 0) -> decide.Book:
    return decide.Book(levels(bids), levels(asks), None, usd(min_size))


def mk_group(
    action: str, asset: str, price: int, notional: int, user: int = 1, age_s: float = 1
) -> decide.Group:
    trade = action in ("BUY", "SELL")
    price = price if trade else M
    start, shares = NOW - timedelta(minutes=5), money.div_micros_floor(notional, max(price, 1))
    detect, close = start + timedelta(seconds=age_s), start + timedelta(seconds=2)
    cond, aid = MARKET_OF[asset], asset if trade else None
    return decide.Group(1, "g1", user, action, cond, aid, start, detect, close, NOW, shares,
                        notional, price)  # fmt: skip


def bought(p: portfolio.Portfolio, asset: str, shares: int, user: int) -> None:
    """Moves `p` by a fill of `shares` at 0.50 copied from `user` (the caller sets cash)."""
    half = M // 2
    fill = ledger.Entry(
        asset, MARKET_OF[asset], "TRADE_FILL", shares, -money.mul_micros(shares, half), half,
        f"held:{asset}", NOW,
    )  # fmt: skip
    p.apply(fill, user)


def port(cash: int | None = None, hold: Any = (), scope: str = USER) -> portfolio.Portfolio:
    """Holdings as (asset, USDC value at 0.50[, copied from user]); cash defaults to what
    makes equity 10,000 USDC."""
    p = portfolio.Portfolio(scope, None if scope == GLOBAL else 1, K)
    for asset, value, *who in hold:
        bought(p, asset, 2 * usd(value), who[0] if who else 1)
    p.cash = K - sum(usd(v) for _, v, *_ in hold) if cash is None else cash
    return p


def refs(p: portfolio.Portfolio, **kw: int) -> Refs:
    eq = p.equity(portfolio.Marks())
    return Refs(kw.get("day", eq), kw.get("week", eq), kw.get("peak", eq))


def run(
    action: str = "BUY", p: portfolio.Portfolio | None = None, **kw: Any
) -> tuple[decide.Decision, portfolio.Portfolio]:
    """Decides one group (their price 0.50, 1000 USDC → target 10 USDC = 20 shares) in a
    10,000 USDC portfolio against a 0.49/0.51 book; keywords override any part."""
    cash = kw.pop("cash", None)
    p = p or port(None if cash is None else usd(cash), kw.pop("hold", ()), kw.pop("scope", USER))
    cfg = kw.pop("cfg", {})
    cfg = cfg if isinstance(cfg, copy_config.Config) else CFG.with_values(cfg)
    price, notional = usd(kw.pop("price", 0.50)), usd(kw.pop("notional", 1000))
    g = mk_group(action, YES, price, notional, **kw.pop("g", {}))
    market, book = kw.pop("market", mkt()), kw.pop("book", bk())
    flags = kw.pop("paused", False), kw.pop("enabled", True), kw.pop("mode", "ACTIVE")
    breakers = kw.pop("breakers", None) or refs(p)
    # The leader's position before the group: by default they sell a tenth of it (so a
    # 200-share holding sells 20); 0 means they exit.
    their = kw.pop("their", None)
    their = 10 * g.their_shares if their is None else usd(their)
    sit = decide.Situation(NOW, *flags, market, book, breakers, their)
    assert not kw, kw
    return decide.decide(g, p, cfg, sit, portfolio.Marks()), p


# 1. Every reason code, made to happen.
def case(code: str, action: str, xfail: str = "", **kw: Any) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    ident = f"{code}-{action}-{kw.get('scope', USER)}"
    return pytest.param(code, action, kw, id=ident, marks=marks)


SPREAD = {"max_spread_micros": 100_000}
NO_PARTIAL = {**NO_DEPTH, "allow_partial_fills": False}
CODE_CASES = [
    case("PAUSED", "BUY", paused=True),
    case("PAUSED", "SELL", paused=True, hold=HELD, scope=GLOBAL),
    case("USER_DISABLED", "BUY", enabled=False),
    case("USER_DISABLED", "SELL", mode="REMOVED", hold=HELD),
    case("MODE_PAUSED", "BUY", mode="PAUSED"),
    case("MODE_BUY_ONLY", "SELL", mode="BUY_ONLY", hold=HELD),
    case("MODE_BUY_ONLY", "MERGE", mode="BUY_ONLY", hold=HELD, scope=GLOBAL),
    case("MODE_SELL_ONLY", "BUY", mode="SELL_ONLY"),
    case("MODE_SELL_ONLY", "SPLIT", mode="SELL_ONLY"),
    case("BLACKLISTED", "BUY", market=mkt(blacklisted=True)),
    case("UNKNOWN_MARKET", "BUY", market=None),
    case("UNKNOWN_MARKET", "MERGE", market=mkt(()), hold=HELD),
    case("MARKET_CLOSING", "BUY", market=mkt(closed=True)),
    case("MARKET_CLOSING", "SPLIT", market=mkt(end_time=NOW)),
    case("SIGNAL_TOO_OLD", "BUY", g={"age_s": 301}),
    case("BELOW_MIN_NOTIONAL", "BUY", cash=600),
    case("BELOW_MIN_NOTIONAL", "SPLIT", cfg={"max_trade_notional_micros": 4 * M}),
    case("NO_POSITION", "SELL"),
    case("NO_POSITION", "MERGE", hold=((YES, 100),), scope=GLOBAL),
    case("INSUFFICIENT_CASH", "BUY", cfg=CAPS_OFF, cash=4, hold=((OTHER, 9996),)),
    case("INSUFFICIENT_CASH", "SPLIT", cfg=CAPS_OFF, cash=4, hold=((OTHER, 9996),)),
    case("RISK_CAP_TOTAL", "BUY", hold=((OTHER, 7000),)),
    case("RISK_CAP_TOTAL", "BUY", hold=((OTHER, 7000, 2),), scope=GLOBAL),
    case("RISK_CAP_MARKET", "BUY", hold=((NO, 496),)),
    case("RISK_CAP_MARKET", "SPLIT", hold=((NO, 496, 2),), scope=GLOBAL),
    case("RISK_CAP_USER", "BUY", hold=((OTHER, 1996, 1),), scope=GLOBAL),
    case("RISK_CAP_GLOBAL", "SPLIT", hold=((OTHER, 7000, 1),), scope=GLOBAL),
    case("CIRCUIT_DAILY", "BUY", breakers=Refs(usd(10_400), K, K)),
    case("CIRCUIT_WEEKLY", "BUY", breakers=Refs(K, usd(11_000), K)),
    case("CIRCUIT_DRAWDOWN", "SPLIT", breakers=Refs(K, K, usd(11_400))),
    case("NO_BOOK", "BUY", book=None),
    case("NO_BOOK", "SELL", book=bk(bids=""), hold=HELD),
    case("SPREAD_TOO_WIDE", "BUY", book=bk("0.48")),
    case("PRICE_WORSE_THAN_THEIRS", "BUY", price=0.49),
    case("PRICE_WORSE_THAN_THEIRS", "SELL", price=0.51, hold=HELD, scope=GLOBAL),
    case("CHASE_VS_MID", "BUY", cfg=SPREAD, book=bk("0.40")),
    case("CHASE_VS_MID", "SELL", cfg=SPREAD, book=bk(asks="0.60"), hold=HELD),
    case("INSUFFICIENT_DEPTH", "BUY", book=bk(asks="0.51x20")),
    case("INSUFFICIENT_DEPTH", "BUY", cfg=NO_PARTIAL, book=bk(asks="0.50x5")),
    case("NO_LIQUIDITY_WITHIN_BOUNDS", "BUY", cfg=NO_DEPTH, book=bk(asks="0.51x0")),
    case("BELOW_MIN_ORDER_SIZE", "BUY", book=bk(min_size=25)),
    case("BELOW_MIN_ORDER_SIZE", "SELL", hold=((YES, 2),), book=bk(min_size=5)),
]


def test_every_reason_code_has_a_case() -> None:
    # The exit overlays' codes are the exits' own (tests/test_exits.py makes each happen).
    assert {c.values[0] for c in CODE_CASES} == set(reasons.REASONS) - set(reasons.EXITS)


@pytest.mark.parametrize(("code", "action", "kw"), CODE_CASES)
def test_reason_code(code: str, action: str, kw: dict[str, Any]) -> None:
    d, _ = run(action, **kw)
    assert d.decision == "SKIP" and code in d.reasons and not d.fills
    assert set(d.reasons) <= set(reasons.REASONS)
    caps = {r for r in d.reasons if r.startswith("RISK_CAP_")} - {"RISK_CAP_GLOBAL"}
    if d.scope == USER:
        assert not {"RISK_CAP_USER", "RISK_CAP_GLOBAL"} & set(d.reasons)
    else:
        assert ("RISK_CAP_GLOBAL" in d.reasons) == bool(caps)  # never alone


def test_user_cap_is_global_only() -> None:
    assert run(hold=((OTHER, 1996, 1),), scope=USER)[0].decision == "EXECUTE"


# 2. Guardrails, boundaries included (their price 0.50, 20 shares, depth needed 12.5 USDC).
@pytest.mark.parametrize(
    ("action", "bids", "asks", "cfg", "expect"),
    [
        pytest.param("BUY", "0.49", "0.51", {}, "", id="spread-at-limit"),
        pytest.param("BUY", "0.489999", "0.51", {}, "SPREAD_TOO_WIDE", id="spread-over"),
        pytest.param("BUY", "0.50", "0.51", {}, "", id="buy-at-theirs+0.01"),
        pytest.param("BUY", "0.50", "0.510001", {}, "PRICE_WORSE_THAN_THEIRS", id="buy-over"),
        pytest.param("BUY", "0.47", "0.50", WIDE, "", id="buy-at-mid+0.015"),
        pytest.param("BUY", "0.47", "0.500002", WIDE, "CHASE_VS_MID", id="buy-over-mid"),
        pytest.param("SELL", "0.49", "0.50", {}, "", id="sell-at-theirs-0.01"),
        pytest.param("SELL", "0.489999", "0.50", {}, "PRICE_WORSE_THAN_THEIRS", id="sell-under"),
        pytest.param("SELL", "0.50", "0.53", WIDE, "", id="sell-at-mid-0.015"),
        pytest.param("SELL", "0.499998", "0.53", WIDE, "CHASE_VS_MID", id="sell-under-mid"),
        pytest.param("BUY", "0.49", "0.50x25", {}, "", id="depth-exactly-1.25x"),
        pytest.param("BUY", "0.49", "0.50x24.999998", {}, "INSUFFICIENT_DEPTH", id="depth-short"),
        pytest.param("BUY", "0.49", "0.50x20 0.52", {}, "INSUFFICIENT_DEPTH", id="depth-in-band"),
        pytest.param("SELL", "0.50x25", "0.51", {}, "", id="sell-depth-exactly"),
        pytest.param("SELL", "0.50x24.999998", "0.51", {}, "INSUFFICIENT_DEPTH", id="sell-short"),
    ],
)
def test_guardrail_boundaries(action: str, bids: str, asks: str, cfg: Any, expect: str) -> None:
    d, _ = run(action, cfg=cfg, book=bk(bids, asks), hold=HELD)
    assert d.reasons == ((expect,) if expect else ())
    assert d.decision == ("SKIP" if expect else "EXECUTE")
    if not expect:
        assert d.vwap is not None and d.mid is not None and d.filled_shares == 20 * M
        if action == "BUY":
            assert d.vwap <= min(usd(0.51), d.mid + usd(0.015))
        else:
            assert d.vwap >= max(usd(0.49), d.mid - usd(0.015))


def test_mid_bounds_the_vwap_when_their_price_is_stale() -> None:
    # their 0.60 allows 0.61, the mid 0.50 only 0.515: 0.52 is taken while the VWAP stays in
    d, _ = run(price=0.60, notional=2500, cfg=NO_DEPTH, book=bk(asks="0.51x10 0.52"))
    assert d.decision == "EXECUTE" and d.vwap == usd(0.515)
    assert [(f.price, f.shares) for f in d.fills] == [(usd(0.51), 10 * M), (usd(0.52), 10 * M)]
    assert d.filled_shares < d.target_shares


def rule_rows() -> list[Any]:
    closing = NOW + timedelta(minutes=30)
    just_in = mkt(end_time=closing - timedelta(microseconds=1))
    opens_only: Any = lambda code: (code, code, None, None)  # noqa: E731
    rules: list[tuple[str, dict[str, Any], tuple[str | None, ...]]] = [
        ("mode-BUY_ONLY", {"mode": "BUY_ONLY"}, (None, None, "MODE_BUY_ONLY", "MODE_BUY_ONLY")),
        ("mode-SELL_ONLY", {"mode": "SELL_ONLY"}, opens_only("MODE_SELL_ONLY")),
        ("mode-PAUSED", {"mode": "PAUSED"}, ("MODE_PAUSED",) * 4),
        ("global-pause", {"paused": True}, ("PAUSED",) * 4),
        ("blacklist", {"market": mkt(blacklisted=True)}, opens_only("BLACKLISTED")),
        ("age-at-limit", {"g": {"age_s": 300}}, (None,) * 4),
        ("age-over", {"g": {"age_s": 300.000001}}, opens_only("SIGNAL_TOO_OLD")),
        ("close-in-30min", {"market": mkt(end_time=closing)}, (None,) * 4),
        ("close-in-30min-1us", {"market": just_in}, opens_only("MARKET_CLOSING")),
        ("closed", {"market": mkt(closed=True)}, opens_only("MARKET_CLOSING")),
    ]
    actions = ("BUY", "SPLIT", "SELL", "MERGE")
    return [
        pytest.param(a, kw, exp, id=f"{name}-{a}")
        for name, kw, exps in rules
        for a, exp in zip(actions, exps, strict=True)
    ]


@pytest.mark.parametrize(("action", "kw", "expect"), rule_rows())
def test_switches_and_open_only_rules(action: str, kw: dict[str, Any], expect: str | None) -> None:
    d, _ = run(action, hold=HELD, **kw)
    assert (d.decision, d.reasons) == (("SKIP", (expect,)) if expect else ("EXECUTE", ()))


@pytest.mark.parametrize(
    ("code", "ref", "limit"),
    [("CIRCUIT_DAILY", "day", 9_700), ("CIRCUIT_WEEKLY", "week", 9_200),
     ("CIRCUIT_DRAWDOWN", "peak", 8_800)],
)  # fmt: skip
def test_circuit_breakers_block_opens_only(code: str, ref: str, limit: int) -> None:
    for short, expect in ((0, ()), (1, (code,))):  # equity at the limit, then 1 micro under
        p = port(limit * M - 200 * M - short, HELD)
        breakers = refs(p, **{ref: K})
        for action in ("BUY", "SPLIT", "SELL", "MERGE"):
            d, _ = run(action, p=p, breakers=breakers)
            assert d.reasons == (expect if action in decide.OPENS else ()), (action, short)


# 3. Sizing.
@pytest.mark.parametrize(
    ("notional", "cash", "target"),
    [("1000", None, "10"), ("1234.567891", None, "12.345678"), ("100", None, "5"),
     ("100000", None, "75"), ("100000", 100_000, "250"), ("20000", 100_000, "200"),
     ("100000", "666.666667", "5")],
    ids=["1pct", "floor", "min", "0.75pct-equity", "max-250", "1pct-big", "max-equals-min"],
)  # fmt: skip
def test_buy_target(notional: str, cash: Any, target: str) -> None:
    d, _ = run(notional=notional, cash=cash)
    assert d.decision == "EXECUTE" and d.target_notional == usd(target)


@pytest.mark.parametrize(
    ("cash", "cfg"), [("666.666666", {}), (None, {"max_trade_notional_micros": 4_999_999})]
)
def test_max_below_min_skips_opens_not_reductions(cash: Any, cfg: dict[str, Any]) -> None:
    for action in ("BUY", "SPLIT"):
        assert run(action, cash=cash, cfg=cfg)[0].reasons == ("BELOW_MIN_NOTIONAL",)
    for action in ("SELL", "MERGE"):
        assert run(action, cash=cash, cfg=cfg, hold=HELD)[0].decision == "EXECUTE"


# Their sale: 1000 USDC at 0.50 = 2000 shares. `held` is our USDC at 0.50 (shares × 2).
@pytest.mark.parametrize(
    ("held", "their", "cfg", "book", "sold"),
    [(100, 0, {}, bk(), 200), (100, 1500, {}, bk(), 200), (100, 2000, {}, bk(), 200),
     (100, 8000, {}, bk(), 50), (100, 6000, {}, bk(), 66.666666), (1.5, 6000, {}, bk(), 1),
     (100, 200_000, {}, bk(), 2), (100, 200_000, {}, bk(min_size=5), 5),
     (3, 6000, {}, bk(min_size=5), 6),
     (100, 0, {"max_trade_notional_micros": 8 * M}, bk(), 200),
     (100, 0, {"min_trade_notional_micros": 50 * M}, bk(), 200)],
    ids=["exit", "below-zero", "exactly-all", "quarter", "third-floored", "floor-small",
         "one-percent", "raised-to-min-size", "no-unsellable-rest", "max-no-cap",
         "min-not-applied"],
)  # fmt: skip
def test_a_sell_sells_the_fraction_the_leader_sold(
    held: float, their: float, cfg: Any, book: decide.Book, sold: float
) -> None:
    d, p = run("SELL", hold=((YES, held),), their=their, cfg=cfg, book=book)
    assert d.decision == "EXECUTE" and d.filled_shares == d.target_shares == usd(sold)
    assert d.their_position == usd(their)
    decide.apply(p, d, (YES, NO))
    assert p.shares.get(YES, 0) == usd(2 * held) - usd(sold) >= 0


def test_a_global_sell_reduces_only_what_that_users_signals_brought() -> None:
    hold = ((YES, 100, 1), (YES, 50, 2))  # 200 shares copied from user 1, 100 from user 2
    d, p = run("SELL", hold=hold, scope=GLOBAL, their=0)  # user 1 exits
    assert d.filled_shares == 200 * M
    decide.apply(p, d, (YES, NO))
    assert p.shares[YES] == 100 * M and p.by_user[2][YES] == 100 * M and YES not in p.by_user[1]
    d, _ = run("SELL", p=p, their=0)  # user 1 again: nothing of theirs left
    assert d.reasons == ("NO_POSITION",)


@pytest.mark.parametrize(
    ("override", "target"),
    [
        ({"copy_pct_bps": 250}, "25"),
        ({"max_trade_notional_micros": 8 * M}, "8"),
        ({"copy_pct_bps": 50}, "5"),
        ({"copy_pct_bps": 300, "max_trade_notional_micros": 20 * M}, "20"),
    ],
)
def test_per_user_override(override: dict[str, Any], target: str) -> None:
    configs = copy_config.ConfigSet(CFG, {1: CFG.with_values(override)})
    assert run(cfg=configs.for_user(1))[0].target_notional == usd(target)
    assert run(cfg=configs.for_user(2), g={"user": 2})[0].target_notional == usd(10)


def test_target_shares_floor_to_the_micro_share() -> None:
    d, _ = run(price=0.37, book=bk("0.36", "0.37"))
    assert d.target_notional == 10 * M and d.target_shares == 27_027_027  # 10 / 0.37
    assert d.filled_shares == 27_027_027


# 4. Risk caps, cash, fees (their 5000 USDC: a 50 USDC target before the clips).
@pytest.mark.parametrize("room", ["20", "5", "4.999999"])
@pytest.mark.parametrize(
    ("code", "scope", "asset", "limit", "who"),
    [("RISK_CAP_MARKET", USER, NO, 500, 1), ("RISK_CAP_MARKET", GLOBAL, NO, 500, 2),
     ("RISK_CAP_TOTAL", USER, OTHER, 7000, 1), ("RISK_CAP_TOTAL", GLOBAL, OTHER, 7000, 2),
     ("RISK_CAP_USER", GLOBAL, OTHER, 2000, 1)],
)  # fmt: skip
def test_risk_caps_clip_or_skip(
    code: str, scope: str, asset: str, limit: int, who: int, room: str
) -> None:
    value = money.format_micros(limit * M - usd(room))
    d, _ = run(notional=5000, hold=((asset, value, who),), scope=scope)
    if usd(room) >= CFG.min_trade_notional_micros:
        assert d.decision == "EXECUTE" and d.target_notional == usd(room)
        assert d.target_shares == 2 * usd(room)
    else:
        assert d.reasons == ((code, "RISK_CAP_GLOBAL") if scope == GLOBAL else (code,))


def test_a_clipped_buy_overshoots_its_cap_by_at_most_the_price_slippage() -> None:
    # The room clips the target at their price; the fill may be up to the price bound
    # worse and is marked at the mid: room 20 USDC in MKT, their 0.48, book 0.489/0.49.
    p = port(None, ((NO, 480),))
    marks = portfolio.Marks()
    marks.observe(YES, NOW, 489_500)
    g = mk_group("BUY", YES, usd(0.48), usd(5000))
    sit = decide.Situation(NOW, False, True, "ACTIVE", mkt(), bk("0.489", "0.49"), refs(p))
    d = decide.decide(g, p, CFG, sit, marks)
    assert d.decision == "EXECUTE" and d.target_notional == 20 * M
    decide.apply(p, d, (YES, NO))
    cap = p.equity(marks) * CFG.max_market_exposure_bps // 10_000
    slippage = CFG.max_worse_than_theirs_micros + CFG.max_chase_vs_mid_micros
    over = p.market_exposure(MKT, marks) - cap  # 500.395833 − 499.998958
    assert 0 < over <= d.target_notional * slippage // usd(0.48)


@pytest.mark.parametrize(("cash", "fees"), [("20", {}), ("5", {}), ("20", FEES)])
def test_cash_clips_the_target(cash: str, fees: dict[str, Any]) -> None:
    d, p = run(notional=5000, cfg=CAPS_OFF, cash=cash, hold=((OTHER, 9980),), market=mkt(**fees))
    assert d.decision == "EXECUTE" and d.target_notional == usd(cash)
    assert d.filled_notional + d.fee <= usd(cash) and d.filled_shares < d.target_shares
    last = d.fills[-1]  # the budget cut is maximal: one more micro-share would not fit
    more = money.mul_micros(last.price, last.shares + 1)
    more += money.taker_fee(last.shares + 1, last.price, 40_000) if fees else 0
    assert d.filled_notional - last.notional + d.fee - last.fee + more > usd(cash)
    decide.apply(p, d, (YES, NO))
    assert 0 <= p.cash < usd(0.01)


def test_fees_per_fill_and_entries_per_level() -> None:
    d, p = run(market=mkt(**FEES), book=bk(asks="0.50x10 0.51"))
    assert d.decision == "EXECUTE"
    fee0, fee1 = (money.taker_fee(10 * M, usd(x), 40_000) for x in (0.50, 0.51))
    assert (fee0, fee1) == (100_000, 99_960)
    E = ledger.Entry
    assert decide.entries(d, (YES, NO)) == [
        E(YES, MKT, "TRADE_FILL", 10 * M, -usd(5), usd(0.50), "g1:L0", NOW),
        E(YES, MKT, "FEE", 0, -fee0, None, "g1:L0", NOW),
        E(YES, MKT, "TRADE_FILL", 10 * M, -usd(5.1), usd(0.51), "g1:L1", NOW),
        E(YES, MKT, "FEE", 0, -fee1, None, "g1:L1", NOW),
    ]
    decide.apply(p, d, (YES, NO))
    assert p.cash == K - usd(10.1) - fee0 - fee1 and p.shares[YES] == 20 * M
    s, _ = run("SELL", p=p, market=mkt(**FEES), book=bk("0.50"), their=0)
    assert s.fee == money.taker_fee(20 * M, usd(0.50), 40_000) > 0
    assert s.cash_delta == usd(10) - s.fee


# 5. MERGE and SPLIT.
@pytest.mark.parametrize(
    ("hold", "their", "sets"),
    [(((YES, 1.5), (NO, 3.5)), 0, 3), (HELD, None, 20), (HELD, 2000, 100)],
    ids=["exit-min-of-legs", "tenth", "half"],
)
def test_a_merge_merges_the_fraction_of_our_complete_sets(
    hold: Any, their: float | None, sets: int
) -> None:
    d, p = run("MERGE", hold=hold, scope=GLOBAL, their=their)
    assert d.decision == "EXECUTE" and d.sets == sets * M
    before, cash = dict(p.shares), p.cash
    decide.apply(p, d, (YES, NO))
    assert p.cash == cash + sets * M
    assert all(p.shares.get(a, 0) == before[a] - sets * M for a in (YES, NO))
    assert run("MERGE", hold=((YES, 100),))[0].reasons == ("NO_POSITION",)


@pytest.mark.parametrize(
    ("prices", "costs"),
    [(None, (6_666_666, 6_666_666, 6_666_668)),
     ({YES: 600_000, NO: 300_000, "maybe-a": 100_000}, (12 * M, 6 * M, 2 * M)),
     ({YES: 700_000, NO: 350_000, "maybe-a": 0}, (13_333_333, 6_666_666, 1))],
    ids=["no-marks-equal", "by-marks", "marks-not-summing-to-one"],
)  # fmt: skip
def test_a_split_opens_every_outcome_at_its_share_of_the_cost(
    prices: dict[str, int] | None, costs: tuple[int, ...]
) -> None:
    assets = (YES, NO, "maybe-a")
    p = port()
    sit = decide.Situation(NOW, False, True, "ACTIVE", mkt(assets), bk(), refs(p), 0, prices)
    g = mk_group("SPLIT", YES, M, usd(2000))
    d = decide.decide(g, p, CFG, sit, portfolio.Marks())
    assert d.decision == "EXECUTE" and d.sets == 20 * M and d.cash_delta == -20 * M
    made = decide.entries(d, assets)
    assert [e.ref_id for e in made] == ["g1:asset:yes-a", "g1:asset:no-a", "g1:asset:maybe-a", "g1"]
    assert [e.price_micros for e in made[:3]] == [(prices or {}).get(a) for a in assets]
    decide.apply(p, d, assets)
    assert p.cash == K - 20 * M and p.realized == 0  # a split realizes nothing
    assert tuple(p.positions[a].cost for a in assets) == costs and sum(costs) == 20 * M
    assert all(p.shares[a] == 20 * M for a in assets)
    assert p.equity(portfolio.Marks()) == K  # unmarked legs are valued at their cost


# 6. Properties over sequences of decisions.
MARKETS = {
    MKT: mkt(**FEES),
    OTHER_MKT: decide.Market(OTHER_MKT, (OTHER, OTHER_NO), NOW + timedelta(days=30)),
}


@st.composite
def books(draw: st.DrawFn) -> decide.Book:
    best_bid = draw(st.integers(20, 950)) * 1_000
    best_ask = best_bid + draw(st.integers(1, 25)) * 1_000

    def side(first: int, sign: int) -> tuple[tuple[int, int], ...]:
        prices = [first]
        for gap in draw(st.lists(st.integers(1, 10), max_size=5)):
            prices.append(prices[-1] + sign * gap * 1_000)
        return tuple((q, draw(st.integers(1, 3_000 * M))) for q in prices if 0 < q < M)

    return decide.Book(side(best_bid, -1), side(best_ask, 1))


@st.composite
def steps(draw: st.DrawFn, users: tuple[int, ...] = (1,)) -> tuple[decide.Group, decide.Book, int]:
    """A group, its book, and the leader's position before it: 0 (an exit) or a
    multiple of what they sold."""
    action = draw(st.sampled_from(("BUY", "BUY", "SELL", "SELL", "MERGE", "SPLIT")))
    book = draw(books())
    mid = (book.bids[0][0] + book.asks[0][0]) // 2
    price = min(999_000, max(1_000, mid + draw(st.integers(-15, 15)) * 1_000))
    notional = draw(st.integers(1, 50_000)) * M // draw(st.sampled_from((1, 10, 100)))
    asset, user = draw(st.sampled_from(sorted(MARKET_OF))), draw(st.sampled_from(users))
    g = mk_group(action, asset, price, notional, user)
    their = g.their_shares * draw(st.sampled_from((0, 1, 2, 3, 10, 1000)))
    return g, book, their


def check(d: decide.Decision, p: portfolio.Portfolio, sit: decide.Situation, cfg: Any) -> None:
    """Invariants of one decision, against the portfolio before it is applied."""
    book, market = sit.book, sit.market
    assert book is not None and market is not None
    g = d.group
    assert (d.decision == "SKIP") == bool(d.reasons) and set(d.reasons) <= set(reasons.REASONS)
    if d.decision == "SKIP":
        assert not d.fills and not d.sets
        return
    if g.action in ("MERGE", "SPLIT"):
        held = min(decide.ours(g, p, a) for a in market.assets)
        assert 0 < d.sets <= (held if g.action == "MERGE" else p.cash)
        if g.action == "MERGE" and (sit.their_position or 0) <= g.their_shares:
            assert d.sets == held  # the leader merged all theirs: so do we
        return
    assert g.asset_id is not None and g.their_price is not None and d.fills
    side = book.asks if g.action == "BUY" else book.bids
    assert [f.level for f in d.fills] == list(range(len(d.fills)))
    for f in d.fills:  # each level as the book has it, never more than it holds
        assert f.price == side[f.level][0] and 0 < f.shares <= side[f.level][1]
        rate = market.fee_rate_micros if market.fees_enabled else 0
        assert f.fee == (money.taker_fee(f.shares, f.price, rate) if rate else 0)
    prices = [f.price for f in d.fills]
    mid = money.div_round(book.bids[0][0] + book.asks[0][0], 2)
    worse, chase = cfg.max_worse_than_theirs_micros, cfg.max_chase_vs_mid_micros
    assert d.vwap is not None and min(prices) <= d.vwap <= max(prices)
    assert 0 < d.filled_shares <= d.target_shares
    if g.action == "BUY":
        assert d.vwap <= min(g.their_price + worse, mid + chase)
        assert d.filled_notional + d.fee <= p.cash
    else:
        assert d.vwap >= max(g.their_price - worse, mid - chase)
        assert d.filled_shares <= decide.ours(g, p, g.asset_id)  # never more than held


def play(p: portfolio.Portfolio, cfg: Any, seq: list[Any]) -> list[decide.Decision]:
    """Decides and applies each step in order, checking the invariants, and that the
    portfolio ends equal to its start plus the sum of the entries."""
    marks, out, cash0, shares0 = portfolio.Marks(), [], p.cash, dict(p.shares)
    by_user0 = {u: dict(mine) for u, mine in p.by_user.items()}
    ledger: list[tuple[int, ledger.Entry]] = []
    for i, (g0, book, their) in enumerate(seq):
        now = NOW + timedelta(seconds=i)
        g = dataclasses.replace(g0, key=f"g{i}", decide_at=now)
        market = MARKETS[g.condition_id or ""]
        if g.asset_id is not None:
            marks.observe(g.asset_id, now, money.div_round(book.bids[0][0] + book.asks[0][0], 2))
        eq = p.equity(marks)
        sit = decide.Situation(now, False, True, "ACTIVE", market, book, Refs(eq, eq, eq), their)
        cash, shares = p.cash, dict(p.shares)
        d = decide.decide(g, p, cfg, sit, marks)
        assert (p.cash, p.shares) == (cash, shares)  # decide is pure
        check(d, p, sit, cfg)
        ledger += [(g.user_id, e) for e in decide.entries(d, market.assets)]
        decide.apply(p, d, market.assets)
        assert p.cash == cash + (d.cash_delta if d.decision == "EXECUTE" else 0)
        assert p.cash >= 0 and all(n >= 0 for n in p.shares.values())
        exited = g.action == "SELL" and their <= g.their_shares and d.decision == "EXECUTE"
        if exited and d.filled_shares == d.target_shares:  # all of the exit filled
            assert g.asset_id is not None and decide.ours(g, p, g.asset_id) == 0
        out.append(d)
    assert p.cash == cash0 + sum(e.cash_delta_micros for _, e in ledger)
    for a in MARKET_OF:
        moved = sum(e.share_delta_micros for _, e in ledger if e.asset_id == a)
        assert p.shares.get(a, 0) == shares0.get(a, 0) + moved
        for u, mine in p.by_user.items():
            copied = sum(e.share_delta_micros for w, e in ledger if w == u and e.asset_id == a)
            assert mine.get(a, 0) == by_user0.get(u, {}).get(a, 0) + copied
    return out


def fresh(scope: str, cash: int, held: list[int]) -> portfolio.Portfolio:
    p = portfolio.Portfolio(scope, None if scope == GLOBAL else 1, cash, cash=cash)
    for asset, n in zip(sorted(MARKET_OF), held, strict=True):
        if n:
            bought(p, asset, n, 1)
    p.cash = cash
    return p


LOOSE = CFG.with_values({**NO_DEPTH, **WIDE})
CONFIGS = st.sampled_from([CFG, LOOSE, LOOSE.with_values(CAPS_OFF)])
ROUND = st.sampled_from([0, 5, 20, 100, 1_000, 5_000]).map(lambda n: n * M)
AMOUNTS = ROUND | st.integers(0, 20_000 * M)  # hypothesis alone favours tiny integers
CASH, HOLDINGS = AMOUNTS, st.lists(AMOUNTS, min_size=4, max_size=4)


@settings(max_examples=200, deadline=None)
@given(CASH, HOLDINGS, CONFIGS, st.lists(steps(), min_size=1, max_size=15))
def test_sequence_properties(cash: int, held: list[int], cfg: Any, seq: list[Any]) -> None:
    play(fresh(USER, cash, held), cfg, seq)


@settings(max_examples=200, deadline=None)
@given(CASH, HOLDINGS, CONFIGS, st.lists(steps((1, 2, 3)), min_size=1, max_size=15))
def test_global_fifo_is_deterministic(cash: int, held: list[int], cfg: Any, seq: list[Any]) -> None:
    first = play(fresh(GLOBAL, cash, held), cfg, seq)
    assert play(fresh(GLOBAL, cash, held), cfg, seq) == first


@settings(max_examples=200, deadline=None)
@given(st.integers(5 * M, 300 * M), books(), st.integers(0, 10), st.booleans())
def test_buy_never_spends_more_than_cash(cash: int, book: decide.Book, k: int, fee: bool) -> None:
    # Caps at 100% let the target reach the cash; their price up to 0.01 under the ask.
    price = money.format_micros(max(1_000, book.asks[0][0] - k * 1_000))
    market = mkt(**FEES) if fee else mkt()
    cfg = LOOSE.with_values(CAPS_OFF)
    sit = decide.Situation(NOW, False, True, "ACTIVE", market, book, Refs(K, K, K))
    d, p = run(cash=money.format_micros(cash), hold=((OTHER, 9_000),), cfg=cfg, price=price,
               notional=50_000, book=book, market=market)  # fmt: skip
    check(d, port(cash, ((OTHER, 9_000),)), sit, cfg)
    assert d.target_notional <= cash
    decide.apply(p, d, (YES, NO))
    assert p.cash >= 0
