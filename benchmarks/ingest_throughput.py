"""Ingest throughput: a replay of N Data API fills (default 100,000) through the same
path `poll` uses — ingest.store_api_fills in page-sized batches, then the shadow ledger
— into a scratch database on the configured Postgres. Prints events per second for
the first pass, for a replay of the same rows (all duplicates), and for the shadow
ledger. Run: python -m benchmarks.ingest_throughput [--events 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from benchmarks.scratch import scratch_database
from common.store import db, ingest, shadow


def make_fills(n: int, users: list[tuple[int, str]], seed: int = 1) -> list[ingest.ApiFill]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    assets = [str(rng.getrandbits(250)) for _ in range(200)]
    fills = []
    for i in range(n):
        user_id, wallet = users[i % len(users)]
        fills.append(
            ingest.ApiFill(
                followed_user_id=user_id,
                wallet=wallet,
                tx_hash=f"0x{rng.getrandbits(256):064x}",
                asset_id=rng.choice(assets),
                condition_id="0x" + "c" * 64,
                side="BUY" if rng.random() < 0.6 else "SELL",
                price_micros=rng.randrange(10_000, 990_000, 1_000),
                share_micros=rng.randrange(1_000_000, 2_000_000_000),
                event_time=start + timedelta(milliseconds=i * 250),
            )
        )
    return fills


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest_throughput", description=__doc__)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=500, help="rows per store call (one API page)")
    p.add_argument("--users", type=int, default=50)
    args = p.parse_args(argv)
    with scratch_database(db.server_url(), "oculus_bench") as url:
        with db.connect(url, autocommit=True) as conn:
            seeded = datetime(2026, 10, 1, tzinfo=UTC)
            users = []
            for i in range(args.users):
                wallet = f"0x{i + 1:040x}"
                row = conn.execute(
                    "INSERT INTO followed_user (label, profile_wallet, followed_at, seeded_at)"
                    " VALUES (%(l)s, %(w)s, %(t)s, %(t)s) RETURNING id",
                    {"l": f"u{i}", "w": wallet, "t": seeded},
                ).fetchone()
                assert row is not None
                users.append((int(row["id"]), wallet))
            fills = make_fills(args.events, users)
            now = datetime.now(tz=UTC)

            def store_all() -> float:
                started = time.perf_counter()
                for i in range(0, len(fills), args.batch):
                    ingest.store_api_fills(conn, fills[i : i + args.batch], now)
                return time.perf_counter() - started

            first = store_all()
            replay = store_all()
            started = time.perf_counter()
            applied = shadow.apply_pending(
                conn, now, timedelta(0), timedelta(days=60)
            )  # a replay: no second source to wait for
            ledger = time.perf_counter() - started
            stored = conn.execute("SELECT count(*) AS n FROM trade_event").fetchone()
            size = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
        assert stored is not None and size is not None
        n = args.events
        print(f"ingest throughput: {n} fills, {args.users} users, batches of {args.batch}")
        print(f"  first pass   {first:7.2f} s  {n / first:9.0f} events/s  (stored {stored['n']})")
        print(f"  replay       {replay:7.2f} s  {n / replay:9.0f} events/s  (all duplicates)")
        print(
            f"  shadow       {ledger:7.2f} s  {applied.get('trades_applied', 0) / ledger:9.0f}"
            f" events/s  ({applied.get('entries', 0)} ledger entries)"
        )
        total = first + ledger
        print(f"  end to end   {total:7.2f} s  {n / total:9.0f} events/s (first pass + shadow)")
        print(f"  database size {size['b'] / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
