"""Work shared across hosts on one database: each host's poll loop holds a lease on the
followed users it polls (`poll_lease`, one row per user).

A loop claims, at every run, its fair share of the enabled users — the count divided by
the live poll loops (heartbeats `poll@<host id>` younger than the lease), rounded up:
- it renews the leases it holds (a plain UPDATE: renewing never skips a user);
- above its share (a host joined), it frees the highest user ids for the others;
- below it, it claims free or expired leases, lowest ids first, `FOR UPDATE SKIP
  LOCKED`: two hosts claiming at once take different users, and neither waits.
A host that dies stops renewing: its leases expire `poll_lease_s` after its last run and
its heartbeat goes stale as long, so the others' shares grow and they claim its users.
Long runs renew as they go (`Lease.keep`). Clocks are the application's (`ctx.clock`),
so every host must keep time (NTP); the sandbox's clock serves all of them in the demo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.store import db

PROCESS = "poll"  # heartbeats of the loops are poll@<host id>

_ENABLED = "SELECT id FROM followed_user WHERE enabled AND copy_mode <> 'REMOVED' ORDER BY id"
_MAKE_ROWS = """
INSERT INTO poll_lease (followed_user_id) SELECT unnest(%(enabled)s::bigint[])
ON CONFLICT DO NOTHING
"""
_RENEW = """
UPDATE poll_lease SET expires_at = %(until)s WHERE holder = %(me)s RETURNING followed_user_id
"""
_FREE = """
UPDATE poll_lease SET holder = NULL, acquired_at = NULL, expires_at = NULL
WHERE holder = %(me)s AND (%(ids)s::bigint[] IS NULL OR followed_user_id = ANY(%(ids)s))
"""
# the rows taken are locked, SKIP LOCKED by another claim; `was` is their holder before
_CLAIM = """
WITH picked AS (
    SELECT followed_user_id, holder AS was FROM poll_lease
    WHERE followed_user_id = ANY(%(enabled)s) AND (holder IS NULL OR expires_at < %(now)s)
    ORDER BY followed_user_id
    LIMIT %(want)s
    FOR UPDATE SKIP LOCKED)
UPDATE poll_lease l SET holder = %(me)s, acquired_at = %(now)s, expires_at = %(until)s
FROM picked WHERE l.followed_user_id = picked.followed_user_id
RETURNING l.followed_user_id, picked.was
"""
_LIVE = """
SELECT substr(process, length(%(prefix)s) + 1) AS host FROM process_heartbeat
WHERE process LIKE %(like)s AND beat_at >= %(fresh)s
"""


def live_hosts(conn: db.Conn, now: datetime, ttl: timedelta) -> set[str]:
    """The hosts whose poll loop beat within `ttl`."""
    params = {"prefix": f"{PROCESS}@", "like": f"{PROCESS}@%", "fresh": now - ttl}
    return {r["host"] for r in conn.execute(_LIVE, params)}


@dataclass
class Claim:
    """What one claim did: the users held now, and how many were newly taken or freed."""

    held: frozenset[int]
    taken: int = 0
    freed: int = 0
    taken_over: int = 0  # of those taken, from another host whose lease had expired
    hosts: int = 1
    share: int = 0


def claim(conn: db.Conn, me: str, now: datetime, ttl: timedelta) -> Claim:
    """Renews `me`'s leases and brings them to its fair share (module docstring)."""
    with conn.transaction():
        enabled = [r["id"] for r in conn.execute(_ENABLED)]
        conn.execute(_MAKE_ROWS, {"enabled": enabled})
        hosts = live_hosts(conn, now, ttl) | {me}
        share = math.ceil(len(enabled) / len(hosts))
        mine = set(renew(conn, me, now, ttl))
        held = [u for u in enabled if u in mine]  # ascending: the highest ids go back
        out = Claim(frozenset(held[:share]), hosts=len(hosts), share=share)
        out.freed = max(0, len(held) - share)
        extra = sorted(mine - out.held)  # above the share, or no longer enabled
        if extra:
            release(conn, me, extra)
        if len(held) < share:
            params = {"me": me, "now": now, "until": now + ttl, "enabled": enabled}
            got = conn.execute(_CLAIM, {**params, "want": share - len(held)}).fetchall()
            out.held |= {r["followed_user_id"] for r in got}
            out.taken = len(got)
            out.taken_over = sum(1 for r in got if r["was"] not in (None, me))
        return out


def renew(conn: db.Conn, me: str, now: datetime, ttl: timedelta) -> list[int]:
    """Extends `me`'s leases (a long run calls it as it goes); returns their users."""
    rows = conn.execute(_RENEW, {"me": me, "until": now + ttl})
    return [r["followed_user_id"] for r in rows]


def release(conn: db.Conn, me: str, user_ids: list[int] | None = None) -> int:
    """Frees `me`'s leases on `user_ids` (None: all of them — a loop stopping cleanly:
    the others take over at once); returns how many."""
    return conn.execute(_FREE, {"me": me, "ids": user_ids}).rowcount


@dataclass
class Lease:
    """A loop's hold on its users during one run: `keep()` between users renews the
    leases once a third of their life has passed, so a run longer than the lease keeps
    them (and calls `beat`, so the other hosts still count this one live)."""

    conn: db.Conn
    me: str
    ttl: timedelta
    clock: Callable[[], datetime]
    beat: Callable[[datetime], None] = lambda now: None
    renewed_at: datetime | None = None

    def keep(self) -> None:
        now = self.clock()
        if self.renewed_at is None or now - self.renewed_at >= self.ttl / 3:
            renew(self.conn, self.me, now, self.ttl)
            self.beat(now)
            self.renewed_at = now
