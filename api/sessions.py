"""Sessions ended before their expiry (logout).

A session cookie is stateless (signed id and expiry, `auth`), so ending one needs a list
of the ids that were ended: `session_revoked`. The session check runs on every request
nginx does not answer from its few-seconds cache, so it must not wait on the database:
the ids live in memory, the process that ends a session refuses it at once, and the
table is reread at most once a `REFRESH_S` (so another API process, or this one after a
restart, refuses it too). If the database cannot be read, the last list stays in force;
it only ever grows until its cookies expire.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from api import auth
from common.store import db

log = logging.getLogger(__name__)
REFRESH_S = 1.0
READ_TIMEOUT_S = 1.0  # a refresh gives up this soon: the check must stay fast


class Revoked:
    """The ids of sessions ended before their expiry, with each one's expiry (unix s)."""

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self._ids: dict[str, float] = {}
        self._read_at = -math.inf
        self._reading = threading.Lock()
        self._writing = threading.Lock()  # an id ended during a reread is not lost

    def ended(self, session: auth.Session, pool: ConnectionPool[db.Conn] | None) -> bool:
        """Returns whether the session was ended (rereads the table if due)."""
        self._refresh(pool)
        return session.id in self._ids

    def _refresh(self, pool: ConnectionPool[db.Conn] | None) -> None:
        due = time.monotonic() - self._read_at >= self.refresh_s
        # One reader at a time; the others go on with the list they have.
        if pool is None or not due or not self._reading.acquire(blocking=False):
            return
        try:
            with pool.connection(timeout=READ_TIMEOUT_S) as conn:
                rows = conn.execute(
                    "SELECT session_id, extract(epoch FROM expires_at)::float8 AS expires"
                    " FROM session_revoked WHERE expires_at > now()"
                ).fetchall()
            now = time.time()
            with self._writing:
                kept = {k: v for k, v in self._ids.items() if v > now}  # ended here, not yet read
                self._ids = kept | {r["session_id"]: r["expires"] for r in rows}
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("ended sessions not reread (the last list stays in force): %s", exc)
        finally:
            self._read_at = time.monotonic()
            self._reading.release()

    def end(
        self,
        sessions: Iterable[auth.Session],
        pool: ConnectionPool[db.Conn] | None,
        request_id: str | None = None,
    ) -> int:
        """Ends the sessions: refused here at once, and in every API process once the
        rows are written (raises the database's error if they cannot be). Returns how
        many there were."""
        ending = {s.id: s.expires for s in sessions}
        with self._writing:
            self._ids.update(ending)
        if not ending:
            return 0
        if pool is None:
            raise db.DatabaseUnavailable("database not connected")
        with pool.connection(timeout=5.0) as conn:
            conn.execute("DELETE FROM session_revoked WHERE expires_at < now()")
            for session_id, expires in ending.items():
                conn.execute(
                    "INSERT INTO session_revoked (session_id, expires_at, request_id)"
                    " VALUES (%(id)s, to_timestamp(%(exp)s), %(rid)s)"
                    " ON CONFLICT (session_id) DO NOTHING",
                    {"id": session_id, "exp": expires, "rid": request_id},
                )
        return len(ending)
