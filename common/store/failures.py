"""`failed_item`: work that failed after retries, kept with its payload and error for the
status page and for `python -m functions.ops rerun-failed`. One row per (stage, item);
failing again bumps `attempts`, succeeding later resolves it.

Stages that record items: `poll` (a user whose wallets could not be polled; item
`user:<id>`) and `simulate` (a group whose decision raised; item = the group key, which
holds the copy engine until it is fixed or voided)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from common.store import db


def record(
    conn: db.Conn,
    stage: str,
    key: str,
    error: str,
    now: datetime,
    payload: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        """INSERT INTO failed_item (stage, item_key, payload, error, first_failed_at,
               last_failed_at)
           VALUES (%(s)s, %(k)s, %(p)s, %(e)s, %(t)s, %(t)s)
           ON CONFLICT (stage, item_key) DO UPDATE SET
               error = EXCLUDED.error, payload = EXCLUDED.payload,
               last_failed_at = EXCLUDED.last_failed_at, resolved_at = NULL,
               attempts = failed_item.attempts + 1,
               first_failed_at = CASE WHEN failed_item.resolved_at IS NULL
                   THEN failed_item.first_failed_at ELSE EXCLUDED.first_failed_at END""",
        {"s": stage, "k": key, "p": Jsonb(payload), "e": error[:2000], "t": now},
    )


def open_items(conn: db.Conn, stage: str | None = None) -> list[dict[str, Any]]:
    return list(
        conn.execute(
            """SELECT * FROM failed_item WHERE resolved_at IS NULL
                 AND (%(s)s::text IS NULL OR stage = %(s)s) ORDER BY first_failed_at, id""",
            {"s": stage},
        )
    )


def resolve(conn: db.Conn, stage: str, keys: list[str], now: datetime) -> int:
    """Marks these items resolved (they succeeded since); returns how many were open."""
    if not keys:
        return 0
    return conn.execute(
        """UPDATE failed_item SET resolved_at = %(t)s
           WHERE stage = %(s)s AND item_key = ANY(%(k)s) AND resolved_at IS NULL""",
        {"s": stage, "k": keys, "t": now},
    ).rowcount
