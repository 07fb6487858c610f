"""`system_checkpoint` rows: cursors that only move forward, and the backfill request
the listener leaves for the poller after a reconnect."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common import db

BACKFILL_REQUEST = "listen.backfill_request"


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
    """Asks the poller to reach back to `since`; returns the request's number (each
    request replaces the previous one and gets the next number)."""
    row = conn.execute(
        """INSERT INTO system_checkpoint (name, followed_user_id, cursor_int, cursor_time,
               updated_at)
           VALUES (%(n)s, NULL, 1, %(since)s, %(now)s)
           ON CONFLICT (name, followed_user_id) DO UPDATE
               SET cursor_int = COALESCE(system_checkpoint.cursor_int, 0) + 1,
                   cursor_time = EXCLUDED.cursor_time, updated_at = EXCLUDED.updated_at
           RETURNING cursor_int""",
        {"n": BACKFILL_REQUEST, "since": since, "now": now},
    ).fetchone()
    assert row is not None
    return int(row["cursor_int"])


def pending_backfill(conn: db.Conn) -> tuple[datetime, int] | None:
    """Returns the open backfill request as (since, number), or None."""
    row = read(conn, BACKFILL_REQUEST)
    if row is None or row["cursor_time"] is None:
        return None
    return row["cursor_time"], int(row["cursor_int"] or 0)


def clear_backfill(conn: db.Conn, number: int) -> bool:
    """Deletes request `number` (it was served) unless a newer one replaced it; returns
    whether it did."""
    cur = conn.execute(
        "DELETE FROM system_checkpoint"
        " WHERE name = %(n)s AND followed_user_id IS NULL AND cursor_int = %(i)s",
        {"n": BACKFILL_REQUEST, "i": number},
    )
    return cur.rowcount == 1
