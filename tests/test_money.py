"""Exact micros: strings and floats convert through Decimal, half-to-even, never through
a float product."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.domain import money


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("0.47", 470_000),
        ("12.5", 12_500_000),
        (0.709999959, 710_000),  # off-tick Data API price: rounds, does not truncate
        (0.1, 100_000),
        (2.01, 2_010_000),  # int(2.01 * 1e6) == 2009999
        (1.1, 1_100_000),
        ("0.0000005", 0),  # half to even: 0.5 micro -> 0
        ("0.0000015", 2),  # 1.5 micro -> 2
        ("0.0000025", 2),  # 2.5 micro -> 2
        ("-0.0000015", -2),
        (5, 5_000_000),
        (" 3.25 ", 3_250_000),
        (Decimal("92.59"), 92_590_000),
        ("1e-3", 1_000),
    ],
)
def test_to_micros(value: str | float | int | Decimal, micros: int) -> None:
    assert money.to_micros(value) == micros


@pytest.mark.parametrize("bad", ["", "abc", "NaN", "inf", float("nan"), float("inf"), True, "1,5"])
def test_rejects_non_amounts(bad: object) -> None:
    with pytest.raises(money.AmountError):
        money.to_micros(bad)  # type: ignore[arg-type]


def test_int_of_float_product_is_wrong_which_is_why() -> None:
    assert int(2.01 * 1_000_000) == 2_009_999  # the bug to_micros exists to avoid
    assert money.to_micros(2.01) == 2_010_000
    assert int(0.709999959 * 1_000_000) == 709_999  # truncation, where rounding is right
    assert money.to_micros(0.709999959) == 710_000


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_micros_round_trip_through_text(micros: int) -> None:
    assert money.to_micros(money.format_micros(micros)) == micros
    assert money.to_micros(money.from_micros(micros)) == micros


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False))
def test_six_decimal_values_are_exact(value: Decimal) -> None:
    assert money.to_micros(str(value)) == int(value * 1_000_000)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_float_conversion_is_within_half_a_micro(value: float) -> None:
    micros = money.to_micros(value)
    assert abs(Decimal(repr(value)) * 1_000_000 - micros) <= Decimal("0.5")


@given(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=10**12),
)
def test_price_times_shares_and_back(price: int, shares: int) -> None:
    notional = money.mul_micros(price, shares)
    assert abs(Decimal(price) * shares / 1_000_000 - notional) <= Decimal("0.5")
    # Shares bought with a notional at a price never exceed what the notional pays for.
    bought = money.div_micros_floor(notional, price)
    assert money.mul_micros(price, bought) <= notional + 1


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_mid_is_between_bid_and_ask(bid: int, ask: int) -> None:
    mid = money.div_round(bid + ask, 2)
    assert min(bid, ask) <= mid <= max(bid, ask)


def test_price_of_a_real_chain_fill() -> None:
    # BUY maker 5000000 (collateral), taker 7575758 (shares): price 0.66.
    assert money.price_micros(5_000_000, 7_575_758) == 660_000
    with pytest.raises(money.AmountError):
        money.price_micros(1, 0)


@given(st.integers(-(10**15), 10**15), st.integers(-(10**12), 10**12))
def test_integer_rounding_matches_decimal(a: int, b: int) -> None:
    want = int((Decimal(a) * Decimal(b) / money.MICROS).quantize(1, rounding=ROUND_HALF_EVEN))
    assert money.mul_micros(a, b) == want
    if b:
        assert money.div_round(a, b) == int(
            (Decimal(a) / Decimal(b)).quantize(1, rounding=ROUND_HALF_EVEN)
        )
