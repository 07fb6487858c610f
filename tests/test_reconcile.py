"""Reconcile flags what went wrong and records it in job_run."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

import run_local
from common.runtime import jobs, settings
from common.store import db, ingest, polling, shadow, users
from common.upstream import chain, http
from functions import reconcile
from sandbox import testing

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WALLET = "0x" + "5a" * 20
S = settings.Settings()


def chain_fill(tx: int, log_index: int, *, removed: bool = False) -> chain.ChainFill:
    return chain.ChainFill(
        version=2,
        exchange=S.exchange_addresses_v2[0],
        order_hash="0x" + "ee" * 32,
        owner=WALLET,
        counterparty="0x" + "0b" * 20,
        side="BUY",
        asset_id="123",
        share_micros=10_000_000,
        collateral_micros=4_700_000,
        fee_micros=0,
        price_micros=470_000,
        tx_hash=f"0x{tx:064x}",
        log_index=log_index,
        block_number=1,
        block_hash=None,
        block_time=NOW - timedelta(minutes=30),
        removed=removed,
    )


def test_gaps_and_stalls_are_flagged(conn: db.Conn) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    old = NOW - timedelta(minutes=20)
    assert ingest.store_chain_fill(conn, chain_fill(1, 4), user, old) == "insert"
    assert ingest.store_chain_fill(conn, chain_fill(2, 5), user, old) == "insert"
    assert ingest.store_chain_fill(conn, chain_fill(2, 5, removed=True), user, old) == "remove"
    assert ingest.store_chain_fill(conn, chain_fill(3, 6), user, NOW) == "insert"  # too recent
    jobs.heartbeat(conn, "listen", NOW - timedelta(minutes=10), {"connected": False})
    gaps = reconcile.find_gaps(conn, NOW, timedelta(minutes=5))
    assert [(g["kind"], g["tx_hash"]) for g in gaps] == [
        ("chain_fill_unconfirmed", f"0x{1:064x}")  # the reorged-out one is not a gap
    ]
    stalls = {f["kind"] for f in reconcile.find_stalls(conn, NOW, S)}
    assert stalls == {"stale_heartbeat", "poll_checkpoint_stale", "shadow_stuck"}


def test_api_fill_missed_while_listener_was_up(conn: db.Conn) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    jobs.heartbeat(conn, "listen", NOW - timedelta(hours=1), {"connected": True})
    jobs.heartbeat(conn, "listen", NOW, {"connected": True})
    fill = ingest.ApiFill(
        user,
        WALLET,
        f"0x{9:064x}",
        "123",
        "0x" + "c" * 64,
        "SELL",
        500_000,
        2_000_000,
        NOW - timedelta(minutes=10),
    )
    ingest.store_api_fills(conn, [fill], NOW - timedelta(minutes=9))
    kinds = [g["kind"] for g in reconcile.find_gaps(conn, NOW, timedelta(minutes=5))]
    assert kinds == ["api_fill_missed_by_listener"]


@pytest.mark.sandbox
def test_run_backfills_and_records_findings(conn: db.Conn) -> None:
    with testing.running_sandbox(seed=5, clock="manual") as sb:
        sb.advance(10 * 60_000)
        s = run_local.demo_settings(sb.port)
        with http.make_upstreams(s) as ups:
            now = datetime.fromtimestamp(sb.now_ms() / 1000, tz=UTC)
            users.add(conn, sb.leaders[0], "lead", [], now)
            sb.advance(3 * 60_000)
            ctx = jobs.Context(
                args=argparse.Namespace(),
                settings=s,
                clock=lambda: datetime.fromtimestamp(sb.now_ms() / 1000, tz=UTC),
            )
            ctx.resources["ups"] = ups
            jobs.run_recorded(conn, "reconcile", ctx, reconcile.run_once)
    run = conn.execute("SELECT status, counts FROM job_run WHERE job = 'reconcile'").fetchone()
    assert run is not None and run["status"] == "OK"
    assert isinstance(run["counts"]["findings"], list)
    seeded = conn.execute("SELECT seeded_at FROM followed_user").fetchone()
    assert seeded is not None and seeded["seeded_at"] is not None
    assert conn.execute(
        "SELECT count(*) AS n FROM system_checkpoint WHERE name = %(n)s", {"n": polling.CHECKPOINT}
    ).fetchone() == {"n": 1}


def test_an_unapplied_conversion_is_counted_and_marks_the_shadow_book_uncertain(
    conn: db.Conn,
) -> None:
    """A CONVERSION the shadow book cannot apply: reconcile finds it, and the user's
    page says since when the shadow book is uncertain."""
    from site_builder.pages import users as user_pages

    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    at = NOW - timedelta(minutes=30)
    conn.execute(
        """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
               activity_type, condition_id, share_micros, usdc_micros, event_time, detect_time)
           VALUES ('DATA_API', 'c1', %(u)s, %(w)s, 'CONVERSION', '0x' || repeat('c', 64),
               5000000, 0, %(t)s, %(t)s)""",
        {"u": user, "w": WALLET, "t": at},
    )
    assert user_pages.summaries(conn, NOW, user)[0].user["uncertain_since"] is None
    shadow.apply_user(conn, user, NOW - timedelta(days=1), NOW, timedelta(0))
    found = [f for f in reconcile.find_stalls(conn, NOW, S) if "conversion" in f["kind"]]
    assert found == [
        {
            "kind": "shadow_uncertain_conversion",
            "followed_user_id": user,
            "n": 1,
            "since": at.isoformat(),
        }
    ]
    assert user_pages.summaries(conn, NOW, user)[0].user["uncertain_since"] == at
