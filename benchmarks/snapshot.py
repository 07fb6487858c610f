"""Snapshot job: the wall time of one incremental `snapshot` run (functions.snapshot.take)
on a month of data, and that data set's size on disk, in a scratch database (loopback
server, dropped after unless --keep).

Data set (fixed seed), built with COPY:
- --users followed users, each with a SHADOW_USER and an EXEC_USER portfolio, plus the
  EXEC_GLOBAL one (2 × users + 1 portfolios).
- Binary markets (--markets, 2 outcome assets each, some with taker fees) whose mids
  wander (two slow waves and a little noise per 30 s bucket, on half ticks).
- The leaders' orders over --days days (Poisson, --orders-per-day each; 1-3 fills at the
  touch): they open, add to, reduce and close positions; the shadow ledger takes every
  fill (TRADE_FILL), the two exec portfolios copy most of them 4 s later at 1 % of the
  notional (5-250 USDC) from a stored decision book (TRADE_FILL per level, FEE on fee
  markets; one DEPOSIT each at the start; shadow books start from SEED positions).
- "200 open positions" is read as --positions distinct outcome assets held at the end
  (the set the price job marks and Marks.load looks up): each is some leaders' "final"
  holding (1-2 leaders each, opened during the month, never closed); every other
  position closes, so the month leaves a long closed history. The exec copies hold most
  of the final ones. The counts are printed.
- `market_price_snapshot`: one row per held asset per 30 s bucket for the last
  --price-days days; `order_book_snapshot`: the decision book of every leader order.
- `portfolio_snapshot`: one row per portfolio per minute up to the job's first run (cut =
  the newest entry id by then, as_of 5 s into the minute), valued at the wandering
  mids; plausible rows, not recomputed by the benchmark.

Then the last --rebuild-hours of the month go through the real job, minute by minute
(each minute's entries, books and marks inserted before its run): the first run is
"cold" (no state yet: it folds the whole month's ledger), the others fold a minute at
the month's own rate. Then --runs "busy" minutes, each with about --fills-per-run new
fills on held positions, are timed one run each: wall time, this process's CPU time and
the Postgres backend's CPU time (one core pays both), entries folded, rows written, and
where the time went. Then `snapshot.rebuild` recomputes the rows from the job's own
minutes (it should report 0 differed), and the database and table sizes are printed.
Run: python -m benchmarks.snapshot [--users 50] [--days 30] [--positions 200]
     [--rebuild-hours 1] [--price-days 1] [--runs 5] [--keep] [--database-url SERVER_URL]
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import random
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from benchmarks.scratch import database_name, percentile, scratch_database
from common import checkpoints, db, money, pnl, portfolio
from functions import snapshot

MICROS = money.MICROS
TICK = 10_000  # micros of price: 0.01
SHARE_STEP = 10_000  # share amounts are whole hundredths of a share
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)  # the end of the month; the busy minutes follow
MINUTE_MS, BUCKET_MS = 60_000, 30_000
AS_OF_MS = 5_000  # the job runs 5 s into its minute
COPY_DELAY_MS = 4_000  # leader fill -> exec fill (detection + group window + delay)
STARTING_CASH = 10_000 * MICROS
COPY_SHARE = 100  # exec notional = theirs / 100, clamped to [MIN_COPY, MAX_COPY]
MIN_COPY, MAX_COPY = 5 * MICROS, 250 * MICROS
COPY_CHANCE, SELL_COPY_CHANCE = 0.8, 0.9
FEE_MARKETS, FEE_RATE_MICROS = 0.2, 10_000  # fee = 1 % of the notional
MAX_HELD = 16
SCOPES = ("SHADOW_USER", "EXEC_USER", "EXEC_GLOBAL")
NULL = "\\N"  # in COPY text

Key = tuple[str, int | None]
# (effective ms, seq, scope, user, condition, asset, type, shares, cash, price, ref)
Entry = tuple[int, int, str, int | None, str | None, str | None, str, int, int, int | None, str]
# (fetched ms, asset index, mid, half spread, seed of its levels)
Book = tuple[int, int, int, int, int]


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def ms_of(t: datetime) -> int:
    return (t - EPOCH) // timedelta(milliseconds=1)


def tick_of(minute_ms: int) -> int:
    """The time of the job's run in the minute starting at `minute_ms`."""
    return minute_ms + AS_OF_MS


def observed_offset(bucket: int) -> int:
    """When in its 30 s bucket the price job observed the mids (1.0-2.5 s)."""
    return 1_000 + (bucket * 7_919) % 1_500


def half_spread(mid: int) -> int:
    """Half the spread of a book around `mid` (a half tick mid has a one-tick spread)."""
    return TICK if mid % TICK == 0 else TICK // 2


@dataclass(frozen=True)
class Market:
    condition_id: str
    fees: bool
    waves: tuple[float, float, float, float, float, float, float]  # base, (amp, ω, φ) × 2
    salt: int

    def yes_mid(self, bucket: int) -> int:
        base, a1, w1, p1, a2, w2, p2 = self.waves
        x = base + a1 * math.sin(bucket * w1 + p1) + a2 * math.sin(bucket * w2 + p2)
        x += ((bucket * 2_654_435_761 + self.salt) % 2_001 - 1_000) * 4e-6
        return min(970_000, max(30_000, round(x * 200) * 5_000))


@dataclass(frozen=True)
class Asset:
    asset_id: str
    market: Market
    yes: bool

    def mid(self, bucket: int) -> int:
        m = self.market.yes_mid(bucket)
        return m if self.yes else MICROS - m


@dataclass
class Leader:
    user_id: int
    final: set[int]  # assets held at the end (never closed)
    closing_from: int  # ms: closes every other position then, and opens nothing new after
    held: dict[int, int] = field(default_factory=dict)  # asset -> shares (the shadow book)


class World:
    """Markets, leaders and their copies; writes the ledger entries and decision books."""

    def __init__(self, args: argparse.Namespace, user_ids: list[int], start_ms: int) -> None:
        self.rng = rng = random.Random(args.seed)
        self.start_ms, self.end_ms = start_ms, ms_of(END)
        self.markets: list[Market] = []
        self.assets: list[Asset] = []
        for _ in range(args.markets):
            waves = (
                rng.uniform(0.12, 0.88),
                rng.uniform(0.02, 0.1),
                2 * math.pi / rng.uniform(120, 2_880 * 4),  # periods: 1 h to 4 days
                rng.uniform(0, 2 * math.pi),
                rng.uniform(0.005, 0.03),
                2 * math.pi / rng.uniform(10, 120),  # 5 min to 1 h
                rng.uniform(0, 2 * math.pi),
            )
            cond = f"0x{rng.getrandbits(256):064x}"
            m = Market(cond, rng.random() < FEE_MARKETS, waves, rng.getrandbits(30))
            self.markets.append(m)
            for yes in (True, False):
                self.assets.append(Asset(str(rng.getrandbits(252)), m, yes))
        final = rng.sample(range(len(self.assets)), args.positions)
        self.final = set(final)
        self.pool = [a for a in range(len(self.assets)) if a not in self.final]
        n = len(user_ids)
        owners: list[set[int]] = [set() for _ in range(n)]
        for i, a in enumerate(final):  # each final asset: 1-2 leaders
            owners[i % n].add(a)
            if n > 1 and rng.random() < 0.8:
                owners[rng.choice([j for j in range(n) if j != i % n])].add(a)
        self.leaders = [
            Leader(
                uid,
                owners[i],
                max(start_ms + 120_000, self.end_ms - rng.randrange(20, 50) * MINUTE_MS),
            )
            for i, uid in enumerate(user_ids)
        ]
        self.exec_held: list[dict[int, int]] = [{} for _ in user_ids]
        self.global_by: list[dict[int, int]] = [{} for _ in user_ids]  # global, per leader
        self.cash: dict[Key, int] = {}
        self.entries: list[Entry] = []
        self.books: list[Book] = []
        self.seq = self.fills = self.orders = 0

    def add(
        self,
        t: int,
        scope: str,
        uid: int | None,
        a: int | None,
        kind: str,
        dq: int,
        cash: int,
        price: int | None,
        ref: str,
    ) -> None:
        asset = None if a is None else self.assets[a]
        self.entries.append(
            (
                t,
                self.seq,
                scope,
                uid,
                None if asset is None else asset.market.condition_id,
                None if asset is None else asset.asset_id,
                kind,
                dq,
                cash,
                price,
                ref,
            )
        )
        self.seq += 1

    def open_books(self) -> None:
        """DEPOSIT of every exec portfolio; SEED positions of every shadow book."""
        t, rng = self.start_ms, self.rng
        for key in [("EXEC_USER", ld.user_id) for ld in self.leaders] + [("EXEC_GLOBAL", None)]:
            self.cash[key] = STARTING_CASH
            ref = portfolio.deposit_ref(key[1])
            self.add(t, key[0], key[1], None, "DEPOSIT", 0, STARTING_CASH, None, ref)
        for ld in self.leaders:
            for a in rng.sample(self.pool, rng.randint(3, 8)):
                price = self.assets[a].mid(t // BUCKET_MS)
                shares = self.shares_for(
                    math.exp(rng.uniform(math.log(150), math.log(8_000))), price
                )
                ld.held[a] = shares
                ref = f"seed:{ld.user_id}:{self.assets[a].asset_id}"
                self.add(t, "SHADOW_USER", ld.user_id, a, "SEED", shares, 0, price, ref)

    @staticmethod
    def shares_for(notional_usdc: float, price: int) -> int:
        return int(notional_usdc * MICROS) * MICROS // price // SHARE_STEP * SHARE_STEP

    def run_month(self, orders_per_day: float) -> None:
        """Every leader order of the month, in time order."""
        rng = self.rng
        plan: list[tuple[int, int, int, int]] = []  # (ms, kind, leader, asset)
        rate = orders_per_day / 86_400_000
        for i, ld in enumerate(self.leaders):
            t = self.start_ms + rng.expovariate(rate)
            while t < self.end_ms:
                plan.append((int(t), 0, i, -1))
                t += rng.expovariate(rate)
            for a in sorted(ld.final):
                lo = self.start_ms + 60_000
                plan.append((rng.randrange(lo, max(lo + 1, ld.closing_from - 60_000)), 1, i, a))
            plan.append((ld.closing_from, 2, i, -1))
        plan.sort()
        for t, kind, i, a in plan:
            if kind == 0:
                self.order(i, t)
            elif kind == 1:
                self.trade(i, t, a, "BUY", self.buy_size(a, t), closes=False)
            else:
                ld = self.leaders[i]
                for k, b in enumerate(sorted(set(ld.held) - ld.final)):
                    self.trade(i, t + 3_000 * k, b, "SELL", ld.held[b], closes=True)

    def run_busy_minute(self, lo: int, hi: int, fills: int) -> None:
        """Orders on held positions at leader times in (lo, hi] until `fills` TRADE_FILL
        entries are written."""
        rng = self.rng
        times = sorted(rng.randrange(lo + 1, hi + 1) for _ in range(fills))
        written = len(self.entries)
        users = [i for i, ld in enumerate(self.leaders) if ld.held]
        for t in times:
            if sum(1 for e in self.entries[written:] if e[6] == "TRADE_FILL") >= fills:
                break
            self.order(rng.choice(users), t)

    def buy_size(self, a: int, t: int) -> int:
        notional = math.exp(self.rng.uniform(math.log(150), math.log(8_000)))
        mid = self.assets[a].mid(t // BUCKET_MS)
        return max(SHARE_STEP, self.shares_for(notional, mid + half_spread(mid)))

    def order(self, i: int, t: int) -> None:
        """One regular order of leader `i`: sell (reduce or close) something held, add to
        something held, or open a new position (not after its closing time)."""
        rng, ld = self.rng, self.leaders[i]
        restricted = t >= ld.closing_from
        candidates = sorted(a for a in ld.held if not restricted or a in ld.final)
        n = len(ld.held)
        if candidates and rng.random() < min(0.7, 0.2 + 0.05 * n):
            a = rng.choice(candidates)
            held = ld.held[a]
            if a not in ld.final and rng.random() < 0.5:
                self.trade(i, t, a, "SELL", held, closes=True)
                return
            q = held * rng.randrange(30, 81) // 100 // SHARE_STEP * SHARE_STEP
            if a in ld.final:
                q = min(q, held - SHARE_STEP)
            if q >= SHARE_STEP:
                self.trade(i, t, a, "SELL", q, closes=False)
            elif a not in ld.final:
                self.trade(i, t, a, "SELL", held, closes=True)
            return
        if restricted or (candidates and (n >= MAX_HELD or rng.random() < 0.35)):
            if not candidates:
                return
            a = rng.choice(candidates)
        else:
            a = rng.choice(self.pool)
            while a in ld.held:
                a = rng.choice(self.pool)
        self.trade(i, t, a, "BUY", self.buy_size(a, t), closes=False)

    def trade(self, i: int, t: int, a: int, side: str, shares: int, closes: bool) -> None:
        """The leader's fills (shadow ledger) and both exec copies of one order."""
        rng, ld, asset = self.rng, self.leaders[i], self.assets[a]
        sign = 1 if side == "BUY" else -1
        mid = asset.mid(t // BUCKET_MS)
        best = mid + sign * half_spread(mid)
        k = min(rng.choices((1, 2, 3), (0.6, 0.25, 0.15))[0], shares // SHARE_STEP)
        cuts = sorted(rng.sample(range(1, shares // SHARE_STEP), k - 1)) if k > 1 else []
        bounds = [0, *cuts, shares // SHARE_STEP]
        their_before = ld.held.get(a, 0)
        their_notional = 0
        for j in range(k):
            part = (bounds[j + 1] - bounds[j]) * SHARE_STEP
            price = best + (sign * TICK if j and rng.random() < 0.5 else 0)
            price = min(990_000, max(10_000, price))
            notional = money.mul_micros(price, part)
            their_notional += notional
            self.fills += 1
            ref = f"trade:{self.fills}"
            self.add(
                t,
                "SHADOW_USER",
                ld.user_id,
                a,
                "TRADE_FILL",
                sign * part,
                -sign * notional,
                price,
                ref,
            )
        left = their_before + sign * shares
        if left:
            ld.held[a] = left
        else:
            del ld.held[a]
        # The copies: one group, one stored book, a decision per exec portfolio.
        te = t + COPY_DELAY_MS
        fetched = te - rng.randrange(20, 150)
        emid = asset.mid(fetched // BUCKET_MS)
        hs = half_spread(emid)
        self.books.append((fetched, a, emid, hs, rng.getrandbits(32)))
        self.orders += 1
        group = f"grp:{self.orders}"
        for scope, mine in (("EXEC_USER", self.exec_held[i]), ("EXEC_GLOBAL", self.global_by[i])):
            key: Key = (scope, ld.user_id if scope == "EXEC_USER" else None)
            held = mine.get(a, 0)
            if side == "BUY":
                if rng.random() >= COPY_CHANCE:
                    continue
                target = min(MAX_COPY, max(MIN_COPY, their_notional // COPY_SHARE))
                q = target * MICROS // (emid + hs) // SHARE_STEP * SHARE_STEP
            elif not held:
                continue
            elif closes:
                q = held
            else:
                if rng.random() >= SELL_COPY_CHANCE:
                    continue
                q = min(held, held * shares // their_before // SHARE_STEP * SHARE_STEP)
            if q < SHARE_STEP:
                continue
            levels = [(emid + sign * hs, q)]
            if q >= 2 * SHARE_STEP and rng.random() < 0.3:
                q1 = max(SHARE_STEP, q * rng.randrange(40, 81) // 100 // SHARE_STEP * SHARE_STEP)
                worse = min(990_000, max(10_000, emid + sign * (hs + TICK)))
                levels = [(emid + sign * hs, q1), (worse, q - q1)]
            notionals = [money.mul_micros(p, n) for p, n in levels]
            fees = [
                money.mul_micros(x, FEE_RATE_MICROS) if asset.market.fees else 0 for x in notionals
            ]
            if side == "BUY" and self.cash[key] < sum(notionals) + sum(fees):
                continue  # no cash left: the engine would skip it
            for lvl, ((p, n), x, fee) in enumerate(zip(levels, notionals, fees, strict=True)):
                ref = f"{group}:L{lvl}"
                self.add(te, scope, key[1], a, "TRADE_FILL", sign * n, -sign * x, p, ref)
                if fee:
                    self.add(te, scope, key[1], a, "FEE", 0, -fee, None, ref)
                self.cash[key] += -sign * x - fee
            left = held + sign * q
            if left:
                mine[a] = left
            else:
                mine.pop(a, None)


def book_levels(mid: int, hs: int, seed: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """A stored book's levels (best first) around `mid`: 5-12 a side, 50-5,000 shares each."""
    rng = random.Random(seed)
    sides: list[tuple[list[int], list[int]]] = []
    for start, step in ((mid - hs, -TICK), (mid + hs, TICK)):
        prices, sizes = [], []
        p = start
        for _ in range(rng.randint(5, 12)):
            if not TICK <= p <= MICROS - TICK:
                break
            prices.append(p)
            sizes.append(int(math.exp(rng.uniform(math.log(50), math.log(5_000))) * 100) * TICK)
            p += step * (2 if rng.random() < 0.15 else 1)
        sides.append((prices, sizes))
    return sides[0][0], sides[0][1], sides[1][0], sides[1][1]


_COPY_ENTRIES = """COPY ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id,
entry_type, share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time)
FROM STDIN"""
_COPY_BOOKS = """COPY order_book_snapshot (asset_id, condition_id, book_hash, book_time,
fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros,
tick_size_micros, min_order_size_micros, neg_risk, last_trade_price_micros) FROM STDIN"""
_COPY_PRICES = """COPY market_price_snapshot (asset_id, bucket, mid_micros, price_source,
observed_at) FROM STDIN"""
_COPY_SNAPSHOTS = """COPY portfolio_snapshot (portfolio_scope, followed_user_id, bucket,
equity_micros, cash_micros, exposure_micros, unrealized_pnl_micros, realized_pnl_micros,
fees_micros, open_positions, last_ledger_entry_id, as_of, contributed_micros) FROM STDIN"""


def copy_entries(conn: db.Conn, entries: list[Entry]) -> None:
    if not entries:
        return
    with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY_ENTRIES) as cp:
        for t, _, scope, uid, cond, asset, kind, dq, cash, price, ref in entries:
            cp.write_row((scope, uid, cond, asset, kind, dq, cash, price, ref, at(t)))


def copy_books(conn: db.Conn, world: World, books: list[Book]) -> None:
    if not books:
        return
    with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY_BOOKS) as cp:
        for fetched, a, mid, hs, seed in books:
            asset = world.assets[a]
            bids, bid_sizes, asks, ask_sizes = book_levels(mid, hs, seed)
            cp.write_row(
                (
                    asset.asset_id,
                    asset.market.condition_id,
                    f"{seed:08x}{fetched:x}",
                    at(fetched - 40),
                    at(fetched),
                    bids,
                    bid_sizes,
                    asks,
                    ask_sizes,
                    TICK,
                    5 * MICROS,
                    False,
                    mid - hs,
                )
            )


def copy_lines(conn: db.Conn, statement: str, lines: list[str]) -> None:
    if not lines:
        return
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as cp:
        for i in range(0, len(lines), 20_000):
            cp.write("".join(lines[i : i + 20_000]))


class Writer:
    """Text COPY rows written in chunks."""

    def __init__(self, write: Callable[[str], Any]) -> None:
        self.write = write
        self.lines: list[str] = []
        self.rows = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= 20_000:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.write("".join(self.lines))
            self.rows += len(self.lines)
            self.lines = []


def history(
    world: World,
    keys: list[Key],
    m0: int,
    price_from: int,
    until: int,
    snapshots: Writer,
    prices: Writer,
    later_prices: list[tuple[int, str]],
) -> dict[str, int]:
    """Folds the sorted entries along the timeline and writes (1) one snapshot row per
    portfolio per minute before `m0`, valued at the assets' mids, and (2) one price row
    per asset held in any portfolio per 30 s bucket from `price_from` until `until`
    (those observed after the run at `m0` go to `later_prices`). Returns counts."""
    books = {k: pnl.Book() for k in keys}
    holders: dict[str, int] = {}
    by_id = {a.asset_id: a for a in world.assets}
    prefix = {k: f"{k[0]}\t{NULL if k[1] is None else k[1]}\t" for k in keys}
    entries, n_entries, applied = world.entries, len(world.entries), 0
    m0_tick = tick_of(m0)
    held_at_price: list[int] = []

    def apply_until(t: int) -> None:
        nonlocal applied
        while applied < n_entries and entries[applied][0] <= t:
            e = entries[applied]
            book = books[(e[2], e[3])]
            asset, dq = e[5], e[7]
            before = book.positions[asset].shares if asset in book.positions else 0
            book.apply(
                {
                    "entry_type": e[6],
                    "asset_id": asset,
                    "condition_id": e[4],
                    "share_delta_micros": dq,
                    "cash_delta_micros": e[8],
                    "price_micros": e[9],
                }
            )
            if asset is not None and asset in book.positions:
                pos = book.positions[asset]
                if bool(before) != bool(pos.shares):
                    holders[asset] = holders.get(asset, 0) + (1 if pos.shares else -1)
                    if not holders[asset]:
                        del holders[asset]
                if not pos.shares and not pos.cost:
                    del book.positions[asset]  # closed: only open positions are valued
            applied += 1

    for b in range(world.start_ms // BUCKET_MS, until // BUCKET_MS + 1):
        t_b = b * BUCKET_MS
        if t_b >= price_from:
            obs = t_b + observed_offset(b)
            if obs > until:
                break
            apply_until(obs)
            stamp = f"\t{at(t_b).isoformat()}\t"
            seen = f"\tMIDPOINT\t{at(obs).isoformat()}\n"
            for a in holders:
                line = f"{a}{stamp}{by_id[a].mid(b)}{seen}"
                if obs <= m0_tick:
                    prices.add(line)
                else:
                    later_prices.append((obs, line))
            held_at_price.append(len(holders))
        if t_b % MINUTE_MS or t_b >= m0:
            continue
        tick = tick_of(t_b)
        apply_until(tick)
        bucket, as_of = at(t_b).isoformat(), at(tick).isoformat()
        marks: dict[str, int] = {}
        for k in keys:
            book = books[k]
            equity, exposure, unrealized, n = book.cash, 0, 0, 0
            for a, pos in book.positions.items():
                mark = marks.get(a)
                if mark is None:
                    mark = marks[a] = by_id[a].mid(b)
                v = pos.shares * mark // MICROS
                equity += v
                exposure += abs(v)
                unrealized += v - pos.cost
                n += 1
            snapshots.add(
                f"{prefix[k]}{bucket}\t{equity}\t{book.cash}\t{exposure}\t{unrealized}"
                f"\t{book.realized}\t{book.fees}\t{n}\t{applied}\t{as_of}\t{book.contributed}\n"
            )
    snapshots.flush()
    prices.flush()
    mean_held = round(statistics.fmean(held_at_price)) if held_at_price else 0
    return {"snapshot_rows": snapshots.rows, "mean_held": mean_held}


def backend_cpu(conn: db.Conn) -> float | None:
    """CPU seconds used so far by the connection's server process (loopback server on
    this host), or None when /proc does not show it."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Phases:
    """Times the parts of snapshot.take by wrapping the functions it calls."""

    TARGETS = (
        (checkpoints, "committed_max_ids", "read_cut"),
        (snapshot, "load_state", "load_state"),
        (snapshot, "fold", "fold"),
        (snapshot, "save_state", "save_state"),
        (snapshot, "row", "row"),
    )

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.spans.setdefault(name, []).append((started, time.perf_counter()))

        return timed

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved = [(o, n, getattr(o, n)) for o, n, _ in self.TARGETS if hasattr(o, n)]
        marks = portfolio.Marks.__dict__["load"]
        try:
            for owner, n, label in self.TARGETS:
                if hasattr(owner, n):
                    setattr(owner, n, self._wrap(label, getattr(owner, n)))
            timed = staticmethod(self._wrap("marks", portfolio.Marks.load))
            portfolio.Marks.load = timed  # type: ignore[method-assign]
            yield
        finally:
            for owner, n, fn in saved:
                setattr(owner, n, fn)
            portfolio.Marks.load = marks  # type: ignore[method-assign]

    def breakdown(self, started: float, ended: float) -> dict[str, float]:
        """Seconds per part of one run (the spans of the last run only)."""
        s = {n: [x for x in v if x[0] >= started] for n, v in self.spans.items()}

        def dur(n: str) -> float:
            return sum(b - a for a, b in s.get(n, []))

        def first(n: str, default: float) -> float:
            return s[n][0][0] if s.get(n) else default

        def last(n: str, default: float) -> float:
            return s[n][-1][1] if s.get(n) else default

        load_end = last("load_state", started)
        fold_start = first("fold", load_end)
        before_marks = last("save_state", last("fold", fold_start))
        parts = {
            "read_cut": dur("read_cut"),
            "load_state": dur("load_state"),
            "select entries": fold_start - load_end,
            "fold": dur("fold"),
            "save_state": dur("save_state"),
            "checkpoint+held": first("marks", before_marks) - before_marks,
            "Marks.load": dur("marks"),
            "rows": dur("row"),
            "upsert+commit": ended - last("row", last("marks", before_marks)),
        }
        parts["other"] = ended - started - sum(parts.values())
        return parts


@dataclass
class Run:
    wall: float
    cpu: float
    backend: float | None
    entries: int
    moved: int
    positions_written: int
    snapshots: int
    wal: int
    parts: dict[str, float]


def timed_take(conn: db.Conn, now: datetime, phases: Phases) -> Run:
    """One snapshot.take, timed; counts the portfolios it moved and the position rows it
    rewrote (save_state rewrites every stored position of a moved portfolio)."""
    seen = conn.execute(
        "SELECT cursor_int FROM system_checkpoint WHERE name = %(n)s", {"n": snapshot.CHECKPOINT}
    ).fetchone()
    lo = int(seen["cursor_int"]) if seen and seen["cursor_int"] is not None else 0
    wal0 = conn.execute("SELECT pg_current_wal_insert_lsn() AS l").fetchone()
    cpu0, be0 = time.process_time(), backend_cpu(conn)
    started = time.perf_counter()
    counts = snapshot.take(conn, now)
    ended = time.perf_counter()
    cpu, be1 = time.process_time() - cpu0, backend_cpu(conn)
    wal = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %(l)s)::bigint AS b",
        {"l": wal0["l"] if wal0 else "0/0"},
    ).fetchone()
    moved = conn.execute(
        """SELECT count(DISTINCT (portfolio_scope, followed_user_id)) AS portfolios,
                  count(DISTINCT (portfolio_scope, followed_user_id, asset_id))
                      FILTER (WHERE asset_id IS NOT NULL
                              AND entry_type NOT IN ('FEE', 'DEPOSIT')) AS positions
           FROM ledger_entry WHERE id > %(lo)s AND id <= %(hi)s""",
        {"lo": lo, "hi": lo + counts["entries"]},
    ).fetchone()
    assert moved is not None
    return Run(
        ended - started,
        cpu,
        None if be0 is None or be1 is None else be1 - be0,
        counts["entries"],
        int(moved["portfolios"]),
        int(moved["positions"]),
        counts["snapshots"],
        int(wal["b"]) if wal else 0,
        phases.breakdown(started, ended),
    )


def ms(x: float) -> str:
    return f"{x * 1000:,.0f} ms"


def describe(r: Run) -> str:
    backend = "n/a" if r.backend is None else ms(r.backend)
    return (
        f"wall {ms(r.wall):>9}  cpu: python {ms(r.cpu):>9}, postgres {backend:>8}  |"
        f" {r.entries:4d} entries, {r.moved:3d} portfolios moved -> {r.moved} state +"
        f" {r.positions_written:,} position + {r.snapshots} snapshot rows, WAL"
        f" {r.wal / 1e6:,.1f} MB"
    )


def print_parts(runs: list[Run]) -> None:
    names = list(runs[0].parts)
    med = {n: statistics.median(r.parts[n] for r in runs) for n in names}
    total = statistics.median(r.wall for r in runs)
    shown = ", ".join(f"{n} {ms(v)}" for n, v in sorted(med.items(), key=lambda x: -x[1]))
    print(f"    where the time goes (median per run, of {ms(total)}): {shown}")


def print_sizes(
    conn: db.Conn, days: int, price_days: float, mean_held: int, users: int, positions: int
) -> None:
    size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
    assert size is not None
    print(f"database size: {size['b'] / 1e6:,.0f} MB (pg_database_size)")
    tables = conn.execute(
        """SELECT c.relname AS name, pg_total_relation_size(c.oid) AS total,
                  pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS idx
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'r'
           ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 8"""
    ).fetchall()
    per_row: dict[str, float] = {}
    for t in tables:
        got = conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(t["name"]))
        ).fetchone()
        n = int(got["n"]) if got else 0
        per_row[t["name"]] = t["total"] / n if n else 0.0
        print(
            f"  {t['name']:<23} {n:>11,} rows  total {t['total'] / 1e6:8,.1f} MB"
            f" (heap {t['heap'] / 1e6:7,.1f} + indexes {t['idx'] / 1e6:7,.1f})"
            f"  {per_row[t['name']]:6.0f} B/row"
        )
    for table in ("portfolio_snapshot", "ledger_entry", "market_price_snapshot"):
        idx = conn.execute(
            """SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS b
               FROM pg_index WHERE indrelid = %(t)s::regclass ORDER BY 2 DESC""",
            {"t": table},
        ).fetchall()
        shown = ", ".join(f"{i['name']} {i['b'] / 1e6:,.1f} MB" for i in idx)
        print(f"    {table} indexes: {shown}")
    portfolios = 2 * users + 1
    snap = per_row.get("portfolio_snapshot", 0.0) * portfolios * 1_440
    price = per_row.get("market_price_snapshot", 0.0) * mean_held * 2_880
    print(
        f"  growth: portfolio_snapshot {snap / 1e6:,.1f} MB/day ({portfolios} rows a minute),"
        f" market_price_snapshot {price / 1e6:,.1f} MB/day ({mean_held} held assets every"
        f" 30 s) -> {(snap + price) * 365 / 1e9:,.1f} GB/year for the two"
    )
    per_asset = per_row.get("market_price_snapshot", 0.0) * 2_880
    daily = per_asset * positions
    print(
        f"  marks: {per_asset / 1e6:,.2f} MB per held asset per day; with {positions} held"
        f" assets {daily / 1e6:,.0f} MB/day, {daily * 30 / 1e9:,.1f} GB per 30 days"
    )
    if price_days < days:
        print(
            f"  marks kept here for {price_days:g} of {days} days; all {days} days would add"
            f" {price * (days - price_days) / 1e9:,.2f} GB"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.snapshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--days", type=int, default=30, help="of minute snapshots and ledger")
    p.add_argument("--positions", type=int, default=200, help="distinct assets held at the end")
    p.add_argument("--markets", type=int, default=1_500, help="binary markets traded")
    p.add_argument("--orders-per-day", type=float, default=60.0, help="per leader")
    p.add_argument("--price-days", type=float, default=1.0, help="days of 30 s marks stored")
    p.add_argument(
        "--rebuild-hours",
        type=float,
        default=1.0,
        help="last hours run through the job minute by minute, then rebuilt",
    )
    p.add_argument("--runs", type=int, default=5, help="busy minutes timed")
    p.add_argument("--fills-per-run", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--database-url",
        help="server to create the scratch database on (default: DATABASE_URL or the"
        " embedded server)",
    )
    args = p.parse_args(argv)
    for flag in ("users", "days", "positions", "markets", "runs", "fills_per_run"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.positions > args.markets:
        p.error("--positions must be <= --markets (half the assets stay for closed history)")
    if not 0 <= args.rebuild_hours * 60 < args.days * 1_440 - 120:
        p.error("--rebuild-hours must be >= 0 and shorter than the history")
    server = args.database_url or db.server_url()
    began = time.perf_counter()
    with (
        scratch_database(server, "oculus_bench", keep=args.keep) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        bench(conn, url, args, database_name(url))
        kept = f" (kept: {url})" if args.keep else ""
        print(f"total {time.perf_counter() - began:.0f} s{kept}")
    return 0


def bench(conn: db.Conn, url: str, args: argparse.Namespace, name: str) -> None:
    end_ms = ms_of(END)
    start_ms = end_ms - args.days * 86_400_000
    m0 = end_ms - round(args.rebuild_hours * 60) * MINUTE_MS  # the cold run's minute
    busy = [end_ms + k * MINUTE_MS for k in range(1, args.runs + 1)]
    until = tick_of(busy[-1])
    price_from = max(start_ms, end_ms - round(args.price_days * 1_440) * MINUTE_MS)
    t0 = time.perf_counter()
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            "COPY followed_user (label, profile_wallet, followed_at, seeded_at) FROM STDIN"
        ) as cp,
    ):
        rng = random.Random(f"wallets:{args.seed}")
        for i in range(args.users):
            followed = at(start_ms - 86_400_000)
            cp.write_row((f"leader{i}", f"0x{rng.getrandbits(160):040x}", followed, at(start_ms)))
    user_ids = [int(r["id"]) for r in conn.execute("SELECT id FROM followed_user ORDER BY id")]
    world = World(args, user_ids, start_ms)
    world.open_books()
    world.run_month(args.orders_per_day)
    for t in busy:
        world.run_busy_minute(
            tick_of(t - MINUTE_MS), tick_of(t) - COPY_DELAY_MS, args.fills_per_run
        )
    world.entries.sort(key=lambda e: (e[0], e[1]))
    world.books.sort()
    keys: list[Key] = [(s, u) for u in user_ids for s in SCOPES[:2]] + [("EXEC_GLOBAL", None)]
    t_sim = time.perf_counter() - t0

    t0 = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            "COPY market (condition_id, question, end_time, active, closed,"
            " accepting_orders, tick_size_micros, min_order_size_micros, fees_enabled,"
            " fee_rate_micros) FROM STDIN"
        ) as cp:
            for n, mk in enumerate(world.markets):
                cp.write_row(
                    (
                        mk.condition_id,
                        f"Market {n}?",
                        at(end_ms + 86_400_000 * 90),
                        True,
                        False,
                        True,
                        TICK,
                        5 * MICROS,
                        mk.fees,
                        40_000 if mk.fees else 0,
                    )
                )
        with cur.copy(
            "COPY outcome_asset (asset_id, condition_id, outcome, outcome_index) FROM STDIN"
        ) as cp:
            for a in world.assets:
                cp.write_row(
                    (a.asset_id, a.market.condition_id, "Yes" if a.yes else "No", 0 if a.yes else 1)
                )
    m0_tick = tick_of(m0)
    n0 = bisect.bisect_right([e[0] for e in world.entries], m0_tick)
    copy_entries(conn, world.entries[:n0])
    top = conn.execute("SELECT max(id) AS id FROM ledger_entry").fetchone()
    assert top is not None and top["id"] == n0, "ledger ids must follow the sorted order"
    b0 = bisect.bisect_right([b[0] for b in world.books], m0_tick)
    copy_books(conn, world, world.books[:b0])
    t_ledger = time.perf_counter() - t0

    t0 = time.perf_counter()
    later_prices: list[tuple[int, str]] = []
    with (
        db.connect(url, autocommit=True) as c_snap,
        db.connect(url, autocommit=True) as c_price,
        c_snap.cursor() as cur_snap,
        c_price.cursor() as cur_price,
        cur_snap.copy(_COPY_SNAPSHOTS) as cp_snap,
        cur_price.copy(_COPY_PRICES) as cp_price,
    ):
        snaps, prices = Writer(cp_snap.write), Writer(cp_price.write)
        made = history(world, keys, m0, price_from, until, snaps, prices, later_prices)
    t_history = time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute(
        "VACUUM (ANALYZE) ledger_entry, portfolio_snapshot, market_price_snapshot,"
        " order_book_snapshot, followed_user, market, outcome_asset"
    )
    t_vacuum = time.perf_counter() - t0

    kinds: dict[str, int] = {}
    for e in world.entries:
        kinds[e[6]] = kinds.get(e[6], 0) + 1
    print(
        f"snapshot: {args.users} users ({len(keys)} portfolios), {args.days} days, seed"
        f" {args.seed}, scratch database {name}"
    )
    print(
        f"  ledger: {len(world.entries):,} entries ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items(), key=lambda x: -x[1]))
        + f") from {world.orders:,} leader orders; {len(world.books):,} decision books;"
        f" {args.markets:,} markets"
    )
    print(
        f"  portfolio_snapshot: {made['snapshot_rows']:,} history rows (minutes before the"
        f" job's first run); market_price_snapshot: {prices.rows + len(later_prices):,} rows"
        f" ({args.price_days:g} days, {made['mean_held']} held assets per 30 s on average)"
    )
    print(
        f"  built in {t_sim + t_ledger + t_history + t_vacuum:.0f} s: simulate {t_sim:.1f} s,"
        f" ledger+books COPY {t_ledger:.1f} s, snapshot+price rows COPY {t_history:.1f} s,"
        f" VACUUM ANALYZE {t_vacuum:.1f} s"
    )

    # The job's own minutes: cold at m0, then one run a minute, then the busy minutes.
    phases = Phases()
    entry_times = [e[0] for e in world.entries]
    book_times = [b[0] for b in world.books]
    price_times = [x[0] for x in later_prices]
    done = (n0, b0, 0)
    light: list[Run] = []
    heavy: list[Run] = []
    cold: Run | None = None
    with phases.installed():
        minutes = list(range(m0, end_ms + 1, MINUTE_MS)) + busy
        for m in minutes:
            tick = tick_of(m)
            n = bisect.bisect_right(entry_times, tick)
            nb = bisect.bisect_right(book_times, tick)
            npx = bisect.bisect_right(price_times, tick)
            copy_entries(conn, world.entries[done[0] : n])
            copy_books(conn, world, world.books[done[1] : nb])
            copy_lines(conn, _COPY_PRICES, [x[1] for x in later_prices[done[2] : npx]])
            done = (n, nb, npx)
            r = timed_take(conn, at(tick), phases)
            if cold is None:
                cold = r
            elif m in busy:
                heavy.append(r)
            else:
                light.append(r)
    assert cold is not None
    held = conn.execute(
        """SELECT count(DISTINCT asset_id) AS assets, count(*) AS open,
                  count(*) FILTER (WHERE portfolio_scope = 'SHADOW_USER') AS shadow,
                  count(*) FILTER (WHERE portfolio_scope = 'EXEC_USER') AS exec_user,
                  count(*) FILTER (WHERE portfolio_scope = 'EXEC_GLOBAL') AS global,
                  (SELECT count(*) FROM portfolio_position) AS stored
           FROM portfolio_position WHERE share_micros <> 0"""
    ).fetchone()
    assert held is not None
    print(
        f"  open at the end: {held['assets']} distinct assets in {held['open']} positions"
        f" (shadow {held['shadow']}, exec per user {held['exec_user']}, global"
        f" {held['global']}); portfolio_position holds {held['stored']:,} rows (closed"
        " ones included)"
    )
    print(f"cold first run (no state, folds the month): {describe(cold)}")
    print_parts([cold])
    if light:
        walls = [r.wall for r in light]
        print(
            f"job's minutes at the month's rate ({len(light)} runs, entries per run median"
            f" {statistics.median(r.entries for r in light):.0f} / max"
            f" {max(r.entries for r in light)}): wall p50 {ms(percentile(walls, 0.5))},"
            f" p95 {ms(percentile(walls, 0.95))}, max {ms(max(walls))}"
        )
        print_parts(light)
    print(f"busy minutes ({len(heavy)} runs, ~{args.fills_per_run} new fills each):")
    for i, r in enumerate(heavy, 1):
        print(f"  run {i}: {describe(r)}")
    walls = [r.wall for r in heavy]
    one_core = [r.cpu + (r.backend or 0.0) for r in heavy]
    p50 = statistics.median(walls)
    print(
        f"  wall p50 {ms(p50)}, max {ms(max(walls))}; python + postgres CPU p50"
        f" {ms(statistics.median(one_core))}, max {ms(max(one_core))}"
        f"  goal <= 1 s: {'met' if max(max(walls), max(one_core)) <= 1.0 else 'NOT met'}"
    )
    print_parts(heavy)

    if m0 < end_ms:
        started = time.perf_counter()
        counts = snapshot.rebuild(conn, at(m0))
        took = time.perf_counter() - started
        first = cold.parts["select entries"] + cold.parts["fold"]
        per_minute = max(0.0, took - first) / len(minutes)
        print(
            f"rebuild since the cold run ({len(minutes)} minutes): {counts['rows']:,} rows,"
            f" {counts['differed']} differed, {took:.1f} s (about {ms(first)} to fold the"
            f" ledger up to the first row, then {ms(per_minute)} per minute: a"
            f" {args.days}-day rebuild would take about"
            f" {per_minute * args.days * 1_440 / 60:,.0f} min, in one transaction)"
        )
    conn.execute("VACUUM (ANALYZE) portfolio_snapshot, portfolio_position, portfolio_state")
    print_sizes(
        conn,
        args.days,
        min(args.price_days, args.days),
        made["mean_held"],
        args.users,
        args.positions,
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"benchmark process peak RSS {rss:,.0f} MB (data generation included)")


if __name__ == "__main__":
    raise SystemExit(main())
