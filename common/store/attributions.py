"""Reading the attribution (SPEC §10) for the pages: retention per window of one
portfolio — a leader's own copy (EXEC_USER) or the global one — from `copy_attribution`
(written by functions/score.py; the queries are in sql/copy_attribution.sql)."""

from __future__ import annotations

from datetime import datetime, timedelta

from common.domain import attribution
from common.store import db, queries

SQL = queries.load("copy_attribution")
WINDOWS = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def retention(
    conn: db.Conn, now: datetime, user_id: int | None = None
) -> dict[str, attribution.Retention]:
    """Retention over 24 h, 7 d and 30 d of the user's own copy, or (no user) of the
    global portfolio."""
    params = {
        "scope": "EXEC_GLOBAL" if user_id is None else "EXEC_USER",
        "u": user_id,
        "d1": now - WINDOWS["24h"],
        "d7": now - WINDOWS["7d"],
        "d30": now - WINDOWS["30d"],
    }
    skips: dict[str, list[tuple[str, int]]] = {w: [] for w in WINDOWS}
    for r in conn.execute(SQL["retention_skips"], params):
        skips[r["span"]].append((r["skip_reason"] or "SKIP", int(r["skip"])))
    out = {}
    for r in conn.execute(SQL["retention"], params):
        w = r["span"]
        out[w] = attribution.Retention(
            window=w,
            attempts=r["attempts"],
            n=r["n"],
            ideal=r["ideal"],
            exec=r["exec"],
            sizing=r["sizing"],
            skips=tuple(sorted(skips[w], key=lambda kv: (-kv[1], kv[0]))),
            unfilled=r["unfilled"],
            latency=r["latency"],
            slippage=r["slippage"],
            fee=r["fee"],
        )
    return {w: out[w] for w in WINDOWS}


def totals(conn: db.Conn, user_id: int | None = None) -> dict[tuple[str, int | None], int]:
    """The ideal copy's PnL now (Σ ideal over every attributed BUY/SELL attempt) per
    portfolio: ("EXEC_USER", user) and ("EXEC_GLOBAL", None); only the user's own copy
    when `user_id` is given."""
    rows = conn.execute(SQL["totals"], {"u": user_id})
    return {(r["portfolio_scope"], r["followed_user_id"]): int(r["ideal"]) for r in rows}


def ideal_series(conn: db.Conn, user_id: int | None, since: datetime) -> list[tuple[datetime, int]]:
    """The ideal copy's PnL by the hour since `since` (`ideal_hourly`), oldest first: the
    user's own copy, or (None) the global one."""
    params = {
        "scope": "EXEC_GLOBAL" if user_id is None else "EXEC_USER",
        "u": user_id,
        "since": since,
    }
    return [
        (r["bucket"], int(r["ideal_micros"])) for r in conn.execute(SQL["hourly_series"], params)
    ]
