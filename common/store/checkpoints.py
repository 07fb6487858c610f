"""`system_checkpoint` rows: cursors that only move forward, and the backfill request
the listener leaves for the poller after a reconnect."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from common.runtime import jobs
from common.store import db

BACKFILL_REQUEST = "listen.backfill_request"
BACKFILL_SERVED = "poll.backfill_served"  # per user: the last request number served


def read(conn: db.Conn, name: str, user_id: int | None = None) -> dict[str, Any] | None:
    """Returns the checkpoint row (cursor_int, cursor_time, cursor_text), or None."""
    return conn.execute(
        "SELECT cursor_int, cursor_time, cursor_text FROM system_checkpoint"
        " WHERE name = %(n)s AND followed_user_id IS NOT DISTINCT FROM %(u)s",
        {"n": name, "u": user_id},
    ).fetchone()


def advance(
    conn: db.Conn,
    name: str,
    now: datetime,
    *,
    user_id: int | None = None,
    time: datetime | None = None,
    number: int | None = None,
) -> None:
    """Moves a cursor forward (never back): cursor_time and/or cursor_int."""
    conn.execute(
        """INSERT INTO system_checkpoint (name, followed_user_id, cursor_time, cursor_int,
               updated_at)
           VALUES (%(n)s, %(u)s, %(t)s, %(i)s, %(now)s)
           ON CONFLICT (name, followed_user_id) DO UPDATE SET
               cursor_time = GREATEST(system_checkpoint.cursor_time, EXCLUDED.cursor_time),
               cursor_int = GREATEST(system_checkpoint.cursor_int, EXCLUDED.cursor_int),
               updated_at = EXCLUDED.updated_at""",
        {"n": name, "u": user_id, "t": time, "i": number, "now": now},
    )


def request_backfill(conn: db.Conn, since: datetime, now: datetime) -> int:
    """Asks the poller to reach back to `since` and wakes it; returns the request's
    number (a request not yet served is widened to the earlier `since`, and each request
    gets the next number)."""
    row = conn.execute(
        """INSERT INTO system_checkpoint (name, followed_user_id, cursor_int, cursor_time,
               updated_at)
           VALUES (%(n)s, NULL, 1, %(since)s, %(now)s)
           ON CONFLICT (name, followed_user_id) DO UPDATE
               SET cursor_int = COALESCE(system_checkpoint.cursor_int, 0) + 1,
                   cursor_time = LEAST(system_checkpoint.cursor_time, EXCLUDED.cursor_time),
                   updated_at = EXCLUDED.updated_at
           RETURNING cursor_int""",
        {"n": BACKFILL_REQUEST, "since": since, "now": now},
    ).fetchone()
    assert row is not None
    jobs.wake(conn, "poll")
    return int(row["cursor_int"])


def pending_backfill(conn: db.Conn) -> tuple[datetime, int] | None:
    """Returns the open backfill request as (since, number), or None."""
    row = read(conn, BACKFILL_REQUEST)
    if row is None or row["cursor_time"] is None:
        return None
    return row["cursor_time"], int(row["cursor_int"] or 0)


def mark_backfill_served(
    conn: db.Conn, user_ids: Sequence[int], number: int, now: datetime
) -> None:
    """Records that request `number` was served for these users (polled whole from its
    reach, by whichever host holds them)."""
    if user_ids:
        conn.execute(
            """INSERT INTO system_checkpoint (name, followed_user_id, cursor_int, updated_at)
               SELECT %(n)s, u, %(i)s, %(now)s FROM unnest(%(ids)s::bigint[]) u
               ON CONFLICT (name, followed_user_id) DO UPDATE
                   SET cursor_int = GREATEST(system_checkpoint.cursor_int, EXCLUDED.cursor_int),
                       updated_at = EXCLUDED.updated_at""",
            {"n": BACKFILL_SERVED, "i": number, "now": now, "ids": list(user_ids)},
        )


def backfill_unserved(conn: db.Conn, number: int) -> int:
    """How many enabled users request `number` has not been served for yet."""
    row = conn.execute(
        """SELECT count(*) AS n FROM followed_user u
           LEFT JOIN system_checkpoint c ON c.name = %(n)s AND c.followed_user_id = u.id
           WHERE u.enabled AND u.copy_mode <> 'REMOVED'
             AND (c.cursor_int IS NULL OR c.cursor_int < %(i)s)""",
        {"n": BACKFILL_SERVED, "i": number},
    ).fetchone()
    return int(row["n"]) if row else 0


def clear_backfill(conn: db.Conn, number: int) -> bool:
    """Deletes request `number` (it was served) unless a newer one replaced it; returns
    whether it did."""
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM system_checkpoint"
            " WHERE name = %(n)s AND followed_user_id IS NULL AND cursor_int = %(i)s",
            {"n": BACKFILL_REQUEST, "i": number},
        )
        if cur.rowcount != 1:
            return False
        # the next request is numbered from 1 again: no mark may count for it
        conn.execute("DELETE FROM system_checkpoint WHERE name = %s", (BACKFILL_SERVED,))
        return True


_MAX_IDS = {
    "ledger_entry": "SELECT max(id) AS id FROM ledger_entry",
    "copy_attempt": "SELECT max(id) AS id FROM copy_attempt",
    "trade_event": "SELECT max(id) AS id FROM trade_event",
}


def committed_max_ids(
    conn: db.Conn, tables: tuple[str, ...], wait_s: float = 5.0
) -> dict[str, int] | None:
    """Returns the newest id of each table such that no row below it is still being
    written: read while holding both writer locks (ingest, exec ledgers) exclusively,
    which every writer of these tables holds for its transaction (an ingest writer of
    one user holds the ingest key shared, which keeps the exclusive try out as well).
    None when a writer held on past `wait_s` (the caller then keeps its previous cut)."""
    deadline = time.monotonic() + wait_s
    while True:
        with conn.transaction():
            got = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%(a)s) AND pg_try_advisory_xact_lock(%(b)s)"
                " AS ok",
                {"a": db.INGEST_LOCK, "b": db.EXEC_LEDGER_LOCK},
            ).fetchone()
            if got is not None and got["ok"]:
                out = {}
                for t in tables:
                    row = conn.execute(_MAX_IDS[t]).fetchone()
                    out[t] = int(row["id"]) if row and row["id"] is not None else 0
                return out
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
