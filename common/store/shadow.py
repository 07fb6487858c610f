"""The shadow ledger: each followed user's events applied exactly as reported, as
`SHADOW_USER` ledger entries (SPEC §4 "Shadow").

- fill: shares ± on its asset, cash ∓ notional, and a FEE entry for a fee;
- SPLIT: collateral → the same number of shares of every outcome; MERGE the reverse;
- REDEEM: every share held in the market leaves at its payout, cash + the payout;
- a position still held a day after its market resolved is settled at the payout by the
  price job (a SHADOW_USER `SETTLEMENT`: the "unredeemed" flag); a REDEEM arriving after
  that first undoes the settlement (`…:undo`), then applies as usual;
- CONVERSION: applied from the chain's PositionsConverted log (its neg-risk market's
  questions looked up on Gamma by `markets.probe_neg_risk`): NO shares of the index
  set's questions out, YES shares of the others in, collateral back. A Data API row of
  the same transaction is SUPERSEDED; one without a chain log, or a conversion whose
  legs cannot be told, ends NOT_APPLIED and is quarantined with the reason, so it is
  counted, not lost (the user's book is uncertain from then on).
BUY/SELL is never mapped to YES/NO: the outcome is the asset.

Seeding (functions/poll.py `seed_user`) stores the user's recent fills and marks those
already inside the /positions snapshot COVERED_BY_SEED; history older than the seed
window is covered too. Events apply per user in event-time order. A fill known only
from one source waits up to `grace` for the other (a chain log for its Data API row, as
a reorg could still remove it; a Data API row for its chain log, whose amounts and fee
are exact) and holds back the user's later events meanwhile. Entries are keyed
by the event, so reapplying collides instead of double-counting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from common.domain import ledger, records, shadow_plan
from common.store import db, marks, quarantine, queries
from common.store import markets as markets_mod
from common.upstream import wire

BATCH = 5000  # events applied per user per transaction


TRADES = queries.load("trade_event")
ACTIVITY = queries.load("activity_event")
LEDGER = queries.load("ledger_entry")
MARKET = queries.load("market")


def duplicate_reject(event: records.TradeEvent) -> wire.Reject:
    """The quarantine row of a Data API fill the chain contradicts (pure)."""
    reason = (
        f"DUPLICATE_ROW: Data API fill {event.id} has no chain log left in tx "
        f"{event.tx_hash} for {event.wallet}; not applied"
    )
    payload = wire.dump_payload(event.payload or {"trade_event": event.id})
    return wire.Reject("data_api/fills", reason, payload, {"trade_event_id": event.id})


def holdings(conn: db.Conn, user_id: int, asset_ids: Sequence[str]) -> dict[str, int]:
    """Returns the user's shadow shares of the given assets, from the ledger."""
    rows = conn.execute(LEDGER["shadow_holdings"], {"u": user_id, "a": list(asset_ids)})
    return {r["asset_id"]: int(r["shares"]) for r in rows}


def unredeemed_settlements(
    conn: db.Conn, user_id: int, conditions: set[str]
) -> dict[str, ledger.Entry]:
    """Returns, per asset, the entry that undoes a shadow SETTLEMENT not yet undone in
    the given markets (a REDEEM came after the price job settled the position)."""
    rows = conn.execute(LEDGER["unredeemed_settlements"], {"u": user_id, "c": sorted(conditions)})
    out = {}
    for r in rows:
        e = records.LedgerEntry.from_row(r)
        out[e.asset_id or ""] = ledger.Entry(
            e.asset_id,
            e.condition_id,
            "SETTLEMENT",
            -e.share_delta_micros,
            -e.cash_delta_micros,
            None,
            f"{e.ref_id}:undo",
            r["effective_time"],
        )
    return out


def _market_assets(conn: db.Conn, conditions: set[str]) -> dict[str, list[records.OutcomeAsset]]:
    out: dict[str, list[records.OutcomeAsset]] = defaultdict(list)
    for r in conn.execute(MARKET["outcome_assets"], {"c": sorted(conditions)}):
        a = records.OutcomeAsset.from_row(r)
        out[a.condition_id].append(a)
    return out


def apply_user(
    conn: db.Conn,
    user_id: int,
    since: datetime,
    now: datetime,
    grace: timedelta,
    limit: int = BATCH,
    fetch: marks.Fetch | None = None,
    from_chain: bool = True,
) -> dict[str, int]:
    """Applies the user's pending events in order, in one transaction; returns counts.
    `fetch` gets midpoints for a SPLIT / MERGE whose outcomes have no recent mark;
    `from_chain`: conversions are read from the chain (an adapter is configured)."""
    counts: dict[str, int] = defaultdict(int)
    fetch = _prefetched(conn, user_id, since, limit, fetch) if fetch is not None else None
    with conn.transaction():
        db.lock_ingest(conn, user_id)  # a chain confirmation must not change an event mid-apply
        params = {"u": user_id, "since": since, "limit": limit, "now": now}
        for table in (TRADES, ACTIVITY):  # history older than the seed
            counts["covered_by_seed"] += conn.execute(table["cover_by_seed"], params).rowcount
        covered = conn.execute(ACTIVITY["cover_chain_conversions"], params).rowcount
        counts["covered_by_seed"] += covered
        superseded = conn.execute(ACTIVITY["supersede_api_conversions"], params).rowcount
        counts["conversions_superseded"] += superseded
        trades = [
            records.TradeEvent.from_row(r) for r in conn.execute(TRADES["pending_for_user"], params)
        ]
        acts = [
            records.ActivityEvent.from_row(r)
            for r in conn.execute(ACTIVITY["pending_for_user"], params)
        ]
        if not trades and not acts:
            return dict(counts)
        events = shadow_plan.order(trades, acts, limit)
        markets = _market_assets(conn, {r.condition_id for r in acts if r.condition_id})
        held = holdings(conn, user_id, [a.asset_id for rows in markets.values() for a in rows])
        redeemed = {r.condition_id for r in acts if r.activity_type == "REDEEM" and r.condition_id}
        settled = unredeemed_settlements(conn, user_id, redeemed) if redeemed else {}
        at_moment = {
            r.id: got
            for r in acts
            if r.activity_type in ("SPLIT", "MERGE") and r.condition_id in markets
            for got in [
                marks.at_moment(
                    conn, [a.asset_id for a in markets[r.condition_id]], r.event_time, now, fetch
                )
            ]
            if got is not None
        }
        chain_markets = {r.neg_risk_market_id for r in acts if r.neg_risk_market_id}
        neg_risk = markets_mod.neg_risk_markets(conn, chain_markets) if chain_markets else {}
        p = shadow_plan.plan(
            events, markets, held, settled, now, grace, at_moment, neg_risk, from_chain
        )
        write_plan(conn, user_id, p, now)
    counts.update(p.counts)
    counts["trades_applied"] += len(p.applied_trades)
    counts["trades_contradicted"] += len(p.contradicted)
    counts["activities_applied"] += len(p.applied_acts)
    counts["entries"] += len(p.entries)
    return dict(counts)


def _prefetched(
    conn: db.Conn, user_id: int, since: datetime, limit: int, fetch: marks.Fetch
) -> marks.Fetch:
    """Fetches, in one batch and before the ingest lock is taken, the midpoints the
    user's pending SPLITs / MERGEs will need (those with no stored mark at their moment);
    returns a fetch that answers from that batch only."""
    params = {"u": user_id, "since": since, "limit": limit}
    acts = [
        a
        for a in (
            records.ActivityEvent.from_row(r)
            for r in conn.execute(ACTIVITY["pending_for_user"], params)
        )
        if a.activity_type in ("SPLIT", "MERGE") and a.condition_id
    ]
    if not acts:
        return lambda assets: {}
    outcomes = _market_assets(conn, {a.condition_id for a in acts if a.condition_id})
    wanted = [
        ([o.asset_id for o in outcomes[a.condition_id]], a.event_time)
        for a in acts
        if a.condition_id in outcomes
    ]
    need = marks.missing(conn, wanted)
    got = fetch(need) if need else {}
    return lambda assets: {a: got[a] for a in assets if a in got}


def refusal_reject(refusal: shadow_plan.Refusal) -> wire.Reject:
    """The quarantine row of an event the plan kept out of the ledger."""
    row = refusal.row
    if isinstance(row, records.TradeEvent):  # "contradicted"
        return duplicate_reject(row)
    fields = {f: str(getattr(row, f)) for f in row.__dataclass_fields__}
    return wire.Reject(
        "shadow/conversion",
        refusal.reason,
        wire.dump_payload(fields),
        {"activity_event_id": row.id},
    )


def write_plan(conn: db.Conn, user_id: int, p: shadow_plan.Plan, now: datetime) -> None:
    """Writes a plan in the caller's transaction: the entries, the events' states, and
    the refusals to the quarantine."""
    store(conn, user_id, p.entries)
    with conn.cursor() as cur:
        if p.applied_trades:
            cur.execute(TRADES["mark_applied"], {"now": now, "ids": p.applied_trades})
        if p.contradicted:
            cur.execute(TRADES["mark_contradicted"], {"now": now, "ids": p.contradicted})
        for state in ("APPLIED", "NOT_APPLIED"):
            ids = [i for i, s in p.applied_acts if s == state]
            if ids:
                cur.execute(ACTIVITY["mark_state"], {"now": now, "s": state, "ids": ids})
    quarantine.record(conn, [refusal_reject(r) for r in p.refusals], now)


def apply_pending(
    conn: db.Conn,
    now: datetime,
    grace: timedelta,
    seed_window: timedelta,
    fetch: marks.Fetch | None = None,
    from_chain: bool = True,
    only: Collection[int] | None = None,
) -> dict[str, int]:
    """Applies every seeded user's (or those in `only`) pending events; events older than
    the seed window before the seed are history the seed already holds. Returns summed
    counts."""
    users = conn.execute(
        "SELECT id, seeded_at - %(w)s AS since FROM followed_user"
        " WHERE copy_mode <> 'REMOVED' AND seeded_at IS NOT NULL"
        " AND (%(only)s::bigint[] IS NULL OR id = ANY(%(only)s))",
        {"w": seed_window, "only": None if only is None else list(only)},
    ).fetchall()
    total: dict[str, int] = defaultdict(int)
    for u in users:
        while True:
            counts = apply_user(
                conn, u["id"], u["since"], now, grace, fetch=fetch, from_chain=from_chain
            )
            for k, v in counts.items():
                total[k] += v
            moved = sum(
                counts.get(k, 0)
                for k in ("trades_applied", "trades_contradicted", "activities_applied")
            )
            if moved < BATCH:
                break
    return dict(total)


def store(conn: db.Conn, user_id: int, entries: Sequence[ledger.Entry]) -> None:
    if not entries:
        return
    with conn.cursor() as cur:
        cur.executemany(
            LEDGER["insert_shadow"],
            [
                {
                    "u": user_id,
                    "cond": e.condition_id,
                    "asset": e.asset_id,
                    "type": e.entry_type,
                    "shares": e.share_delta_micros,
                    "cash": e.cash_delta_micros,
                    "price": e.price_micros,
                    "ref": e.ref_id,
                    "t": e.effective_time,
                }
                for e in entries
            ],
        )
