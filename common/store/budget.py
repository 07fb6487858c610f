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

# Counts are integers (micro-tokens, micro-requests/s): no float column anywhere.
_RESERVE = """
INSERT INTO request_budget AS b
    (name, tokens_micros, rate_micros, nominal_rate_micros, burst, stamp, requests)
VALUES (%(n)s, (%(burst)s - 1) * 1000000, %(rate)s, %(rate)s, %(burst)s, clock_timestamp(), 1)
ON CONFLICT (name) DO UPDATE SET
    tokens_micros = LEAST(EXCLUDED.burst * 1000000::bigint,
                          b.tokens_micros + (LEAST(b.rate_micros, EXCLUDED.nominal_rate_micros)
                              * extract(epoch FROM clock_timestamp() - b.stamp))::bigint)
                    - 1000000,
    rate_micros = LEAST(b.rate_micros, EXCLUDED.nominal_rate_micros),
    nominal_rate_micros = EXCLUDED.nominal_rate_micros,
    burst = EXCLUDED.burst,
    stamp = clock_timestamp(),
    requests = b.requests + 1
RETURNING tokens_micros, rate_micros
"""
# a 429: the rate halves, counting the tokens earned so far at the old rate first
_SLOW_DOWN = """
UPDATE request_budget SET
    tokens_micros = LEAST(burst * 1000000::bigint, tokens_micros
        + (rate_micros * extract(epoch FROM clock_timestamp() - stamp))::bigint),
    stamp = clock_timestamp(),
    rate_micros = GREATEST(%(floor)s, rate_micros / 2),
    slowed_at = clock_timestamp()
WHERE name = %(n)s RETURNING rate_micros
"""
_RECOVER = """
UPDATE request_budget SET
    tokens_micros = LEAST(burst * 1000000::bigint, tokens_micros
        + (rate_micros * extract(epoch FROM clock_timestamp() - stamp))::bigint),
    stamp = clock_timestamp(),
    rate_micros = LEAST(nominal_rate_micros, rate_micros * 11 / 10)
WHERE name = %(n)s AND rate_micros < nominal_rate_micros RETURNING rate_micros
"""
M = 1_000_000


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
        first = self.usable()  # not already serving from its own
        self._down_until = time.monotonic() + RETRY_DB_S
        self.close()
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
                try:
                    self._conn.close()
                finally:
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
        rate = max(1, round(self.nominal_rate * M))
        row = self._run(_RESERVE, {"rate": rate, "burst": self.burst})
        if row is None:
            return self.local.reserve()
        self.rate = row["rate_micros"] / M
        tokens = row["tokens_micros"] / M
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def slow_down(self) -> None:
        self.local.slow_down()
        row = self._run(_SLOW_DOWN, {"floor": round(MIN_RATE * M)})
        if row is not None:
            self.rate = row["rate_micros"] / M

    def recover(self) -> None:
        self.local.recover()
        if self.rate >= self.nominal_rate:
            return  # the common case costs no statement
        row = self._run(_RECOVER, {})
        self.rate = row["rate_micros"] / M if row is not None else self.nominal_rate


def make_upstreams(
    s: settings_mod.Settings | None = None,
    database_url: str | None = None,
    *,
    halt: http.Halt | None = None,
) -> http.Upstreams:
    """The process's upstreams, drawing on the shared budgets (`rate_limit_shared`;
    else each on its own bucket), stopped by `halt` (default: the process's, which
    SIGTERM requests). Closing them closes the budget's connection."""
    s = s or settings_mod.get()
    if not s.rate_limit_shared:
        return http.make_upstreams(s, halt=halt)
    budget = SharedBudget(database_url)
    factory: Callable[[str, float, int], http.Bucket] = budget.bucket
    ups = http.make_upstreams(s, buckets=factory, halt=halt)
    ups.on_close.append(budget.close)
    return ups
