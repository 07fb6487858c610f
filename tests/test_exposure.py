"""Exposure by user (common/domain/exposure.py): a sell comes out of the seller's own
holding first, then pro rata out of the others'; the holdings stay non-negative and add
up to the portfolio's shares."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.domain import exposure


def test_a_sell_on_another_user_s_signal_comes_out_of_the_holders_pro_rata() -> None:
    # user 1 bought 60, user 2 bought 30; user 3's signal sells 45: no one goes negative
    got = exposure.allocate({1: 60, 2: 30}, {3: -45})
    assert got == {1: 30, 2: 15, 3: 0}


def test_the_seller_s_own_holding_goes_first_and_the_leftover_micro_is_placed() -> None:
    assert exposure.allocate({1: 10, 2: 5}, {2: -8}) == {1: 7, 2: 0}
    got = exposure.allocate({1: 1, 2: 1, 3: 1}, {4: -2})
    assert sum(got.values()) == 1 and min(got.values()) == 0 and got[1] == 0  # ties: lower id


def test_negative_holdings_an_older_rule_left_are_netted_against_the_others() -> None:
    assert exposure.allocate({1: 100, 2: -40}, {}) == {1: 60, 2: 0}


@given(
    st.dictionaries(st.integers(1, 6), st.integers(0, 10**9), max_size=5),
    st.dictionaries(st.integers(1, 6), st.integers(-(10**9), 10**9), max_size=5),
)
def test_holdings_stay_non_negative_and_add_up_to_the_book(
    holdings: dict[int, int], deltas: dict[int, int]
) -> None:
    book = sum(holdings.values()) + sum(deltas.values())
    got = exposure.allocate(holdings, deltas)
    assert all(v >= 0 for v in got.values())
    assert sum(got.values()) == max(0, book) or book < 0
