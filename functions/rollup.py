"""Rollup (every minute): the per-day aggregates the pages draw, kept incrementally so no
page build recomputes history. Each run folds only the rows newer than its cursors
(`rollup.copy_attempt`, `rollup.trade_event`, `rollup.ledger_entry`), read at a cut
below which nothing is still being written.

- `rollup_attempt_daily` (scope, user, day): attempts, executed, partial fills, target
  and filled notional, fees, skip-reason counts, slippage histograms (bps, positive =
  worse for us) vs their price and vs the mid. Attempt rate, fill rate and partial-fill
  rate are ratios of these.
- `rollup_detect_daily` (user, source, day): detect-lag histogram (ms) per source.
- `rollup_market_daily` (market, day): decisions, mean spread and depth in band at
  decision time, our slippage (per-user portfolio decisions).
- `rollup_resolution`: one row per position closed by a resolution — WON / LOST, and
  `unredeemed` for a shadow position we settled (a later REDEEM replaces it).
- `rollup_global_exposure` (user, asset): the global portfolio's shares attributed to the
  user whose signal bought them; a sell comes out of the seller's own holding first,
  then pro rata out of the others' (`common/domain/exposure.py`), so none is negative
  and they add up to the portfolio's shares (exposure by user).

Equity curves, tracking gap (exec vs shadow return), drawdown and exposure come from
`portfolio_snapshot` / `portfolio_position`, which are already per minute.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from common.domain import exposure, histograms
from common.runtime import jobs
from common.store import checkpoints, db, locks

ROLLUP_LOCK = locks.ROLLUP
STREAMS = ("copy_attempt", "trade_event", "ledger_entry")


def fold_attempts(rows: Iterable[dict[str, Any]]) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """Aggregates attempts into per-(scope, user, day) and per-(market, day) deltas (pure)."""
    per_user: dict[tuple[str, int, date], dict[str, Any]] = defaultdict(_attempt_zero)
    per_market: dict[tuple[str, date], dict[str, Any]] = defaultdict(_market_zero)
    for a in rows:
        day = a["decision_time"].date()
        u = per_user[(a["portfolio_scope"], a["followed_user_id"], day)]
        u["attempts"] += 1
        u["target_notional_micros"] += a["target_notional_micros"]
        executed = a["decision"] == "EXECUTE"
        slip_their = histograms.slippage_bps(a["action"], a["vwap_micros"], a["their_price_micros"])
        slip_mid = histograms.slippage_bps(a["action"], a["vwap_micros"], a["mid_micros"])
        if executed:
            u["executed"] += 1
            u["partial"] += a["filled_ratio_micros"] < 1_000_000
            u["filled_notional_micros"] += a["filled_notional_micros"]
            u["fees_micros"] += a["fee_micros"]
            if slip_their is not None:
                u["slip_their_bps"][histograms.bucket(slip_their, histograms.SLIP_EDGES_BPS)] += 1
            if slip_mid is not None:
                u["slip_mid_bps"][histograms.bucket(slip_mid, histograms.SLIP_EDGES_BPS)] += 1
        else:
            u["reasons"].update(a["reason_codes"])
        if a["portfolio_scope"] != "EXEC_USER" or a["condition_id"] is None:
            continue
        m = per_market[(a["condition_id"], day)]
        m["decisions"] += 1
        m["executed"] += executed
        if a["best_bid_micros"] is not None and a["best_ask_micros"] is not None:
            m["spread_sum_micros"] += a["best_ask_micros"] - a["best_bid_micros"]
            m["spread_n"] += 1
        if a["depth_in_band_micros"] is not None:
            m["depth_sum_micros"] += a["depth_in_band_micros"]
            m["depth_n"] += 1
        if executed and slip_their is not None:
            m["slip_their_bps"][histograms.bucket(slip_their, histograms.SLIP_EDGES_BPS)] += 1
    return per_user, per_market


def _attempt_zero() -> dict[str, Any]:
    return {
        "attempts": 0,
        "executed": 0,
        "partial": 0,
        "target_notional_micros": 0,
        "filled_notional_micros": 0,
        "fees_micros": 0,
        "reasons": Counter(),
        "slip_their_bps": Counter(),
        "slip_mid_bps": Counter(),
    }


def _market_zero() -> dict[str, Any]:
    return {
        "decisions": 0,
        "executed": 0,
        "spread_sum_micros": 0,
        "spread_n": 0,
        "depth_sum_micros": 0,
        "depth_n": 0,
        "slip_their_bps": Counter(),
    }


def _merge(table: str, keys: tuple[str, ...], conn: db.Conn, deltas: dict[Any, Any]) -> int:
    """Adds deltas to the stored rows (numbers add, histograms and counters merge)."""
    for key, delta in deltas.items():
        params = dict(zip(keys, key, strict=True))
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in keys
        )
        old = conn.execute(
            sql.SQL("SELECT * FROM {} WHERE {} FOR UPDATE").format(sql.Identifier(table), where),
            params,
        ).fetchone()
        merged: dict[str, Any] = {}
        for name, value in delta.items():
            if isinstance(value, Counter):
                merged[name] = Jsonb(dict(Counter(old[name] if old else {}) + value))
            else:
                merged[name] = (old[name] if old else 0) + value
        cols = [*keys, *merged]
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(map(sql.Placeholder, cols)),
                sql.SQL(", ").join(map(sql.Identifier, keys)),
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in merged
                ),
            ),
            {**params, **merged},
        )
    return len(deltas)


def fold_detections(rows: Iterable[dict[str, Any]]) -> dict[Any, Any]:
    out: dict[tuple[int, str, date], dict[str, Any]] = defaultdict(
        lambda: {"fills": 0, "lag_ms": Counter()}
    )
    for t in rows:
        d = out[(t["followed_user_id"], t["source"], t["event_time"].date())]
        d["fills"] += 1
        lag = (t["detect_time"] - t["event_time"]).total_seconds() * 1000
        d["lag_ms"][histograms.bucket(lag, histograms.LAG_EDGES_MS)] += 1
    return out


_RESOLUTION = """
INSERT INTO rollup_resolution (portfolio_scope, followed_user_id, asset_id, condition_id, ref_id,
    outcome, unredeemed, share_micros, payout_micros, resolved_at)
VALUES (%(s)s, %(u)s, %(a)s, %(c)s, %(ref)s, %(o)s, %(unredeemed)s, %(q)s, %(p)s, %(t)s)
ON CONFLICT (portfolio_scope, followed_user_id, asset_id, ref_id) DO NOTHING
"""


def fold_resolutions(conn: db.Conn, rows: Iterable[dict[str, Any]]) -> int:
    """Records positions closed by SETTLEMENT or REDEEM; an ':undo' removes the shadow
    settlement it reverses (the user redeemed after all)."""
    n = 0
    for e in rows:
        if e["ref_id"].endswith(":undo"):
            conn.execute(
                """DELETE FROM rollup_resolution WHERE portfolio_scope = %(s)s
                   AND followed_user_id IS NOT DISTINCT FROM %(u)s AND ref_id = %(ref)s""",
                {"s": e["portfolio_scope"], "u": e["followed_user_id"], "ref": e["ref_id"][:-5]},
            )
            continue
        if e["share_delta_micros"] >= 0 or e["price_micros"] is None:
            continue
        n += conn.execute(
            _RESOLUTION,
            {
                "s": e["portfolio_scope"],
                "u": e["followed_user_id"],
                "a": e["asset_id"],
                "c": e["condition_id"],
                "ref": e["ref_id"],
                "o": "WON" if e["price_micros"] > 0 else "LOST",
                "unredeemed": e["portfolio_scope"] == "SHADOW_USER"
                and e["entry_type"] == "SETTLEMENT",
                "q": -e["share_delta_micros"],
                "p": e["price_micros"],
                "t": e["effective_time"],
            },
        ).rowcount
    return n


_ATTEMPTS = """SELECT portfolio_scope, followed_user_id, action, condition_id, decision,
reason_codes, target_notional_micros, filled_notional_micros, filled_ratio_micros, fee_micros,
their_price_micros, mid_micros, vwap_micros, best_bid_micros, best_ask_micros,
depth_in_band_micros, decision_time FROM copy_attempt WHERE id > %(lo)s AND id <= %(hi)s"""
# Fills from before the user was followed were backfilled, not detected: no lag.
_TRADES = """SELECT t.followed_user_id, t.source, t.event_time, t.detect_time
FROM trade_event t JOIN followed_user u ON u.id = t.followed_user_id
WHERE t.id > %(lo)s AND t.id <= %(hi)s AND t.reorg_state IS NULL
  AND t.event_time >= u.followed_at"""
_LEDGER = """SELECT portfolio_scope, followed_user_id, asset_id, condition_id, entry_type, ref_id,
share_delta_micros, price_micros, effective_time FROM ledger_entry
WHERE id > %(lo)s AND id <= %(hi)s AND entry_type IN ('SETTLEMENT', 'REDEEM')
  AND asset_id IS NOT NULL ORDER BY id"""


def roll(conn: db.Conn, now: Any) -> dict[str, int]:
    """One incremental run; returns counts."""
    cut = checkpoints.committed_max_ids(conn, STREAMS)
    counts: dict[str, int] = {"cut_skipped": int(cut is None)}
    if cut is None:
        return counts
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        window = {}
        for stream in STREAMS:
            seen = checkpoints.read(conn, f"rollup.{stream}")
            lo = int(seen["cursor_int"]) if seen and seen["cursor_int"] is not None else 0
            window[stream] = {"lo": lo, "hi": max(lo, cut[stream])}
        attempts = conn.execute(_ATTEMPTS, window["copy_attempt"]).fetchall()
        per_user, per_market = fold_attempts(attempts)
        keys = ("portfolio_scope", "followed_user_id", "day")
        counts["attempts"] = len(attempts)
        counts["attempt_rows"] = _merge("rollup_attempt_daily", keys, conn, per_user)
        counts["market_rows"] = _merge(
            "rollup_market_daily", ("condition_id", "day"), conn, per_market
        )
        trades = conn.execute(_TRADES, window["trade_event"]).fetchall()
        counts["fills"] = len(trades)
        counts["detect_rows"] = _merge(
            "rollup_detect_daily",
            ("followed_user_id", "source", "day"),
            conn,
            fold_detections(trades),
        )
        counts["resolutions"] = fold_resolutions(
            conn, conn.execute(_LEDGER, window["ledger_entry"]).fetchall()
        )
        counts["attributed"] = attribute_global(conn, window["ledger_entry"])
        for stream in STREAMS:
            checkpoints.advance(conn, f"rollup.{stream}", now, number=window[stream]["hi"])
    return counts


_ATTRIBUTED = """
SELECT a.followed_user_id, l.asset_id, min(l.condition_id) AS condition_id,
       sum(l.share_delta_micros)::bigint AS shares
FROM ledger_entry l JOIN copy_attempt a ON a.id = l.copy_attempt_id
WHERE l.id > %(lo)s AND l.id <= %(hi)s AND l.portfolio_scope = 'EXEC_GLOBAL'
  AND l.asset_id IS NOT NULL
GROUP BY 1, 2
"""
_SETTLED_GLOBAL = """
SELECT DISTINCT asset_id FROM ledger_entry
WHERE id > %(lo)s AND id <= %(hi)s AND portfolio_scope = 'EXEC_GLOBAL'
  AND entry_type = 'SETTLEMENT'
"""


_HOLDINGS = """
SELECT followed_user_id, asset_id, condition_id, share_micros FROM rollup_global_exposure
WHERE asset_id = ANY(%(assets)s)
"""


def attribute_global(conn: db.Conn, window: dict[str, int]) -> int:
    """Moves the per-user attribution of the global portfolio's shares: buys to the user
    whose signal bought, sells out of the seller's holding first, then pro rata out of
    the others' (`exposure.allocate`: never negative, always the portfolio's shares)."""
    rows = conn.execute(_ATTRIBUTED, window).fetchall()
    deltas: dict[str, dict[int, int]] = defaultdict(dict)
    condition: dict[str, str | None] = {}
    for r in rows:
        deltas[r["asset_id"]][r["followed_user_id"]] = int(r["shares"])
        condition[r["asset_id"]] = r["condition_id"]
    held: dict[str, dict[int, int]] = defaultdict(dict)
    for r in conn.execute(_HOLDINGS, {"assets": list(deltas)}):
        held[r["asset_id"]][r["followed_user_id"]] = int(r["share_micros"])
        condition[r["asset_id"]] = condition.get(r["asset_id"]) or r["condition_id"]
    out = [
        (user, asset, condition[asset], shares)
        for asset, moves in deltas.items()
        for user, shares in exposure.allocate(held[asset], moves).items()
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO rollup_global_exposure (followed_user_id, asset_id, condition_id,
                   share_micros) VALUES (%s, %s, %s, %s)
               ON CONFLICT (followed_user_id, asset_id) DO UPDATE SET
                   share_micros = EXCLUDED.share_micros""",
            out,
        )
    settled = [r["asset_id"] for r in conn.execute(_SETTLED_GLOBAL, window)]
    if settled:
        conn.execute(
            "UPDATE rollup_global_exposure SET share_micros = 0 WHERE asset_id = ANY(%s)",
            (settled,),
        )
    return len(rows)


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    counts = roll(conn, ctx.clock())
    for k, v in counts.items():
        ctx.count(k, v)
    return counts.get("attempts", 0) + counts.get("fills", 0)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("rollup", __doc__ or "")
    p.set_defaults(interval=60.0)
    args = p.parse_args(argv)
    return jobs.main("rollup", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
