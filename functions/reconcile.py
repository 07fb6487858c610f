"""Reconcile (every 60 s): backfill the last 2 minutes through the Data API for the
active users (an event detected lately, a chain fill not yet confirmed: `polling.Due`)
and those with no checkpoint yet or not seeded (idle users are the regular poll's,
which sweeps everyone while the listener is down); check that every stage moves
forward, and flag gaps — a chain fill no API row confirms in time, an API fill the
listener missed while it was up, an RTDS fill that never settled (neither source
confirmed it within OCULUS_RTDS_SETTLE_GRACE_S: flagged UNSETTLED, out of every sum),
stale heartbeats, a stuck shadow ledger.

Findings are counted in this run's `job_run.counts` (with up to 50 examples under
"findings"); the status page reads them from there.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

from common.domain import ledger, records
from common.runtime import jobs
from common.store import db, failures, polling, queries, shadow
from common.upstream import http

MAX_EXAMPLES = 50


def find_gaps(conn: db.Conn, now: datetime, confirm_after: timedelta) -> list[dict[str, Any]]:
    """Returns the findings about events, each {kind, ...}."""
    findings: list[dict[str, Any]] = []
    for r in conn.execute(
        """SELECT id, followed_user_id, tx_hash, log_index, detect_time FROM trade_event
           WHERE source = 'CHAIN' AND api_source_id IS NULL AND reorg_state IS NULL
             AND detect_time < %(cut)s ORDER BY id""",
        {"cut": now - confirm_after},
    ):
        findings.append({"kind": "chain_fill_unconfirmed", **_plain(r)})
    for r in conn.execute(
        "SELECT id, followed_user_id, tx_hash, log_index FROM trade_event"
        " WHERE reorg_state = 'FLAGGED' ORDER BY id"
    ):
        findings.append({"kind": "reorg_after_use", **_plain(r)})
    listener = conn.execute(
        "SELECT started_at, beat_at, info FROM process_heartbeat WHERE process = 'listen'"
    ).fetchone()
    connected = listener is not None and bool((listener["info"] or {}).get("connected"))
    if listener is not None and connected and listener["beat_at"] > now - confirm_after:
        # The listener has been up since started_at: every API fill since then (old
        # enough for its log to have arrived) should carry a chain identity.
        for r in conn.execute(
            """SELECT id, followed_user_id, tx_hash, event_time FROM trade_event
               WHERE source <> 'CHAIN' AND api_source_id IS NOT NULL AND log_index IS NULL
                 AND reorg_state IS NULL
                 AND event_time > %(up)s AND event_time < %(cut)s ORDER BY id""",
            {"up": listener["started_at"] + timedelta(seconds=10), "cut": now - confirm_after},
        ):
            findings.append({"kind": "api_fill_missed_by_listener", **_plain(r)})
    return findings


CHAIN_SETTLE = timedelta(seconds=30)  # a transaction's logs have all arrived by then
TRADES = queries.load("trade_event")


def void_contradicted(conn: db.Conn, now: datetime) -> int:
    """Takes out of the shadow books the Data API fills applied without the chain (past
    the grace) that the chain has since contradicted: their transaction's logs for the
    wallet arrived and none is left for them. Each gets reversing entries, the state
    CONTRADICTED (so no sum counts it) and a failed item saying so. Returns how many."""
    done = 0
    with conn.transaction():
        db.lock_ingest(conn)  # exclusive: the fills voided may be several users'
        settled = {"settled": now - CHAIN_SETTLE}
        for row in conn.execute(TRADES["applied_contradicted"], settled).fetchall():
            event = records.TradeEvent.from_row(row)
            shadow.store(conn, event.followed_user_id, ledger.void_entries(event))
            conn.execute(TRADES["mark_voided"], {"id": event.id})
            failures.record(
                conn,
                "reconcile",
                f"trade:{event.id}",
                f"the chain contradicts Data API fill {event.id}: tx {event.tx_hash} has"
                f" no log left for {event.wallet}'s {event.side} of asset"
                f" {event.asset_id}; its shadow entries were reversed (a copy made of it"
                " stays)",
                now,
                _plain(row),
            )
            done += 1
    return done


def flag_unsettled(conn: db.Conn, now: datetime, grace: timedelta) -> int:
    """Flags the RTDS fills that neither the chain nor the Data API confirmed within
    `grace` of their sighting: reported at match time, they never settled. Each leaves
    every sum (state UNSETTLED), gets reversing shadow entries if it was applied, and a
    failed item saying so (the status page lists them). Returns how many."""
    done = 0
    with conn.transaction():
        db.lock_ingest(conn)  # exclusive: the fills flagged may be several users'
        for row in conn.execute(TRADES["rtds_unsettled"], {"cut": now - grace}).fetchall():
            if not conn.execute(TRADES["mark_unsettled"], {"id": row["id"]}).rowcount:
                continue
            event = records.TradeEvent.from_row(row)
            if row["shadow_state"] == "APPLIED":
                shadow.store(conn, event.followed_user_id, ledger.void_entries(event))
            failures.record(
                conn,
                "reconcile",
                f"trade:{event.id}",
                f"RTDS fill {event.id} never settled: {event.wallet}'s {event.side} of asset"
                f" {event.asset_id} in tx {event.tx_hash}, seen {row['rtds_seen_at']:%H:%M:%S},"
                f" has no chain log and no Data API row after {grace.total_seconds():.0f} s;"
                " flagged UNSETTLED"
                + (" and its shadow entries reversed" if row["shadow_state"] == "APPLIED" else "")
                + " (a copy made of it stays)",
                now,
                _plain(row),
            )
            done += 1
    return done


def find_stalls(conn: db.Conn, now: datetime, s: Any) -> list[dict[str, Any]]:
    """Returns the findings about stages that stopped moving."""
    findings: list[dict[str, Any]] = []
    stale_after = timedelta(seconds=s.reconcile_stale_after_s)
    for r in conn.execute("SELECT process, beat_at FROM process_heartbeat ORDER BY process"):
        if r["beat_at"] < now - stale_after:
            findings.append({"kind": "stale_heartbeat", **_plain(r)})
    for r in conn.execute(
        """SELECT u.id AS followed_user_id, c.cursor_time FROM followed_user u
           LEFT JOIN system_checkpoint c ON c.name = %(cp)s AND c.followed_user_id = u.id
           WHERE u.enabled AND u.copy_mode <> 'REMOVED'""",
        {"cp": polling.CHECKPOINT},
    ):
        if r["cursor_time"] is None or r["cursor_time"] < now - stale_after:
            findings.append({"kind": "poll_checkpoint_stale", **_plain(r)})
    stuck = conn.execute(
        """SELECT count(*) AS n, min(detect_time) AS oldest FROM trade_event t
           JOIN followed_user u ON u.id = t.followed_user_id
           WHERE t.shadow_applied_at IS NULL AND t.reorg_state IS NULL
             AND u.seeded_at IS NOT NULL AND t.detect_time < %(cut)s""",
        {"cut": now - stale_after - timedelta(seconds=s.shadow_chain_grace_s)},
    ).fetchone()
    if stuck is not None and stuck["n"]:
        findings.append({"kind": "shadow_stuck", **_plain(stuck)})
    for r in conn.execute(
        """SELECT followed_user_id, count(*) AS n, min(event_time) AS since
           FROM uncertain_conversion
           GROUP BY followed_user_id ORDER BY followed_user_id"""
    ):  # the shadow book is uncertain from the first one on (SPEC §6)
        findings.append({"kind": "shadow_uncertain_conversion", **_plain(r)})
    return findings


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    s, now = ctx.settings, ctx.clock()
    ups: http.Upstreams = ctx.resources["ups"]
    backfill = timedelta(seconds=s.reconcile_backfill_s)
    # the active users, and those never polled whole or not seeded yet
    targets = set(polling.Due.read(conn, now, s).active) | {
        u.id for u in polling.followed_users(conn) if u.checkpoint is None or not u.seeded
    }
    ctx.count("users_reconciled", len(targets))
    if targets:
        got = polling.backfill(conn, ups, now - backfill, now, ctx.clock, only=targets)
        ctx.count("backfilled", got)
    ctx.count("contradicted_fills_voided", void_contradicted(conn, now))
    grace = timedelta(seconds=s.rtds_settle_grace_s)
    ctx.count("rtds_fills_unsettled", flag_unsettled(conn, now, grace))
    findings = find_gaps(conn, now, timedelta(seconds=s.reconcile_confirm_after_s))
    findings += find_stalls(conn, now, s)
    for f in findings:
        ctx.count(f["kind"])
    ctx.details["findings"] = findings[:MAX_EXAMPLES]
    return len(findings)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("reconcile", __doc__ or "")
    p.set_defaults(interval=60.0)
    args = p.parse_args(argv)
    return jobs.main("reconcile", args, run_once, upstreams=True)


if __name__ == "__main__":
    sys.exit(main())
