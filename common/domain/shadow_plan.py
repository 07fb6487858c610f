"""The shadow ledger's decisions, pure: given a user's pending events (in the order to
apply them), the outcome assets of their markets, the user's shares of those assets and
the settlements not yet undone, what to write. `store.shadow` reads the inputs, calls
`plan` and writes what it returns, in one transaction.

Rules (SPEC §4 "Shadow"):
- a fill known from one source waits for the other up to `grace` and holds back the
  user's later events meanwhile; past the grace, one the chain contradicts (its
  transaction's logs for the wallet leave no room for it) is never applied;
- a SPLIT / MERGE / REDEEM waits for its market's outcome assets; a REDEEM first undoes
  a settlement the price job made of the position (once), then takes every share held;
- a CONVERSION applies from the chain's PositionsConverted log (source CHAIN), which
  names the neg-risk market and the index set: once the Data API reports it too or it
  is `grace` old (a reorg can still remove it), its legs are the questions Gamma
  lists for that market (`negrisk.conversion_legs`); while they cannot be told it
  waits, up to CONVERSION_WAIT, then it is refused with the reason (the book is
  uncertain from then on). A Data API CONVERSION row does not say which outcomes were converted: it
  waits `grace` for its transaction's log (store.shadow supersedes it once that is
  stored) and is refused without one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.domain import ledger, negrisk
from common.domain.records import ActivityEvent, OutcomeAsset, TradeEvent

Event = TradeEvent | ActivityEvent
CONVERSION_REASON = (
    "CONVERSION not applied to the shadow book: the Data API row does not say which"
    " neg-risk outcomes were converted, and no PositionsConverted log of its"
    " transaction was seen on the chain"
)
CONVERSION_REASON_NO_ADAPTER = (
    "CONVERSION not applied to the shadow book: the Data API row does not say which"
    " neg-risk outcomes were converted, and no NegRiskAdapter is configured"
    " (OCULUS_NEG_RISK_ADAPTERS) to read them from the chain"
)
CONVERSION_NOT_APPLIED = "CONVERSION not applied to the shadow book"
CONVERSION_WAIT = timedelta(minutes=10)  # for the market's questions, after detection


@dataclass(frozen=True)
class Refusal:
    """An event kept out of the ledger, for the quarantine: why, and which row."""

    kind: str  # "contradicted" | "conversion"
    row: Event
    reason: str = CONVERSION_REASON


@dataclass
class Plan:
    """What one batch writes: the entries, the events it settles (and how), and why it
    stopped early (counts)."""

    entries: list[ledger.Entry] = field(default_factory=list)
    applied_trades: list[int] = field(default_factory=list)
    contradicted: list[int] = field(default_factory=list)
    applied_acts: list[tuple[int, str]] = field(default_factory=list)  # (id, APPLIED | NOT_…)
    refusals: list[Refusal] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def order(trades: Sequence[TradeEvent], acts: Sequence[ActivityEvent], limit: int) -> list[Event]:
    """The events in the order they apply: by event time, fills before activity of the
    same second (a REDEEM sees the shares bought), then id. When a list was cut at
    `limit`, events past the earlier cut wait (the other list may hide some before it)."""
    both: list[Event] = [*trades, *acts]
    events = sorted(both, key=lambda e: (e.event_time, isinstance(e, ActivityEvent), e.id))
    cuts = [rows[-1].event_time for rows in (trades, acts) if len(rows) >= limit]
    if cuts:
        before_cut = [e for e in events if e.event_time < min(cuts)]
        events = before_cut or events
    return events


def plan(
    events: Sequence[Event],
    markets: Mapping[str, Sequence[OutcomeAsset]],
    held: Mapping[str, int],
    settled: Mapping[str, ledger.Entry],
    now: datetime,
    grace: timedelta,
    marks: Mapping[int, Mapping[str, int]] | None = None,
    neg_risk: Mapping[str, negrisk.Market] | None = None,
    from_chain: bool = True,
) -> Plan:
    """Returns what applying `events` in order writes. `markets` maps a condition to its
    outcome assets, `held` the user's shares of them,
    `settled` the undo entry of each asset's settlement not yet undone, `marks` the
    outcomes' marks at the moment of each SPLIT / MERGE (by activity id; the fold
    allocates its cost by them), `neg_risk` the neg-risk markets chain conversions name."""
    out = Plan()
    shares = dict(held)
    undo = dict(settled)
    for row in events:
        if isinstance(row, TradeEvent):
            if row.confirmed_at is None and row.detect_time > now - grace:
                out.counts["waiting_for_confirmation"] += 1
                break
            if row.chain_contradicts:
                out.contradicted.append(row.id)
                out.refusals.append(Refusal("contradicted", row))
                continue
            new = ledger.fill_entries(row)
            out.applied_trades.append(row.id)
        elif row.activity_type == "CONVERSION":
            verdict = conversion(row, neg_risk or {}, now, grace, from_chain)
            if verdict is None:
                out.counts["conversion_waiting"] += 1
                break
            if isinstance(verdict, str):
                out.applied_acts.append((row.id, "NOT_APPLIED"))
                out.refusals.append(Refusal("conversion", row, verdict))
                out.counts["conversion_not_applied"] += 1
                continue
            new = verdict
            out.applied_acts.append((row.id, "APPLIED"))
        else:
            assets = markets.get(row.condition_id or "")
            if not assets:
                out.counts["waiting_for_market"] += 1
                break
            new = _activity(row, assets, shares, undo, (marks or {}).get(row.id))
            out.applied_acts.append((row.id, "APPLIED"))
        for e in new:
            if e.asset_id is not None:
                shares[e.asset_id] = shares.get(e.asset_id, 0) + e.share_delta_micros
        out.entries.extend(new)
    return out


def conversion(
    row: ActivityEvent,
    neg_risk: Mapping[str, negrisk.Market],
    now: datetime,
    grace: timedelta,
    from_chain: bool = True,
) -> list[ledger.Entry] | str | None:
    """The entries of a CONVERSION, or why it is refused, or None while it waits.
    `from_chain`: the listener reads PositionsConverted (an adapter is configured), so a
    Data API row may yet get its chain log; without, it is refused at once."""
    detected = row.detect_time or row.event_time
    if row.source != "CHAIN" or row.neg_risk_market_id is None or row.index_set is None:
        if from_chain and detected > now - grace:
            return None
        return CONVERSION_REASON if from_chain else CONVERSION_REASON_NO_ADAPTER
    if row.before_seed and not row.confirmed:
        # The seed's /positions may hold it: its Data API row says (store.shadow covers
        # it then); without one it cannot be told.
        if detected > now - CONVERSION_WAIT:
            return None
        return (
            f"{CONVERSION_NOT_APPLIED}: before the seed, and no Data API row says whether"
            " the seed holds it"
        )
    if detected > now - grace and not row.confirmed:
        return None  # a reorg can still take it out
    market = neg_risk.get(row.neg_risk_market_id)
    legs = (
        negrisk.conversion_legs(market, int(row.index_set, 16))
        if market is not None
        else f"neg-risk market {row.neg_risk_market_id} not yet looked up on Gamma"
    )
    if isinstance(legs, str):
        if detected > now - CONVERSION_WAIT:
            return None
        return f"{CONVERSION_NOT_APPLIED}: {legs}"
    no_legs, yes_legs = legs
    fee = market.fee_bips if market is not None and market.fee_bips else 0
    return ledger.conversion_entries(
        f"activity:{row.id}", row.event_time, no_legs, yes_legs, int(row.share_micros), fee
    )


def _activity(
    row: ActivityEvent,
    assets: Sequence[OutcomeAsset],
    shares: Mapping[str, int],
    undo: dict[str, ledger.Entry],
    marks: Mapping[str, int] | None = None,
) -> list[ledger.Entry]:
    """Entries of a SPLIT / MERGE / REDEEM. A REDEEM first undoes each settlement of its
    market still standing (once: the undo is used up), and redeems what is held after
    that undo."""
    new: list[ledger.Entry] = []
    view = dict(shares)
    if row.activity_type == "REDEEM":
        new = [undo.pop(a.asset_id) for a in assets if a.asset_id in undo]
        for e in new:
            view[e.asset_id or ""] = view.get(e.asset_id or "", 0) + e.share_delta_micros
    payouts = {a.asset_id: a.payout_micros for a in assets}
    legs = [a.asset_id for a in assets]
    return new + ledger.activity_entries(row, legs, view, payouts, marks)
