"""Cold start of one job: the wall time of `python -m functions.<job> --once` (what the
scheduler spawns) on an idle database, and where its imports spend that time.

Set-up: a scratch database on the configured server (migrated, no followed users, so
every job finds nothing to do; dropped after unless --keep), and a loopback HTTP server
that stands in for every upstream base URL and answers 404 to anything: an idle job
should make no request at all, and the requests it makes are counted and printed.

Bytecode: the children cache it under a private PYTHONPYCACHEPREFIX (a temp dir), as a
box that runs the jobs all day has it cached. --as-is keeps this environment's own
settings instead: with PYTHONDONTWRITEBYTECODE=1 and a venv installed without .pyc files
(uv does not compile by default), every library module is compiled from source at every
start, which costs more than the imports themselves.

For each job: one untimed run (fills the bytecode cache and the page cache), one under
`-X importtime`, then --runs timed runs (the whole child process, from spawn to exit).
Printed per job: wall p50 and max; CPU p50 (user + system of the child, less noisy than
wall on a busy machine; the Postgres backend's share is not in it); the HTTP requests
made; the top 5 imports by cumulative time — the outermost import of each library the
project's modules pull in (a library another library imports is inside its figure) —
and the project's own modules' self time.
A bare `python -c pass` is timed too, as the floor. Goal: ≤ 0.5 s per job.
Run: python -m benchmarks.cold_start [--runs 5] [--jobs poll,price,...] [--keep]
     [--as-is] [--database-url SERVER_URL]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.scratch import percentile, scratch_database
from common.runtime import settings
from common.store import db

GOAL_S = 0.5
# job name → the arguments after `python -m`: one bounded run each.
JOBS: dict[str, list[str]] = {
    "poll": ["-m", "functions.poll", "--once"],
    "price": ["-m", "functions.price", "--once"],
    "snapshot": ["-m", "functions.snapshot", "--once"],
    "rollup": ["-m", "functions.rollup", "--once"],
    "reconcile": ["-m", "functions.reconcile", "--once"],
    "config_test": ["-m", "functions.config_test", "--once"],
    "simulate": ["-m", "functions.simulate", "--once"],
    "group": ["-m", "functions.group", "--once"],
    "whatif": ["-m", "functions.whatif", "--hours", "24"],
    "follow --help": ["-m", "functions.follow", "--help"],
}
PROJECT = ("common", "functions", "site_builder", "api")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


SEEN: Counter[str] = Counter()  # requests the stand-in upstream got: "METHOD /path"


class _Counting(BaseHTTPRequestHandler):
    """Answers 404 to everything and counts the requests in SEEN."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        SEEN[f"{self.command} {self.path.split('?')[0]}"] += 1
        body = b'{"error": "cold-start benchmark: no upstream here"}'
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def counting_upstream() -> Iterator[str]:
    """Yields the base URL of a loopback server that counts requests and answers 404."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def top_imports(stderr: str, n: int = 5) -> tuple[list[tuple[str, float]], float]:
    """Returns the `n` outermost non-project imports with the largest cumulative time (ms)
    from `-X importtime` output, and the project modules' total self time (ms)."""
    rows = []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    # Children come before their parent; walking backwards, a line's ancestors are the
    # last names seen at each smaller depth.
    ancestors: list[str] = []
    outer: Counter[str] = Counter()
    own_us = 0
    for self_us, cum_us, depth, name in reversed(rows):
        del ancestors[depth:]
        project = name.split(".")[0] in PROJECT
        if project:
            own_us += self_us
        elif all(a.split(".")[0] in PROJECT for a in ancestors):
            outer[name] += cum_us
        ancestors.append(name)
    return [(k, v / 1000) for k, v in outer.most_common(n)], own_us / 1000


def run(
    cmd: list[str], env: dict[str, str]
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Runs `cmd`; returns its wall time, its CPU time (user + system, s) and the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, done


def measure(name: str, argv: list[str], env: dict[str, str], runs: int) -> None:
    """Runs one job as described above and prints its lines."""
    SEEN.clear()
    results = [run([sys.executable, *argv], env)]
    results.append(run([sys.executable, "-X", "importtime", *argv], env))
    traced = results[-1][2]
    timed = [run([sys.executable, *argv], env) for _ in range(runs)]
    walls, cpus = [w for w, _, _ in timed], [c for _, c, _ in timed]
    p50 = percentile(walls, 0.5)
    print(
        f"{name:<14} wall p50 {p50:5.2f} s  max {max(walls):5.2f} s"
        f"  cpu p50 {percentile(cpus, 0.5):5.2f} s  ({'ok' if p50 <= GOAL_S else 'over goal'})"
        f"  http requests: {sum(SEEN.values())} in {runs + 2} runs"
    )
    if SEEN:
        print(f"{'':<14} requests seen: {dict(SEEN)}")
    failed = [done for _, _, done in results + timed if done.returncode != 0]
    if failed:
        tail = "\n".join(failed[-1].stderr.splitlines()[-5:])
        print(f"{'':<14} {len(failed)} runs failed, e.g. exit {failed[-1].returncode}:\n{tail}")
    top, own = top_imports(traced.stderr)
    listed = ", ".join(f"{k} {v:.0f}" for k, v in top)
    print(f"{'':<14} top imports (ms, cumulative): {listed}; project self {own:.0f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__)
    p.add_argument("--runs", type=int, default=5, help="timed runs per job")
    p.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job names")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--as-is", action="store_true", help="keep this environment's bytecode settings")
    p.add_argument("--database-url", help="server URL (default: DATABASE_URL or embedded)")
    args = p.parse_args(argv)
    names = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in names if j not in JOBS]
    if unknown:
        p.error(f"unknown jobs: {', '.join(unknown)} (known: {', '.join(JOBS)})")
    server = args.database_url or db.server_url()
    with (
        scratch_database(server, "oculus_cold", keep=args.keep) as url,
        counting_upstream() as up,
        tempfile.TemporaryDirectory(prefix="oculus-pyc-") as pyc,
    ):
        base = dict(os.environ)
        if args.as_is:
            cache = "as is: " + ", ".join(
                f"{k}={base.get(k, '(unset)')}"
                for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
            )
        else:
            base.pop("PYTHONDONTWRITEBYTECODE", None)
            base["PYTHONPYCACHEPREFIX"] = pyc
            cache = "cached (private PYTHONPYCACHEPREFIX)"
        floor = [run([sys.executable, "-c", "pass"], base)[0] for _ in range(args.runs)]
        print(f"cold start (goal ≤ {GOAL_S} s), {args.runs} runs per job, idle database")
        print(f"bytecode {cache}")
        print(f"{'python -c pass':<14} wall p50 {percentile(floor, 0.5):5.2f} s")
        env = {
            **base,
            "DATABASE_URL": url,
            "OCULUS_DATA_API_URL": f"{up}/data-api",
            "OCULUS_CLOB_URL": f"{up}/clob",
            "OCULUS_GAMMA_URL": f"{up}/gamma",
            "OCULUS_CHAIN_WS_URL": up.replace("http", "ws", 1) + "/chain",
            "OCULUS_LOG_LEVEL": "WARNING",
        }
        env.pop("OCULUS_CLOCK_URL", None)
        os.chdir(settings.ROOT)  # `python -m functions.X` imports from the checkout
        for name in names:
            measure(name, JOBS[name], env, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
