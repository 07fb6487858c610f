"""`upstream_probe`: the probes functions.metrics writes every 30 s
(common/upstream/probes.py), and what the metric catalogue and the status page read
back from them. Both read through the statements here, so a figure shown on the page
is the metric's own over the page's window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.store import db
from common.upstream import probes

# Per upstream over the window ending at `now` (binds: now, window): probes, failed
# ones, and the latency percentiles (ms). Each upstream walks its (upstream, at) index.
STATS = """
SELECT u.upstream, s.probes, s.errors, s.errors::float8 / nullif(s.probes, 0) AS error_rate,
       s.p50_ms, s.p95_ms
FROM unnest(%(upstreams)s::text[]) AS u(upstream)
CROSS JOIN LATERAL (
    SELECT count(*) AS probes, count(*) FILTER (WHERE NOT p.ok) AS errors,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY p.latency_micros) / 1000.0 AS p50_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY p.latency_micros) / 1000.0 AS p95_ms
    FROM upstream_probe p
    WHERE p.upstream = u.upstream AND p.at > %(now)s - %(window)s::interval
      AND p.at <= %(now)s) s
"""

# The newest chain probe that read the head (binds: now): its block, the block's time
# and the head's age at `now`.
HEAD = """
SELECT head_block, head_at, extract(epoch FROM %(now)s - head_at) AS age_s
FROM upstream_probe
WHERE upstream = 'chain' AND head_at IS NOT NULL AND at <= %(now)s
ORDER BY upstream DESC, at DESC LIMIT 1
"""

# The Data API's indexing lag, from the fills both sources saw: a fill the chain gave
# first (source CHAIN, event_time = its block's time) that a Data API poll then matched
# (api_source_id set, confirmed_at = when that poll's page arrived). Lag = confirmed_at
# − event_time, seconds, over the fills confirmed in the window ending at `now` (binds:
# now, lag_window, history) and detected at most `history` before it (the detect_time
# index; older chain fills confirmed now are a catch-up, not the API's lag).
INDEX_LAG = """
SELECT count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM confirmed_at - event_time))
         AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM confirmed_at - event_time))
         AS p95_s
FROM trade_event
WHERE source = 'CHAIN' AND api_source_id IS NOT NULL
  AND confirmed_at > %(now)s - %(lag_window)s::interval AND confirmed_at <= %(now)s
  AND detect_time > %(now)s - %(lag_window)s::interval - %(history)s::interval
  AND detect_time <= %(now)s
"""

# Each upstream's newest probe (binds: upstreams, now).
LAST = """
SELECT u.upstream, p.at, p.ok, p.status, p.error, p.latency_micros
FROM unnest(%(upstreams)s::text[]) AS u(upstream)
CROSS JOIN LATERAL (
    SELECT at, ok, status, error, latency_micros FROM upstream_probe
    WHERE upstream = u.upstream AND at <= %(now)s
    ORDER BY upstream DESC, at DESC LIMIT 1) p
"""


def write(conn: db.Conn, found: list[probes.Probe], at: datetime) -> int:
    """Stores the probes of one run at `at`; returns how many."""
    rows = [
        (p.upstream, at, p.ok, p.latency_micros, p.status, p.error, p.head_block, p.head_at)
        for p in found
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO upstream_probe (upstream, at, ok, latency_micros, status, error,
                   head_block, head_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            rows,
        )
    return len(rows)


@dataclass(frozen=True)
class Summary:
    """The probes of a window, for the status page."""

    window: str
    upstreams: list[dict[str, Any]]  # STATS joined with LAST, in probes.UPSTREAMS order
    head: dict[str, Any] | None  # HEAD
    index_lag: dict[str, Any]  # INDEX_LAG


def summary(conn: db.Conn, now: datetime, window: str, history: str) -> Summary:
    """The probes, and the Data API's indexing lag, over `window` (an interval, '1
    hour') ending at `now`; `history`: as INDEX_LAG's."""
    params = {
        "now": now,
        "window": window,
        "lag_window": window,
        "history": history,
        "upstreams": list(probes.UPSTREAMS),
    }
    last = {r["upstream"]: r for r in conn.execute(LAST, params)}
    rows = []
    for r in conn.execute(STATS, params):
        newest = last.get(r["upstream"]) or {}
        rows.append({**r, "last": newest or None})
    lag = conn.execute(INDEX_LAG, params).fetchone()
    return Summary(window, rows, conn.execute(HEAD, params).fetchone(), dict(lag or {"n": 0}))
