"""Prune: what each retention rule keeps, that history nobody may lose is untouched, and
that a run is bounded, resumable, idempotent and alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.runtime import settings
from common.store import db
from functions import prune

HALF, MIN = timedelta(seconds=30), timedelta(minutes=1)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
# What prune needs before it deletes order books (a migration to add; see functions/prune.py).
BOOK_INDEXES = (
    "CREATE INDEX IF NOT EXISTS copy_attempt_book_idx ON copy_attempt (order_book_snapshot_id)"
    " WHERE order_book_snapshot_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS copy_group_book_idx ON copy_group (order_book_snapshot_id)"
    " WHERE order_book_snapshot_id IS NOT NULL",
)
NEVER = (
    "ledger_entry",
    "trade_event",
    "activity_event",
    "copy_group",
    "copy_attempt",
    "executable_fill",
    "audit_log",
    "failed_item",
    "process_heartbeat",
)


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OCULUS_PRUNE_BATCH_ROWS", "100")  # several batches per table
    monkeypatch.delenv("OCULUS_CLOCK_URL", raising=False)
    settings.get.cache_clear()
    yield
    settings.get.cache_clear()


def run(db_url: str, *flags: str) -> int:
    settings.get.cache_clear()
    return prune.main(["--once", "--database-url", db_url, *flags])


def last_counts(conn: db.Conn) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, counts FROM job_run WHERE job = 'prune' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None and row["status"] == "OK"
    return {k: v for k, v in row["counts"].items() if k not in ("cutoffs", "dry_run")}


def series(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += step
    return out


class World:
    """Old and recent rows in every pruned table, and what must remain of them."""

    def __init__(self, conn: db.Conn, now: datetime, book_indexes: bool = True) -> None:
        self.conn = conn
        if book_indexes:
            for statement in BOOK_INDEXES:
                conn.execute(statement)
        else:  # as before the migration that adds them
            conn.execute("DROP INDEX IF EXISTS copy_attempt_book_idx, copy_group_book_idx")
        self.base = prune.floor_to(now - 20 * DAY, HOUR)  # long past every cutoff
        self.recent = prune.floor_to(now - DAY, MIN)  # inside every full-resolution window
        self.users = [self._user(i) for i in (1, 2)]
        self.keep: dict[str, set[Any]] = {}
        self.marks()
        self.snapshots()
        self.books()
        self.runs()
        self.never()

    def _user(self, i: int) -> int:
        row = self.conn.execute(
            "INSERT INTO followed_user (label, profile_wallet, followed_at)"
            " VALUES (%s, %s, %s) RETURNING id",
            (f"u{i}", "0x" + f"{i:02x}" * 20, self.base - DAY),
        ).fetchone()
        assert row is not None
        return int(row["id"])

    def marks(self) -> None:
        b, r = self.base, self.recent
        rows = [("1", t) for t in series(b, b + 3 * HOUR, HALF)]
        rows += [("1", t) for t in series(r, r + 10 * MIN, HALF)]
        rows += [("2", b + 10 * MIN), ("2", b + 10 * MIN + HALF)]
        rows += [("3", t) for t in series(b + 5 * HOUR, b + 5 * HOUR + 5 * MIN, HALF)]
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,"
                " observed_at) VALUES (%s, %s, 500000, 'MIDPOINT', %s)",
                [(a, t, t + timedelta(seconds=2)) for a, t in rows],
            )
        self.keep["market_price_snapshot"] = (
            {("1", b + h * HOUR + 59 * MIN + HALF) for h in range(3)}  # the last of each hour
            | {m for m in rows if m[0] == "1" and m[1] >= r}  # full resolution
            | {("2", b + 10 * MIN + HALF), ("3", b + 5 * HOUR + 4 * MIN + HALF)}  # the newest
        )

    def snapshots(self) -> None:
        b, u = self.base, self.users[0]
        rows: list[tuple[str, int | None, datetime, int]] = []
        # Shadow: equity rises, one spike at 1:15 (that hour's peak).
        for i, t in enumerate(series(b, b + 3 * HOUR, MIN)):
            rows.append(("SHADOW_USER", u, t, 99_999 if i == 75 else 1_000 + i))
        # Exec: starts mid-hour (its first row is the ideal-copy base), equity falls.
        for i, t in enumerate(series(b + 37 * MIN, b + 3 * HOUR, MIN)):
            rows.append(("EXEC_USER", u, t, 5_000 - i))
        # Global: flat (ties: the hour's last row is its peak).
        rows += [("EXEC_GLOBAL", None, t, 7_000) for t in series(b, b + 3 * HOUR, MIN)]
        for scope, user in (("SHADOW_USER", u), ("EXEC_USER", u), ("EXEC_GLOBAL", None)):
            rows += [(scope, user, t, 1) for t in series(self.recent, self.recent + 5 * MIN, MIN)]
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO portfolio_snapshot (portfolio_scope, followed_user_id, bucket,"
                " equity_micros, cash_micros, exposure_micros, unrealized_pnl_micros,"
                " realized_pnl_micros) VALUES (%s, %s, %s, %s, 0, 0, 0, 0)",
                rows,
            )
        hours = [b + h * HOUR for h in range(3)]
        on_hour = {t for t in hours}
        lasts = {t + 59 * MIN for t in hours}
        keep = {(s, t) for s, _, t, _ in rows if t >= self.recent}
        keep |= {("SHADOW_USER", t) for t in on_hour | lasts | {b + 75 * MIN, b + 37 * MIN}}
        keep |= {("EXEC_USER", t) for t in (on_hour - {b}) | lasts | {b + 37 * MIN}}
        keep |= {("EXEC_GLOBAL", t) for t in on_hour | lasts}
        self.keep["portfolio_snapshot"] = keep

    def books(self) -> None:
        b, u = self.base, self.users[1]
        ids = {}
        specs = [  # name, asset, fetched at, two-sided
            ("x1", "10", b, True),
            ("x2", "10", b + HOUR, True),  # a copy attempt used it
            ("x3", "10", b + 2 * HOUR, True),  # a copy group (not yet decided) names it
            ("x4", "10", b + 3 * HOUR, True),
            ("x5", "10", self.recent, True),
            ("y0", "20", b - HOUR, True),
            ("y1", "20", b, True),  # the newest two-sided book of its asset: a mark
            ("y2", "20", b + HOUR, False),
        ]
        for name, asset, at, two_sided in specs:
            row = self.conn.execute(
                """INSERT INTO order_book_snapshot (asset_id, book_hash, book_time, fetched_at,
                       bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros)
                   VALUES (%(a)s, %(h)s, %(t)s, %(t)s, '{490000}', '{1000000}', %(ap)s, %(as)s)
                   RETURNING id""",
                {
                    "a": asset,
                    "h": name,
                    "t": at,
                    "ap": [510_000] if two_sided else [],
                    "as": [1_000_000] if two_sided else [],
                },
            ).fetchone()
            assert row is not None
            ids[name] = row["id"]
        for key, book, state in (("g2", None, "DONE"), ("g3", ids["x3"], "CLOSED")):
            self.conn.execute(
                """INSERT INTO copy_group (group_key, followed_user_id, action, asset_id,
                       window_start, window_end, first_detect_time, close_time, state,
                       order_book_snapshot_id)
                   VALUES (%(k)s, %(u)s, 'BUY', '10', %(t)s, %(t)s, %(t)s, %(t)s, %(s)s, %(b)s)""",
                {"k": key, "u": u, "t": b, "s": state, "b": book},
            )
        row = self.conn.execute(
            """INSERT INTO copy_attempt (portfolio_scope, followed_user_id, group_key, action,
                   asset_id, their_notional_micros, target_notional_micros, target_share_micros,
                   decision, group_close_time, decision_time, order_book_snapshot_id,
                   filled_share_micros)
               VALUES ('EXEC_USER', %(u)s, 'g2', 'BUY', '10', 1, 1, 1, 'EXECUTE', %(t)s, %(t)s,
                   %(b)s, 1) RETURNING id""",
            {"u": u, "t": b + HOUR, "b": ids["x2"]},
        ).fetchone()
        assert row is not None
        self.conn.execute(
            "INSERT INTO executable_fill (copy_attempt_id, level_index, price_micros,"
            " share_micros, notional_micros) VALUES (%s, 0, 510000, 1, 1)",
            (row["id"],),
        )
        self.keep["order_book_snapshot"] = {ids[n] for n in ("x2", "x3", "x5", "y1", "y2")}

    def runs(self) -> None:
        b = self.base
        specs = [  # name, job, started, status
            ("ok_old1", "poll", b, "OK"),
            ("ok_old2", "poll", b + MIN, "OK"),
            ("failed_20d", "poll", b + 2 * MIN, "FAILED"),
            ("failed_100d", "poll", b - 80 * DAY, "FAILED"),
            ("timeout_100d", "poll", b - 80 * DAY, "TIMEOUT"),
            ("running_100d", "poll", b - 80 * DAY, "RUNNING"),
            ("ok_recent", "poll", self.recent, "OK"),
            ("backup_30d", "backup", b - 10 * DAY, "OK"),
            ("backup_20d", "backup", b, "OK"),  # its job's newest run
            ("lone_failed", "listen", b - 80 * DAY, "FAILED"),  # its job's newest run
            ("price_ok_21d", "price", b - DAY, "OK"),
            ("price_ok_20d", "price", b, "OK"),  # its job's last success
            ("price_failing", "price", self.recent, "FAILED"),
        ]
        ids = {}
        for name, job, at, status in specs:
            row = self.conn.execute(
                "INSERT INTO job_run (job, started_at, finished_at, status)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (job, at, at + timedelta(seconds=1), status),
            ).fetchone()
            assert row is not None
            ids[name] = row["id"]
        kept = ["failed_20d", "ok_recent", "backup_20d", "lone_failed", "price_ok_20d"]
        self.keep["job_run"] = {ids[n] for n in [*kept, "price_failing"]}
        # Many old OK runs, so the job_run rule takes several batches.
        self.conn.execute(
            "INSERT INTO job_run (job, started_at, status)"
            " SELECT 'rollup', %s + i * interval '1 minute', 'OK' FROM generate_series(1, 250) i",
            (b,),
        )
        self.conn.execute(
            "INSERT INTO job_run (job, started_at, status) VALUES ('rollup', %s, 'OK')",
            (self.recent,),
        )

    def never(self) -> None:
        old, u = self.base - 200 * DAY, self.users[0]
        c = self.conn
        c.execute(
            "INSERT INTO ledger_entry (portfolio_scope, followed_user_id, entry_type,"
            " cash_delta_micros, ref_id, effective_time, created_at)"
            " VALUES ('SHADOW_USER', %s, 'DEPOSIT', 1, 'd', %s, %s)",
            (u, old, old),
        )
        c.execute(
            """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, asset_id,
                   side, price_micros, share_micros, usdc_notional_micros, event_time,
                   detect_time) VALUES ('DATA_API', 't', %s, %s, '10', 'BUY', 1, 1, 1, %s, %s)""",
            (u, "0x" + "01" * 20, old, old),
        )
        c.execute(
            """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
                   activity_type, condition_id, share_micros, usdc_micros, event_time,
                   detect_time) VALUES ('DATA_API', 'a', %s, %s, 'MERGE', 'c', 1, 1, %s, %s)""",
            (u, "0x" + "01" * 20, old, old),
        )
        c.execute(
            "INSERT INTO audit_log (at, actor, action, target_type) VALUES (%s, 'a', 'x', 'y')",
            (old,),
        )
        c.execute(
            "INSERT INTO failed_item (stage, item_key, error, first_failed_at, last_failed_at)"
            " VALUES ('s', 'k', 'e', %s, %s)",
            (old, old),
        )
        c.execute(
            "INSERT INTO process_heartbeat (process, started_at, beat_at) VALUES ('x', %s, %s)",
            (old, old),
        )

    # What is in the pruned tables now, in the shape of `keep`.
    def state(self) -> dict[str, set[Any]]:
        c = self.conn
        return {
            "market_price_snapshot": {
                (r["asset_id"], r["bucket"])
                for r in c.execute("SELECT asset_id, bucket FROM market_price_snapshot")
            },
            "portfolio_snapshot": {
                (r["portfolio_scope"], r["bucket"])
                for r in c.execute("SELECT portfolio_scope, bucket FROM portfolio_snapshot")
            },
            "order_book_snapshot": {
                r["id"] for r in c.execute("SELECT id FROM order_book_snapshot")
            },
            "job_run": {
                r["id"]
                for r in c.execute(
                    "SELECT id FROM job_run WHERE job <> 'prune' AND job <> 'rollup'"
                )
            },
        }

    def never_rows(self) -> dict[str, list[dict[str, Any]]]:
        return {t: list(self.conn.execute(f"SELECT * FROM {t} ORDER BY 1")) for t in NEVER}  # noqa: S608


@pytest.mark.usefixtures("fresh_settings")
def test_prune_keeps_what_is_read_and_deletes_the_rest(conn: db.Conn, db_url: str) -> None:
    world = World(conn, datetime.now(UTC))
    before, untouched = world.state(), world.never_rows()
    assert all(untouched.values())
    expected = {t: len(before[t]) - len(world.keep[t]) for t in before}
    expected["job_run"] += 250  # the old rollup runs (its newest, recent, stays)

    assert run(db_url, "--dry-run") == 0
    assert world.state() == before  # a dry run deletes nothing, and says what it would
    assert last_counts(conn) == expected

    assert run(db_url) == 0
    assert last_counts(conn) == expected
    assert world.state() == world.keep
    assert world.never_rows() == untouched
    rollups = conn.execute("SELECT started_at FROM job_run WHERE job = 'rollup'").fetchall()
    assert [r["started_at"] for r in rollups] == [world.recent]

    assert run(db_url) == 0  # a second run finds nothing more
    assert last_counts(conn) == {}
    assert world.state() == world.keep
    assert world.never_rows() == untouched


@pytest.mark.usefixtures("fresh_settings")
def test_an_interrupted_run_is_finished_by_the_next(conn: db.Conn, db_url: str) -> None:
    world = World(conn, datetime.now(UTC))
    s = settings.Settings()
    now = datetime.now(UTC)
    rules = prune.rules(conn, s, prune.plan_cutoffs(s, now))
    assert not prune.prune(conn, rules, 100, 0.0, now)  # no budget: nothing done
    for rule in rules[:2]:
        assert rule.step(conn, 100, now) == 100  # part of the marks and snapshots
    assert run(db_url, "--budget-s", "60") == 0
    assert world.state() == world.keep


@pytest.mark.usefixtures("fresh_settings")
def test_a_new_thinning_step_rethins_marks(
    conn: db.Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(conn, datetime.now(UTC))
    assert run(db_url) == 0
    monkeypatch.setenv("OCULUS_PRUNE_MARKS_BUCKET_S", str(3 * 3600))
    assert run(db_url) == 0  # the cursor was kept under another policy: start over
    rows = conn.execute("SELECT asset_id, bucket FROM market_price_snapshot WHERE asset_id = '1'")
    old = {r["bucket"] for r in rows if r["bucket"] < world.recent}
    hourly = {t for a, t in world.keep["market_price_snapshot"] if a == "1" and t < world.recent}
    by_step: dict[datetime, datetime] = {}
    for t in sorted(hourly):  # the last of each 3-hour bucket
        by_step[prune.floor_to(t, 3 * HOUR)] = t
    assert old == set(by_step.values()) and len(old) < len(hourly)


@pytest.mark.usefixtures("fresh_settings")
def test_a_second_prune_does_not_start(conn: db.Conn, db_url: str) -> None:
    world = World(conn, datetime.now(UTC))
    before = world.state()
    conn.execute("SELECT pg_advisory_lock(%s)", (prune.PRUNE_LOCK,))
    assert run(db_url) == 0
    assert last_counts(conn) == {"busy": 1}
    assert world.state() == before
    conn.execute("SELECT pg_advisory_unlock(%s)", (prune.PRUNE_LOCK,))


@given(
    st.datetimes(
        min_value=datetime(2001, 1, 1),  # noqa: DTZ001 (hypothesis: naive bounds)
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.integers(min_value=2, max_value=2880).map(lambda n: n * 30),
)
def test_cutoffs_fall_on_bucket_edges(now: datetime, step_s: int) -> None:
    s = settings.Settings(prune_marks_bucket_s=step_s)
    cut = prune.plan_cutoffs(s, now)
    step = timedelta(seconds=step_s)
    full = now - s.prune_marks_full_days * DAY
    assert full - step < cut.marks <= full
    assert (cut.marks - prune.ORIGIN) % step == timedelta(0)
    assert cut.snapshots.minute == cut.snapshots.second == cut.snapshots.microsecond == 0
    assert now - 9 * DAY < cut.snapshots <= now - 8 * DAY
    assert cut.failed_runs < cut.runs < now


@pytest.mark.usefixtures("fresh_settings")
def test_books_wait_for_the_indexes_their_foreign_keys_need(conn: db.Conn, db_url: str) -> None:
    world = World(conn, datetime.now(UTC), book_indexes=False)
    books = world.state()["order_book_snapshot"]
    assert run(db_url) == 0
    counts = last_counts(conn)
    assert counts["order_book_snapshot_unindexed"] == 1 and "order_book_snapshot" not in counts
    assert world.state()["order_book_snapshot"] == books
    assert world.state()["market_price_snapshot"] == world.keep["market_price_snapshot"]


def test_quarantine_rows_not_seen_for_the_set_days_are_pruned(
    conn: db.Conn, db_url: str, fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCULUS_PRUNE_QUARANTINE_DAYS", "30")
    now = datetime.now(tz=UTC)
    for i, age in enumerate((45, 31, 29, 1)):
        seen = now - timedelta(days=age)
        conn.execute(
            "INSERT INTO quarantine (source, reason, payload, payload_sha256, first_seen_at,"
            " last_seen_at) VALUES ('data_api/trades', 'bad', 'x', %(sha)s, %(t)s, %(t)s)",
            {"sha": f"sha{i}", "t": seen},
        )
    assert run(db_url) == 0
    left = conn.execute("SELECT payload_sha256 FROM quarantine ORDER BY 1").fetchall()
    assert [r["payload_sha256"] for r in left] == ["sha2", "sha3"]


def test_probes_older_than_the_metrics_days_are_pruned(
    conn: db.Conn, db_url: str, fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCULUS_PRUNE_METRICS_FULL_DAYS", "7")
    now = datetime.now(tz=UTC)
    ages = [7 * DAY + 2 * HOUR + i * MIN for i in range(250)]  # 3 batches of 100
    ages += [7 * DAY - HOUR, DAY, MIN]
    for i, age in enumerate(ages):
        conn.execute(
            "INSERT INTO upstream_probe (upstream, at, ok, latency_micros, error)"
            " VALUES (%s, %s, false, 1000, %s)",
            (("data_api", "clob", "gamma", "chain")[i % 4], now - age, f"p{i}"),
        )
    assert run(db_url) == 0
    assert last_counts(conn)["upstream_probe"] == 250
    left = conn.execute("SELECT error FROM upstream_probe ORDER BY at").fetchall()
    assert [r["error"] for r in left] == ["p250", "p251", "p252"]
    assert run(db_url) == 0  # the cursor is past them: nothing more
    assert "upstream_probe" not in last_counts(conn)
    assert conn.execute("SELECT count(*) AS n FROM upstream_probe").fetchone()["n"] == 3


def test_ladder_rungs_older_than_the_ladder_days_are_pruned(
    conn: db.Conn, db_url: str, fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCULUS_PRUNE_LADDER_DAYS", "30")
    now = datetime.now(tz=UTC)
    uid = conn.execute(
        "INSERT INTO followed_user (label, profile_wallet, followed_at) VALUES ('l', %s, %s)"
        " RETURNING id",
        ("0x" + "ab" * 20, now - 40 * DAY),
    ).fetchone()["id"]
    for g, age in enumerate([31 * DAY, 30 * DAY + HOUR, 30 * DAY - HOUR, DAY]):
        t = now - age
        gid = conn.execute(
            """INSERT INTO copy_group (group_key, followed_user_id, action, asset_id,
                   window_start, window_end, first_detect_time, close_time)
               VALUES (%s, %s, 'BUY', '1', %s, %s, %s, %s) RETURNING id""",
            (f"k{g}", uid, t, t, t, t),
        ).fetchone()["id"]
        for d in (0, 2_000, 60_000):
            conn.execute(
                """INSERT INTO book_ladder (copy_group_id, delay_ms, book_at, source, bids,
                       asks, taken_at) VALUES (%s, %s, %s, 'LIVE', '[]', '[]', %s)""",
                (gid, d, t, t + timedelta(seconds=61)),
            )
    assert run(db_url) == 0
    assert last_counts(conn)["book_ladder"] == 6  # the two groups taken over 30 days ago
    left = conn.execute("SELECT DISTINCT copy_group_id FROM book_ladder").fetchall()
    assert len(left) == 2
    assert conn.execute("SELECT count(*) AS n FROM copy_group").fetchone()["n"] == 4  # kept
    assert run(db_url) == 0
    assert "book_ladder" not in last_counts(conn)
