"""Price (every 30 s): marks for the assets held in any portfolio — shadow, per-user
exec, global — and for the assets copy attempts were decided on (their attribution needs
a mark, SPEC §10: those of the last day every run, older ones within
OCULUS_SCORE_WINDOW_DAYS every 10 minutes), plus the market lifecycle they need.

1. Markets with open positions get their Gamma metadata refreshed (every
   `OCULUS_MARKET_REFRESH_S`, and every `OCULUS_MARKET_RESOLVE_POLL_S` once past their
   end time and not yet resolved): close time, closed, resolution prices, fee schedule.
2. Resolved markets settle the executable portfolios' positions at the payout
   (`SETTLEMENT` entries keyed by asset and portfolio, so a second run or a second
   market update settles nothing twice), holding the exec-ledger lock. Shadow books
   settle on the user's REDEEM; a shadow position still held `OCULUS_SHADOW_SETTLE_AFTER_S`
   after resolution is settled at the payout too and so flagged unredeemed (a later
   REDEEM undoes it first, see common/store/shadow.py).
3. Marks: `POST /midpoints` in batches of ≤ 500; an asset without a midpoint falls back to
   its last trade price (flagged LAST_TRADE); a resolved asset is marked at its payout
   (RESOLUTION); an asset with no book at all (404: closed market) is skipped, not an
   error. One `market_price_snapshot` row per asset per 30 s bucket; the first stays.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

import psycopg

from common.domain import money
from common.runtime import jobs
from common.store import db, markets, quarantine
from common.store import marks as store_marks
from common.upstream import clob, gamma, http, wire

# Held assets: the positions the snapshot job kept at its last cut, moved by the ledger
# entries since (exact, and O(new entries) instead of a scan of the whole ledger).
_HELD = """
SELECT DISTINCT h.asset_id, h.condition_id, o.payout_micros FROM (
  SELECT asset_id, min(condition_id) AS condition_id FROM (
    SELECT portfolio_scope, followed_user_id, asset_id, condition_id, share_micros AS n
    FROM portfolio_position WHERE share_micros <> 0
    UNION ALL
    SELECT portfolio_scope, followed_user_id, asset_id, condition_id, share_delta_micros
    FROM ledger_entry
    WHERE asset_id IS NOT NULL AND id > coalesce((
      SELECT cursor_int FROM system_checkpoint
      WHERE name = 'snapshot.ledger' AND followed_user_id IS NULL), 0)) moved
  GROUP BY portfolio_scope, followed_user_id, asset_id HAVING sum(n) <> 0) h
LEFT JOIN outcome_asset o ON o.asset_id = h.asset_id
"""
# Assets copy attempts were decided on (held or not): their attribution needs a mark
# (SPEC §10, functions/score.py). Those decided within a day every run; older ones (to
# OCULUS_SCORE_WINDOW_DAYS) when their newest mark is older than ATTEMPTED_SLOW; resolved
# ones never (their payout is their mark).
_ATTEMPTED = """
SELECT a.asset_id, a.condition_id, NULL::bigint AS payout_micros FROM (
  SELECT asset_id, min(condition_id) AS condition_id, max(decision_time) AS last
  FROM copy_attempt
  WHERE action IN ('BUY', 'SELL') AND asset_id IS NOT NULL AND decision_time >= %(window)s
  GROUP BY asset_id) a
JOIN market m ON m.condition_id = a.condition_id AND m.resolved_at IS NULL
WHERE a.last >= %(recent)s OR NOT EXISTS (
  SELECT 1 FROM market_price_snapshot p
  WHERE p.asset_id = a.asset_id AND p.bucket >= %(slow)s)
"""
ATTEMPTED_RECENT = timedelta(days=1)
ATTEMPTED_SLOW = timedelta(minutes=10)
_STALE_MARKETS = """
SELECT condition_id FROM market
WHERE condition_id = ANY(%(c)s) AND resolved_at IS NULL
  AND (metadata_fetched_at IS NULL OR metadata_fetched_at < %(refresh)s
       OR (end_time <= %(now)s AND metadata_fetched_at < %(resolve)s))
"""
_UNSETTLED = """
SELECT l.portfolio_scope, l.followed_user_id, l.asset_id, min(l.condition_id) AS condition_id,
       sum(l.share_delta_micros)::bigint AS shares, o.payout_micros,
       coalesce(m.resolved_at, %(now)s) AS resolved_at
FROM ledger_entry l
JOIN outcome_asset o ON o.asset_id = l.asset_id
JOIN market m ON m.condition_id = o.condition_id
WHERE l.portfolio_scope IN ('EXEC_USER', 'EXEC_GLOBAL') AND o.payout_micros IS NOT NULL
GROUP BY l.portfolio_scope, l.followed_user_id, l.asset_id, o.payout_micros, m.resolved_at
HAVING sum(l.share_delta_micros) <> 0
"""
_UNREDEEMED = """
SELECT l.portfolio_scope, l.followed_user_id, l.asset_id, min(l.condition_id) AS condition_id,
       sum(l.share_delta_micros)::bigint AS shares, o.payout_micros, m.resolved_at
FROM ledger_entry l
JOIN outcome_asset o ON o.asset_id = l.asset_id
JOIN market m ON m.condition_id = o.condition_id
WHERE l.portfolio_scope = 'SHADOW_USER' AND o.payout_micros IS NOT NULL
  AND m.resolved_at <= %(cut)s
GROUP BY l.portfolio_scope, l.followed_user_id, l.asset_id, o.payout_micros, m.resolved_at
HAVING sum(l.share_delta_micros) <> 0
"""
_SETTLE = """
INSERT INTO ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id, entry_type,
    share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time)
VALUES (%(s)s, %(u)s, %(c)s, %(a)s, 'SETTLEMENT', %(q)s, %(cash)s, %(p)s, %(ref)s, %(t)s)
ON CONFLICT (portfolio_scope, ref_id, entry_type) DO NOTHING
"""


def settlement_ref(asset_id: str, user_id: int | None) -> str:
    return f"settle:{asset_id}" if user_id is None else f"settle:{asset_id}:u{user_id}"


def refresh_markets(
    conn: db.Conn, upstream: http.Upstream, conditions: set[str], now: datetime, s: Any
) -> int:
    """Refetches the Gamma metadata of the given markets that are due; returns how many."""
    due = [
        r["condition_id"]
        for r in conn.execute(
            _STALE_MARKETS,
            {
                "c": sorted(conditions),
                "now": now,
                "refresh": now - timedelta(seconds=s.market_refresh_s),
                "resolve": now - timedelta(seconds=s.market_resolve_poll_s),
            },
        )
    ]
    if not due:
        return 0
    batch = gamma.fetch_markets(upstream, condition_ids=due)
    quarantine.record(conn, batch.rejects, now)
    return markets.store(conn, batch.items, now)


def _settle_rows(conn: db.Conn, rows: list[dict[str, Any]]) -> int:
    written = 0
    for r in rows:
        written += conn.execute(
            _SETTLE,
            {
                "s": r["portfolio_scope"],
                "u": r["followed_user_id"],
                "c": r["condition_id"],
                "a": r["asset_id"],
                "q": -r["shares"],
                "cash": money.mul_micros(r["shares"], r["payout_micros"]),
                "p": r["payout_micros"],
                "ref": settlement_ref(r["asset_id"], r["followed_user_id"]),
                "t": r["resolved_at"],
            },
        ).rowcount
    return written


def settle(conn: db.Conn, now: datetime, wait_s: float = 10.0) -> int | None:
    """Settles exec positions in resolved markets at the payout; returns entries
    written, or None when another writer (a `simulate --replay`, or a simulate write)
    held the exec-ledger lock past `wait_s`."""
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(wait_s * 1000)}",))
            db.lock_exec_ledgers(conn)
            return _settle_rows(conn, conn.execute(_UNSETTLED, {"now": now}).fetchall())
    except psycopg.errors.LockNotAvailable:
        return None


def settle_unredeemed(conn: db.Conn, now: datetime, after: timedelta) -> int:
    """Settles shadow positions still held `after` their market resolved (the user never
    redeemed them); returns entries written."""
    with conn.transaction():
        db.lock_ingest(conn)  # shadow ledger writes hold it; several users': exclusive
        return _settle_rows(conn, conn.execute(_UNREDEEMED, {"cut": now - after}).fetchall())


def marks(
    ups: http.Upstreams, held: list[dict[str, Any]]
) -> tuple[list[tuple[str, int, str]], list[wire.Reject], int]:
    """Returns (asset, mid, source) for the held assets, the rejects, and how many had
    no book at all."""
    out = [
        (r["asset_id"], r["payout_micros"], "RESOLUTION")
        for r in held
        if r["payout_micros"] is not None
    ]
    live = sorted(r["asset_id"] for r in held if r["payout_micros"] is None)
    mids, rejects = clob.fetch_midpoints(ups.clob, live) if live else ({}, [])
    out += [(a, m, "MIDPOINT") for a, m in sorted(mids.items())]
    no_book = 0
    for asset in live:
        if asset in mids:
            continue
        last = clob.fetch_last_trade_price(ups.clob, asset)
        if isinstance(last, wire.Reject):
            rejects.append(last)
        elif last is None or last.is_default:
            no_book += 1
        else:
            out.append((asset, last.price, "LAST_TRADE"))
    return out, rejects, no_book


def attempted_assets(conn: db.Conn, now: datetime, s: Any, held: set[str]) -> list[dict[str, Any]]:
    """The assets of copy attempts due a mark that are not among `held`."""
    rows = conn.execute(
        _ATTEMPTED,
        {
            "window": now - timedelta(days=s.score_window_days),
            "recent": now - ATTEMPTED_RECENT,
            "slow": now - ATTEMPTED_SLOW,
        },
    ).fetchall()
    return [r for r in rows if r["asset_id"] not in held]


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now, s = ctx.clock(), ctx.settings
    ups: http.Upstreams = ctx.resources["ups"]
    held = conn.execute(_HELD).fetchall()
    conditions = {r["condition_id"] for r in held if r["condition_id"]}
    conditions |= {r["condition_id"] for r in attempted_assets(conn, now, s, set())}
    try:
        ctx.count("markets_refreshed", refresh_markets(conn, ups.gamma, conditions, now, s))
    except http.UpstreamError as exc:  # marks still go on; the next run retries
        ctx.count("markets_refresh_failed")
        ctx.details["markets_error"] = str(exc)
    settled = settle(conn, now)
    ctx.count("settlement_entries", settled or 0)
    if settled is None:
        ctx.count("settlement_deferred")
    after = timedelta(seconds=s.shadow_settle_after_s)
    ctx.count("unredeemed_settled", settle_unredeemed(conn, now, after))
    held = conn.execute(_HELD).fetchall()  # settlement closed some
    attempted = attempted_assets(conn, now, s, {r["asset_id"] for r in held})
    ctx.count("attempted_assets", len(attempted))
    found, rejects, no_book = marks(ups, held + attempted)
    quarantine.record(conn, rejects, now)
    store_marks.store(conn, [(a, m, src) for a, m, src in found], now)
    for _, _, src in found:
        ctx.count(src.lower())
    ctx.count("no_book", no_book)
    return len(found)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("price", __doc__ or "")
    p.set_defaults(interval=30.0)
    args = p.parse_args(argv)
    return jobs.main("price", args, run_once, upstreams=True)


if __name__ == "__main__":
    sys.exit(main())
