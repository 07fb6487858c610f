"""The book walk: table-driven guardrail cases and hypothesis properties (never past the
price bound, never more than the book holds, VWAP between the best and the worst level
consumed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain import book_walk, money

G = book_walk.Guards()
M = 1_000_000


def book(
    bids: list[tuple[float, float]], asks: list[tuple[float, float]]
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    b = tuple(sorted(((money.to_micros(p), money.to_micros(q)) for p, q in bids), reverse=True))
    a = tuple(sorted((money.to_micros(p), money.to_micros(q)) for p, q in asks))
    return b, a


@pytest.mark.parametrize(
    ("side", "bids", "asks", "their", "shares", "reasons", "filled"),
    [
        ("BUY", [(0.46, 100)], [(0.47, 100)], 0.47, 10, (), 10),
        ("BUY", [(0.40, 100)], [(0.47, 100)], 0.47, 10, ("SPREAD_TOO_WIDE", "CHASE_VS_MID"), 0),
        ("BUY", [(0.48, 100)], [(0.49, 100)], 0.47, 10, ("PRICE_WORSE_THAN_THEIRS",), 0),
        ("SELL", [(0.45, 100)], [(0.46, 100)], 0.47, 10, ("PRICE_WORSE_THAN_THEIRS",), 0),
        ("BUY", [(0.46, 100)], [(0.47, 10)], 0.47, 10, ("INSUFFICIENT_DEPTH",), 0),
        ("BUY", [], [(0.47, 100)], 0.47, 10, ("NO_BOOK",), 0),
        ("SELL", [(0.46, 5)], [], 0.47, 10, ("NO_BOOK",), 0),
        ("SELL", [(0.46, 100)], [(0.47, 100)], 0.46, 20, (), 20),
    ],
)
def test_guardrails(
    side: str,
    bids: list[tuple[float, float]],
    asks: list[tuple[float, float]],
    their: float,
    shares: int,
    reasons: tuple[str, ...],
    filled: int,
) -> None:
    b, a = book(bids, asks)
    result = book_walk.walk(side, b, a, money.to_micros(their), shares * M, G)  # type: ignore[arg-type]
    assert result.reasons == reasons
    assert result.shares == filled * M


def test_the_mid_bounds_the_vwap_when_their_price_is_stale() -> None:
    # Their 0.47 allows up to 0.48, but the mid (0.4075) allows only 0.4225: the walk
    # takes the 0.43 level only as far as the VWAP stays at 0.4225.
    b, a = book([(0.40, 100)], [(0.415, 5), (0.43, 100)])
    result = book_walk.walk("BUY", b, a, 470_000, 20 * M, book_walk.Guards(min_depth_ratio_bps=0))
    assert result.reasons == () and result.bound == 422_500
    assert result.fills == ((415_000, 5 * M), (430_000, 5 * M))
    assert result.vwap == 422_500


def test_partial_fill_when_depth_guard_is_off() -> None:
    b, a = book([(0.46, 100)], [(0.47, 3), (0.50, 100)])
    guards = book_walk.Guards(min_depth_ratio_bps=0)
    result = book_walk.walk("BUY", b, a, 470_000, 10 * M, guards)
    assert result.reasons == ()
    assert result.fills[0] == (470_000, 3 * M)
    assert result.vwap is not None and result.vwap <= result.bound  # type: ignore[operator]
    assert result.shares < 10 * M  # the 0.50 level would cross the VWAP bound soon
    strict = book_walk.walk(
        "BUY", b, a, 470_000, 10 * M, book_walk.Guards(min_depth_ratio_bps=0, allow_partial=False)
    )
    assert strict.reasons == ("INSUFFICIENT_DEPTH",)


levels = st.lists(
    st.tuples(st.integers(1, 999).map(lambda c: c * 1_000), st.integers(1, 10_000 * M)),
    min_size=1,
    max_size=12,
    unique_by=lambda lv: lv[0],
)


@settings(max_examples=1000, deadline=None)
@given(
    levels,
    levels,
    st.integers(1_000, 999_000),
    st.integers(1, 5_000 * M),
    st.sampled_from(["BUY", "SELL"]),
    st.integers(0, 20_000),
)
def test_walk_properties(
    bid_levels: list[tuple[int, int]],
    ask_levels: list[tuple[int, int]],
    their: int,
    target: int,
    side: str,
    depth_bps: int,
) -> None:
    bids = tuple(sorted(bid_levels, reverse=True))
    asks = tuple(sorted(ask_levels))
    guards = book_walk.Guards(max_spread=M, min_depth_ratio_bps=depth_bps)
    result = book_walk.walk(side, bids, asks, their, target, guards)  # type: ignore[arg-type]
    assert bool(result.fills) != bool(result.reasons)
    if not result.fills:
        return
    side_levels = dict(asks if side == "BUY" else bids)
    assert result.shares <= target
    for price, q in result.fills:  # never more than a level holds
        assert 0 < q <= side_levels[price]
    prices = [p for p, _ in result.fills]
    vwap = result.vwap
    assert vwap is not None and result.bound is not None
    assert min(prices) <= vwap <= max(prices)
    if side == "BUY":
        assert vwap <= result.bound
        assert prices == sorted(prices)  # best (lowest) asks first
    else:
        assert vwap >= result.bound
        assert prices == sorted(prices, reverse=True)
