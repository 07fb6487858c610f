"""Keeps every rejected payload with its reason (SPEC §3 `quarantine`): nothing that
fails to parse is dropped silently, and the same payload seen again is counted, not
duplicated."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime

from psycopg.types.json import Jsonb

from common import db, wire

log = logging.getLogger(__name__)

_UPSERT = """
INSERT INTO quarantine (source, reason, payload, payload_sha256, context, first_seen_at,
                        last_seen_at)
VALUES (%(source)s, %(reason)s, %(payload)s, %(sha)s, %(context)s, %(now)s, %(now)s)
ON CONFLICT (source, payload_sha256) DO UPDATE
   SET seen_count = quarantine.seen_count + 1,
       last_seen_at = EXCLUDED.last_seen_at,
       reason = EXCLUDED.reason
RETURNING id
"""


def record(conn: db.Conn, rejects: Iterable[wire.Reject], now: datetime) -> int:
    """Stores the rejects (in the caller's transaction); returns how many."""
    count = 0
    for reject in rejects:
        payload = reject.payload.replace("\x00", "\\u0000")  # text columns refuse NUL
        conn.execute(
            _UPSERT,
            {
                "source": reject.source,
                "reason": reject.reason[:2000],
                "payload": payload,
                "sha": hashlib.sha256(payload.encode()).hexdigest(),
                "context": Jsonb(dict(reject.context)),
                "now": now,
            },
        )
        log.warning("quarantined %s payload: %s", reject.source, reject.reason)
        count += 1
    return count
