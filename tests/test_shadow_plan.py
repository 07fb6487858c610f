"""The shadow ledger's pure plan (`domain.shadow_plan`): properties over random event
sequences — shares are conserved, a batch split anywhere plans the same entries as one
(reapplying is a no-op: every entry's key is its own), and a REDEEM after a SETTLEMENT
undoes it once."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain import ledger, shadow_plan
from common.domain.money import Price
from common.domain.records import ActivityEvent, OutcomeAsset, TradeEvent

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
GRACE = timedelta(seconds=60)
COND = "0x" + "c1" * 32
ASSETS = ("111", "222")
MARKETS = {
    COND: [OutcomeAsset(COND, a, Price(p)) for a, p in zip(ASSETS, (1_000_000, 0), strict=True)]
}


def trade(**row: Any) -> TradeEvent:
    return TradeEvent.from_row({"followed_user_id": 1, **row})


def activity(**row: Any) -> ActivityEvent:
    return ActivityEvent.from_row({"followed_user_id": 1, **row})


@st.composite
def events(draw: st.DrawFn) -> list[shadow_plan.Event]:
    """Fills of either outcome, SPLITs, MERGEs and REDEEMs, in event-time order."""
    out: list[shadow_plan.Event] = []
    for i in range(draw(st.integers(0, 25))):
        t = T0 + timedelta(seconds=i)
        kind = draw(st.sampled_from(["BUY", "SELL", "SPLIT", "MERGE", "REDEEM"]))
        shares = draw(st.integers(1, 50)) * 1_000_000
        if kind in ("BUY", "SELL"):
            price = draw(st.integers(1, 999)) * 1_000
            fill = trade(
                id=i + 1,
                side=kind,
                asset_id=draw(st.sampled_from(ASSETS)),
                condition_id=COND,
                share_micros=shares,
                price_micros=price,
                usdc_notional_micros=shares * price // 1_000_000,
                fee_micros=draw(st.sampled_from([0, 10, 12_590])),
                event_time=t,
                detect_time=t,
                confirmed_at=t,
            )
            out.append(fill)
        else:
            act = activity(
                id=1000 + i,
                activity_type=kind,
                condition_id=COND,
                share_micros=shares,
                usdc_micros=shares if kind != "REDEEM" else draw(st.integers(0, 10**8)),
                event_time=t,
            )
            out.append(act)
    return out


def model(held: dict[str, int], evs: list[shadow_plan.Event]) -> dict[str, int]:
    """What the shares must be after the events, by the plain rules."""
    shares = dict(held)
    for row in evs:
        if isinstance(row, TradeEvent):
            sign = 1 if row.side == "BUY" else -1
            shares[row.asset_id] = shares.get(row.asset_id, 0) + sign * row.share_micros
        elif row.activity_type in ("SPLIT", "MERGE"):
            sign = 1 if row.activity_type == "SPLIT" else -1
            for a in ASSETS:
                shares[a] = shares.get(a, 0) + sign * row.share_micros
        elif row.activity_type == "REDEEM":
            for a in ASSETS:
                shares[a] = 0
    return {a: n for a, n in shares.items() if n}


def after(held: dict[str, int], entries: list[ledger.Entry]) -> dict[str, int]:
    shares = dict(held)
    for e in entries:
        if e.asset_id is not None:
            shares[e.asset_id] = shares.get(e.asset_id, 0) + e.share_delta_micros
    return {a: n for a, n in shares.items() if n}


holdings = st.fixed_dictionaries(
    {a: st.integers(0, 40).map(lambda n: n * 1_000_000) for a in ASSETS}
)


@settings(max_examples=200, deadline=None)
@given(evs=events(), held=holdings)
def test_shares_are_conserved(evs: list[shadow_plan.Event], held: dict[str, int]) -> None:
    p = shadow_plan.plan(evs, MARKETS, held, {}, NOW, GRACE)
    assert after(held, p.entries) == model(held, evs)
    assert len(p.applied_trades) + len(p.applied_acts) == len(evs)


@settings(max_examples=200, deadline=None)
@given(evs=events(), held=holdings, cut=st.integers(0, 25))
def test_a_batch_split_anywhere_plans_the_same_and_keys_never_repeat(
    evs: list[shadow_plan.Event], held: dict[str, int], cut: int
) -> None:
    whole = shadow_plan.plan(evs, MARKETS, held, {}, NOW, GRACE)
    first = shadow_plan.plan(evs[:cut], MARKETS, held, {}, NOW, GRACE)
    rest = shadow_plan.plan(evs[cut:], MARKETS, after(held, first.entries), {}, NOW, GRACE)
    assert first.entries + rest.entries == whole.entries
    keys = Counter((e.ref_id, e.entry_type) for e in whole.entries)
    assert all(n == 1 for n in keys.values())  # stored twice, each collides: a no-op


@settings(max_examples=100, deadline=None)
@given(settled_shares=st.integers(1, 40), redeems=st.integers(1, 3), fills=events())
def test_a_redeem_after_a_settlement_undoes_it_once(
    settled_shares: int, redeems: int, fills: list[shadow_plan.Event]
) -> None:
    """The price job settled the winning position (its shares left at the payout); the
    leader's REDEEMs arrive after: the first undoes the settlement, once, and every
    share of the market is gone after it."""
    n = settled_shares * 1_000_000
    undo = ledger.Entry(ASSETS[0], COND, "SETTLEMENT", n, -n, None, "settle:1:undo", T0)
    evs: list[shadow_plan.Event] = [e for e in fills if isinstance(e, TradeEvent)]
    last = max((e.event_time for e in evs), default=T0)
    for i in range(redeems):
        t = last + timedelta(seconds=1 + i)
        evs.append(
            activity(
                id=5000 + i,
                activity_type="REDEEM",
                condition_id=COND,
                share_micros=0,
                usdc_micros=n,
                event_time=t,
            )
        )
    p = shadow_plan.plan(evs, MARKETS, {}, {ASSETS[0]: undo}, NOW, GRACE)
    undone = [e for e in p.entries if e.ref_id == "settle:1:undo"]
    assert undone == [undo]
    assert after({}, p.entries) == {}  # nothing held, nothing negative, after any REDEEM


def test_an_unconfirmed_fill_waits_and_holds_back_later_events() -> None:
    row = trade(
        id=1,
        side="BUY",
        asset_id=ASSETS[0],
        condition_id=COND,
        share_micros=1_000_000,
        price_micros=500_000,
        usdc_notional_micros=500_000,
        fee_micros=0,
        event_time=NOW,
        detect_time=NOW - timedelta(seconds=10),
        confirmed_at=None,
    )
    split = activity(
        id=2,
        activity_type="SPLIT",
        condition_id=COND,
        share_micros=1,
        usdc_micros=1,
        event_time=NOW,
    )
    p = shadow_plan.plan([row, split], MARKETS, {}, {}, NOW, GRACE)
    assert p.entries == [] and p.counts["waiting_for_confirmation"] == 1
    late = shadow_plan.plan([row, split], MARKETS, {}, {}, NOW + GRACE, GRACE)
    assert late.applied_trades == [1] and late.applied_acts == [(2, "APPLIED")]
    contradicted = dataclasses.replace(row, chain_contradicts=True)
    gone = shadow_plan.plan([contradicted], MARKETS, {}, {}, NOW + GRACE, GRACE)
    assert gone.entries == [] and gone.contradicted == [1]
    assert [r.kind for r in gone.refusals] == ["contradicted"]


def test_a_split_carries_the_outcomes_marks_so_the_fold_allocates_its_cost() -> None:
    split = activity(
        id=7, activity_type="SPLIT", condition_id=COND, share_micros=10_000_000,
        usdc_micros=10_000_000, event_time=NOW,
    )  # fmt: skip
    marks = {7: {ASSETS[0]: 700_000, ASSETS[1]: 300_000}}
    p = shadow_plan.plan([split], MARKETS, {}, {}, NOW, GRACE, marks)
    assert [(e.asset_id, e.price_micros) for e in p.entries] == [
        (ASSETS[0], 700_000),
        (ASSETS[1], 300_000),
        (None, None),
    ]
    unmarked = shadow_plan.plan([split], MARKETS, {}, {}, NOW, GRACE)
    assert [e.price_micros for e in unmarked.entries] == [None, None, None]
