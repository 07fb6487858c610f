"""Trades and copy attempts (trades.html, refreshed every 5 s): the newest detected
fills and the newest attempts with decision and reasons. Every row carries its user,
market, decision and reasons as data attributes; the page's script filters them, and
the filter lives in the URL (#user=3&reason=SPREAD_TOO_WIDE), so a link can carry it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.domain import histograms, reasons
from common.store import db
from site_builder.pages import attempt, common

Row = dict[str, Any]
TRADE_ROWS = 200  # on the page (it stays small); the CSV has up to CSV_ROWS
ATTEMPT_ROWS = 300
CSV_ROWS = 10_000
CSV_AGE_S = 60.0  # the CSVs are rewritten at most this often


@dataclass(frozen=True)
class TradesContext:
    frame: common.Frame
    attempt_floor: int  # attempts from this id on have a page (`attempt.floor`)
    trades: list[Row]
    attempts: list[Row]
    users: list[Row]
    markets: list[tuple[str, str]]
    reasons: list[tuple[str, str]]
    slips: list[tuple[str, str]]  # the slippage buckets' (key, label), for the filter


_TRADES = """
SELECT t.id, t.followed_user_id, u.label, t.source, t.event_time, t.detect_time, t.side,
       t.price_micros, t.share_micros, t.usdc_notional_micros, t.condition_id, t.asset_id,
       t.group_state, t.reorg_state, t.confirmed_at, t.tx_hash, t.source_id, m.question,
       o.outcome,
       extract(epoch FROM t.detect_time - t.event_time) * 1000 AS lag_ms
FROM trade_event t
JOIN followed_user u ON u.id = t.followed_user_id
LEFT JOIN market m ON m.condition_id = t.condition_id
LEFT JOIN outcome_asset o ON o.asset_id = t.asset_id
ORDER BY t.id DESC LIMIT %(n)s
"""
_ATTEMPTS = """
SELECT a.id, a.portfolio_scope, a.followed_user_id, u.label, a.action, a.condition_id,
       a.asset_id, a.decision, a.reason_codes, a.their_price_micros, a.their_notional_micros,
       a.target_notional_micros, a.filled_notional_micros, a.filled_ratio_micros,
       a.target_share_micros, a.filled_share_micros,
       a.vwap_micros, a.mid_micros, a.best_bid_micros, a.best_ask_micros, a.fee_micros,
       a.decision_time, a.group_close_time, m.question, o.outcome
FROM copy_attempt a
JOIN followed_user u ON u.id = a.followed_user_id
LEFT JOIN market m ON m.condition_id = a.condition_id
LEFT JOIN outcome_asset o ON o.asset_id = a.asset_id
ORDER BY a.id DESC LIMIT %(n)s
"""


def csv_trades(conn: db.Conn) -> list[Row]:
    """The newest CSV_ROWS fills (the page shows the first TRADE_ROWS of them)."""
    return list(conn.execute(_TRADES, {"n": CSV_ROWS}))


def csv_attempts(conn: db.Conn) -> list[Row]:
    """The newest CSV_ROWS attempts (the page shows the first ATTEMPT_ROWS of them)."""
    return list(conn.execute(_ATTEMPTS, {"n": CSV_ROWS}))


def context(conn: db.Conn, now: datetime) -> TradesContext:
    trades = list(conn.execute(_TRADES, {"n": TRADE_ROWS}))
    attempts = list(conn.execute(_ATTEMPTS, {"n": ATTEMPT_ROWS}))
    markets: dict[str, str] = {}
    for r in (*trades, *attempts):
        if r["condition_id"]:
            markets.setdefault(r["condition_id"], r["question"] or r["condition_id"])
    seen = {code for a in attempts for code in a["reason_codes"]}
    for a in attempts:  # the slippage bucket the rollup counts it in (executed only)
        bps = histograms.slippage_bps(a["action"], a["vwap_micros"], a["their_price_micros"])
        executed = a["decision"] == "EXECUTE"
        slip = "" if bps is None else histograms.bucket(bps, histograms.SLIP_EDGES_BPS)
        a["slip"] = slip if executed else ""
    return TradesContext(
        frame=common.frame(conn, now),
        attempt_floor=attempt.floor(conn, now),
        trades=trades,
        attempts=attempts,
        users=list(conn.execute("SELECT id, label FROM followed_user ORDER BY label, id")),
        markets=sorted(markets.items(), key=lambda kv: kv[1].lower()),
        reasons=[(code, reasons.describe(code)) for code in sorted(seen)],
        slips=[(key, text) for text, _, key in common.keyed({}, histograms.SLIP_EDGES_BPS)],
    )
