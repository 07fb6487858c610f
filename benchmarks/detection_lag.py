"""Detection lag: from a leader's fill (the sandbox's exact event time) to the
`trade_event` detect time, with the chain listener and with polling only, on the
sandbox in real time with its defaults (chain log delay 2 s, Data API lag 5 s).

Each mode gets a fresh scratch database, follows the sandbox's leaders, runs the real
job processes (`functions.listen`, `functions.poll --loop --interval 1`) for
--seconds, then matches every stored fill to the ground truth and prints p50/p95/max.
Run: python -m benchmarks.detection_lag [--seconds 120] [--leaders 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import run_local
from benchmarks.scratch import percentile, scratch_database
from common.store import db, polling, users
from common.upstream import http
from sandbox import testing


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_mode(name: str, with_listener: bool, args: argparse.Namespace) -> list[float]:
    procs: list[subprocess.Popen[bytes]] = []
    with scratch_database(db.server_url(), "oculus_bench") as url:
        try:
            with testing.running_sandbox(seed=args.seed, leaders=args.leaders) as sb:
                env = {
                    **os.environ,
                    **run_local.demo_environment(sb.port),
                    "DATABASE_URL": url,
                    "OCULUS_LOG_LEVEL": "WARNING",
                }
                s = run_local.demo_settings(sb.port)
                with db.connect(url, autocommit=True) as conn, http.make_upstreams(s) as ups:
                    now = datetime.now(tz=UTC)
                    for i, wallet in enumerate(sb.leaders):
                        users.add(conn, wallet, f"leader{i}", [], now)
                    for user in polling.followed_users(conn):
                        polling.seed_user(conn, ups, user, now)
                start_ms = int(time.time() * 1000)
                commands = [["-m", "functions.poll", "--loop", "--interval", "1"]]
                if with_listener:
                    commands.append(["-m", "functions.listen"])
                for command in commands:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, *command],
                            env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
                time.sleep(args.seconds)
                stop(procs)
                # The sandbox's clock starts at a whole second: measure its skew to ours.
                skew_s = statistics.median(time.time() - sb.now_ms() / 1000 for _ in range(5))
                end_ms = int(time.time() * 1000) - 10_000  # leave time for the slowest path
                truth = {
                    (e["tx_hash"], e["asset"], e["side"], e["shares_micros"]): e["t_ms"]
                    for e in sb.truth(until_ms=end_ms)["events"]
                    if e["type"] == "TRADE" and e["t_ms"] >= start_ms + 3_000
                }
                with db.connect(url) as conn:
                    rows = conn.execute(
                        "SELECT tx_hash, asset_id, side, share_micros, detect_time FROM trade_event"
                    ).fetchall()
            lags = []
            found = {
                (r["tx_hash"], r["asset_id"], r["side"], r["share_micros"]): r["detect_time"]
                for r in rows
            }
            missing = 0
            for key, t_ms in truth.items():
                detected = found.get(key)
                if detected is None:
                    missing += 1
                    continue
                lags.append(detected.timestamp() - skew_s - t_ms / 1000)
            print(
                f"{name:<14} fills {len(lags):4d}  missing {missing}  "
                f"p50 {statistics.median(lags):6.2f} s  p95 {percentile(lags, 0.95):6.2f} s  "
                f"max {max(lags):6.2f} s"
                if lags
                else f"{name}: no fills in the window"
            )
            return lags
        finally:
            stop(procs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.detection_lag", description=__doc__)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--leaders", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    print(
        f"detection lag: sandbox real time, chain delay 2 s, API lag 5 s, "
        f"{args.leaders} leaders, {args.seconds:.0f} s per mode"
    )
    run_mode("with listener", True, args)
    run_mode("polling only", False, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
