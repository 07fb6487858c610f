"""Prune (hourly): retention for the tables that grow with time, so the small box runs
for months. Every threshold is a setting (OCULUS_PRUNE_*); what stays is what some
page, chart, breaker, replay or what-if reads.

- `market_price_snapshot` (marks, 30 s): full resolution for PRUNE_MARKS_FULL_DAYS (8),
  then the last mark per asset in each PRUNE_MARKS_BUCKET_S (1 h) bucket. The newest
  mark of every asset is the last of its bucket, so it always stays.
- `portfolio_snapshot` (minutes): every minute for PRUNE_SNAPSHOTS_FULL_DAYS (8), then
  per portfolio and UTC hour the on-the-hour row (the charts' hourly points), the hour's
  last row (the "last at or before" a day or week start) and its highest equity (peaks,
  drawdown); and each portfolio's first row (a user's exec start and the shadow row
  beside it: the ideal-copy base).
- `order_book_snapshot`: a book a copy group or attempt names is never deleted (the
  evidence of a decision; replay and what-if decide on it; the foreign keys forbid it
  anyway), nor one a real copy's attribution names. Others go after PRUNE_BOOKS_DAYS
  (8), except the newest two-sided book of each asset (`Marks.load` values with it).
  Skipped while copy_attempt, copy_group and real_copy_attribution have no index on
  order_book_snapshot_id (each delete's foreign-key check would scan).
- `job_run`: OK rows after PRUNE_RUNS_DAYS (7), FAILED / TIMEOUT / abandoned RUNNING
  after PRUNE_FAILED_RUNS_DAYS (90); the newest run and the newest OK run of every job
  always stay (the status page shows both).
- `quarantine`: rows not seen again for PRUNE_QUARANTINE_DAYS (30).
- `metric_point` (minutes): every minute for PRUNE_METRICS_FULL_DAYS (7, SPEC §11),
  then the on-the-hour value of each series.
- `upstream_probe` (30 s): kept PRUNE_METRICS_FULL_DAYS, then deleted (the metrics keep
  their hourly values; the status page reads the last hour).
- `alert` (RESOLVED, with its transitions) and `notification` (SENT or DEAD, with its
  attempts): after PRUNE_ALERTS_DAYS (90); open alerts and pending messages stay.
- `book_ladder` (SPEC §12): rungs PRUNE_LADDER_DAYS (30) after they were taken.
- Never touched: ledgers, events, copy groups / attempts / fills, audit_log,
  failed_item, process_heartbeat, checkpoints, config, rollups.

Each statement deletes at most PRUNE_BATCH_ROWS rows in its own short transaction
(lock_timeout 5 s), the tables take turns, and a run stops after PRUNE_BUDGET_S; the next
run goes on. Cursors (`system_checkpoint` `prune.*`) remember how far each table has been
pruned, so a run reads only what aged past its cutoff since the last one: rows are never
written into the past. (So a book kept as its asset's newest is not looked at again once
passed: at most one per asset that was quiet for PRUNE_BOOKS_DAYS and then traded again.
`job_run` has no cursor: the failures it keeps are few.) One prune at a time: advisory
lock `locks.PRUNE`. `--dry-run` prints the counts instead of deleting.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from common.runtime import jobs, settings
from common.store import db, locks

log = logging.getLogger(__name__)
PRUNE_LOCK = locks.PRUNE
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # buckets are counted from here (whole hours)
HOUR = timedelta(hours=1)
BEGINNING = datetime.min.replace(tzinfo=UTC)
# Per batch: never queue long behind another writer; a statement gone slow fails the run.
LIMITS = (
    "SELECT set_config('lock_timeout', '5s', true), set_config('statement_timeout', '60s', true)"
)


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these are pruned (marks and snapshots: thinned)."""

    marks: datetime
    snapshots: datetime
    books: datetime
    runs: datetime
    failed_runs: datetime
    quarantine: datetime
    metrics: datetime
    alerts: datetime
    ladder: datetime


def floor_to(t: datetime, step: timedelta) -> datetime:
    """The start of the `step`-long bucket (counted from ORIGIN) that holds `t`."""
    return ORIGIN + (t - ORIGIN) // step * step


def plan_cutoffs(s: settings.Settings, now: datetime) -> Cutoffs:
    """The cutoffs at `now` (pure). Thinning cutoffs fall on bucket edges, so every
    bucket thinned is complete and a rerun finds nothing more to delete."""
    days = timedelta(days=1)
    return Cutoffs(
        marks=floor_to(now - s.prune_marks_full_days * days, marks_step(s)),
        snapshots=floor_to(now - s.prune_snapshots_full_days * days, HOUR),
        books=now - s.prune_books_days * days,
        runs=now - s.prune_runs_days * days,
        failed_runs=now - s.prune_failed_runs_days * days,
        quarantine=now - s.prune_quarantine_days * days,
        metrics=floor_to(now - s.prune_metrics_full_days * days, HOUR),
        alerts=now - s.prune_alerts_days * days,
        ladder=now - s.prune_ladder_days * days,
    )


def marks_step(s: settings.Settings) -> timedelta:
    return timedelta(seconds=s.prune_marks_bucket_s)


# Candidates of each rule: (key, `at`) of the rows to delete, `at` being the time the
# cursor follows. The thinning rules see one bucket [lo, hi) per statement (a dry run: all
# of [lo, cutoff)) and keep, per bucket, what its aggregate names; the others go oldest
# first, with per-row probes written as scalar subqueries (never turned into hash joins).
_MARKS = """
WITH last AS (
  SELECT asset_id, date_bin(%(step)s, bucket, %(origin)s) AS b, max(bucket) AS bucket
  FROM market_price_snapshot WHERE bucket >= %(lo)s AND bucket < %(hi)s GROUP BY 1, 2)
SELECT r.asset_id, r.bucket AS at FROM market_price_snapshot r
JOIN last l ON l.asset_id = r.asset_id AND l.b = date_bin(%(step)s, r.bucket, %(origin)s)
WHERE r.bucket >= %(lo)s AND r.bucket < %(hi)s AND r.bucket < l.bucket"""

_SNAPSHOTS = """
WITH hours AS (
  SELECT portfolio_scope AS scope, coalesce(followed_user_id, 0) AS u,
         date_bin('1 hour', bucket, %(origin)s) AS h, max(bucket) AS last,
         (array_agg(id ORDER BY equity_micros DESC, bucket DESC))[1] AS peak
  FROM portfolio_snapshot WHERE bucket >= %(lo)s AND bucket < %(hi)s GROUP BY 1, 2, 3)
SELECT r.id, r.bucket AS at FROM portfolio_snapshot r
JOIN hours h ON h.scope = r.portfolio_scope AND h.u = coalesce(r.followed_user_id, 0)
  AND h.h = date_bin('1 hour', r.bucket, %(origin)s)
WHERE r.bucket >= %(lo)s AND r.bucket < %(hi)s AND r.bucket > h.h AND r.bucket < h.last
  AND r.id <> h.peak AND r.id <> ALL(%(keep)s::bigint[])"""

# Each portfolio's first snapshot, and the shadow row at the bucket of a user's first exec
# row (the users page's ideal-copy base joins the two).
_FIRSTS = """
SELECT f.id FROM followed_user u CROSS JOIN (VALUES ('SHADOW_USER'), ('EXEC_USER')) s(scope)
CROSS JOIN LATERAL (
  SELECT id FROM portfolio_snapshot p WHERE p.portfolio_scope = s.scope
    AND p.followed_user_id = u.id ORDER BY p.portfolio_scope, p.followed_user_id, p.bucket
  LIMIT 1) f
UNION ALL
(SELECT id FROM portfolio_snapshot WHERE portfolio_scope = 'EXEC_GLOBAL'
   AND followed_user_id IS NULL ORDER BY portfolio_scope, followed_user_id, bucket LIMIT 1)
UNION ALL
SELECT s.id FROM followed_user u
CROSS JOIN LATERAL (
  SELECT e.bucket FROM portfolio_snapshot e WHERE e.portfolio_scope = 'EXEC_USER'
    AND e.followed_user_id = u.id ORDER BY e.portfolio_scope, e.followed_user_id, e.bucket
  LIMIT 1) e
JOIN portfolio_snapshot s ON s.portfolio_scope = 'SHADOW_USER' AND s.followed_user_id = u.id
  AND s.bucket = e.bucket"""

_BOOKS = """
SELECT o.id, o.fetched_at AS at FROM order_book_snapshot o
WHERE o.fetched_at >= %(lo)s AND o.fetched_at < %(cutoff)s
  AND NOT EXISTS (SELECT 1 FROM copy_group g WHERE g.order_book_snapshot_id = o.id)
  AND NOT EXISTS (SELECT 1 FROM copy_attempt a WHERE a.order_book_snapshot_id = o.id)
  AND NOT EXISTS (SELECT 1 FROM real_copy_attribution r WHERE r.order_book_snapshot_id = o.id)
  AND (o.fetched_at, o.id) < (
    SELECT n.fetched_at, n.id FROM order_book_snapshot n
    WHERE n.asset_id = o.asset_id AND cardinality(n.bid_prices_micros) > 0
      AND cardinality(n.ask_prices_micros) > 0
    ORDER BY n.fetched_at DESC, n.id DESC LIMIT 1)"""

_RUNS = """
SELECT r.id, r.started_at AS at FROM job_run r
WHERE r.started_at >= %(lo)s AND r.started_at < %(cutoff)s
  AND (r.status = 'OK' OR r.started_at < %(failed_cutoff)s)
  AND r.started_at < (SELECT max(n.started_at) FROM job_run n
                      WHERE n.job = r.job AND (r.status <> 'OK' OR n.status = 'OK'))"""

# Rejected payloads not seen again for PRUNE_QUARANTINE_DAYS (no cursor: a row seen
# again moves its last_seen_at forward).
_QUARANTINE = "SELECT id, last_seen_at AS at FROM quarantine WHERE last_seen_at < %(cutoff)s"

# A metric series' minutes past the full-resolution days, but its on-the-hour value.
_METRICS = """
SELECT m.name, m.labels, m.at FROM metric_point m
WHERE m.at >= %(lo)s AND m.at < %(cutoff)s AND m.at <> date_trunc('hour', m.at)"""

# Resolved alerts (their transitions go with them) and delivered or given-up
# notifications (their attempts go with them), oldest first.
_ALERTS = """SELECT id, updated_at AS at FROM alert
WHERE state = 'RESOLVED' AND updated_at >= %(lo)s AND updated_at < %(cutoff)s"""
_NOTIFICATIONS = """SELECT id, created_at AS at FROM notification
WHERE status <> 'PENDING' AND created_at >= %(lo)s AND created_at < %(cutoff)s"""

# Probes past the metrics' full-resolution days, oldest first.
_PROBES = "SELECT id, at FROM upstream_probe WHERE at >= %(lo)s AND at < %(cutoff)s"

# The book ladder's rungs (SPEC §12), by when they were taken (the sweep reads a day).
_LADDER = """
SELECT copy_group_id, delay_ms, taken_at AS at FROM book_ladder
WHERE taken_at >= %(lo)s AND taken_at < %(cutoff)s"""

_DELETE = """
WITH d AS (
  DELETE FROM {table} t USING ({candidates} ORDER BY at LIMIT %(n)s) c WHERE {match}
  RETURNING c.at)
SELECT count(*) AS n, max(at) AS last FROM d"""
_COUNT = "SELECT count(*) AS n FROM ({candidates}) c"
_FIRST = "SELECT min(bucket) AS t FROM {table} WHERE bucket >= %(lo)s AND bucket < %(cutoff)s"
_BY_ID = sql.SQL("t.id = c.id")

# Deleting a book makes Postgres check both foreign keys to it; without an index each
# check reads all of copy_attempt / copy_group, so books wait until both exist.
_BOOK_REFS_INDEXED = """
SELECT count(DISTINCT x.indrelid) = 3 AS ok FROM pg_index x
JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
WHERE x.indrelid IN ('copy_attempt'::regclass, 'copy_group'::regclass,
                     'real_copy_attribution'::regclass)
  AND a.attname = 'order_book_snapshot_id'"""

_CURSOR = """
INSERT INTO system_checkpoint (name, cursor_time, cursor_text, updated_at)
VALUES (%(name)s, %(at)s, %(policy)s, %(now)s)
ON CONFLICT (name, followed_user_id) DO UPDATE SET cursor_time = EXCLUDED.cursor_time,
    cursor_text = EXCLUDED.cursor_text, updated_at = EXCLUDED.updated_at"""


@dataclass
class Rule:
    """One table's pruning from `lo` (its cursor) up to its cutoff: by bucket (`slice`)
    for thinning, else oldest first."""

    table: str
    candidates: sql.Composable
    cutoff: datetime
    params: dict[str, Any]
    match: sql.Composable = field(default_factory=lambda: _BY_ID)
    cursor: str | None = None  # system_checkpoint name; None: from the start every run
    policy: str = ""  # a cursor kept under another policy is not trusted
    slice: timedelta | None = None  # thinning: one bucket (of column `bucket`) a time
    lo: datetime = BEGINNING
    deleted: int = 0
    done: bool = False
    skipped: bool = False  # stopped by a lock wait or a race with a new reference

    def start(self, conn: db.Conn) -> None:
        """Reads the cursor; a thinning rule then skips to its first bucket with rows."""
        if self.cursor is not None:
            row = conn.execute(
                "SELECT cursor_time, cursor_text FROM system_checkpoint"
                " WHERE name = %s AND followed_user_id IS NULL",
                (self.cursor,),
            ).fetchone()
            if row and row["cursor_text"] == self.policy and row["cursor_time"] is not None:
                self.lo = row["cursor_time"]
        if self.slice is not None:
            self.lo = self._first_bucket(conn, self.lo)
        self.done = self.lo >= self.cutoff

    def _first_bucket(self, conn: db.Conn, lo: datetime) -> datetime:
        """The start of the first bucket at or after `lo` that has rows (else the cutoff)."""
        assert self.slice is not None
        query = sql.SQL(_FIRST).format(table=sql.Identifier(self.table))
        row = conn.execute(query, {"lo": lo, "cutoff": self.cutoff}).fetchone()
        return self.cutoff if row is None or row["t"] is None else floor_to(row["t"], self.slice)

    def step(self, conn: db.Conn, batch: int, now: datetime) -> int:
        """Deletes one batch and moves the cursor in the same transaction; returns the
        rows deleted. Sets `done` once the cutoff is reached."""
        query = sql.SQL(_DELETE).format(
            table=sql.Identifier(self.table), candidates=self.candidates, match=self.match
        )
        hi = self.cutoff if self.slice is None else self.lo + self.slice
        with conn.transaction():
            conn.execute(LIMITS)
            params = {**self.params, "cutoff": self.cutoff, "lo": self.lo, "hi": hi, "n": batch}
            row = conn.execute(query, params).fetchone()
            assert row is not None
            n = int(row["n"])
            if n == batch and self.slice is None:
                # All below the batch's last row is done (rows tied with it are seen again).
                self.lo = max(self.lo, row["last"])
            elif n < batch:  # this bucket (or everything up to the cutoff) is done
                self.lo = self._first_bucket(conn, hi) if self.slice else max(self.lo, hi)
            if self.cursor is not None:
                conn.execute(
                    _CURSOR, {"name": self.cursor, "at": self.lo, "policy": self.policy, "now": now}
                )
        self.done = self.lo >= self.cutoff
        self.deleted += n
        return n

    def count(self, conn: db.Conn) -> int:
        """The rows this run would delete (all buckets at once)."""
        query = sql.SQL(_COUNT).format(candidates=self.candidates)
        params = {**self.params, "cutoff": self.cutoff, "lo": self.lo, "hi": self.cutoff}
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return int(row["n"])


def books_indexed(conn: db.Conn) -> bool:
    row = conn.execute(_BOOK_REFS_INDEXED).fetchone()
    return bool(row and row["ok"])


def rules(conn: db.Conn, s: settings.Settings, cut: Cutoffs, books: bool = True) -> list[Rule]:
    """The run's rules (books only with `books`), cursors read."""
    step = marks_step(s)
    keep = [r["id"] for r in conn.execute(_FIRSTS)]
    out = [
        Rule(
            "market_price_snapshot",
            sql.SQL(_MARKS),
            cut.marks,
            {"step": step, "origin": ORIGIN},
            match=sql.SQL("t.asset_id = c.asset_id AND t.bucket = c.at"),
            cursor="prune.market_price_snapshot",
            policy=f"last per {s.prune_marks_bucket_s} s",
            slice=step,
        ),
        Rule(
            "portfolio_snapshot",
            sql.SQL(_SNAPSHOTS),
            cut.snapshots,
            {"origin": ORIGIN, "keep": keep},
            cursor="prune.portfolio_snapshot",
            policy="hourly",
            slice=HOUR,
        ),
        Rule(
            "order_book_snapshot",
            sql.SQL(_BOOKS),
            cut.books,
            {},
            cursor="prune.order_book_snapshot",
            policy="unused",
        ),
        Rule("job_run", sql.SQL(_RUNS), cut.runs, {"failed_cutoff": cut.failed_runs}),
        Rule("quarantine", sql.SQL(_QUARANTINE), cut.quarantine, {}),
        Rule(
            "metric_point",
            sql.SQL(_METRICS),
            cut.metrics,
            {},
            match=sql.SQL("t.name = c.name AND t.labels = c.labels AND t.at = c.at"),
            cursor="prune.metric_point",
            policy="hourly",
        ),
        Rule(
            "upstream_probe",
            sql.SQL(_PROBES),
            cut.metrics,
            {},
            cursor="prune.upstream_probe",
            policy="deleted",
        ),
        Rule(
            "book_ladder",
            sql.SQL(_LADDER),
            cut.ladder,
            {},
            match=sql.SQL("t.copy_group_id = c.copy_group_id AND t.delay_ms = c.delay_ms"),
            cursor="prune.book_ladder",
            policy="deleted",
        ),
        Rule("notification", sql.SQL(_NOTIFICATIONS), cut.alerts, {}),
        Rule("alert", sql.SQL(_ALERTS), cut.alerts, {}),
    ]
    out = [r for r in out if books or r.table != "order_book_snapshot"]
    for rule in out:
        rule.start(conn)
    return out


def prune(
    conn: db.Conn,
    rs: list[Rule],
    batch: int,
    budget_s: float,
    now: datetime,
    stop: jobs.StopFlag | None = None,
) -> bool:
    """Runs the rules' batches in turn until all are done, the budget is spent or `stop`
    is set; returns False when it stopped first. A rule whose batch waits on a lock (or
    races a new reference to a book) stops for this run."""
    deadline = time.monotonic() + budget_s
    pending = [r for r in rs if not r.done]
    while pending:
        for rule in list(pending):
            if time.monotonic() >= deadline or (stop is not None and stop.stopped):
                return False
            try:
                rule.step(conn, batch, now)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.ForeignKeyViolation) as exc:
                log.warning("prune %s: %s; left for the next run", rule.table, exc)
                rule.skipped = rule.done = True
            if rule.done:
                pending.remove(rule)
    return True


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    """One prune run (or, with --dry-run, the counts it would delete); returns the rows."""
    args = ctx.args
    got = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (PRUNE_LOCK,)).fetchone()
    if not got or not got["ok"]:
        ctx.count("busy")
        return 0
    try:
        now = ctx.clock()
        cut = plan_cutoffs(ctx.settings, now)
        ctx.details["cutoffs"] = {k: v.isoformat() for k, v in vars(cut).items()}
        indexed = books_indexed(conn)
        if not indexed:
            log.warning("prune: order books skipped: no index on order_book_snapshot_id")
            ctx.count("order_book_snapshot_unindexed")
        rs = rules(conn, ctx.settings, cut, books=indexed)
        totals: dict[str, int] = {}
        if getattr(args, "dry_run", False):
            ctx.details["dry_run"] = True
            for rule in rs:
                totals[rule.table] = totals.get(rule.table, 0) + rule.count(conn)
            for table, n in totals.items():
                print(f"{table}: would delete {n:,} rows")
        else:
            budget = getattr(args, "budget_s", None) or ctx.settings.prune_budget_s
            if not prune(conn, rs, ctx.settings.prune_batch_rows, budget, now, ctx.stop):
                ctx.count("budget_exhausted")
            for rule in rs:
                totals[rule.table] = totals.get(rule.table, 0) + rule.deleted
                ctx.count(f"{rule.table}_skipped", int(rule.skipped))
        for table, n in totals.items():
            ctx.count(table, n)
        return sum(totals.values())
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (PRUNE_LOCK,))


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("prune", __doc__ or "")
    p.set_defaults(interval=3600.0)
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    p.add_argument(
        "--budget-s", type=float, help="stop after this many seconds (OCULUS_PRUNE_BUDGET_S)"
    )
    args = p.parse_args(argv)
    return jobs.main("prune", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
