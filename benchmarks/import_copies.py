"""CSV import of real copy fills (issue 17): rows a second through the operator's own
command (`python -m functions.import_copies FILE --copy-of LEADER`, a subprocess, so
the interpreter's start is counted), first into an empty table, then the same file again
(every row already present), in a scratch database (dropped after unless --keep).

The file: --rows rows (ISO and unix timestamps mixed, a BOM, CRLF line ends), 1 in 200
of them bad (quarantined by line), and the pairing pass the score job then runs over
them (no leader group here: every fill is looked at and left unpaired).

Run: python -m benchmarks.import_copies [--rows 200000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.scratch import scratch_database
from common.runtime import jobs
from common.store import db, real_copies, users

GOAL_ROWS_S = 20_000
START = datetime(2026, 11, 1, tzinfo=UTC)


def write_file(path: Path, rows: int, rng: random.Random) -> int:
    """Writes the CSV; returns how many rows are bad."""
    bad = 0
    with path.open("wb") as f:
        f.write(b"\xef\xbb\xbftimestamp,tx_hash,asset,side,price,size,fee\r\n")
        for i in range(rows):
            at = START + timedelta(seconds=i * 7)
            when = at.isoformat() if i % 2 else str(int(at.timestamp()))
            tx = f"0x{rng.getrandbits(256):064x}"
            asset = str(rng.getrandbits(250))
            price = f"0.{rng.randrange(1, 99):02d}"
            if i % 200 == 199:
                price, bad = "1.7", bad + 1
            side = "BUY" if rng.random() < 0.6 else "SELL"
            size = f"{rng.randrange(1, 5_000)}.{rng.randrange(100):02d}"
            f.write(
                f"{when},{tx},{asset},{side},{price},{size},0.{rng.randrange(100):02d}\r\n".encode()
            )
    return bad


def timed_import(url: str, path: Path, leader: int) -> tuple[float, str]:
    env = {**os.environ, "DATABASE_URL": url}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "functions.import_copies", str(path), "--copy-of", str(leader)],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return time.perf_counter() - t0, done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.import_copies", description=__doc__)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--database-url", help="the server (default: the embedded one)")
    args = p.parse_args(argv)
    with (
        scratch_database(args.database_url or db.server_url(), "bench_import", args.keep) as url,
        db.connect(url, autocommit=True) as conn,
        tempfile.TemporaryDirectory() as tmp,
    ):
        leader = users.add(conn, "0x" + "42" * 20, "leader", [], jobs.utcnow())
        path = Path(tmp) / "copies.csv"
        bad = write_file(path, args.rows, random.Random(args.seed))
        size_mb = path.stat().st_size / 1e6
        print(f"import_copies: {args.rows:,} rows ({bad:,} bad), {size_mb:.1f} MB, BOM + CRLF")
        ok = True
        for label in ("first import", "same file again"):
            took, summary = timed_import(url, path, leader)
            rate = args.rows / took
            ok = ok and rate >= GOAL_ROWS_S
            print(f"  {label}: {took:.2f} s wall, {rate:,.0f} rows/s (goal ≥ {GOAL_ROWS_S:,})")
            print(f"    {summary}")
        stored = conn.execute("SELECT count(*) AS n FROM real_copy_fill").fetchone()
        kept = conn.execute(
            "SELECT count(*) AS n FROM quarantine WHERE source = 'import_copies'"
        ).fetchone()
        n_stored, n_kept = (stored or {"n": 0})["n"], (kept or {"n": 0})["n"]
        print(f"  stored {n_stored:,} fills; quarantine rows {n_kept:,}")
        t0 = time.perf_counter()
        looked, _ = real_copies.pair(conn, jobs.utcnow())
        took = time.perf_counter() - t0
        print(f"  the score job's first pairing pass: {looked:,} fills in {took:.2f} s")
        print("  goals:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
