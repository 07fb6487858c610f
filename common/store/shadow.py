"""The shadow ledger: each followed user's events applied exactly as reported, as
`SHADOW_USER` ledger entries (SPEC §4 "Shadow").

- fill: shares ± on its asset, cash ∓ notional, and a FEE entry for a fee;
- SPLIT: collateral → the same number of shares of every outcome; MERGE the reverse;
- REDEEM: every share held in the market leaves at its payout, cash + the payout;
- a position still held a day after its market resolved is settled at the payout by the
  price job (a SHADOW_USER `SETTLEMENT`: the "unredeemed" flag); a REDEEM arriving after
  that first undoes the settlement (`…:undo`), then applies as usual;
- CONVERSION: not applied (the Data API row lacks the neg-risk legs): marked
  NOT_APPLIED and quarantined with the reason, so it is counted, not lost.
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
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from common.domain import ledger, shadow_plan
from common.store import db, quarantine
from common.upstream import wire

BATCH = 5000  # events applied per user per transaction


# A Data API fill with no log of its own in a transaction whose logs for its wallet
# are stored: the chain saw that transaction and has no room for it.
CHAIN_CONTRADICTS = """(t.log_index IS NULL AND EXISTS (
    SELECT 1 FROM trade_event c WHERE c.tx_hash = t.tx_hash AND c.wallet = t.wallet
      AND c.log_index IS NOT NULL AND c.reorg_state IS NULL))"""
_PENDING_TRADES = f"""
SELECT id, followed_user_id, asset_id, condition_id, side, price_micros, share_micros,
       usdc_notional_micros, fee_micros, event_time, detect_time, source, confirmed_at,
       tx_hash, wallet, payload, {CHAIN_CONTRADICTS} AS chain_contradicts
FROM trade_event t
WHERE shadow_applied_at IS NULL AND reorg_state IS NULL AND followed_user_id = %(u)s
  AND event_time >= %(since)s
ORDER BY event_time, id
LIMIT %(limit)s
"""  # noqa: S608  (a constant, no input)
_PENDING_ACTIVITY = """
SELECT id, followed_user_id, activity_type, condition_id, share_micros, usdc_micros,
       event_time, tx_hash
FROM activity_event
WHERE shadow_applied_at IS NULL AND followed_user_id = %(u)s AND event_time >= %(since)s
ORDER BY event_time, id
LIMIT %(limit)s
"""
_INSERT = """
INSERT INTO ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id, entry_type,
    share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time)
VALUES ('SHADOW_USER', %(u)s, %(cond)s, %(asset)s, %(type)s, %(shares)s, %(cash)s, %(price)s,
    %(ref)s, %(t)s)
ON CONFLICT (portfolio_scope, ref_id, entry_type) DO NOTHING
"""


def duplicate_reject(event: dict[str, Any]) -> wire.Reject:
    """The quarantine row of a Data API fill the chain contradicts (pure)."""
    reason = (
        f"DUPLICATE_ROW: Data API fill {event['id']} has no chain log left in tx "
        f"{event['tx_hash']} for {event['wallet']}; not applied"
    )
    payload = wire.dump_payload(event.get("payload") or {"trade_event": event["id"]})
    return wire.Reject("data_api/fills", reason, payload, {"trade_event_id": event["id"]})


def holdings(conn: db.Conn, user_id: int, asset_ids: Sequence[str]) -> dict[str, int]:
    """Returns the user's shadow shares of the given assets, from the ledger."""
    rows = conn.execute(
        """SELECT asset_id, sum(share_delta_micros)::bigint AS shares FROM ledger_entry
           WHERE portfolio_scope = 'SHADOW_USER' AND followed_user_id = %(u)s
             AND asset_id = ANY(%(a)s) GROUP BY asset_id""",
        {"u": user_id, "a": list(asset_ids)},
    ).fetchall()
    return {r["asset_id"]: int(r["shares"]) for r in rows}


def unredeemed_settlements(
    conn: db.Conn, user_id: int, conditions: set[str]
) -> dict[str, ledger.Entry]:
    """Returns, per asset, the entry that undoes a shadow SETTLEMENT not yet undone in
    the given markets (a REDEEM came after the price job settled the position)."""
    rows = conn.execute(
        """SELECT l.asset_id, l.condition_id, l.share_delta_micros, l.cash_delta_micros,
                  l.ref_id, l.effective_time
           FROM ledger_entry l
           WHERE l.portfolio_scope = 'SHADOW_USER' AND l.followed_user_id = %(u)s
             AND l.entry_type = 'SETTLEMENT' AND l.condition_id = ANY(%(c)s)
             AND NOT EXISTS (SELECT 1 FROM ledger_entry x
                             WHERE x.portfolio_scope = 'SHADOW_USER' AND x.entry_type = 'SETTLEMENT'
                               AND x.ref_id = l.ref_id || ':undo')""",
        {"u": user_id, "c": sorted(conditions)},
    ).fetchall()
    return {
        r["asset_id"]: ledger.Entry(
            r["asset_id"],
            r["condition_id"],
            "SETTLEMENT",
            -r["share_delta_micros"],
            -r["cash_delta_micros"],
            None,
            r["ref_id"] + ":undo",
            r["effective_time"],
        )
        for r in rows
    }


def _market_assets(conn: db.Conn, conditions: set[str]) -> dict[str, list[dict[str, Any]]]:
    rows = conn.execute(
        """SELECT condition_id, asset_id, payout_micros FROM outcome_asset
           WHERE condition_id = ANY(%(c)s) ORDER BY condition_id, outcome_index""",
        {"c": sorted(conditions)},
    ).fetchall()
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r["condition_id"]].append(r)
    return out


def apply_user(
    conn: db.Conn,
    user_id: int,
    since: datetime,
    now: datetime,
    grace: timedelta,
    limit: int = BATCH,
) -> dict[str, int]:
    """Applies the user's pending events in order, in one transaction; returns counts."""
    counts: dict[str, int] = defaultdict(int)
    with conn.transaction():
        db.lock_ingest(conn)  # a chain confirmation must not change an event mid-apply
        params = {"u": user_id, "since": since, "limit": limit, "now": now}
        for table in ("trade_event", "activity_event"):  # history older than the seed
            counts["covered_by_seed"] += conn.execute(
                f"UPDATE {table} SET shadow_applied_at = %(now)s,"  # noqa: S608
                " shadow_state = 'COVERED_BY_SEED' WHERE followed_user_id = %(u)s"
                " AND shadow_applied_at IS NULL AND event_time < %(since)s",
                params,
            ).rowcount
        trades = conn.execute(_PENDING_TRADES, params).fetchall()
        acts = conn.execute(_PENDING_ACTIVITY, params).fetchall()
        if not trades and not acts:
            return {}
        events = shadow_plan.order(trades, acts, limit)
        markets = _market_assets(conn, {r["condition_id"] for r in acts})
        held = holdings(conn, user_id, [a["asset_id"] for rows in markets.values() for a in rows])
        redeemed = {r["condition_id"] for r in acts if r["activity_type"] == "REDEEM"}
        settled = unredeemed_settlements(conn, user_id, redeemed) if redeemed else {}
        p = shadow_plan.plan(events, markets, held, settled, now, grace)
        write_plan(conn, user_id, p, now)
    counts.update(p.counts)
    counts["trades_applied"] += len(p.applied_trades)
    counts["trades_contradicted"] += len(p.contradicted)
    counts["activities_applied"] += len(p.applied_acts)
    counts["entries"] += len(p.entries)
    return dict(counts)


def refusal_reject(refusal: shadow_plan.Refusal) -> wire.Reject:
    """The quarantine row of an event the plan kept out of the ledger."""
    if refusal.kind == "contradicted":
        return duplicate_reject(refusal.row)
    row = refusal.row
    return wire.Reject(
        "shadow/conversion",
        shadow_plan.CONVERSION_REASON,
        wire.dump_payload({k: str(v) for k, v in row.items()}),
        {"activity_event_id": row["id"]},
    )


def write_plan(conn: db.Conn, user_id: int, p: shadow_plan.Plan, now: datetime) -> None:
    """Writes a plan in the caller's transaction: the entries, the events' states, and
    the refusals to the quarantine."""
    store(conn, user_id, p.entries)
    with conn.cursor() as cur:
        if p.applied_trades:
            cur.execute(
                "UPDATE trade_event SET shadow_applied_at = %(now)s, shadow_state = 'APPLIED'"
                " WHERE id = ANY(%(ids)s)",
                {"now": now, "ids": p.applied_trades},
            )
        if p.contradicted:
            cur.execute(
                "UPDATE trade_event SET shadow_applied_at = %(now)s,"
                " shadow_state = 'NOT_APPLIED', reorg_state = 'CONTRADICTED'"
                " WHERE id = ANY(%(ids)s)",
                {"now": now, "ids": p.contradicted},
            )
        for state in ("APPLIED", "NOT_APPLIED"):
            ids = [i for i, s in p.applied_acts if s == state]
            if ids:
                cur.execute(
                    "UPDATE activity_event SET shadow_applied_at = %(now)s,"
                    " shadow_state = %(s)s WHERE id = ANY(%(ids)s)",
                    {"now": now, "s": state, "ids": ids},
                )
    quarantine.record(conn, [refusal_reject(r) for r in p.refusals], now)


def apply_pending(
    conn: db.Conn, now: datetime, grace: timedelta, seed_window: timedelta
) -> dict[str, int]:
    """Applies every seeded user's pending events; events older than the seed window
    before the seed are history the seed already holds. Returns summed counts."""
    users = conn.execute(
        "SELECT id, seeded_at - %(w)s AS since FROM followed_user"
        " WHERE copy_mode <> 'REMOVED' AND seeded_at IS NOT NULL",
        {"w": seed_window},
    ).fetchall()
    total: dict[str, int] = defaultdict(int)
    for u in users:
        while True:
            counts = apply_user(conn, u["id"], u["since"], now, grace)
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
            _INSERT,
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
