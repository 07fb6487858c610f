"""Marks "at that moment" for a SPLIT or MERGE (SPEC §6): its cost (or proceeds) is
allocated across the outcomes in proportion to their marks — the newest stored mark
of each within `MAX_AGE` before the event; else midpoints fetched when it is applied;
else none, and the fold allocates equally. The marks used are recorded on the ledger
legs (their price), so a refold never needs them again. Fetched mids are stored: at the
event's moment when that is now (a live decision, so its replay finds them), else at
the time they were fetched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from common.store import db, queries

MAX_AGE = timedelta(minutes=5)
NOW_SLACK = timedelta(seconds=30)  # a moment this close to now is now
MIDS = queries.load("market_price_snapshot")
Fetch = Callable[[list[str]], dict[str, int]]  # asset ids → mids (those with a book)


def bucket_of(t: datetime) -> datetime:
    """The 30 s bucket a mark belongs to."""
    return t.replace(second=t.second - t.second % 30, microsecond=0)


def store(conn: db.Conn, found: Sequence[tuple[str, int, str]], at: datetime) -> None:
    """Stores (asset, mid, source) marks observed at `at` as that bucket's marks (a
    bucket's first mark stays): the price job's and those fetched for an allocation."""
    with conn.cursor() as cur:
        cur.executemany(MIDS["insert"], [(a, bucket_of(at), m, src, at) for a, m, src in found])


def at_moment(
    conn: db.Conn,
    assets: Sequence[str],
    at: datetime,
    now: datetime,
    fetch: Fetch | None = None,
) -> dict[str, int] | None:
    """The marks of every one of `assets` at `at` (see the module), or None when some
    outcome has none (the allocation is then equal)."""
    if not assets:
        return None
    rows = conn.execute(MIDS["newest_within"], {"a": list(assets), "t": at, "age": MAX_AGE})
    found = {r["asset_id"]: int(r["mid_micros"]) for r in rows}
    if len(found) < len(assets) and fetch is not None:
        fetched = fetch(list(assets))
        if all(a in fetched for a in assets):
            mids = [(a, mid, "MIDPOINT") for a, mid in sorted(fetched.items())]
            store(conn, mids, at if now - at <= NOW_SLACK else now)
            return {a: fetched[a] for a in assets}
    return found if all(a in found for a in assets) else None


def missing(conn: db.Conn, wanted: Sequence[tuple[Sequence[str], datetime]]) -> list[str]:
    """The assets of the (outcomes, moment) pairs that have no stored mark at their
    moment: what a caller fetches in one batch before it takes a lock."""
    out: set[str] = set()
    for assets, at in wanted:
        rows = conn.execute(MIDS["newest_within"], {"a": list(assets), "t": at, "age": MAX_AGE})
        if len(list(rows)) < len(assets):
            out.update(assets)
    return sorted(out)
