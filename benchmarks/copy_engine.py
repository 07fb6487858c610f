"""Copy engine: the decision time of the live path and the throughput of a replay, on a
synthetic but realistic data set in a scratch database (loopback server, dropped after).

Data set (fixed seed): followed users (seeded), binary markets (some with taker fees),
and a stream of their fills — one order every 300 ms round-robin over the users (so one
user's orders are 6 s apart and each order is one group), 1-3 fills per order, BUYs and
SELLs of what the user bought before. `functions.group.step` forms and closes the
groups (CHUNK orders at a time); each trade group then gets a stored L2 book (5-12
levels a side, tick 0.01, spread 1-3 ticks, 50-5,000 shares a level) fetched just after
its decide_at, drifted a little from the leader's price, so no HTTP is needed and the
guardrails see a real mix (printed: EXECUTE / SKIP per scope and the top reasons).

1. Decision time (live path: Engine(replay=False, batch=1), one transaction per group):
   from the group's decision moment, book already fetched and stored, to both attempts
   (EXEC_USER + EXEC_GLOBAL) committed; the 750 ms delay + jitter is not waited (the
   engine's clock is past every decide_at). Reported as Engine.latencies_ms (decide +
   write + commit) and as timed here (stored book load + decide + write + commit), with
   one engine kept warm over --groups groups; and for --cold-groups groups with a fresh
   Engine per run (what a `run_once` that finds one due group pays: config, portfolio and
   marks loads from the ledger), after the replay so the ledger is large.
2. Replay throughput: Engine(replay=True, batch=500) over --replay-groups groups, one
   process, one connection, DB writes included.
Run: python -m benchmarks.copy_engine [--groups 2000] [--replay-groups 20000]
     [--cold-groups 200] [--profile] [--keep] [--database-url SERVER_URL]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import math
import pstats
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from benchmarks.scratch import database_name, percentile, scratch_database
from common.domain import decide, money
from common.store import copy_configs, copy_data, db, groups, portfolios
from functions import simulate, snapshot

TICK = 10_000  # micros of price: 0.01
STEP_MS = 300  # between two orders (round-robin over the users)
PHASE_GAP = timedelta(minutes=2)  # between the data of two phases
# A leader sells one of the positions it holds with a chance growing with their number,
# and buys a new asset only while it holds fewer than MAX_HELD: a few positions each.
SELL_BASE, SELL_PER_HELD, MAX_HELD = 0.25, 0.04, 10
FEE_SHARE = 0.2  # of markets with taker fees (rate 0.04)
# The leaders are good: after their trade the price goes their way by 1 tick, or by 2
# with this chance (so copying them roughly pays for the spread and fees, and the
# breakers rarely trip); each trade's asset also reverts a tick towards its centre.
FOLLOW_2_TICKS = 0.6
REVERSION = 0.1
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# Orders inserted and grouped at a time, with fresh statistics before each step: with
# thousands of ungrouped events or open groups at once, groups.step's per-row UPDATEs
# (`WHERE id = ... AND group_state IS NULL` / `AND state = 'OPEN'`) are planned as scans
# of the partial indexes on those predicates and the step turns quadratic.
CHUNK = 1000


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 0.50):6.2f}  p95 {percentile(values, 0.95):6.2f}"
        f"  p99 {percentile(values, 0.99):6.2f}  max {max(values):7.2f} ms"
    )


@dataclass
class Asset:
    asset_id: str
    condition_id: str
    bid: int  # best bid, ticks
    spread: int  # ticks
    center: int  # where the bid reverts to, ticks


@dataclass(frozen=True)
class BookPlan:
    """The book a group's decision will see: best bid and spread, in ticks."""

    bid: int
    spread: int


class World:
    """Users, markets and the fills they make; remembers each order's decision book."""

    def __init__(self, seed: int, n_users: int, n_markets: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.wallets = [f"0x{rng.getrandbits(160):040x}" for _ in range(n_users)]
        self.markets: list[tuple[str, bool]] = []  # (condition, fees enabled)
        self.assets: list[Asset] = []
        for _ in range(n_markets):
            cond = f"0x{rng.getrandbits(256):064x}"
            self.markets.append((cond, rng.random() < FEE_SHARE))
            yes = rng.randrange(15, 80)
            for bid in (yes, 100 - yes - 2):
                self.assets.append(Asset(str(rng.getrandbits(252)), cond, bid, 1, bid))
        self.holdings: list[dict[int, int]] = [{} for _ in range(n_users)]
        self.plans: dict[tuple[int, str, str, datetime], BookPlan] = {}
        self.orders = 0

    def _spread(self) -> int:
        r = self.rng.random()
        return 1 if r < 0.7 else 2 if r < 0.92 else 3

    def make_orders(self, n: int, t0: datetime) -> tuple[list[tuple[Any, ...]], datetime]:
        """Returns `n` orders' fills as trade_event rows (user index in place of the
        user id) starting at `t0`, and the last detect time."""
        rng = self.rng
        rows: list[tuple[Any, ...]] = []
        last = t0
        for i in range(n):
            u = self.orders % len(self.wallets)
            self.orders += 1
            et = t0 + timedelta(milliseconds=i * STEP_MS + rng.randrange(50))
            dt = et + timedelta(milliseconds=1200 + rng.randrange(200))
            held = self.holdings[u]
            if held and rng.random() < min(0.7, SELL_BASE + SELL_PER_HELD * len(held)):
                side = "SELL"
                ai = rng.choice(sorted(held))
                shares = held[ai]
                if rng.random() < 0.4:
                    shares = max(TICK, shares * rng.randrange(30, 81) // 100 // TICK * TICK)
            else:
                side = "BUY"
                if held and (len(held) >= MAX_HELD or rng.random() < 0.3):
                    ai = rng.choice(sorted(held))
                else:
                    ai = rng.randrange(len(self.assets))
                a = self.assets[ai]
                notional = math.exp(rng.uniform(math.log(150), math.log(8000)))
                price = (a.bid + a.spread) * TICK
                shares = int(notional * money.MICROS * money.MICROS / price) // TICK * TICK
            a = self.assets[ai]
            best = a.bid + a.spread if side == "BUY" else a.bid
            worse = 1 if side == "BUY" else -1
            k = rng.choices((1, 2, 3), (0.6, 0.25, 0.15))[0]
            k = min(k, shares // TICK)
            cuts = sorted(rng.sample(range(1, shares // TICK), k - 1)) if k > 1 else []
            parts = [
                (b - a_) * TICK for a_, b in zip([0, *cuts], [*cuts, shares // TICK], strict=True)
            ]
            tx = f"0x{rng.getrandbits(256):064x}"
            wallet = self.wallets[u]
            for j, part in enumerate(parts):
                ticks = best + (worse if j and rng.random() < 0.5 else 0)
                price = min(99, max(1, ticks)) * TICK
                sid = f"{wallet}:{tx}:{a.asset_id}:{side}:{part}:{price}:{j}"
                rows.append(
                    (
                        "DATA_API",
                        sid,
                        u,
                        wallet,
                        a.condition_id,
                        a.asset_id,
                        side,
                        price,
                        part,
                        money.mul_micros(price, part),
                        0,
                        tx,
                        sid,
                        et,
                        dt,
                    )
                )
            held[ai] = held.get(ai, 0) + (shares if side == "BUY" else -shares)
            if held[ai] <= 0:
                del held[ai]
            # The leader's trade moves the book a little; by the decision it drifts more.
            direction = 1 if side == "BUY" else -1
            if rng.random() < 0.1:
                a.bid += direction
            r = rng.random()
            a.bid += -1 if r < 0.1 else 1 if r > 0.9 else 0
            a.spread = self._spread()
            a.bid = min(85, max(12, a.bid))
            self.plans[(u, side, a.asset_id, et)] = BookPlan(a.bid, a.spread)
            a.bid += direction * (2 if rng.random() < FOLLOW_2_TICKS else 1)
            if rng.random() < REVERSION and a.bid != a.center:
                a.bid += 1 if a.center > a.bid else -1
            a.bid = min(85, max(12, a.bid))
            last = dt
        return rows, last

    def levels(self, start: int, step: int, rng: random.Random) -> list[tuple[int, int]]:
        out = []
        ticks = start
        for _ in range(rng.randint(5, 12)):
            if not 1 <= ticks <= 99:
                break
            size = round(math.exp(rng.uniform(math.log(50), math.log(5000))), 2)
            out.append((ticks * TICK, int(size * 100) * TICK))
            ticks += step * (2 if rng.random() < 0.15 else 1)
        return out


_TRADE_COPY = """COPY trade_event (source, source_id, followed_user_id, wallet, condition_id,
asset_id, side, price_micros, share_micros, usdc_notional_micros, fee_micros, tx_hash,
api_source_id, event_time, detect_time) FROM STDIN"""
_BOOK_COPY = """COPY order_book_snapshot (asset_id, condition_id, book_hash, book_time,
fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros,
tick_size_micros, min_order_size_micros, neg_risk, last_trade_price_micros) FROM STDIN"""
_LINK_BOOKS = """UPDATE copy_group g SET order_book_snapshot_id = b.id
FROM order_book_snapshot b
WHERE g.state = 'CLOSED' AND g.order_book_snapshot_id IS NULL AND b.asset_id = g.asset_id
  AND b.book_hash = encode(sha256(convert_to(g.group_key, 'UTF8')), 'hex')"""


def setup_static(conn: db.Conn, world: World) -> dict[int, int]:
    """Inserts users and markets; returns user index → followed_user id."""
    ids = {}
    seeded = START - timedelta(days=1)
    for i, wallet in enumerate(world.wallets):
        row = conn.execute(
            "INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at)"
            " VALUES (%(l)s, %(w)s, %(t)s, %(t)s) RETURNING id",
            {"l": f"leader{i}", "w": wallet, "t": seeded},
        ).fetchone()
        assert row is not None
        ids[i] = int(row["id"])
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            "COPY market (condition_id, question, end_time, active, closed, accepting_orders,"
            " tick_size_micros, min_order_size_micros, fees_enabled, fee_rate_micros)"
            " FROM STDIN"
        ) as cp:
            for n, (cond, fees) in enumerate(world.markets):
                end = START + timedelta(days=365)
                row_ = (cond, f"Market {n}?", end, True, False, True, TICK, 5 * money.MICROS)
                cp.write_row((*row_, fees, 40_000 if fees else 0))
        with cur.copy(
            "COPY outcome_asset (asset_id, condition_id, outcome, outcome_index) FROM STDIN"
        ) as cp:
            for i, a in enumerate(world.assets):
                cp.write_row((a.asset_id, a.condition_id, ("Yes", "No")[i % 2], i % 2))
    return ids


def add_phase(
    conn: db.Conn, world: World, ids: dict[int, int], n: int, t0: datetime
) -> tuple[int, int, datetime, dict[str, float]]:
    """Inserts `n` orders' fills from `t0`, groups and closes them, stores a book per trade
    group; returns (fills, groups closed, a time past every decide_at, seconds spent)."""
    timings = {"insert": 0.0, "group.step": 0.0}
    fills = closed = 0
    for k in range(0, n, CHUNK):
        started = time.perf_counter()
        rows, last_detect = world.make_orders(
            min(CHUNK, n - k), t0 + timedelta(milliseconds=k * STEP_MS)
        )
        with conn.transaction(), conn.cursor() as cur, cur.copy(_TRADE_COPY) as cp:
            for r in rows:
                cp.write_row((*r[:2], ids[r[2]], *r[3:]))
        conn.execute("ANALYZE trade_event, copy_group")  # see CHUNK
        timings["insert"] += time.perf_counter() - started
        started = time.perf_counter()
        closed += groups.step(conn, last_detect + timedelta(seconds=10))["closed"]
        timings["group.step"] += time.perf_counter() - started
        fills += len(rows)
    started = time.perf_counter()
    index = {v: k for k, v in ids.items()}
    made = conn.execute(
        """SELECT group_key, followed_user_id, action, asset_id, condition_id, window_start,
                  decide_at FROM copy_group
           WHERE state = 'CLOSED' AND order_book_snapshot_id IS NULL
             AND action IN ('BUY', 'SELL')
           ORDER BY id"""
    ).fetchall()
    rng = random.Random(f"books:{t0.isoformat()}")
    with conn.transaction():
        with conn.cursor() as cur, cur.copy(_BOOK_COPY) as cp:
            for g in made:
                key = (index[g["followed_user_id"]], g["action"], g["asset_id"], g["window_start"])
                plan = world.plans.pop(key)
                fetched = g["decide_at"] + timedelta(milliseconds=rng.randrange(20, 150))
                bids = world.levels(plan.bid, -1, rng)
                asks = world.levels(plan.bid + plan.spread, 1, rng)
                cp.write_row(
                    (
                        g["asset_id"],
                        g["condition_id"],
                        hashlib.sha256(g["group_key"].encode()).hexdigest(),
                        fetched - timedelta(milliseconds=rng.randrange(5, 60)),
                        fetched,
                        [p for p, _ in bids],
                        [q for _, q in bids],
                        [p for p, _ in asks],
                        [q for _, q in asks],
                        TICK,
                        5 * money.MICROS,
                        False,
                        plan.bid * TICK,
                    )
                )
        linked = conn.execute(_LINK_BOOKS).rowcount
    assert linked == len(made), (linked, len(made))
    timings["books"] = time.perf_counter() - started
    # Settle the bulk load so autovacuum does not compete with the measurement.
    conn.execute("VACUUM (ANALYZE) trade_event, copy_group, order_book_snapshot")
    due = conn.execute("SELECT max(decide_at) AS t FROM copy_group").fetchone()
    assert due is not None
    return fills, closed, due["t"] + timedelta(seconds=1), timings


class TimedEngine(simulate.Engine):
    """The engine, timing each group from its book load to its commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._t0: dict[int, float] = {}
        self.timed_ms: list[float] = []

    def book_for(self, g: decide.Group) -> copy_data.StoredBook | None:
        self._t0[g.id] = time.perf_counter()
        return super().book_for(g)

    def _flush(self, pending: list[list[copy_data.Row]]) -> None:
        ids = [rows[0].decision.group.id for rows in pending]
        super()._flush(pending)
        now = time.perf_counter()
        self.timed_ms.extend((now - self._t0.pop(i)) * 1000 for i in ids)


class ReplayEngine(simulate.Engine):
    """The engine, noting the time of each batch commit (for the rate over the run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flushes: list[tuple[float, int]] = []

    def _flush(self, pending: list[list[copy_data.Row]]) -> None:
        n = len(pending)
        super()._flush(pending)
        if n:
            self.flushes.append((time.perf_counter(), n))


def never_wait(t: datetime) -> None:
    raise AssertionError(f"the benchmark clock is past every decide_at, asked to wait for {t}")


def fixed(t: datetime) -> Callable[[], datetime]:
    return lambda: t


def table_ids(conn: db.Conn) -> dict[str, int]:
    out = {}
    for table in ("copy_attempt", "executable_fill", "ledger_entry", "copy_group"):
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(id), 0) AS n FROM {}").format(sql.Identifier(table))
        ).fetchone()
        assert row is not None
        out[table] = int(row["n"])
    return out


def written(conn: db.Conn, since: dict[str, int]) -> dict[str, int]:
    out = {}
    for table in ("copy_attempt", "executable_fill", "ledger_entry"):
        row = conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {} WHERE id > %(i)s").format(sql.Identifier(table)),
            {"i": since[table]},
        ).fetchone()
        assert row is not None
        out[table] = int(row["n"])
    return out


def print_mix(conn: db.Conn, since: dict[str, int], top: int = 6) -> None:
    """Prints EXECUTE / SKIP counts per scope and the top skip reasons of the attempts
    written since `since`."""
    params = {"i": since["copy_attempt"]}
    by = conn.execute(
        """SELECT portfolio_scope AS s, action AS a, decision AS d, count(*) AS n
           FROM copy_attempt WHERE id > %(i)s GROUP BY 1, 2, 3""",
        params,
    ).fetchall()
    reasons = conn.execute(
        """SELECT portfolio_scope AS s, r, count(*) AS n
           FROM copy_attempt, unnest(reason_codes) r WHERE id > %(i)s
           GROUP BY 1, 2 ORDER BY 3 DESC, 2""",
        params,
    ).fetchall()
    for scope in simulate.SCOPES:
        rows = [r for r in by if r["s"] == scope]
        total = sum(r["n"] for r in rows) or 1
        ex = sum(r["n"] for r in rows if r["d"] == "EXECUTE")
        per_action = ", ".join(
            f"{a} {sum(r['n'] for r in rows if r['a'] == a and r['d'] == 'EXECUTE')}"
            f"/{sum(r['n'] for r in rows if r['a'] == a)}"
            for a in ("BUY", "SELL")
        )
        mine = [f"{r['r']} {r['n']}" for r in reasons if r["s"] == scope]
        top_reasons = ", ".join(mine[:top])
        print(
            f"    {scope:<11} EXECUTE {ex:6d} ({100 * ex / total:4.1f} %)  SKIP {total - ex:6d}"
            f"  [executed/all: {per_action}]"
        )
        print(f"      top skip reasons: {top_reasons or '-'}")


def print_portfolios(engine: simulate.Engine) -> None:
    """Prints the exec portfolios' marked equity (USDC) and positions at the end of a run."""
    users = [p for (scope, _), p in engine.portfolios.items() if scope == "EXEC_USER"]
    glob = engine.portfolios.get(("EXEC_GLOBAL", None))
    if not users or glob is None:
        return
    equity = sorted(p.equity(engine.marks) / money.MICROS for p in users)
    held = sorted(sum(1 for n in p.shares.values() if n) for p in users)
    mid = len(users) // 2
    print(
        f"    equity after: global {glob.equity(engine.marks) / money.MICROS:,.0f}, per user"
        f" min {equity[0]:,.0f} / median {equity[mid]:,.0f} / max {equity[-1]:,.0f}"
        f" (start {glob.starting_cash / money.MICROS:,.0f})"
    )
    print(
        f"    positions held after: global {sum(1 for n in glob.shares.values() if n)}"
        f" ({len(glob.shares)} assets tracked), per user median {held[mid]} max {held[-1]}"
    )


def phase_data(
    label: str, conn: db.Conn, world: World, ids: dict[int, int], n: int, t0: datetime
) -> datetime:
    fills, closed, now, t = add_phase(conn, world, ids, n, t0)
    setup = ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
    print(f"  {label} data: {fills} fills -> {closed} closed groups ({setup})")
    return now


def run_live(conn: db.Conn, now: datetime) -> None:
    """Decides every closed group on the live path, one engine kept warm."""
    since = table_ids(conn)
    engine = TimedEngine(conn, fixed(now), replay=False, batch=1)
    started = time.perf_counter()
    decided = engine.run(never_wait, 0.0)
    wall = time.perf_counter() - started
    print(
        f"decision time, live path (Engine replay=False, batch=1, books stored, delay and"
        f" jitter not waited): {decided} groups in {wall:.2f} s, one engine kept warm"
    )
    print(f"  Engine.latencies_ms (decide + write + commit)  {summary(engine.latencies_ms)}")
    print(f"  book load + decide + write + commit (timed)    {summary(engine.timed_ms)}")
    p95 = percentile(engine.timed_ms, 0.95) if engine.timed_ms else math.inf
    print(f"  goal p95 <= 50 ms: {'met' if p95 <= 50 else 'NOT met'} ({p95:.2f} ms)")
    print_mix(conn, since)


def run_replay(conn: db.Conn, now: datetime, profile: bool) -> None:
    """Decides every closed group as `simulate --replay` does; prints the rate."""
    since = table_ids(conn)
    engine = ReplayEngine(conn, fixed(now), replay=True, batch=500)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    decided = engine.run(never_wait, 0.0)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - started
    out = written(conn, since)
    rate = decided / wall if wall else math.inf
    print(
        f"replay throughput (Engine replay=True, batch=500, one process, one connection):"
        f" {decided} groups in {wall:.2f} s = {rate:,.0f} groups/s"
        f"  goal >= 1,000: {'met' if rate >= 1000 else 'NOT met'}"
    )
    print(
        f"  written: {out['copy_attempt']} attempts, {out['executable_fill']} fills,"
        f" {out['ledger_entry']} ledger entries ({sum(out.values()) / wall:,.0f} rows/s)"
        f" in {len(engine.flushes)} transactions"
    )
    quarters = []
    last, count, mark = started, 0, max(1, decided // 4)
    for at, n in engine.flushes:
        count += n
        if count >= mark or at == engine.flushes[-1][0]:
            quarters.append(f"{count / (at - last):,.0f}")
            last, count = at, 0
    print(f"  groups/s by quarter of the run: {' / '.join(quarters)}")
    print_mix(conn, since)
    print_portfolios(engine)
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        print(text.getvalue())


def run_cold(conn: db.Conn) -> None:
    """Decides every closed group on the live path, one run per group with the engine
    refreshed between runs (what the simulate loop does), the clock
    moved to each group's decide_at (what run_once pays when it finds one group due)."""
    ledger = conn.execute("SELECT count(*) AS n FROM ledger_entry").fetchone()
    assert ledger is not None
    # As in production, the snapshot job has saved the fold's state within the minute: a
    # portfolio loads from it plus the entries after its cut.
    started = time.perf_counter()
    took = snapshot.take(conn, START)
    print(
        f"  snapshot run before the cold runs (the fold's checkpoint): {took['entries']} entries"
        f" folded in {(time.perf_counter() - started) * 1000:,.0f} ms"
    )
    per_group: list[float] = []
    per_run: list[float] = []
    clock_at = START
    engine: simulate.Engine | None = None
    while True:
        nxt = conn.execute(
            "SELECT decide_at FROM copy_group WHERE state = 'CLOSED'"
            " ORDER BY first_detect_time, window_start, group_key LIMIT 1"
        ).fetchone()
        if nxt is None:
            break
        clock_at = max(clock_at, nxt["decide_at"])
        started = time.perf_counter()
        if engine is None:
            engine = simulate.Engine(conn, fixed(clock_at), replay=False, batch=1)
        else:  # as run_once does in a loop: the same engine, refreshed
            engine.clock = fixed(clock_at)
            engine.refresh()
        engine.latencies_ms.clear()
        engine.run(never_wait, 0.0)
        per_run.append((time.perf_counter() - started) * 1000)
        per_group.extend(engine.latencies_ms)
    print(
        f"decision time, live path, one group per run, the engine refreshed each run as the"
        f" loop does ({len(per_group)} groups in {len(per_run)} runs; ledger {ledger['n']}"
        " entries):"
    )
    print(f"  Engine.latencies_ms (decide + write + commit)  {summary(per_group)}")
    print(f"  whole run (engine setup, loads, decide, commit) {summary(per_run)}")
    # Where a cold start's time goes: the loads a new engine makes before deciding.
    cfg = copy_configs.load(conn)
    user = conn.execute("SELECT min(id) AS id FROM followed_user").fetchone()
    assert user is not None
    for scope, uid in (("EXEC_GLOBAL", None), ("EXEC_USER", user["id"])):
        loads, marks = [], []
        for _ in range(10):
            started = time.perf_counter()
            p = portfolios.load(conn, scope, uid, cfg.base.starting_cash_micros)
            loads.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            portfolios.load_marks(conn, set(p.shares), clock_at)
            marks.append((time.perf_counter() - started) * 1000)
        print(
            f"    {scope} load: portfolio.load {statistics.median(loads):.1f} ms +"
            f" Marks.load {statistics.median(marks):.1f} ms ({len(p.shares)} assets), median"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.copy_engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--groups", type=int, default=2_000, help="live decisions timed")
    p.add_argument("--replay-groups", type=int, default=20_000)
    p.add_argument("--cold-groups", type=int, default=200, help="live decisions, one run each")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--markets", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="cProfile the replay; print the top")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--database-url",
        help="server to create the scratch database on (default: DATABASE_URL or the"
        " embedded server)",
    )
    args = p.parse_args(argv)
    for flag in ("groups", "replay_groups", "users", "markets"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    server = args.database_url or db.server_url()
    began = time.perf_counter()
    with (
        scratch_database(server, "oculus_bench", keep=args.keep) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        name = database_name(url)
        world = World(args.seed, args.users, args.markets)
        ids = setup_static(conn, world)
        print(
            f"copy engine: {args.users} users, {args.markets} markets"
            f" ({len(world.assets)} assets), seed {args.seed}, scratch database {name}"
        )
        now = phase_data("live", conn, world, ids, args.groups, START)
        run_live(conn, now)
        now = phase_data("replay", conn, world, ids, args.replay_groups, now + PHASE_GAP)
        run_replay(conn, now, args.profile)
        if args.cold_groups > 0:
            now = phase_data("cold", conn, world, ids, args.cold_groups, now + PHASE_GAP)
            run_cold(conn)
        size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
        assert size is not None
        kept = f" (kept: {url})" if args.keep else ""
        print(
            f"  total {time.perf_counter() - began:.1f} s, database size"
            f" {size['b'] / 1e6:.0f} MB{kept}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
