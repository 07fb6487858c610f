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
- Real copies (common/store/real_copies.py): the copy wallets' fills become real copy
  fills (`real_added` / `real_dropped`; CSV ones come from functions/import_copies.py),
  each is paired with the leader's closed group (`real_paired`), and paired again when a
  group closed since the last run may pair with it (a leader fill seen late;
  `real_repaired` counts the fills whose group changed), then attributed and scored like
  an attempt (`real_attributed`, `real_scored`).

Idempotent: a rerun with no new attempt and no moved mark writes no row of these tables
(only its checkpoints: when pairing ran, the newest attempt scoring saw). One query lists
the attempts due (ids and marks: small); their fields are then read PAGE at a time by
primary key and written by COPY into a temp table and one upsert per page, so the first
run over months of history stays small in memory and no long read overlaps the writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution
from common.runtime import jobs
from common.store import checkpoints, db, queries, real_copies

SQL = queries.load("copy_attribution")
CHECKPOINT = "score.attribution"  # moved whenever a run wrote attribution rows
SCORED = "score.scored."  # + version: the newest attempt a scoring run has seen
SCORED_MARGIN = 10_000  # attempt ids below that looked at again (commits out of id order)
PAGE = 5_000
Row = dict[str, Any]


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


def _pages(conn: db.Conn, due: list[Row]) -> Iterator[tuple[list[Row], list[Row]]]:
    """The attempts `due` (rows with an `id`) PAGE at a time, each with its attempt's
    fields (query `attempts`, by primary key): the due ones are listed first by one small
    query, so no long read overlaps the writes, and memory stays bounded."""
    for i in range(0, len(due), PAGE):
        page = due[i : i + PAGE]
        ids = [r["id"] for r in page]
        yield page, conn.execute(SQL["attempts"], {"ids": ids}).fetchall()


ATTRIBUTION = (
    "copy_attempt_id", "mark_micros", "ideal_micros", "exec_micros", "sizing_micros",
    "skip_micros", "skip_reason", "unfilled_micros", "latency_micros", "slippage_micros",
    "fee_micros", "marked_at", "final", "updated_at",
)  # fmt: skip
SCORES = (
    "copy_attempt_id", "version", "timing_cpts", "financial_cpts", "cost_cpts",
    "congestion_cpts", "total_cpts", "scored_at",
)  # fmt: skip


def attribute(conn: db.Conn, now: datetime, max_age: timedelta) -> tuple[int, int]:
    """Writes the attribution rows due, a page per transaction; returns (rows written,
    of which final)."""
    written = final = 0
    due = conn.execute(SQL["due"], {"fresh": now - max_age}).fetchall()
    for marks, rows in _pages(conn, due):
        out = []
        by_id = {r["id"]: r for r in rows}  # an attempt gone meanwhile is left out
        for m in marks:
            if (row := by_id.get(m["id"])) is None:
                continue
            t = attribution.attribute(attempt_of(row), m["mark"])
            out.append(
                (
                    row["id"], t.mark, t.ideal, t.exec, t.sizing, t.skip, t.skip_reason,
                    t.unfilled, t.latency, t.slippage, t.fee, m["marked_at"], m["final"], now,
                )
            )  # fmt: skip
            final += bool(m["final"])
        with conn.transaction():
            db.copy_like(conn, "copy_attribution", ATTRIBUTION, out, SQL["upsert_rows"])
        written += len(out)
    return written, final


def score(conn: db.Conn, now: datetime) -> int:
    """Scores the EXECUTE attempts not scored in this version, a page per transaction;
    returns how many."""
    done = 0
    seen = checkpoints.read(conn, SCORED + attribution.VERSION)
    after = max(0, int(seen["cursor_int"] or 0) - SCORED_MARGIN) if seen else 0
    row = conn.execute(SQL["newest_attempt"]).fetchone()
    newest = int(row["id"]) if row else 0
    due = conn.execute(SQL["unscored"], {"v": attribution.VERSION, "after": after}).fetchall()
    for _, rows in _pages(conn, due):
        out = []
        for row in rows:
            s = attribution.score(attempt_of(row))
            if s is None:
                continue
            out.append(
                (
                    row["id"], s.version, attribution.hundredths(s.timing),
                    attribution.hundredths(s.financial), attribution.hundredths(s.cost),
                    attribution.hundredths(s.congestion), attribution.hundredths(s.total),
                    now,
                )
            )  # fmt: skip
        with conn.transaction():
            db.copy_like(conn, "execution_score", SCORES, out, SQL["insert_scores"])
        done += len(out)
    checkpoints.advance(conn, SCORED + attribution.VERSION, now, number=newest)
    return done


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now = ctx.clock()
    ctx.count("ideal_filled", conn.execute(SQL["fill_ideal"]).rowcount)
    max_age = timedelta(seconds=ctx.settings.score_mark_max_age_s)
    written, final = attribute(conn, now, max_age)
    if written:  # the pages' watermark (site_builder/changes.py)
        checkpoints.advance(conn, CHECKPOINT, now, time=now)
    ctx.count("attributed", written)
    ctx.count("attributed_final", final)
    waiting = conn.execute(SQL["waiting"]).fetchone()
    ctx.count("waiting_for_mark", waiting["n"] if waiting else 0)
    scored = score(conn, now)
    ctx.count("scored", scored)
    ctx.count("ideal_points", conn.execute(SQL["hourly"], {"now": now}).rowcount)
    return written + scored + real(conn, ctx, now, max_age)


def real(conn: db.Conn, ctx: jobs.Context, now: datetime, max_age: timedelta) -> int:
    """The real copies' steps; returns the rows attributed and scored."""
    added, dropped = real_copies.sync(conn, now)
    ctx.count("real_added", added)
    ctx.count("real_dropped", dropped)
    first, changed = real_copies.pair(conn, now)
    ctx.count("real_paired", first)
    ctx.count("real_repaired", changed)
    attributed = real_copies.attribute(conn, now, max_age)
    ctx.count("real_attributed", attributed)
    scored = real_copies.score(conn, now)
    ctx.count("real_scored", scored)
    if attributed or added or dropped or changed or first:
        checkpoints.advance(conn, CHECKPOINT, now, time=now)
    return attributed + scored


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("score", __doc__ or "")
    p.set_defaults(interval=60.0)
    args = p.parse_args(argv)
    return jobs.main("score", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
