"""Market metadata from Gamma: every market an event mentions is looked up once and
kept in `market` / `outcome_asset`, so fills can be checked against real assets."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from common.domain import negrisk
from common.store import db, quarantine, queries
from common.upstream import gamma, http

NEG_RISK = queries.load("neg_risk_market")
log = logging.getLogger(__name__)

_UPSERT_MARKET = """
INSERT INTO market (condition_id, gamma_id, question, slug, end_time, active, closed,
    accepting_orders, neg_risk, tick_size_micros, min_order_size_micros, fees_enabled,
    fee_rate_micros, fee_exponent, fee_taker_only, resolved_at, first_seen_at,
    metadata_fetched_at, neg_risk_market_id, question_index, neg_risk_fee_bips)
VALUES (%(cond)s, %(gid)s, %(q)s, %(slug)s, %(end)s, %(active)s, %(closed)s, %(accepting)s,
    %(neg)s, %(tick)s, %(min)s, %(fees)s, %(rate)s, %(exp)s, %(taker)s,
    CASE WHEN %(resolved)s THEN %(now)s::timestamptz END, %(now)s, %(now)s, %(nrm)s, %(qi)s,
    %(bips)s)
ON CONFLICT (condition_id) DO UPDATE SET gamma_id = EXCLUDED.gamma_id,
    question = EXCLUDED.question, slug = EXCLUDED.slug, end_time = EXCLUDED.end_time,
    active = EXCLUDED.active, closed = EXCLUDED.closed,
    accepting_orders = EXCLUDED.accepting_orders, neg_risk = EXCLUDED.neg_risk,
    tick_size_micros = EXCLUDED.tick_size_micros,
    min_order_size_micros = EXCLUDED.min_order_size_micros,
    fees_enabled = EXCLUDED.fees_enabled, fee_rate_micros = EXCLUDED.fee_rate_micros,
    fee_exponent = EXCLUDED.fee_exponent, fee_taker_only = EXCLUDED.fee_taker_only,
    resolved_at = COALESCE(market.resolved_at, EXCLUDED.resolved_at),
    metadata_fetched_at = EXCLUDED.metadata_fetched_at,
    neg_risk_market_id = COALESCE(EXCLUDED.neg_risk_market_id, market.neg_risk_market_id),
    question_index = COALESCE(EXCLUDED.question_index, market.question_index),
    neg_risk_fee_bips = EXCLUDED.neg_risk_fee_bips
"""
_UPSERT_ASSET = """
INSERT INTO outcome_asset (asset_id, condition_id, outcome, outcome_index, payout_micros)
VALUES (%(asset)s, %(cond)s, %(outcome)s, %(idx)s, %(payout)s)
ON CONFLICT (asset_id) DO UPDATE SET outcome = EXCLUDED.outcome,
    payout_micros = COALESCE(outcome_asset.payout_micros, EXCLUDED.payout_micros)
"""


def store(conn: db.Conn, markets: Iterable[gamma.GammaMarket], now: datetime) -> int:
    """Upserts markets and their outcome assets; returns how many markets."""
    count = 0
    with conn.transaction():
        for m in markets:
            fee = m.fee_schedule
            conn.execute(
                _UPSERT_MARKET,
                {
                    "cond": m.condition_id,
                    "gid": m.id,
                    "q": m.question,
                    "slug": m.slug,
                    "end": m.end_date,
                    "active": m.active,
                    "closed": m.closed,
                    "accepting": m.accepting_orders,
                    "neg": m.neg_risk,
                    "nrm": m.neg_risk_market_id,
                    "qi": m.question_index,
                    "bips": m.neg_risk_fee_bips,
                    "tick": m.tick_size,
                    "min": m.min_order_size,
                    "fees": m.fees_enabled,
                    "rate": m.fee_rate,
                    "exp": fee.exponent if fee else 1,
                    "taker": fee.taker_only if fee else True,
                    "resolved": m.resolved,
                    "now": now,
                },
            )
            payouts = m.payouts()
            for index, (asset, outcome) in enumerate(
                zip(m.clob_token_ids, m.outcomes, strict=True)
            ):
                conn.execute(
                    _UPSERT_ASSET,
                    {
                        "asset": asset,
                        "cond": m.condition_id,
                        "outcome": outcome,
                        "idx": index,
                        "payout": payouts.get(asset),
                    },
                )
            count += 1
    return count


def assets_of(conn: db.Conn, condition_ids: Iterable[str]) -> dict[str, set[str]]:
    """Returns {condition: its outcome assets} for the conditions already known."""
    rows = conn.execute(
        "SELECT condition_id, asset_id FROM outcome_asset WHERE condition_id = ANY(%(c)s)",
        {"c": sorted(set(condition_ids))},
    ).fetchall()
    found: dict[str, set[str]] = {}
    for r in rows:
        found.setdefault(r["condition_id"], set()).add(r["asset_id"])
    return found


def ensure(
    conn: db.Conn,
    upstream: http.Upstream,
    now: datetime,
    *,
    condition_ids: Iterable[str] = (),
    asset_ids: Iterable[str] = (),
) -> dict[str, set[str]]:
    """Looks up on Gamma the markets not yet stored (by condition or by token id) and
    returns {condition: assets} for every condition now known. Raises UpstreamError when
    Gamma cannot answer, so callers retry instead of judging rows against no data."""
    conditions = set(condition_ids)
    assets = set(asset_ids)
    known = assets_of(conn, conditions)
    missing_conditions = sorted(conditions - set(known))
    known_assets = {
        r["asset_id"]
        for r in conn.execute(
            "SELECT asset_id FROM outcome_asset WHERE asset_id = ANY(%(a)s)", {"a": sorted(assets)}
        )
    }
    missing_assets = sorted(assets - known_assets)
    fetched: list[gamma.GammaMarket] = []
    if missing_conditions:
        batch = gamma.fetch_markets(upstream, condition_ids=missing_conditions)
        quarantine.record(conn, batch.rejects, now)
        fetched.extend(batch.items)
    if missing_assets:
        batch = gamma.fetch_markets(upstream, clob_token_ids=missing_assets)
        quarantine.record(conn, batch.rejects, now)
        fetched.extend(batch.items)
    if fetched:
        store(conn, fetched, now)
        conditions |= {m.condition_id for m in fetched}
    return assets_of(conn, conditions)


PROBE_PAD = 8  # questions asked for past the highest index known
PROBE_MARKETS = 20  # neg-risk markets probed per run


def probe_neg_risk(conn: db.Conn, upstream: http.Upstream, now: datetime) -> int:
    """Looks up on Gamma the questions of each neg-risk market a pending chain
    conversion names and Gamma was not asked about since (or in the last minute: a
    market whose questions are not all listed yet is asked again while its conversions
    wait). Question i's condition is derived from the adapter, the market id and i
    (`negrisk`), asked for from 0 to the highest index known or named plus PROBE_PAD,
    further while the top ones are found. Records the count (no gap) and the fee.
    A market Gamma cannot answer for, or answers only in part, is logged and left
    unrecorded, to be asked again; the others go on. Returns the markets recorded."""
    rows = conn.execute(NEG_RISK["to_probe"], {"limit": PROBE_MARKETS, "now": now}).fetchall()
    done = 0
    for r in rows:
        try:
            count = _probe_one(conn, upstream, now, r["market_id"], r["adapter"], r["index_sets"])
        except (http.UpstreamError, ValueError) as exc:
            log.warning("neg-risk market %s not looked up: %s", r["market_id"], exc)
            continue
        conn.execute(NEG_RISK["upsert"], {"m": r["market_id"], "n": count, "now": now})
        done += 1
    return done


def _probe_one(
    conn: db.Conn,
    upstream: http.Upstream,
    now: datetime,
    market_id: str,
    adapter: str,
    index_sets: list[str],
) -> int | None:
    """Finds one market's questions on Gamma; returns their count (None for a gap).
    Raises UpstreamError when a page is refused (the listing would be short)."""
    named = max((int(x, 16).bit_length() for x in index_sets if x), default=0)
    known = {k["question_index"] for k in conn.execute(NEG_RISK["known_indices"], {"m": market_id})}
    start, stop = 0, max([named, *(i + 1 for i in known)]) + PROBE_PAD
    while start < negrisk.MAX_QUESTIONS:
        stop = min(stop, negrisk.MAX_QUESTIONS)
        derived = {
            negrisk.condition_id(adapter, negrisk.question_id(market_id, i)): i
            for i in range(start, stop)
            if i not in known
        }
        batch = gamma.fetch_markets(upstream, condition_ids=sorted(derived))
        quarantine.record(conn, batch.rejects, now)
        if batch.refused:
            raise http.UpstreamError("gamma", f"{batch.refused} page(s) of questions refused")
        found = [m for m in batch.items if m.condition_id in derived]
        store(conn, found, now)
        for m in found:
            params = {"m": market_id, "i": derived[m.condition_id], "c": m.condition_id}
            conn.execute(NEG_RISK["set_question"], params)
            known.add(derived[m.condition_id])
        if not any(i >= stop - PROBE_PAD for i in known):
            break  # the last PROBE_PAD asked for are not listed: past the end
        start, stop = stop, stop + PROBE_PAD * 4
    return negrisk.question_count(known)


def neg_risk_markets(conn: db.Conn, market_ids: Iterable[str]) -> dict[str, negrisk.Market]:
    """Returns the probed neg-risk markets among `market_ids`, with their questions."""
    out: dict[str, negrisk.Market] = {}
    questions: dict[str, dict[int, negrisk.Question]] = {}
    for r in conn.execute(NEG_RISK["questions"], {"m": sorted(set(market_ids))}):
        qs = questions.setdefault(r["market_id"], {})
        out[r["market_id"]] = negrisk.Market(r["market_id"], r["question_count"], r["fee_bips"], qs)
        assets = r["assets"] or []
        if r["question_index"] is not None and len(assets) == 2:
            i = r["question_index"]
            qs[i] = negrisk.Question(i, r["condition_id"], assets[0], assets[1])
    return out
