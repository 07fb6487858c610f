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

import logging
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.store import db

log = logging.getLogger(__name__)

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


# Elected roles: one holder across every host (the scheduler, the listener, each job).

_TAKE = """
INSERT INTO role_lease AS r (role, holder, acquired_at, renewed_at, expires_at)
VALUES (%(role)s, %(me)s, clock_timestamp(), clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (role) DO UPDATE SET
    holder = EXCLUDED.holder,
    acquired_at = CASE WHEN r.holder = EXCLUDED.holder THEN r.acquired_at
                       ELSE EXCLUDED.acquired_at END,
    renewed_at = EXCLUDED.renewed_at,
    expires_at = EXCLUDED.expires_at
WHERE r.holder = EXCLUDED.holder OR r.expires_at < EXCLUDED.renewed_at
   OR r.holder = %(dead)s
RETURNING holder
"""
_HOLDER = "SELECT holder, acquired_at, expires_at FROM role_lease WHERE role = %(role)s"
_RELEASE = "DELETE FROM role_lease WHERE role = %(role)s AND holder = %(me)s"


def process_gone(pid: int) -> bool:
    """Whether no process of this pid runs on this host (one of another user's does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Holder:
    name: str  # <host id>/<pid>/<token>
    since: datetime | None
    until: datetime | None

    @property
    def host(self) -> str:
        return self.name.split("/")[0]

    def gone_from(self, host: str) -> bool:
        """The holder ran on `host` (this one) and its process is no more."""
        parts = self.name.split("/")
        return (
            len(parts) == 3
            and parts[0] == host
            and parts[1].isdigit()
            and (process_gone(int(parts[1])))
        )


class Role:
    """One elected holder of a role across every host on the database — the scheduler,
    the listener, one copy of each job — as a row of `role_lease` whose expiry is kept
    by the database's clock: not a session lock, so it holds behind a transaction-mode
    connection pooler, and a host that dies (its sessions can linger on the server for
    hours) loses its roles `ttl` after its last renewal. The holder is `<host id>/<pid>/
    <token>`: a process of this host that is gone (killed, crashed) is replaced at once;
    one that released its role (a clean stop) at once too.

    `take` claims it once; `wait` stands by, trying every `ttl`/4, until it is taken.
    While held, `keep` renews it every `ttl`/3 on a connection of its own, in a thread;
    a renewal that finds it taken by another, or that cannot reach the database before
    the lease would expire (its connection times out within a third of the lease), fences
    this process off: `on_lost` runs (by default SIGTERM, then an immediate exit 75 if the
    process is still there a moment later) — so two holders never work on past one
    lease."""

    def __init__(
        self,
        conn: db.Conn,
        role: str,
        host: str,
        ttl_s: float,
        *,
        url: str | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.conn, self.role, self.host, self.ttl_s, self.url = conn, role, host, ttl_s, url
        self.me = f"{host}/{os.getpid()}/{secrets.token_hex(4)}"
        self.on_lost = on_lost or self._terminate
        self.held = False
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self, conn: db.Conn | None = None) -> Holder | None:
        row = (conn or self.conn).execute(_HOLDER, {"role": self.role}).fetchone()
        return None if row is None else Holder(row["holder"], row["acquired_at"], row["expires_at"])

    def take(self, conn: db.Conn | None = None) -> bool:
        """Claims the role if it is free, expired, ours, or held by a process of this host
        that is gone; True when held."""
        c = conn or self.conn
        params = {"role": self.role, "me": self.me, "ttl": self.ttl_s, "dead": None}
        row = c.execute(_TAKE, params).fetchone()
        if row is None:
            current = self.holder() if conn is None else None
            if current is not None and current.gone_from(self.host):
                row = c.execute(_TAKE, {**params, "dead": current.name}).fetchone()
        self.held = row is not None
        return self.held

    def wait(self, stopped: Callable[[], bool], sleep: Callable[[float], None]) -> bool:
        """Stands by until the role is taken (True) or `stopped()` (False); says who holds
        it once, then once a minute."""
        said = float("-inf")
        while not stopped():
            if self.take():
                if said > float("-inf"):
                    log.info("%s: taken over (was waiting as a standby)", self.role)
                return True
            if time.monotonic() - said >= 60:
                said = time.monotonic()
                log.warning("%s: %s; standing by", self.role, self.describe())
            sleep(max(0.5, self.ttl_s / 4))
        return False

    def describe(self, conn: db.Conn | None = None) -> str:
        h = self.holder(conn)
        if h is None:
            return "free"
        return f"held by {h.name} since {h.since:%Y-%m-%d %H:%M:%S} (until {h.until:%H:%M:%S})"

    def keep(self) -> Role:
        """Renews the role every ttl/3 in a thread, on a connection of its own."""
        self._thread = threading.Thread(target=self._keep, name=f"role {self.role}", daemon=True)
        self._thread.start()
        return self

    def _keep(self) -> None:
        every, ok_at = self.ttl_s / 3, time.monotonic()
        conn: db.Conn | None = None
        try:
            while not self._stop.wait(every if conn is not None else min(every, 1.0)):
                try:
                    if conn is None:  # a renewal never waits past its turn on the network
                        third = max(1, int(self.ttl_s / 3))
                        conn = db.connect(
                            self.url,
                            autocommit=True,
                            connect_timeout=max(2, third),
                            tcp_user_timeout=third * 1000,
                            options=f"-c statement_timeout={third * 1000}",
                        )
                    if not self.take(conn):
                        return self._fence(f"taken by another holder ({self.describe(conn)})")
                    ok_at = time.monotonic()
                    if self._stop.is_set():  # released meanwhile: do not hold it again
                        conn.execute(_RELEASE, {"role": self.role, "me": self.me})
                except Exception as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    if time.monotonic() - ok_at >= self.ttl_s * 0.8:
                        return self._fence(f"not renewed for {self.ttl_s * 0.8:g}s ({exc})")
        finally:
            if conn is not None:
                conn.close()

    def _fence(self, why: str) -> None:
        self.lost, self.held = why, False
        log.error("%s: lost the role: %s; stopping", self.role, why)
        self.on_lost(why)

    def _terminate(self, _why: str) -> None:
        """Stops this process: SIGTERM (a loop ends its batch and exits), then, if it is
        still running a moment later (at most 2 s, within what is left of the lease), an
        immediate exit: a job that does not watch the stop flag must not go on writing
        once another holder may have the role."""
        os.kill(os.getpid(), signal.SIGTERM)
        grace = max(0.2, min(2.0, 0.15 * self.ttl_s))
        timer = threading.Timer(grace, os._exit, args=(FENCED_EXIT,))
        timer.daemon = True
        timer.start()

    def release(self) -> None:
        """Stops renewing and frees the role (at once for a standby) if still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held:
            self.held = False
            try:
                if not (self.conn.closed or self.conn.broken):
                    self.conn.execute(_RELEASE, {"role": self.role, "me": self.me})
                else:  # our process may live on (a run inside the scheduler): free it
                    with db.connect(self.url, autocommit=True) as conn:
                        conn.execute(_RELEASE, {"role": self.role, "me": self.me})
            except Exception as exc:  # the lease then lapses by itself
                log.warning("%s: could not free the role: %s", self.role, db.one_line(exc))


FENCED_EXIT = 75  # EX_TEMPFAIL, as a job that finds its role held (runtime.jobs.EXIT_BUSY)
