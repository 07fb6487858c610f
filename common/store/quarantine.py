"""Keeps every rejected payload with its reason (SPEC §3 `quarantine`): nothing that
fails to parse is dropped silently, and the same payload seen again is counted, not
duplicated.

Bounded whatever an upstream sends: a payload keeps at most `wire.MAX_PAYLOAD_CHARS`
(its sha256 and size are of the whole), and a source may add at most
`OCULUS_QUARANTINE_MAX_PER_MINUTE` new rows a minute; past that, its payloads are counted
on one `RATE_LIMITED` row per source and minute (`seen_count`), not kept one by one.
Prune deletes rows not seen for `OCULUS_PRUNE_QUARANTINE_DAYS`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from psycopg.types.json import Jsonb

from common.runtime import settings
from common.store import db
from common.upstream import wire

log = logging.getLogger(__name__)

_UPSERT = """
INSERT INTO quarantine (source, reason, payload, payload_sha256, payload_bytes, context,
                        first_seen_at, last_seen_at)
VALUES (%(source)s, %(reason)s, %(payload)s, %(sha)s, %(bytes)s, %(context)s, %(now)s, %(now)s)
ON CONFLICT (source, payload_sha256) DO UPDATE
   SET seen_count = quarantine.seen_count + 1,
       last_seen_at = GREATEST(quarantine.last_seen_at, EXCLUDED.last_seen_at),
       reason = EXCLUDED.reason
RETURNING (xmax = 0) AS inserted
"""
_SEEN_AGAIN = """
UPDATE quarantine SET seen_count = seen_count + 1,
       last_seen_at = GREATEST(last_seen_at, %(now)s), reason = %(reason)s
WHERE source = %(source)s AND payload_sha256 = %(sha)s
"""
_NEW_THIS_MINUTE = """
SELECT count(*) AS n FROM quarantine
WHERE source = %(source)s AND first_seen_at > %(now)s - interval '1 minute'
  AND first_seen_at <= %(now)s AND payload_sha256 NOT LIKE 'rate-limited:%%'
"""
OVERFLOW_PAYLOAD_CHARS = 1024  # the overflow row keeps a sample of the first payload


def _params(reject: wire.Reject, now: datetime) -> dict[str, object]:
    return {
        "source": reject.source[:200],
        "reason": reject.reason[:2000].replace("\x00", "\\u0000"),
        "payload": reject.payload.replace("\x00", "\\u0000"),  # text columns refuse NUL
        "sha": reject.payload_sha256,
        "bytes": reject.payload_bytes,
        "context": Jsonb(dict(reject.context)),
        "now": now,
    }


def _overflow(reject: wire.Reject, now: datetime, limit: int) -> dict[str, object]:
    """The row counting a source's payloads past its limit in the minute of `now`."""
    minute = now.replace(second=0, microsecond=0)
    return {
        **_params(reject, now),
        "reason": f"RATE_LIMITED: more than {limit} new payloads a minute from this source;"
        f" the rest of the minute from {minute.isoformat()} is counted here, not kept"
        f" (first: {reject.reason[:500]})",
        "payload": reject.payload[:OVERFLOW_PAYLOAD_CHARS].replace("\x00", "\\u0000"),
        "sha": f"rate-limited:{minute.isoformat()}",
    }


def record(
    conn: db.Conn,
    rejects: Iterable[wire.Reject],
    now: datetime,
    limit: int | None = None,
    *,
    quiet: bool = False,
) -> int:
    """Stores the rejects (in the caller's transaction); returns how many. Each new one
    is logged, unless `quiet` (a command that reports them itself)."""
    limit = limit if limit is not None else settings.get().quarantine_max_per_minute
    left: dict[str, int] = {}
    count = 0
    for reject in rejects:
        params = _params(reject, now)
        source = str(params["source"])
        if source not in left:
            row = conn.execute(_NEW_THIS_MINUTE, params).fetchone()
            left[source] = limit - (int(row["n"]) if row else 0)
        count += 1
        if left[source] > 0:
            row = conn.execute(_UPSERT, params).fetchone()
            if row is not None and row["inserted"]:
                left[source] -= 1
                if not quiet:
                    log.warning("quarantined %s payload: %s", source, reject.reason[:300])
            continue
        if conn.execute(_SEEN_AGAIN, params).rowcount:
            continue  # a payload already kept is counted on its own row
        row = conn.execute(_UPSERT, _overflow(reject, now, limit)).fetchone()
        if row is not None and row["inserted"]:
            log.warning("quarantine: %s sends more than %d new payloads a minute", source, limit)
    return count
