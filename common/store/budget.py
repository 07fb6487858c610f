"""One request budget per upstream, shared by every process and host on the database.

Each process used to have its own token bucket, so poll, reconcile, the listener's
backfill and a second host each spent the full allowance: the host sent 29 Data API
requests/s against a 20 rps budget. Here a bucket is a row of `request_budget` (UNLOGGED):
`reserve` takes a token in one statement — refilled by the database's clock since its
last use, at most `burst`, possibly below zero: the caller then waits its turn, as with
a local bucket — so the processes queue on one budget. A 429 anyone sees halves the
shared rate (floor 1 rps); successes win it back 10 % at a time, up to the configured
rate (`OCULUS_RATE_LIMIT_RPS`, and `OCULUS_RATE_LIMIT_PATHS` for paths with a tighter
limit of their own, such as the Data API's `/trades`).

The budget has its own autocommit connection (a request never waits on the caller's
transaction). While the database cannot answer, the process falls back to a bucket of
its own at the same rate, logs it once, and tries the database again after
RETRY_DB_S: the budget never stops a request the database could not count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from common.runtime import settings as settings_mod
from common.store import db
from common.upstream import http

log = logging.getLogger(__name__)

RETRY_DB_S = 10.0  # after a database error, the process's own bucket serves this long
MIN_RATE = 1.0

_RESERVE = """
INSERT INTO request_budget AS b (name, tokens, rate, nominal_rate, burst, stamp, requests)
VALUES (%(n)s, %(burst)s - 1, %(rate)s, %(rate)s, %(burst)s, clock_timestamp(), 1)
ON CONFLICT (name) DO UPDATE SET
    tokens = LEAST(EXCLUDED.burst::float8,
                   b.tokens + LEAST(b.rate, EXCLUDED.nominal_rate)
                              * extract(epoch FROM clock_timestamp() - b.stamp)) - 1,
    rate = LEAST(b.rate, EXCLUDED.nominal_rate),
    nominal_rate = EXCLUDED.nominal_rate,
    burst = EXCLUDED.burst,
    stamp = clock_timestamp(),
    requests = b.requests + 1
RETURNING tokens, rate
"""
# a 429: the rate halves, counting the tokens earned so far at the old rate first
_SLOW_DOWN = """
UPDATE request_budget SET
    tokens = LEAST(burst::float8, tokens + rate * extract(epoch FROM clock_timestamp() - stamp)),
    stamp = clock_timestamp(),
    rate = GREATEST(%(floor)s, rate / 2),
    slowed_at = clock_timestamp()
WHERE name = %(n)s RETURNING rate
"""
_RECOVER = """
UPDATE request_budget SET
    tokens = LEAST(burst::float8, tokens + rate * extract(epoch FROM clock_timestamp() - stamp)),
    stamp = clock_timestamp(),
    rate = LEAST(nominal_rate, rate * 1.1)
WHERE name = %(n)s AND rate < nominal_rate RETURNING rate
"""


class SharedBudget:
    """The process's view of the shared budgets: one connection, opened on first use."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._conn: db.Conn | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0

    def bucket(self, name: str, rate: float, burst: int) -> SharedBucket:
        return SharedBucket(self, name, rate, burst)

    def run(self, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Runs one statement on the budget's connection; returns its row. Raises
        psycopg.Error (or db.DatabaseUnavailable) when the database cannot answer."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self.url, autocommit=True)
                self._conn.execute("SET application_name = 'oculus budget'")
            row = self._conn.execute(sql, params).fetchone()
            return dict(row) if row is not None else None

    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, name: str, exc: BaseException) -> None:
        """Drops the connection and serves from the process's own buckets RETRY_DB_S."""
        first = self._down_until == 0.0 or time.monotonic() >= self._down_until
        self._down_until = time.monotonic() + RETRY_DB_S
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
        if first:
            log.warning(
                "request budget %s: the database cannot count it (%s); this process's own"
                " bucket serves for %gs",
                name,
                db.one_line(exc),
                RETRY_DB_S,
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SharedBucket:
    """A `http.Bucket` kept in `request_budget`; this process's own TokenBucket stands
    in while the database cannot answer."""

    def __init__(self, budget: SharedBudget, name: str, rate: float, burst: int) -> None:
        self.budget, self.name, self.nominal_rate, self.burst = budget, name, rate, burst
        self.rate = rate  # as the last answer said
        self.local = http.TokenBucket(rate, burst)

    def _run(self, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if not self.budget.usable():
            return None
        try:
            return self.budget.run(sql, {"n": self.name, **params})
        except (psycopg.Error, db.DatabaseUnavailable) as exc:
            self.budget.failed(self.name, exc)
            return None

    def reserve(self) -> float:
        row = self._run(_RESERVE, {"rate": self.nominal_rate, "burst": self.burst})
        if row is None:
            return self.local.reserve()
        self.rate = float(row["rate"])
        tokens = float(row["tokens"])
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def slow_down(self) -> None:
        self.local.slow_down()
        row = self._run(_SLOW_DOWN, {"floor": MIN_RATE})
        if row is not None:
            self.rate = float(row["rate"])

    def recover(self) -> None:
        self.local.recover()
        if self.rate >= self.nominal_rate:
            return  # the common case costs no statement
        row = self._run(_RECOVER, {})
        self.rate = float(row["rate"]) if row is not None else self.nominal_rate


def make_upstreams(
    s: settings_mod.Settings | None = None, database_url: str | None = None
) -> http.Upstreams:
    """The process's upstreams, drawing on the shared budgets (`rate_limit_shared`;
    else each on its own bucket). Closing them closes the budget's connection."""
    s = s or settings_mod.get()
    if not s.rate_limit_shared:
        return http.make_upstreams(s)
    budget = SharedBudget(database_url)
    factory: Callable[[str, float, int], http.Bucket] = budget.bucket
    ups = http.make_upstreams(s, buckets=factory)
    ups.on_close.append(budget.close)
    return ups
