"""The month of data the benchmarks share (fixed seed, built with COPY in a scratch
database): `build_month` simulates it and loads it, `print_month` says what it holds,
`add_page_inputs` adds what the dashboard reads (trade events, copy groups and attempts,
job runs, heartbeats, ...).

Data set:
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
- `World.groups`: every leader order (one copy group, decided by both exec portfolios),
  for benchmarks that also want trade events and copy attempts.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from common.domain import money, portfolio, reasons, records
from common.store import db

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


@dataclass(frozen=True)
class Group:
    """One leader order: its fills (shadow refs trade:<first>..) and the copy group both
    exec portfolios decided on (exec refs grp:<order>:L<level>) from its stored book."""

    order: int
    t: int  # ms of the leader's fills
    leader: int  # index in World.leaders
    asset: int  # index in World.assets
    side: str
    shares: int
    notional: int
    first_fill: int
    fill_count: int
    fetched: int  # ms the decision book was fetched
    mid: int
    half_spread: int


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
        self.groups: list[Group] = []
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
        first_fill = self.fills + 1
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
        self.groups.append(
            Group(
                self.orders, t, i, a, side, shares, their_notional, first_fill, k, fetched, emid, hs
            )
        )
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


COPY_ENTRIES = """COPY ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id,
entry_type, share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time)
FROM STDIN"""
COPY_BOOKS = """COPY order_book_snapshot (asset_id, condition_id, book_hash, book_time,
fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros,
tick_size_micros, min_order_size_micros, neg_risk, last_trade_price_micros) FROM STDIN"""
COPY_PRICES = """COPY market_price_snapshot (asset_id, bucket, mid_micros, price_source,
observed_at) FROM STDIN"""
COPY_SNAPSHOTS = """COPY portfolio_snapshot (portfolio_scope, followed_user_id, bucket,
equity_micros, cash_micros, exposure_micros, unrealized_pnl_micros, realized_pnl_micros,
fees_micros, open_positions, last_ledger_entry_id, as_of, contributed_micros) FROM STDIN"""


def copy_entries(conn: db.Conn, entries: list[Entry]) -> None:
    if not entries:
        return
    with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_ENTRIES) as cp:
        for t, _, scope, uid, cond, asset, kind, dq, cash, price, ref in entries:
            cp.write_row((scope, uid, cond, asset, kind, dq, cash, price, ref, at(t)))


def copy_books(conn: db.Conn, world: World, books: list[Book]) -> None:
    if not books:
        return
    with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_BOOKS) as cp:
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
    books = {k: portfolio.Portfolio(*k) for k in keys}
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
            book.apply(records.LedgerEntry(e[2], e[3], e[6], asset, e[4], dq, e[8], e[9]))
            after = book.positions[asset].shares if asset in book.positions else 0
            if asset is not None and bool(before) != bool(after):  # opened or closed
                holders[asset] = holders.get(asset, 0) + (1 if after else -1)
                if not holders[asset]:
                    del holders[asset]
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


@dataclass
class Month:
    """The loaded month: the world that made it, the ledger entries and books loaded so
    far (the first `entries_loaded` / `books_loaded`, in time order), the price rows
    observed after the cut (not loaded yet) and how long each step took."""

    world: World
    user_ids: list[int]
    keys: list[Key]
    entries_loaded: int
    books_loaded: int
    later_prices: list[tuple[int, str]]
    snapshot_rows: int
    price_rows: int
    mean_held: int
    seconds: dict[str, float]


def build_month(
    conn: db.Conn,
    url: str,
    args: argparse.Namespace,
    *,
    cut_ms: int,
    until_ms: int,
    busy: Sequence[int] = (),
) -> Month:
    """Simulates the month ending at END (plus `busy` minutes of about
    args.fills_per_run fills each) and loads it: users, markets, the ledger entries and
    decision books up to the snapshot job's run in minute `cut_ms`, one portfolio_snapshot
    row per portfolio per minute before `cut_ms`, and the 30 s marks up to `until_ms`
    (those observed after the cut are returned, not loaded). Returns what it made."""
    end_ms = ms_of(END)
    start_ms = end_ms - args.days * 86_400_000
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
    cut_tick = tick_of(cut_ms)
    n0 = bisect.bisect_right([e[0] for e in world.entries], cut_tick)
    copy_entries(conn, world.entries[:n0])
    top = conn.execute("SELECT max(id) AS id FROM ledger_entry").fetchone()
    assert top is not None and top["id"] == n0, "ledger ids must follow the sorted order"
    b0 = bisect.bisect_right([b[0] for b in world.books], cut_tick)
    copy_books(conn, world, world.books[:b0])
    t_ledger = time.perf_counter() - t0

    t0 = time.perf_counter()
    later_prices: list[tuple[int, str]] = []
    with (
        db.connect(url, autocommit=True) as c_snap,
        db.connect(url, autocommit=True) as c_price,
        c_snap.cursor() as cur_snap,
        c_price.cursor() as cur_price,
        cur_snap.copy(COPY_SNAPSHOTS) as cp_snap,
        cur_price.copy(COPY_PRICES) as cp_price,
    ):
        snaps, prices = Writer(cp_snap.write), Writer(cp_price.write)
        made = history(world, keys, cut_ms, price_from, until_ms, snaps, prices, later_prices)
    t_history = time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute(
        "VACUUM (ANALYZE) ledger_entry, portfolio_snapshot, market_price_snapshot,"
        " order_book_snapshot, followed_user, market, outcome_asset"
    )
    t_vacuum = time.perf_counter() - t0
    return Month(
        world,
        user_ids,
        keys,
        n0,
        b0,
        later_prices,
        made["snapshot_rows"],
        prices.rows,
        made["mean_held"],
        {"simulate": t_sim, "ledger": t_ledger, "history": t_history, "vacuum": t_vacuum},
    )


def print_month(month: Month, args: argparse.Namespace, title: str, name: str) -> None:
    """Prints what the month holds and how long it took to build (four lines)."""
    world, t = month.world, month.seconds
    kinds: dict[str, int] = {}
    for e in world.entries:
        kinds[e[6]] = kinds.get(e[6], 0) + 1
    print(
        f"{title}: {args.users} users ({len(month.keys)} portfolios), {args.days} days, seed"
        f" {args.seed}, scratch database {name}"
    )
    print(
        f"  ledger: {len(world.entries):,} entries ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items(), key=lambda x: -x[1]))
        + f") from {world.orders:,} leader orders; {len(world.books):,} decision books;"
        f" {args.markets:,} markets"
    )
    print(
        f"  portfolio_snapshot: {month.snapshot_rows:,} history rows (minutes before the"
        f" job's first run); market_price_snapshot:"
        f" {month.price_rows + len(month.later_prices):,} rows ({args.price_days:g} days,"
        f" {month.mean_held} held assets per 30 s on average)"
    )
    print(
        f"  built in {sum(t.values()):.0f} s: simulate {t['simulate']:.1f} s,"
        f" ledger+books COPY {t['ledger']:.1f} s, snapshot+price rows COPY"
        f" {t['history']:.1f} s, VACUUM ANALYZE {t['vacuum']:.1f} s"
    )


# What the site's pages read beyond the ledger and the snapshots (add_page_inputs).
BUY_SKIPS = (
    ("SPREAD_TOO_WIDE", 30),
    ("INSUFFICIENT_DEPTH", 20),
    ("PRICE_WORSE_THAN_THEIRS", 15),
    ("CHASE_VS_MID", 8),
    ("RISK_CAP_MARKET", 8),
    ("INSUFFICIENT_CASH", 5),
    ("BELOW_MIN_NOTIONAL", 5),
    ("MARKET_CLOSING", 4),
    ("SIGNAL_TOO_OLD", 3),
)
assert all(code in reasons.REASONS for code, _ in BUY_SKIPS), "unknown reason code"
CHAIN_SHARE = 0.85  # of orders first seen on chain; the rest by the Data API poll
PARTIAL_SHARE = 0.06  # of executed copies that filled only part of the target
# (job, seconds between runs, share of runs that leave a row: idle loop runs leave none)
JOB_CADENCE = (
    ("snapshot", 60, 1.0),
    ("price", 30, 1.0),
    ("rollup", 60, 0.9),
    ("reconcile", 60, 0.5),
    ("poll", 5, 0.2),
    ("simulate", 30, 1.0),
)
COPY_GROUPS = """COPY copy_group (group_key, followed_user_id, action, condition_id, asset_id,
window_start, window_end, first_detect_time, close_time, decide_at, state, event_count,
their_share_micros, their_notional_micros, their_price_micros, order_book_snapshot_id,
closed_at, done_at) FROM STDIN"""
COPY_TRADES = """COPY trade_event (source, source_id, followed_user_id, wallet, condition_id,
asset_id, side, role, price_micros, share_micros, usdc_notional_micros, tx_hash, log_index,
block_number, api_source_id, event_time, detect_time, confirmed_at, shadow_applied_at,
shadow_state, copy_group_id, group_state) FROM STDIN"""
COPY_ATTEMPTS = """COPY copy_attempt (portfolio_scope, followed_user_id, group_key, action,
condition_id, asset_id, guardrail_config_id, copy_sizing_config_id, their_notional_micros,
their_price_micros, target_notional_micros, target_share_micros, decision, reason_codes,
best_bid_micros, best_ask_micros, mid_micros, vwap_micros, filled_share_micros,
filled_notional_micros, filled_ratio_micros, fee_micros, group_close_time, decision_time,
order_book_snapshot_id, copy_group_id, depth_in_band_micros) FROM STDIN"""


def tx_hash(*parts: object) -> str:
    """A 0x-prefixed 64-hex hash of `parts` (stable across runs)."""
    return "0x" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def add_page_inputs(conn: db.Conn, month: Month, args: argparse.Namespace) -> dict[str, int]:
    """Adds what the dashboard reads to a loaded month (all of whose entries and books
    are loaded): proxy wallets, market metadata, one copy group per leader order with its
    fills as trade events and both exec portfolios' attempts (EXECUTE where the ledger
    has the copy's fills, else SKIP with reasons), the exec ledger entries linked to
    their attempts, a few MERGE/REDEEM activities, job runs at the jobs' cadence,
    heartbeats, failed items, quarantined payloads, audit rows and per-user config
    overrides. Returns row counts."""
    world, rng = month.world, random.Random(f"pages:{args.seed}")
    wallets = {
        int(r["id"]): r["profile_wallet"]
        for r in conn.execute("SELECT id, profile_wallet FROM followed_user")
    }
    conn.execute(
        """INSERT INTO followed_user_proxy_wallet (followed_user_id, wallet)
           SELECT id, profile_wallet FROM followed_user"""
    )
    start = at(world.start_ms)
    conn.execute(
        """UPDATE market SET slug = 'market-' || substr(condition_id, 3, 10),
               event_slug = 'event-' || substr(condition_id, 3, 6),
               gamma_id = substr(condition_id, 3, 12), metadata_fetched_at = %(t)s,
               first_seen_at = %(t)s""",
        {"t": start},
    )
    book_ids = {(b[0], b[1]): n for n, b in enumerate(world.books, 1)}
    counts = _copy_trades(conn, world, wallets, book_ids, rng)
    # Exec ledger entries name their attempt: EXEC_USER's is 2 × order - 1, EXEC_GLOBAL's
    # 2 × order (the attempts were copied in that order).
    linked = conn.execute(
        """UPDATE ledger_entry SET copy_attempt_id = split_part(ref_id, ':', 2)::bigint * 2
               - (portfolio_scope = 'EXEC_USER')::int
           WHERE ref_id LIKE 'grp:%%' AND portfolio_scope <> 'SHADOW_USER'"""
    ).rowcount
    counts["ledger_entries_linked"] = linked
    counts |= _operations(conn, world, wallets, rng)
    return counts


def _copy_trades(
    conn: db.Conn,
    world: World,
    wallets: dict[int, str],
    book_ids: dict[tuple[int, int], int],
    rng: random.Random,
) -> dict[str, int]:
    """COPYs copy_group, trade_event and copy_attempt rows for every leader order."""
    fills: dict[int, Entry] = {}
    execs: dict[tuple[str, int], list[int]] = {}  # (scope, order) -> [shares, notional, fee]
    for e in world.entries:
        ref = e[10]
        if e[2] == "SHADOW_USER" and e[6] == "TRADE_FILL" and ref.startswith("trade:"):
            fills[int(ref[6:])] = e
        elif ref.startswith("grp:"):
            got = execs.setdefault((e[2], int(ref.split(":")[1])), [0, 0, 0])
            if e[6] == "TRADE_FILL":
                got[0] += abs(e[7])
                got[1] += abs(e[8])
            else:
                got[2] -= e[8]
    counts = {"copy_group": 0, "trade_event": 0, "copy_attempt": 0}
    lag: dict[int, tuple[str, int]] = {}
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(COPY_GROUPS) as cp:
            for g in world.groups:
                source = "CHAIN" if rng.random() < CHAIN_SHARE else "DATA_API"
                ms = (
                    rng.randrange(700, 3_000) if source == "CHAIN" else rng.randrange(3_000, 30_000)
                )
                lag[g.order] = (source, ms)
                a, uid = world.assets[g.asset], world.leaders[g.leader].user_id
                seen = g.t + ms
                cp.write_row(
                    (
                        f"grp:{g.order}",
                        uid,
                        g.side,
                        a.market.condition_id,
                        a.asset_id,
                        at(g.t),
                        at(g.t + 2_000),
                        at(seen),
                        at(seen + 2_000),
                        at(seen + 2_750),
                        "DONE",
                        g.fill_count,
                        g.shares,
                        g.notional,
                        g.notional * MICROS // g.shares,
                        book_ids.get((g.fetched, g.asset)),
                        at(seen + 2_000),
                        at(max(seen + 2_750, g.fetched + 50)),
                    )
                )
                counts["copy_group"] += 1
        order_of = {
            f: g for g in world.groups for f in range(g.first_fill, g.first_fill + g.fill_count)
        }
        with cur.copy(COPY_TRADES) as cp:
            for n, e in sorted(fills.items(), key=lambda kv: (kv[1][0], kv[1][1])):
                g = order_of[n]
                source, ms = lag[g.order]
                tx, log = tx_hash("tx", g.order), n - g.first_fill
                detected = at(e[0] + ms)
                api_id = f"api:{n}"
                cp.write_row(
                    (
                        source,
                        f"{tx}:{log}" if source == "CHAIN" else api_id,
                        e[3],
                        wallets[e[3] or 0],
                        e[4],
                        e[5],
                        "BUY" if e[7] > 0 else "SELL",
                        "TAKER",
                        e[9],
                        abs(e[7]),
                        abs(e[8]),
                        tx,
                        log,
                        60_000_000 + e[0] // 2_000,
                        api_id,
                        at(e[0]),
                        detected,
                        at(e[0] + ms + 25_000) if source == "CHAIN" else None,
                        detected,
                        "APPLIED",
                        g.order,
                        "GROUPED",
                    )
                )
                counts["trade_event"] += 1
        with cur.copy(COPY_ATTEMPTS) as cp:
            for g in world.groups:
                for scope in ("EXEC_USER", "EXEC_GLOBAL"):
                    cp.write_row(
                        _attempt(world, g, scope, execs.get((scope, g.order)), book_ids, rng)
                    )
                    counts["copy_attempt"] += 1
    top = conn.execute("SELECT max(id) AS id FROM copy_attempt").fetchone()
    assert top is not None and top["id"] == 2 * len(world.groups), "attempt ids follow orders"
    return counts


def _attempt(
    world: World,
    g: Group,
    scope: str,
    filled: list[int] | None,
    book_ids: dict[tuple[int, int], int],
    rng: random.Random,
) -> tuple[Any, ...]:
    """One copy_attempt row: EXECUTE with the ledger's fills, else SKIP with reasons."""
    a, uid = world.assets[g.asset], world.leaders[g.leader].user_id
    their_price = g.notional * MICROS // g.shares
    target = min(MAX_COPY, max(MIN_COPY, g.notional // COPY_SHARE))
    decided = max(g.t + COPY_DELAY_MS, g.fetched + 30)
    codes: list[str] = []
    vwap: int | None = None
    ratio = 0
    if filled and filled[0]:
        shares, notional, fee = filled
        vwap = notional * MICROS // shares
        ratio = MICROS if rng.random() >= PARTIAL_SHARE else rng.randrange(400_000, 950_000)
        if g.side == "SELL":
            target = notional
    else:
        shares = notional = fee = 0
        if g.side == "SELL" and rng.random() < 0.7:
            codes = ["NO_POSITION"]
        else:
            names, weights = zip(*BUY_SKIPS, strict=True)
            codes = [rng.choices(names, weights)[0]]
            if codes[0] == "SPREAD_TOO_WIDE" and rng.random() < 0.3:
                codes.append("INSUFFICIENT_DEPTH")
            if scope == "EXEC_GLOBAL" and codes[0] == "RISK_CAP_MARKET" and rng.random() < 0.5:
                codes = ["RISK_CAP_USER", "RISK_CAP_GLOBAL"]
    price = g.mid + (g.half_spread if g.side == "BUY" else -g.half_spread)
    return (
        scope,
        uid,
        f"grp:{g.order}",
        g.side,
        a.market.condition_id,
        a.asset_id,
        1,
        1,
        g.notional,
        their_price,
        target,
        shares or target * MICROS // price // SHARE_STEP * SHARE_STEP,
        "EXECUTE" if not codes else "SKIP",
        codes,
        g.mid - g.half_spread,
        g.mid + g.half_spread,
        g.mid,
        vwap,
        shares,
        notional,
        ratio,
        fee,
        at(decided - 750),
        at(decided),
        book_ids.get((g.fetched, g.asset)),
        g.order,
        round(math.exp(rng.uniform(math.log(200), math.log(20_000)))) * MICROS,
    )


def _operations(
    conn: db.Conn, world: World, wallets: dict[int, str], rng: random.Random
) -> dict[str, int]:
    """Activities, job runs, heartbeats, failed items, quarantine, audit rows, overrides."""
    users = sorted(wallets)
    end = world.end_ms
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            "COPY activity_event (source, source_id, followed_user_id, wallet, activity_type,"
            " condition_id, asset_id, share_micros, usdc_micros, tx_hash, event_time,"
            " detect_time, shadow_applied_at, shadow_state, group_state) FROM STDIN"
        ) as cp:
            activities = 0
            for uid in users:
                for k in range(5):
                    mk = rng.choice(world.markets)
                    t = rng.randrange(world.start_ms, end)
                    kind = "REDEEM" if k % 2 else "MERGE"
                    q = rng.randrange(10, 500) * MICROS
                    cp.write_row(
                        (
                            "DATA_API",
                            f"act:{uid}:{k}",
                            uid,
                            wallets[uid],
                            kind,
                            mk.condition_id,
                            None,
                            q,
                            q,
                            tx_hash("act", uid, k),
                            at(t),
                            at(t + 8_000),
                            at(t + 8_000),
                            "APPLIED",
                            "NOT_COPIED" if kind == "REDEEM" else "HISTORY",
                        )
                    )
                    activities += 1
        runs = 0
        with cur.copy(
            "COPY job_run (job, started_at, finished_at, status, items, error, pid, host)"
            " FROM STDIN"
        ) as cp:
            for job, every, kept in JOB_CADENCE:
                for t in range(world.start_ms, end, every * 1_000):
                    if rng.random() >= kept:
                        continue
                    failed = rng.random() < 0.002
                    took = rng.randrange(20, 900)
                    cp.write_row(
                        (
                            job,
                            at(t),
                            at(t + took),
                            "FAILED" if failed else "OK",
                            0 if failed else rng.randrange(1, 200),
                            "DatabaseUnavailable: timeout" if failed else None,
                            4_000 + len(job),
                            "oculus",
                        )
                    )
                    runs += 1
    now = at(end)
    upstreams = {
        "clob": {"requests": 120_000, "http_429": 12, "http_5xx": 3, "transport_errors": 5},
        "data_api": {"requests": 90_000, "http_429": 40, "http_5xx": 1},
    }
    for process, info in (
        ("listen", {"connected": True, "upstreams": {"rpc": {"requests": 5_000}}}),
        ("simulate", {"upstreams": upstreams}),
        ("site_builder", {"pages": 5, "left": 0}),
    ):
        conn.execute(
            """INSERT INTO process_heartbeat (process, pid, host, started_at, beat_at, info)
               VALUES (%(p)s, 4242, 'oculus', %(s)s, %(t)s, %(i)s)""",
            {"p": process, "s": at(world.start_ms), "t": now, "i": Jsonb(info)},
        )
    for k in range(3):
        conn.execute(
            """INSERT INTO failed_item (stage, item_key, payload, error, attempts,
                   first_failed_at, last_failed_at)
               VALUES ('simulate', %(k)s, '{}', 'NO_BOOK after retries', 3, %(t)s, %(t)s)""",
            {"k": f"grp:{k + 1}", "t": at(end - (k + 1) * 3_600_000)},
        )
        conn.execute(
            """INSERT INTO quarantine (source, reason, payload, payload_sha256, first_seen_at,
                   last_seen_at) VALUES ('data_api', 'price out of range', %(p)s, %(h)s, %(t)s,
                   %(t)s)""",
            {"p": f'{{"price": "1.{k}"}}', "h": tx_hash("q", k)[2:], "t": now},
        )
    for k, uid in enumerate(users[:3]):
        conn.execute(
            """INSERT INTO guardrail_config (scope, followed_user_id, version, max_spread_micros)
               VALUES ('USER', %(u)s, 1, %(v)s)""",
            {"u": uid, "v": 30_000 + 10_000 * k},
        )
        conn.execute(
            """INSERT INTO copy_sizing_config (scope, followed_user_id, version, copy_pct_bps)
               VALUES ('USER', %(u)s, 1, 200)""",
            {"u": uid},
        )
        conn.execute(
            """INSERT INTO audit_log (at, actor, action, target_type, target_id, before, after)
               VALUES (%(t)s, 'operator', 'config.user', 'followed_user', %(u)s, '{}', %(a)s)""",
            {"t": at(end - 86_400_000 * (k + 1)), "u": str(uid), "a": Jsonb({"copy_pct_bps": 200})},
        )
    return {"activity_event": activities, "job_run": runs}
