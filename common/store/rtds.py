"""RTDS trades (common.upstream.rtds) as the third source of `trade_event`.

An RTDS trade names the fill's wallet, transaction, asset, side, shares and price, as
the Data API row will; the chain log comes a block later, the API row seconds after.
Whichever of the three comes first inserts the event (its detect time is that first
sighting); the others find it by (wallet, tx, asset, side, shares within
ingest.SHARE_TOLERANCE) and confirm it, under the user's ingest lock as every write:

- RTDS first: a row with source RTDS, no log index, no API id. The chain log confirms it
  (ingest.plan_chain_fill: exact amounts and fee replace the RTDS ones), the API row too
  (ingest.plan_api_fills takes any event no API row has confirmed yet).
- chain or API first: the RTDS trade sets `rtds_source_id` / `rtds_seen_at` on it and
  changes nothing else (RTDS is no source of truth: it never sets `confirmed_at`).

An RTDS trade has no id of its own: its identity is its content plus an ordinal among
the sightings of that content, so two identical fills of one transaction stay two. The
same trade sent twice is then a second event no chain log confirms: the shadow ledger
and reconcile treat it as a Data API row the chain contradicts, and if nothing ever
confirms it, reconcile flags it UNSETTLED (functions.reconcile). Past the chain (its
logs of the wallet in that tx stored, every one taken), a repeat is quarantined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from common.domain import money
from common.store import db, ingest, quarantine
from common.upstream import rtds, wire


@dataclass(frozen=True)
class RtdsFill:
    """One followed wallet's side of one RTDS trade, seen at `seen_at`."""

    followed_user_id: int
    wallet: str
    tx_hash: str
    asset_id: str
    condition_id: str
    side: Literal["BUY", "SELL"]
    price_micros: int
    share_micros: int
    event_time: datetime
    seen_at: datetime
    payload: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def identity(self) -> str:
        return (
            f"rtds:{self.wallet}:{self.tx_hash}:{self.asset_id}:{self.side}"
            f":{self.share_micros}:{self.price_micros}"
        )

    @property
    def notional_micros(self) -> int:
        return money.mul_micros(self.price_micros, self.share_micros)


def fill_from_trade(
    trade: rtds.Trade, followed_user_id: int, seen_at: datetime, payload: dict[str, Any]
) -> RtdsFill:
    return RtdsFill(
        followed_user_id=followed_user_id,
        wallet=trade.proxy_wallet,
        tx_hash=trade.transaction_hash,
        asset_id=trade.asset,
        condition_id=trade.condition_id,
        side=trade.side,
        price_micros=trade.price,
        share_micros=trade.size,
        event_time=trade.timestamp,
        seen_at=seen_at,
        payload=payload,
    )


Action = Literal["insert", "confirm", "duplicate"]


def plan_rtds_fill(
    fill: RtdsFill, existing: Sequence[ingest.Existing]
) -> tuple[Action, ingest.Existing | None, str]:
    """Decides what one RTDS fill does to the stored events of its transaction (pure):
    (action, the event it confirms, its source id)."""
    ordinal = sum(
        1
        for e in existing
        if e.rtds_source_id is not None and e.rtds_source_id.rsplit(":", 1)[0] == fill.identity
    )
    source_id = f"{fill.identity}:{ordinal}"
    alike = [
        e
        for e in existing
        if e.reorg_state is None
        and (e.wallet, e.tx_hash, e.asset_id, e.side)
        == (fill.wallet, fill.tx_hash, fill.asset_id, fill.side)
        and abs(e.share_micros - fill.share_micros) <= ingest.SHARE_TOLERANCE
    ]
    free = [e for e in alike if e.rtds_source_id is None]
    if free:
        first = min(free, key=lambda e: (e.log_index is None, e.log_index or 0, e.id))
        return "confirm", first, source_id
    on_chain = any(
        e.log_index is not None and e.reorg_state is None and e.wallet == fill.wallet
        for e in existing
    )
    return ("duplicate" if on_chain else "insert"), None, source_id


_INSERT = """
INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id, asset_id,
    side, price_micros, share_micros, usdc_notional_micros, fee_micros, tx_hash, rtds_source_id,
    rtds_seen_at, event_time, detect_time, payload)
VALUES ('RTDS', %(sid)s, %(uid)s, %(wallet)s, %(cond)s, %(asset)s, %(side)s, %(price)s,
    %(shares)s, %(usdc)s, 0, %(tx)s, %(sid)s, %(now)s, %(et)s, %(now)s, %(payload)s)
ON CONFLICT DO NOTHING
"""
_CONFIRM = """
UPDATE trade_event SET rtds_source_id = %(sid)s, rtds_seen_at = %(now)s
WHERE id = %(id)s AND rtds_source_id IS NULL
"""


def store_rtds_fill(conn: db.Conn, fill: RtdsFill) -> Action:
    """Stores one RTDS fill of a followed wallet (a new event, or the sighting of a known
    one); a repeat past the chain is quarantined. Returns what it did."""
    with conn.transaction():
        db.lock_ingest(conn, fill.followed_user_id)
        existing = ingest._existing(conn, [fill.tx_hash])
        action, target, sid = plan_rtds_fill(fill, existing)
        params = {
            "sid": sid,
            "uid": fill.followed_user_id,
            "wallet": fill.wallet,
            "cond": fill.condition_id,
            "asset": fill.asset_id,
            "side": fill.side,
            "price": fill.price_micros,
            "shares": fill.share_micros,
            "usdc": fill.notional_micros,
            "tx": fill.tx_hash,
            "et": fill.event_time,
            "now": fill.seen_at,
            "id": target.id if target else None,
            "payload": Jsonb(ingest._storable(fill.payload), dumps=wire.json_text),
        }
        if action == "insert":
            conn.execute(_INSERT, params)
        elif action == "confirm":
            conn.execute(_CONFIRM, params)
        else:
            reason = (
                f"DUPLICATE_ROW: an RTDS trade beyond the chain's logs of tx {fill.tx_hash} for"
                f" {fill.wallet} ({fill.side} {money.format_micros(fill.share_micros)} of asset"
                f" {fill.asset_id}); not stored"
            )
            context = {"user_id": fill.followed_user_id, "tx": fill.tx_hash}
            reject = wire.Reject(rtds.SOURCE, reason, wire.dump_payload(fill.payload), context)
            quarantine.record(conn, [reject], fill.seen_at)
    return action
