"""Score (every minute): where the creator's alpha is lost, per copy attempt (SPEC §10).

- `copy_attribution`: one row per BUY/SELL attempt, at its asset's mark X — ideal, exec
  and the terms between them (common/domain/attribution.py). A row is written once the
  asset has a mark observed within OCULUS_SCORE_MARK_MAX_AGE_S (a missing or stale mark
  is never taken as zero: the row waits, counted `waiting_for_mark`; the price job marks
  the attempted assets, held or not), rewritten only when the asset's mark moved, and
  frozen (`final`) once its market resolved: X is then the payout.
- `execution_score`: one row per EXECUTE BUY/SELL attempt that filled and score
  version (`attribution.VERSION`); a new version adds rows, the old ones stay.
- Attempts decided before the copy engine recorded T0 (`ideal_share_micros`) get it
  from their stored fields first (`ideal_filled`).
- `ideal_hourly`: the hour's first run writes each portfolio's Σ ideal and Σ exec, the
  points of the pages' ideal copy curve (`ideal_points`).

Idempotent: a rerun with no new attempt and no moved mark writes nothing. Attempts are
read a page of PAGE at a time by id, so the first run over months of history stays
small in memory.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution
from common.runtime import jobs
from common.store import db, queries

SQL = queries.load("copy_attribution")
PAGE = 5_000


def attempt_of(row: dict[str, Any]) -> attribution.Attempt:
    return attribution.Attempt(
        action=row["action"],
        decision=row["decision"],
        reasons=tuple(row["reason_codes"] or ()),
        ideal_shares=row["ideal_share_micros"] or 0,
        target_shares=row["target_share_micros"],
        target_notional=row["target_notional_micros"],
        filled_shares=row["filled_share_micros"],
        filled_notional=row["filled_notional_micros"],
        their_price=row["their_price_micros"] or 0,
        vwap=row["vwap_micros"],
        mid=row["mid_micros"],
        best_bid=row["best_bid_micros"],
        best_ask=row["best_ask_micros"],
        depth=row["depth_in_band_micros"],
        fee=row["fee_micros"],
        decided_at=row["decision_time"],
        first_fill_at=row["window_start"],
    )


def attribute(conn: db.Conn, now: datetime, max_age: timedelta) -> tuple[int, int]:
    """Writes the attribution rows due; returns (rows written, of which final)."""
    written = final = 0
    after = 0
    while True:
        rows = conn.execute(
            SQL["due"], {"after": after, "n": PAGE, "fresh": now - max_age}
        ).fetchall()
        if not rows:
            return written, final
        params = []
        for row in rows:
            t = attribution.attribute(attempt_of(row), row["mark"])
            params.append(
                {
                    "id": row["id"],
                    "mark": t.mark,
                    "ideal": t.ideal,
                    "exec": t.exec,
                    "sizing": t.sizing,
                    "skip": t.skip,
                    "skip_reason": t.skip_reason,
                    "unfilled": t.unfilled,
                    "latency": t.latency,
                    "slippage": t.slippage,
                    "fee": t.fee,
                    "marked_at": row["marked_at"],
                    "final": row["final"],
                    "now": now,
                }
            )
            final += bool(row["final"])
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(SQL["upsert"], params)
        written += len(rows)
        after = rows[-1]["id"]


def score(conn: db.Conn, now: datetime) -> int:
    """Scores the EXECUTE attempts not scored in this version; returns how many."""
    done = 0
    after = 0
    while True:
        rows = conn.execute(
            SQL["unscored"], {"after": after, "n": PAGE, "v": attribution.VERSION}
        ).fetchall()
        if not rows:
            return done
        params = []
        for row in rows:
            s = attribution.score(attempt_of(row))
            if s is None:
                continue
            params.append(
                {
                    "id": row["id"],
                    "version": s.version,
                    "timing": attribution.hundredths(s.timing),
                    "financial": attribution.hundredths(s.financial),
                    "cost": attribution.hundredths(s.cost),
                    "congestion": attribution.hundredths(s.congestion),
                    "total": attribution.hundredths(s.total),
                    "now": now,
                }
            )
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(SQL["insert_score"], params)
        done += len(params)
        after = rows[-1]["id"]


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now = ctx.clock()
    ctx.count("ideal_filled", conn.execute(SQL["fill_ideal"]).rowcount)
    max_age = timedelta(seconds=ctx.settings.score_mark_max_age_s)
    written, final = attribute(conn, now, max_age)
    ctx.count("attributed", written)
    ctx.count("attributed_final", final)
    waiting = conn.execute(SQL["waiting"]).fetchone()
    ctx.count("waiting_for_mark", waiting["n"] if waiting else 0)
    scored = score(conn, now)
    ctx.count("scored", scored)
    ctx.count("ideal_points", conn.execute(SQL["hourly"], {"now": now}).rowcount)
    return written + scored


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("score", __doc__ or "")
    p.set_defaults(interval=60.0)
    args = p.parse_args(argv)
    return jobs.main("score", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
