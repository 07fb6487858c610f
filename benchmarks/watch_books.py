"""Book watcher (issue 20): CPU and memory of keeping --assets books from a market-channel
feed of --rate messages a second, in this process (the watcher's own: its imports, its
books and their history), for --seconds. Goals: ≤ 10 % of one core, ≤ 60 MB RSS.

The feed is the real wire format, made up here (seeded): one `book` per asset (20
levels a side), then `price_change` frames of 1-3 entries at --rate a second on random
assets, each entry the new total at a price near the top of the book, with the best
bid/ask it leaves; every 30 s of feed a fresh `book` of 10 % of the assets (the server
re-sends books after trades). Frames are fed to `Watcher.handle` at their pace, as a
socket would hand them over; the network's own cost is not in the figures.

Run: python -m benchmarks.watch_books [--assets 200] [--rate 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import time
from typing import Any

from common.domain import live_book
from common.runtime import settings
from common.upstream import clob
from functions import watch_books

GOALS = {"cpu_pct": 10.0, "rss_mb": 60.0}
MARKET = "0x" + "ab" * 32


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def book_frame(asset: str, mid: int, ms: int, rng: random.Random) -> dict[str, Any]:
    bids = [{"price": f"{(mid - i) / 100:.2f}", "size": f"{rng.uniform(5, 500):.2f}"}
            for i in range(20, 0, -1)]  # fmt: skip
    asks = [{"price": f"{(mid + i) / 100:.2f}", "size": f"{rng.uniform(5, 500):.2f}"}
            for i in range(20, 0, -1)]  # fmt: skip
    book = {"market": MARKET, "asset_id": asset, "timestamp": str(ms), "hash": "",
            "bids": bids, "asks": asks, "tick_size": "0.01", "event_type": "book",
            "last_trade_price": ""}  # fmt: skip
    book["hash"] = clob.book_hash(book)
    return book


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.watch_books", description=__doc__)
    p.add_argument("--assets", type=int, default=200)
    p.add_argument("--rate", type=float, default=50.0, help="messages a second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    s = settings.Settings()
    w = watch_books.Watcher(s, lambda a: None)
    assets = [str(10**70 + i) for i in range(args.assets)]
    w.want(set(assets))
    mids = {a: rng.randint(30, 70) for a in assets}
    start_ms = int(time.time() * 1000)
    first = [book_frame(a, mids[a], start_ms, rng) for a in assets]
    w.handle(json.dumps(first))
    truth = {}  # the feed's side of each book (its cost is in the figures: conservative)
    for b in first:
        ob = clob.BookMessage.model_validate(b).normalized()
        truth[b["asset_id"]] = live_book.LiveBook(b["asset_id"], keep_ms=0)
        truth[b["asset_id"]].snapshot(start_ms, list(ob.bids), list(ob.asks))
    rss0 = rss_mb()
    cpu0, wall0 = time.process_time(), time.monotonic()
    sent, next_books, peak = 0, 30.0, rss0
    while (elapsed := time.monotonic() - wall0) < args.seconds:
        due = int(elapsed * args.rate)
        while sent < due:
            ms = start_ms + int(elapsed * 1000)
            entries = []
            for _ in range(rng.randint(1, 3)):
                a = rng.choice(assets)
                book = truth[a]
                side = rng.choice(("BUY", "SELL"))
                offset = rng.randint(1, 5)
                price = mids[a] - offset if side == "BUY" else mids[a] + offset
                size = 0.0 if rng.random() < 0.2 else rng.uniform(5, 500)
                micros = (price * 10_000, round(size * 1e6))
                book.change(ms, side, *micros)  # the feed's own book: the best it states
                lv = book.levels()
                bid = f"{(lv.best_bid or 0) / 1e6:.2f}" if lv.bids else ""
                ask = f"{(lv.best_ask or 0) / 1e6:.2f}" if lv.asks else ""
                entries.append({"asset_id": a, "price": f"{price / 100:.2f}",
                                "size": f"{size:.2f}", "side": side, "hash": "",
                                "best_bid": bid, "best_ask": ask})  # fmt: skip
            frame = {"market": MARKET, "price_changes": entries, "timestamp": str(ms),
                     "event_type": "price_change"}  # fmt: skip
            w.handle(json.dumps(frame))
            sent += 1
        if elapsed >= next_books:
            ms = start_ms + int(elapsed * 1000)
            again = [book_frame(a, mids[a], ms, rng)
                     for a in rng.sample(assets, max(1, args.assets // 10))]  # fmt: skip
            w.handle(json.dumps(again))
            for b in again:
                ob = clob.BookMessage.model_validate(b).normalized()
                truth[b["asset_id"]].snapshot(ms, list(ob.bids), list(ob.asks))
            next_books += 30.0
        peak = max(peak, rss_mb())
        time.sleep(0.02)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pct = 100 * cpu / wall
    c = w.counts
    print(f"watcher: {args.assets} assets, {sent} messages in {wall:.0f} s "
          f"({sent / wall:.0f}/s), {c['changes']:,} changes applied, "
          f"{c['best_mismatch']} best mismatches, {c['refused']} refused")  # fmt: skip
    print(f"  CPU {pct:.1f} % of one core (goal ≤ {GOALS['cpu_pct']:.0f} %: "
          f"{'met' if pct <= GOALS['cpu_pct'] else 'NOT met'})")  # fmt: skip
    print(f"  RSS {rss0:.1f} MB after the first books, peak {peak:.1f} MB (max RSS "
          f"{maxrss:.1f}; goal ≤ {GOALS['rss_mb']:.0f} MB: "
          f"{'met' if max(peak, maxrss) <= GOALS['rss_mb'] else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
