"""Detection before the block (SPEC §12): from a leader's match (the sandbox's exact
trade time) to its detection, chain-only vs chain + RTDS, side by side in one run.

The sandbox runs in real time with a 2 s chain delay (Data API lag 5 s); the real job
processes run against a scratch database: `functions.poll --loop --interval 1`,
`functions.listen` and `functions.listen_rtds`. Every event keeps each source's first
sighting (chain_seen_at, api_seen_at, rtds_seen_at), so one run gives both paths:
chain-only = the earlier of the chain's and the Data API's sightings (what detect_time
is without RTDS), chain + RTDS = detect_time. Prints p50/p95/max per path.
`--rtds-delay-ms` delays every RTDS frame (a third party measured ~0.8 s p50 live);
`--rtds-drop-rate` loses a share of RTDS messages (those fills fall back to the chain).

Run: python -m benchmarks.rtds_detect [--seconds 120] [--leaders 12] [--rtds-delay-ms 0]
     [--rtds-drop-rate 0]
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

WARMUP_MS = 3_000  # fills matched before the processes were up are left out


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


def line(name: str, lags: list[float], missing: int) -> str:
    if not lags:
        return f"{name:<14} no fills in the window"
    return (
        f"{name:<14} fills {len(lags):4d}  missing {missing}  "
        f"p50 {statistics.median(lags):6.2f} s  p95 {percentile(lags, 0.95):6.2f} s  "
        f"max {max(lags):6.2f} s"
    )


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    procs: list[subprocess.Popen[bytes]] = []
    with scratch_database(db.server_url(), "oculus_bench") as url:
        try:
            with testing.running_sandbox(
                seed=args.seed, leaders=args.leaders, chain_delay=2.0,
                rtds_delay_ms=args.rtds_delay_ms, rtds_drop_rate=args.rtds_drop_rate,
            ) as sb:  # fmt: skip
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
                for command in (
                    ["-m", "functions.poll", "--loop", "--interval", "1"],
                    ["-m", "functions.listen"],
                    ["-m", "functions.listen_rtds"],
                ):
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
                truth = [
                    ((e["tx_hash"], e["asset"], e["side"], e["shares_micros"]), e["t_ms"])
                    for e in sb.truth(until_ms=end_ms)["events"]
                    if e["type"] == "TRADE" and e["t_ms"] >= start_ms + WARMUP_MS
                ]
                with db.connect(url) as conn:
                    rows = conn.execute(
                        """SELECT tx_hash, asset_id, side, share_micros, detect_time,
                                  chain_seen_at, api_seen_at, rtds_seen_at
                           FROM trade_event WHERE reorg_state IS NULL ORDER BY id"""
                    ).fetchall()
        finally:
            stop(procs)
    found: dict[tuple, list[dict]] = {}
    for r in rows:
        found.setdefault((r["tx_hash"], r["asset_id"], r["side"], r["share_micros"]), []).append(r)
    lags: dict[str, list[float]] = {"chain-only": [], "chain + RTDS": [], "RTDS alone": []}
    missing = {name: 0 for name in lags}
    for key, t_ms in truth:
        hits = found.get(key)
        if not hits:
            for name in lags:
                missing[name] += 1
            continue
        e = hits.pop(0)
        paths = {
            "chain-only": min(
                (t for t in (e["chain_seen_at"], e["api_seen_at"]) if t), default=None
            ),
            "chain + RTDS": e["detect_time"],
            "RTDS alone": e["rtds_seen_at"],
        }
        for name, seen in paths.items():
            if seen is None:
                missing[name] += 1
            else:
                lags[name].append(seen.timestamp() - skew_s - t_ms / 1000)
    for name, values in lags.items():
        print(line(name, values, missing[name]))
    return lags


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rtds_detect", description=__doc__)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--leaders", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rtds-delay-ms", type=int, default=0)
    p.add_argument("--rtds-drop-rate", type=float, default=0.0)
    args = p.parse_args(argv)
    print(
        f"detection after the match: sandbox real time, chain delay 2 s, API lag 5 s, "
        f"RTDS delay {args.rtds_delay_ms} ms, RTDS drop rate {args.rtds_drop_rate}, "
        f"{args.leaders} leaders, {args.seconds:.0f} s, "
        "one run"
    )
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
