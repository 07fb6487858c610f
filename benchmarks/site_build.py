"""Site builder: full and incremental build times, the builder's memory, and how long a
new fill takes to show on trades.html, on the 50 users × 30 days data set, in a scratch
database (loopback server, dropped after unless --keep).

Data set: benchmarks/dataset.py's month (users, markets, ledger, decision books, minute
portfolio_snapshot rows, a day of 30 s marks), then what the pages read: one copy group
per leader order with its fills as trade_event rows and both exec portfolios' attempts
(EXECUTE where the ledger holds the copy, SKIP with reason codes otherwise), proxy
wallets, market metadata, MERGE/REDEEM activities, job_run rows at the jobs' cadence,
heartbeats, failed items, quarantine, audit rows and per-user overrides; then one cold
`snapshot` run (positions and state) and one `rollup` run over the month.

The builder runs in a child process pinned to CPU 0 (`os.sched_setaffinity`), so its
Python work gets one core; the Postgres server is not pinned, and its CPU time for the
builder's connection is reported beside the wall time (one core would pay both).
- full build: `build_all` into an empty directory; pages, charts, where the time goes.
- incremental rounds, per kind of change (the parent applies it between rounds): none;
  5 trade_event + 10 copy_attempt rows for 2 users; a new snapshot minute (the snapshot
  job's run: 101 rows and its checkpoint); a rollup run over new attempts. Each is timed
  --reps times with the default budget (then the rest is drained) and with an unlimited
  one. The periodic full rebuild (every 300 s) is off while timing.
- peak RSS of the builder process after imports, the full build, the rounds and the loop.
- event → visible: the builder loops as `python -m site_builder --loop` does (round,
  heartbeat, sleep the interval minus the round); the parent inserts a trade_event and
  its attempts at random moments (and a snapshot minute every 60 s) and polls
  trades.html until the event's time appears: insert committed → file replaced.
- the statements the builder spent most time in, with EXPLAIN ANALYZE.
Run: python -m benchmarks.site_build [--users 50] [--days 30] [--reps 10] [--events 10]
     [--keep] [--database-url SERVER_URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from benchmarks import dataset
from benchmarks.scratch import backend_cpu, database_name, percentile, scratch_database
from common.runtime import jobs, settings
from common.store import db
from functions import rollup, snapshot

KINDS = ("none", "trades", "minute", "rollup")
KIND_LABEL = {
    "none": "no change",
    "trades": "5 fills + 10 attempts, 2 users",
    "minute": "snapshot minute (101 rows)",
    "rollup": "5 fills + 10 attempts, rollup run",
}
INF = float("inf")
SAMPLES = 4  # parameter sets kept per statement for EXPLAIN
EVENT_WAIT_S = 15.0  # an event not on the page by then counts as missed


def rss_mb() -> tuple[float, float]:
    """This process's (peak, current) resident set in MB. From /proc, not ru_maxrss:
    ru_maxrss survives exec, so a spawned child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            kb = {
                k: int(v.split()[0])
                for k, v in (ln.split(":", 1) for ln in f)
                if k in ("VmHWM", "VmRSS")
            }
        return kb["VmHWM"] / 1024, kb["VmRSS"] / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


# ---- the parent: data set, changes between rounds, the inserter of the event test ----


def prepare(conn: db.Conn, url: str, args: argparse.Namespace, name: str) -> None:
    """Builds and loads the month and the pages' inputs; prints what they hold."""
    end_ms = dataset.ms_of(dataset.END)
    month = dataset.build_month(conn, url, args, cut_ms=end_ms, until_ms=dataset.tick_of(end_ms))
    world = month.world
    dataset.copy_entries(conn, world.entries[month.entries_loaded :])
    dataset.copy_books(conn, world, world.books[month.books_loaded :])
    dataset.copy_lines(conn, dataset.COPY_PRICES, [x[1] for x in month.later_prices])
    dataset.print_month(month, args, "site build", name)
    t0 = time.perf_counter()
    counts = dataset.add_page_inputs(conn, month, args)
    t_inputs = time.perf_counter() - t0
    t0 = time.perf_counter()
    snapshot.take(conn, dataset.at(dataset.tick_of(end_ms)))
    t_take = time.perf_counter() - t0
    t0 = time.perf_counter()
    rolled = rollup.roll(conn, dataset.at(dataset.tick_of(end_ms) + 10_000))
    t_roll = time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute("VACUUM ANALYZE")
    t_vacuum = time.perf_counter() - t0
    executed = conn.execute(
        "SELECT count(*) FILTER (WHERE decision = 'EXECUTE') AS n FROM copy_attempt"
    ).fetchone()
    pages = conn.execute(
        """SELECT (SELECT count(*) FROM portfolio_position WHERE share_micros <> 0) AS open,
                  (SELECT count(*) FROM rollup_market_daily) AS market_days,
                  (SELECT count(DISTINCT condition_id) FROM rollup_market_daily) AS markets"""
    ).fetchone()
    assert executed is not None and pages is not None
    days, trades, attempts = args.days, counts["trade_event"], counts["copy_attempt"]
    print(
        f"  pages' inputs: {trades:,} trade_event ({trades / days:,.0f}/day), {attempts:,}"
        f" copy_attempt ({attempts / days:,.0f}/day,"
        f" {executed['n'] / attempts:.0%} EXECUTE), {counts['copy_group']:,}"
        f" copy_group, {counts['job_run']:,} job_run, {counts['activity_event']} activity_event;"
        f" {pages['open']:,} open positions; rollups: {rolled.get('attempt_rows', 0):,}"
        f" user-days, {pages['market_days']:,} market-days over {pages['markets']:,} markets"
    )
    print(
        f"  added in {t_inputs + t_take + t_roll + t_vacuum:.0f} s: inputs {t_inputs:.1f} s,"
        f" cold snapshot run {t_take:.1f} s, rollup run {t_roll:.1f} s, VACUUM ANALYZE"
        f" {t_vacuum:.1f} s"
    )


class Changes:
    """What the jobs write between two rounds, applied by the parent."""

    def __init__(self, conn: db.Conn, seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(f"changes:{seed}")
        self.minute_ms = dataset.ms_of(dataset.END)
        self.users = [
            (int(r["id"]), r["profile_wallet"])
            for r in conn.execute("SELECT id, profile_wallet FROM followed_user ORDER BY id")
        ]
        self.assets = [
            (r["asset_id"], r["condition_id"])
            for r in conn.execute(
                """SELECT DISTINCT asset_id, condition_id FROM portfolio_position
                   WHERE share_micros <> 0 ORDER BY asset_id"""
            )
        ]
        self.n = 0
        self.turn = 0

    def now(self) -> datetime:
        return dataset.at(dataset.tick_of(self.minute_ms)) + timedelta(seconds=20)

    def apply(self, kind: str) -> None:
        if kind == "trades":
            self.turn += 1
            pair = [self.users[(2 * self.turn + k) % len(self.users)] for k in (0, 1)]
            for k in range(5):
                self.event(*pair[k % 2])
        elif kind == "minute":
            self.minute_ms += dataset.MINUTE_MS
            snapshot.take(self.conn, dataset.at(dataset.tick_of(self.minute_ms)))
        elif kind == "rollup":
            self.apply("trades")
            rollup.roll(self.conn, self.now())
        elif kind == "catch-up":
            rollup.roll(self.conn, self.now())
        elif kind != "none":
            raise ValueError(kind)

    def event(self, user: int, wallet: str) -> str:
        """One fill of `user`, its group and both attempts; returns the fill's time as the
        page writes it (ISO, to the microsecond: unique)."""
        self.n += 1
        asset, cond = self.rng.choice(self.assets)
        t = self.now() + timedelta(microseconds=self.rng.randrange(1_000_000) + self.n)
        key = f"bench:{self.n}"
        common = {"u": user, "a": asset, "c": cond, "t": t, "k": key, "w": wallet}
        with self.conn.transaction():
            group = self.conn.execute(
                """INSERT INTO copy_group (group_key, followed_user_id, action, condition_id,
                       asset_id, window_start, window_end, first_detect_time, close_time,
                       decide_at, state, event_count, their_share_micros,
                       their_notional_micros, their_price_micros)
                   VALUES (%(k)s, %(u)s, 'BUY', %(c)s, %(a)s, %(t)s, %(t)s, %(t)s, %(t)s,
                       %(t)s, 'DONE', 1, 20000000, 10000000, 500000) RETURNING id""",
                common,
            ).fetchone()
            assert group is not None
            row = self.conn.execute(
                """INSERT INTO trade_event (source, source_id, followed_user_id, wallet,
                       condition_id, asset_id, side, role, price_micros, share_micros,
                       usdc_notional_micros, tx_hash, log_index, event_time, detect_time,
                       shadow_applied_at, shadow_state, copy_group_id, group_state)
                   VALUES ('CHAIN', %(k)s, %(u)s, %(w)s, %(c)s, %(a)s, 'BUY', 'TAKER', 500000,
                       20000000, 10000000, %(tx)s, 0, %(t)s, %(t)s + interval '1.5 s',
                       %(t)s + interval '1.6 s', 'APPLIED', %(g)s, 'GROUPED')
                   RETURNING event_time""",
                {**common, "tx": dataset.tx_hash("bench", self.n), "g": group["id"]},
            ).fetchone()
            assert row is not None
            for scope, decision, codes in (
                ("EXEC_USER", "EXECUTE", []),
                ("EXEC_GLOBAL", "SKIP", ["SPREAD_TOO_WIDE"]),
            ):
                self.conn.execute(
                    """INSERT INTO copy_attempt (portfolio_scope, followed_user_id, group_key,
                           action, condition_id, asset_id, their_notional_micros,
                           their_price_micros, target_notional_micros, target_share_micros,
                           decision, reason_codes, best_bid_micros, best_ask_micros,
                           mid_micros, vwap_micros, filled_share_micros,
                           filled_notional_micros, filled_ratio_micros, group_close_time,
                           decision_time, copy_group_id)
                       VALUES (%(s)s, %(u)s, %(k)s, 'BUY', %(c)s, %(a)s, 10000000, 500000,
                           5000000, 10000000, %(d)s, %(r)s, 495000, 505000, 500000,
                           %(vwap)s, %(q)s, %(x)s, %(ratio)s, %(t)s, %(t)s + interval '3 s',
                           %(g)s)""",
                    {
                        **common,
                        "s": scope,
                        "d": decision,
                        "r": codes,
                        "vwap": 505000 if not codes else None,
                        "q": 0 if codes else 9_900_000,
                        "x": 0 if codes else 5_000_000,
                        "ratio": 0 if codes else 1_000_000,
                        "g": group["id"],
                    },
                )
        return str(row["event_time"].isoformat())


def serve_child(pipe: Pipe, changes: Changes, page: Path, args: argparse.Namespace) -> Any:
    """Answers the child until it reports: applies changes on request, runs the event
    test when the child's loop starts. Returns the child's figures."""
    while True:
        msg = pipe.recv()
        if msg[0] == "change":
            changes.apply(msg[1])
            pipe.send(("ok",))
        elif msg[0] == "loop":
            events = event_test(changes, page, args)
            pipe.send(("stop",))
        elif msg[0] == "done":
            return {**msg[1], "events": events}


def event_test(changes: Changes, page: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Inserts up to --events fills at random moments while the builder loops; returns
    the insert → visible seconds of each (and how many did not show in EVENT_WAIT_S)."""
    rng = random.Random(f"events:{args.seed}")
    started = time.perf_counter()
    deadline = started + args.event_seconds
    changes.apply("minute")
    next_minute = started + 60
    seen: list[float] = []
    missed = 0
    for _ in range(args.events):
        time.sleep(rng.uniform(0, args.interval))
        if time.perf_counter() >= min(deadline, next_minute):
            if time.perf_counter() >= deadline:
                break
            changes.apply("minute")
            next_minute += 60
        marker = changes.event(*rng.choice(changes.users)).encode()
        committed = time.perf_counter()
        shown = wait_for(page, marker, min(EVENT_WAIT_S, deadline + EVENT_WAIT_S - committed))
        if shown is None:
            missed += 1
        else:
            seen.append(shown - committed)
        if time.perf_counter() >= deadline:
            break
    return {"seconds": seen, "missed": missed, "took": time.perf_counter() - started}


def wait_for(page: Path, marker: bytes, timeout: float) -> float | None:
    """Polls `page` (replaced atomically) until it holds `marker`; returns when, or None."""
    end = time.perf_counter() + timeout
    last = None
    while time.perf_counter() < end:
        stat = page.stat()
        if (stat.st_mtime_ns, stat.st_size) != last:
            last = (stat.st_mtime_ns, stat.st_size)
            if marker in page.read_bytes():
                return time.perf_counter()
        time.sleep(0.01)
    return None


# ---- the child: the builder on one core ----


class Profile:
    """Times pages by kind, charts, templates and statements, per phase."""

    def __init__(self) -> None:
        self.phase = "full"
        self.kind = "-"
        self.pages: dict[str, dict[str, list[float]]] = {}
        self.queries: dict[str, dict[str, list[Any]]] = {}

    def _page(self) -> list[float]:
        # [pages, seconds, chart seconds, charts drawn, template seconds]
        return self.pages.setdefault(self.phase, {}).setdefault(self.kind, [0, 0.0, 0.0, 0, 0.0])

    def install(self) -> None:
        import psycopg

        from site_builder import build, render, svg

        def wrap_page(fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(conn: Any, site: Any, key: str, *a: Any) -> Any:
                self.kind = key.partition(":")[0]
                started = time.perf_counter()
                try:
                    return fn(conn, site, key, *a)
                finally:
                    got = self._page()
                    got[0] += 1
                    got[1] += time.perf_counter() - started
                    self.kind = "-"

            return timed

        def wrap(fn: Callable[..., Any], slot: int, count: int | None) -> Callable[..., Any]:
            def timed(*a: Any, **kw: Any) -> Any:
                started = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    got = self._page()
                    got[slot] += time.perf_counter() - started
                    if count is not None:
                        got[count] += 1

            return timed

        execute = psycopg.Connection.execute

        def timed_execute(conn: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return execute(conn, query, params, **kw)
            finally:
                took = time.perf_counter() - started
                if isinstance(query, str):
                    # [calls, seconds, slowest call, a few distinct params (slowest first)]
                    got = self.queries.setdefault(self.phase, {}).setdefault(
                        " ".join(query.split()), [0, 0.0, 0.0, []]
                    )
                    got[0] += 1
                    got[1] += took
                    samples = got[3]
                    if took >= got[2]:
                        got[2] = took
                        got[3] = [params, *(x for x in samples if x != params)][:SAMPLES]
                    elif len(samples) < SAMPLES and params not in samples:
                        samples.append(params)

        build.build_page = wrap_page(build.build_page)
        for name in ("lines", "bars", "waterfall"):
            setattr(svg, name, wrap(getattr(svg, name), 2, 3))
        render.page = wrap(render.page, 4, None)
        psycopg.Connection.execute = timed_execute  # type: ignore[method-assign, assignment]


def child(url: str, out: str, base: datetime, opts: dict[str, Any], pipe: Pipe) -> None:
    """The builder's process: full build, rounds per kind of change, then the loop."""
    os.sched_setaffinity(0, {0})
    from site_builder import build

    profile = Profile()
    profile.install()
    conn = db.connect(url, autocommit=True)
    zero = time.monotonic()
    builder = build.Builder(
        Path(out),
        budget_s=opts["budget"],
        clock=lambda: base + timedelta(seconds=time.monotonic() - zero),
    )
    rss = {"imports": rss_mb()}
    cpu0, pg0, started = time.process_time(), backend_cpu(conn), time.perf_counter()
    done = builder.build_all(conn)
    pg1 = backend_cpu(conn)
    full = {
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu0,
        "pg": None if pg0 is None or pg1 is None else pg1 - pg0,
        "built": len(done.built),
        "failed": done.failed,
        "charts": builder.site.charts_drawn,
        "html": sum(1 for _ in Path(out).rglob("*.html")),
        "svg": sum(1 for _ in Path(out).rglob("*.svg")),
        "bytes": sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()),
    }
    rss["full build"] = rss_mb()
    builder.full_every_s = INF
    profile.phase = "rounds"

    def change(kind: str) -> None:
        pipe.send(("change", kind))
        pipe.recv()

    rounds: dict[str, dict[str, list[tuple[float, int, int, int]]]] = {}
    for kind in KINDS:
        got = rounds[kind] = {"budget": [], "drain": [], "unlimited": []}
        if kind == "rollup":  # untimed: roll up what the earlier kinds wrote, build it
            change("catch-up")
            builder.round(conn, budget_s=INF)
        kind_started = time.perf_counter()
        for _ in range(opts["reps"]):
            for mode in ("budget", "unlimited"):
                change(kind)
                r = builder.round(conn, budget_s=None if mode == "budget" else INF)
                got[mode].append((r.seconds, len(r.built), r.left, len(r.failed)))
                if mode == "budget":
                    d = builder.round(conn, budget_s=INF)
                    got["drain"].append((d.seconds, len(d.built), d.left, len(d.failed)))
            if time.perf_counter() - kind_started > opts["kind_seconds"]:
                break
    rss["rounds"] = rss_mb()

    profile.phase = "loop"
    builder.full_every_s, builder.last_full = 300.0, time.monotonic()
    loop: list[tuple[float, int, int, int]] = []
    pipe.send(("loop",))
    stopped = False
    while not stopped:
        begun = time.monotonic()
        r = builder.round(conn)
        jobs.heartbeat(conn, "site_builder", builder.clock(), {"pages": len(r.built)})
        loop.append((r.seconds, len(r.built), r.left, len(r.failed)))
        wake = begun + opts["interval"]
        while not stopped and time.monotonic() < wake:
            if pipe.poll(min(0.05, max(0.0, wake - time.monotonic()))):
                stopped = pipe.recv()[0] == "stop"
    rss["loop"] = rss_mb()
    conn.close()
    pipe.send(
        (
            "done",
            {
                "full": full,
                "rounds": rounds,
                "loop": loop,
                "rss": rss,
                "pages": profile.pages,
                "queries": profile.queries,
            },
        )
    )


# ---- the report ----


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def spread(samples: list[tuple[float, int, int, int]]) -> str:
    """p50 / p95 of rounds' seconds, and the pages they built and left (p50, max)."""
    secs = [s[0] for s in samples]
    built = [float(s[1]) for s in samples]
    left = [float(s[2]) for s in samples]
    failed = sum(s[3] for s in samples)
    return (
        f"{ms(percentile(secs, 0.5)):>8} / {ms(percentile(secs, 0.95)):>8}"
        f"   built {percentile(built, 0.5):>3.0f} (max {max(built):>3.0f})"
        f"   left {percentile(left, 0.5):>4.0f} (max {max(left):>4.0f})"
        + (f", {failed} FAILED" if failed else "")
    )


def report(fig: dict[str, Any], args: argparse.Namespace) -> None:
    full = fig["full"]
    one_core = full["cpu"] + (full["pg"] or 0.0)
    pg = "n/a" if full["pg"] is None else ms(full["pg"])
    goal = "met" if max(full["wall"], one_core) <= 15 else "NOT met"
    print("builder process (CPU 0 only; Postgres not pinned):")
    print(
        f"  full build: {full['built']:,} pages, {full['charts']:,} charts drawn"
        f" ({full['html']:,} .html + {full['svg']:,} .svg charts, {full['bytes'] / 1e6:,.0f} MB)"
        f" in {ms(full['wall'])} wall; CPU python {ms(full['cpu'])} + postgres {pg} ="
        f" {ms(one_core)}  goal <= 15 s: {goal}"
    )
    if full["failed"]:
        print(f"  FAILED pages: {dict(list(full['failed'].items())[:5])}")
    print_pages(fig["pages"].get("full", {}), full["wall"])
    print(
        f"  incremental rounds ({args.reps} reps a kind at most; seconds p50 / p95, pages"
        " built and left):"
    )
    for kind, got in fig["rounds"].items():
        rest = [d[0] for d in got["drain"]]
        print(
            f"    {KIND_LABEL[kind]:<34} budget {args.budget:g} s  {spread(got['budget'])}"
            f"   (the rest: next round p50 {ms(percentile(rest, 0.5))}; n={len(rest)})"
        )
        print(f"    {'':<34} unlimited     {spread(got['unlimited'])}")
    print_pages(fig["pages"].get("rounds", {}), None)
    worst = max(
        max(s[0] for s in got["budget"]) for kind, got in fig["rounds"].items() if kind != "none"
    )
    print(
        "    goal <= 1 s per incremental round: "
        + ("met" if worst <= 1.0 else f"NOT met (slowest budgeted round {ms(worst)})")
    )
    rss = fig["rss"]
    print(
        "  builder RSS (peak / now): "
        + ", ".join(f"after {k} {hwm:,.0f} / {now:,.0f} MB" for k, (hwm, now) in rss.items())
    )
    ev, loop = fig["events"], fig["loop"]
    secs, missed = ev["seconds"], ev["missed"]
    shown = (
        f"p50 {ms(percentile(secs, 0.5))}, p95 {ms(percentile(secs, 0.95))}, max {ms(max(secs))}"
        if secs
        else "none"
    )
    print(
        f"  event → visible on trades.html ({len(secs) + missed} events in {ev['took']:.0f} s;"
        f" loop: {args.interval:g} s interval, {args.budget:g} s budget, a snapshot minute"
        f" every 60 s): seen {len(secs)}: {shown}"
        + (f"; NOT seen within {EVENT_WAIT_S:g} s: {missed}" if missed else "")
    )
    if loop:
        secs = [r[0] for r in loop]
        print(
            f"    the loop's {len(loop)} rounds: p50 {ms(percentile(secs, 0.5))}, max"
            f" {ms(max(secs))}, pages built {sum(r[1] for r in loop):,}, most left"
            f" {max(r[2] for r in loop)}, failed {sum(r[3] for r in loop)}"
        )


def print_pages(pages: dict[str, list[float]], wall: float | None) -> None:
    """Where a phase's time went, per page kind: pages, seconds, charts, templates."""
    rows = sorted(pages.items(), key=lambda kv: -kv[1][1])
    total = sum(v[1] for v in pages.values())
    charts = sum(v[2] for v in pages.values())
    drawn = sum(v[3] for v in pages.values())
    templates = sum(v[4] for v in pages.values())
    head = "    full build" if wall is not None else "    all rounds"
    print(
        f"{head} by page kind ({ms(total)} in pages: charts {ms(charts)} for {drawn:,},"
        f" templates {ms(templates)}, queries and the rest {ms(total - charts - templates)}):"
    )
    print(
        "      "
        + "; ".join(
            f"{kind} {v[0]:,.0f} × {ms(v[1] / v[0]) if v[0] else '-'}"
            f" (charts {ms(v[2])}, templates {ms(v[4])})"
            for kind, v in rows
            if v[0]
        )
    )


def explain(conn: db.Conn, queries: dict[str, dict[str, list[Any]]], top: int) -> None:
    """EXPLAIN ANALYZE of the statements the builder spent most time in, with a few of
    the parameter sets it used (the slowest call's first); shows the slowest plan."""
    merged: dict[str, list[Any]] = {}
    for phase in queries.values():
        for text, (calls, total, worst, samples) in phase.items():
            got = merged.setdefault(text, [0, 0.0, 0.0, []])
            got[0] += calls
            got[1] += total
            got[2] = max(got[2], worst)
            got[3] += [x for x in samples if x not in got[3]]
    print(
        f"statements the builder spent most time in (top {top} by total; EXPLAIN ANALYZE of"
        f" up to {SAMPLES} of their parameter sets, the slowest shown):"
    )
    ranked = sorted(merged.items(), key=lambda kv: -kv[1][1])[:top]
    for text, (calls, total, worst, samples) in ranked:
        print(
            f"  {calls:>6,} calls, total {ms(total)}, mean {ms(total / calls)}, max {ms(worst)}:"
            f" {text[:150]}{'…' if len(text) > 150 else ''}"
        )
        plans: list[tuple[float, list[str]]] = []
        for params in samples[:SAMPLES]:
            try:
                plan = [
                    r["QUERY PLAN"]
                    for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, params)
                ]
            except Exception as exc:  # a plan is a hint: say why there is none, go on
                print(f"      (no plan: {type(exc).__name__}: {exc})")
                break
            took = [float(x.split()[2]) for x in plan if x.startswith("Execution Time")]
            plans.append((took[0] if took else 0.0, plan))
        if not plans:
            continue
        slowest, plan = max(plans, key=lambda x: x[0])
        notes = ("Seq Scan", "Rows Removed by Filter", "Sort Method")
        shown = [x.strip() for x in plan[1:] if any(n in x for n in notes)][:3]
        shown += [x.strip() for x in plan[1:] if "Buffers: shared" in x][:1]
        print(f"      {plan[0].strip()[:150]}")
        for line in shown:
            print(f"        {line[:150]}")
        print(
            f"      execution {slowest:,.1f} ms (slowest of {len(plans)};"
            f" fastest {min(x[0] for x in plans):,.1f} ms)"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.site_build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--days", type=int, default=30, help="of minute snapshots, ledger, attempts")
    p.add_argument("--positions", type=int, default=200, help="distinct assets held at the end")
    p.add_argument("--markets", type=int, default=1_500, help="binary markets traded")
    p.add_argument("--orders-per-day", type=float, default=60.0, help="per leader")
    p.add_argument("--price-days", type=float, default=1.0, help="days of 30 s marks stored")
    p.add_argument("--reps", type=int, default=10, help="timed rounds per kind of change")
    p.add_argument(
        "--kind-seconds",
        type=float,
        default=60.0,
        help="stop a kind's reps after this long (at least one rep)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=settings.get().site_budget_s,
        help="the builder's round budget, s",
    )
    p.add_argument("--interval", type=float, default=3.0, help="the loop's interval, s")
    p.add_argument("--events", type=int, default=10, help="fills timed to visible (at most)")
    p.add_argument("--event-seconds", type=float, default=60.0, help="bound of the event test")
    p.add_argument("--explain", type=int, default=6, help="statements to EXPLAIN ANALYZE")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--database-url",
        help="server to create the scratch database on (default: DATABASE_URL or the"
        " embedded server)",
    )
    args = p.parse_args(argv)
    for flag in ("users", "days", "positions", "markets", "reps", "events"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.positions > args.markets:
        p.error("--positions must be <= --markets")
    server = args.database_url or db.server_url()
    began = time.perf_counter()
    with (
        scratch_database(server, "oculus_site", keep=args.keep) as url,
        db.connect(url, autocommit=True) as conn,
        tempfile.TemporaryDirectory(prefix="oculus-site-") as out,
    ):
        prepare(conn, url, args, database_name(url))
        figures = measure_builder(conn, url, Path(out), args)
        report(figures, args)
        explain(conn, figures["queries"], args.explain)
        kept = f" (kept: {url})" if args.keep else ""
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"total {time.perf_counter() - began:.0f} s; load average now {load}{kept}")
    return 0


def measure_builder(conn: db.Conn, url: str, out: Path, args: argparse.Namespace) -> Any:
    """Runs the builder's child process against the data set, building into `out` (the
    site stays there for whatever is measured next); returns its figures."""
    from benchmarks import site_build  # the child's target, by its importable name

    changes = Changes(conn, args.seed)
    base = dataset.at(dataset.tick_of(changes.minute_ms))
    opts = {
        "budget": args.budget,
        "reps": args.reps,
        "kind_seconds": args.kind_seconds,
        "interval": args.interval,
    }
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=site_build.child, args=(url, str(out), base, opts, theirs), daemon=True
    )
    proc.start()
    try:
        return serve_child(ours, changes, out / "trades.html", args)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
