"""Loopback load on the sandbox: a few concurrent clients, a mix of the routes the jobs
use, for a bounded time. Prints requests/s and p50/p95/p99 latency per endpoint.

    python -m benchmarks.sandbox_throughput [--seconds 10] [--clients 4]
"""

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import defaultdict

import httpx

from sandbox import testing


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _client(
    sb: testing.RunningSandbox,
    tokens: list[str],
    seconds: float,
    seed: int,
    samples: dict[str, list[float]],
    failures: dict[str, int],
) -> None:
    r = random.Random(seed)
    wallets = sb.leaders
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=5) as client:
        while time.perf_counter() < deadline:
            kind = r.choice(["book", "book", "trades", "activity", "midpoints", "markets"])
            if kind == "book":
                call = client.get(sb.clob_url + "/book", params={"token_id": r.choice(tokens)})
            elif kind == "trades":
                params = {"user": r.choice(wallets), "takerOnly": "false", "limit": 100}
                call = client.get(sb.data_api_url + "/trades", params=params)
            elif kind == "activity":
                params = {"user": r.choice(wallets), "limit": 100, "sortDirection": "ASC"}
                call = client.get(sb.data_api_url + "/activity", params=params)
            elif kind == "midpoints":
                body = [{"token_id": t} for t in r.sample(tokens, k=min(6, len(tokens)))]
                call = client.post(sb.clob_url + "/midpoints", json=body)
            else:
                call = client.get(sb.gamma_url + "/markets", params={"closed": "false"})
            started = time.perf_counter()
            try:
                response = await call
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            samples[kind].append((time.perf_counter() - started) * 1000)
            if not ok:
                failures[kind] += 1


async def _run(
    sb: testing.RunningSandbox, seconds: float, clients: int
) -> tuple[dict[str, list[float]], dict[str, int], float]:
    markets = httpx.get(sb.gamma_url + "/markets", params={"closed": "false"}).json()
    tokens = [t for m in markets for t in json.loads(m["clobTokenIds"])]
    samples: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    started = time.perf_counter()
    workers = [_client(sb, tokens, seconds, i, samples, failures) for i in range(clients)]
    await asyncio.wait_for(asyncio.gather(*workers), timeout=seconds + 15)
    return samples, failures, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    with testing.running_sandbox(seed=7, anchor_ms=int(time.time() * 1000) - 3_600_000) as sb:
        samples, failures, elapsed = asyncio.run(_run(sb, args.seconds, args.clients))
    print(
        f"sandbox throughput: {args.clients} clients, {elapsed:.1f} s, loopback, one server process"
    )
    print(
        f"{'endpoint':<12}{'requests':>10}{'req/s':>10}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    everything: list[float] = []
    for kind in sorted(samples):
        values = samples[kind]
        everything.extend(values)
        print(
            f"{kind:<12}{len(values):>10}{len(values) / elapsed:>10.1f}"
            f"{statistics.median(values):>9.2f}"
            f"{_pct(values, 0.95):>9.2f}{_pct(values, 0.99):>9.2f}{failures[kind]:>8}"
        )
    print(
        f"{'overall':<12}{len(everything):>10}{len(everything) / elapsed:>10.1f}"
        f"{statistics.median(everything):>9.2f}{_pct(everything, 0.95):>9.2f}"
        f"{_pct(everything, 0.99):>9.2f}{sum(failures.values()):>8}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
