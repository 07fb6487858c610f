"""Dashboard latency through the real nginx with a logged-in session, on loopback, while
the site builder rewrites the files being served.

Set-up: a scratch database (migrated, tests/site_data.py's small data set), the site
built into a temp public dir (`Builder.build_all`, clock fixed at site_data.NOW), the
write API (`python -m api serve`) and the private nginx (`python -m common.runtime.nginx run`)
started as subprocesses on free 127.0.0.1 ports (tests/web.py's `running_stack`), and one
`POST /api/login` for the session cookie. Every request carries it, so each one passes
nginx's auth_request (answered from nginx's 5 s cache of the API's check).

1. Unloaded: 200 sequential requests of the mix below on one keep-alive connection.
2. Loaded: --concurrency threads, each one keep-alive HTTP/1.1 connection (http.client,
   `Accept-Encoding: gzip` like a browser), loop over page views until --seconds or
   --requests: a page picked by how often a browser reloads it (trades.html every 5 s;
   index.html, users/<id>.html and status.html every 10 s), then the chart PNGs that page
   shows, then /static/style.css. No browser cache: no conditional requests, so every
   answer is a 200 with the whole file (the worst case). The threads run in a child
   process, so the builder below does not share their GIL.
3. Meanwhile, at the start and then every 3 s, a thread of this process inserts a fill
   for the first user (`site_data.add_fill`) and runs `builder.round(conn,
   budget_s=inf)`, which rewrites the pages that fill touches (`os.replace` of a temp
   file): trades.html, users/<id>.html, status.html, the market's page; with this data
   set no chart changes, so no PNG is rewritten. Every answer is checked: not a
   200 is an error; an HTML body that does not end with `</html>`, a PNG without its
   IEND chunk at the end, or a stylesheet that differs from the file is a partial file.
   Both must be 0.
Reported: requests, requests/s, p50/p95/p99/max per kind (html, png, css) and overall,
those of the requests that started during a builder round, errors, partial files, the
files the rounds rewrote, and the CPU seconds of nginx (master + worker), the API
(uvicorn) and the load generator during the load (/proc/<pid>/stat utime + stime).
The client shares the machine (and its CPUs) with nginx: on few cores the numbers include
that contention; the load average before the run is printed.
At a few thousand requests/s the --requests cap ends the load before --seconds: raise it
(e.g. --requests 1000000) for more builder rounds under load.
Run: python -m benchmarks.site_latency [--seconds 20] [--concurrency 8] [--requests 20000]
     [--keep] [--database-url SERVER_URL]
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import http.client
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from benchmarks.scratch import database_name, percentile, scratch_database
from common.runtime import nginx
from common.store import db
from site_builder import build, publish
from tests import site_data, web

KINDS = ("html", "png", "css")
STYLE = "/static/style.css"
# How often a browser reloads each page (README: trades.html every 5 s, the others 10 s).
PAGE_WEIGHTS = {"index.html": 2, "trades.html": 4, "user": 2, "status.html": 2}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
# Jinja2 drops the template's final newline: a whole page ends with `</html>` (a newline
# after it is accepted too).
HTML_END = b"</html>"
CHART = re.compile(rb'src="(/charts/[^"?]+\.png)')
REWRITE_EVERY_S = 3.0
UNLOADED_REQUESTS = 200
FIRST_FILL = 7  # site_data.load adds fills 1-6
LAST_FILL = 39  # fill n happens at NOW - (40 - n) minutes: keep them before NOW
TIMEOUT_S = 10.0
GIVE_UP_AFTER = 50  # transport errors in a row (nginx is gone): the load stops
INF = float("inf")


def kind_of(path: str) -> str:
    return "html" if path.endswith(".html") else "png" if path.endswith(".png") else "css"


def problem(path: str, status: int, body: bytes, style: bytes) -> tuple[str, str] | None:
    """Returns ("error" | "partial", what) when the answer is not the whole file."""
    if status != 200:
        return "error", f"{path}: status {status}"
    kind = kind_of(path)
    if kind == "html" and not body.removesuffix(b"\n").endswith(HTML_END):
        return "partial", f"{path}: {len(body)} bytes, ends {body[-20:]!r}"
    if kind == "png" and not (body.startswith(PNG_SIGNATURE) and body.endswith(PNG_END)):
        return "partial", f"{path}: {len(body)} bytes, ends {body[-12:]!r}"
    if kind == "css" and body != style:
        return "partial", f"{path}: {len(body)} bytes, expected {len(style)}"
    return None


class Tab:
    """One browser tab: a keep-alive connection carrying the session cookie."""

    def __init__(self, port: int, cookie: str) -> None:
        self.port = port
        self.headers = {
            "Cookie": f"oculus_session={cookie}",
            "Accept-Encoding": "gzip",
            "User-Agent": "oculus-site-latency",
        }
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, bytes, str | None]:
        """Returns (status, raw body, Content-Encoding); raises on a transport error
        (then the next request opens a new connection)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except BaseException:
            self.close()
            raise
        return response.status, body, response.getheader("Content-Encoding")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def decoded(body: bytes, encoding: str | None) -> bytes:
    return gzip.decompress(body) if encoding == "gzip" else body


@dataclass
class Tally:
    """Samples (start on CLOCK_MONOTONIC, kind, seconds) and what went wrong."""

    samples: list[tuple[float, str, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    partials: Counter[str] = field(default_factory=Counter)

    def fetch(self, tab: Tab, path: str, style: bytes) -> bool:
        """Fetches and checks one file; returns False on a transport error."""
        started = time.monotonic()
        t0 = time.perf_counter()
        try:
            status, raw, encoding = tab.get(path)
        except (OSError, http.client.HTTPException) as exc:
            self.samples.append((started, kind_of(path), time.perf_counter() - t0))
            self.errors[f"{path}: {type(exc).__name__}: {exc}"] += 1
            return False
        self.samples.append((started, kind_of(path), time.perf_counter() - t0))
        try:
            body = decoded(raw, encoding)
        except (OSError, EOFError, zlib.error) as exc:
            self.partials[f"{path}: bad gzip body: {exc}"] += 1
            return True
        found = problem(path, status, body, style)
        if found is not None:
            (self.errors if found[0] == "error" else self.partials)[found[1]] += 1
        return True

    def merge(self, other: Tally) -> None:
        self.samples += other.samples
        self.errors.update(other.errors)
        self.partials.update(other.partials)


def view_paths(pages: dict[str, list[str]]) -> Callable[[random.Random], list[str]]:
    """Returns a picker of one page view: the page, its charts, the stylesheet."""
    names = list(pages)
    weights = [PAGE_WEIGHTS["user" if n.startswith("users/") else n] for n in names]

    def pick(rng: random.Random) -> list[str]:
        page = rng.choices(names, weights)[0]
        return [f"/{page}", *pages[page], STYLE]

    return pick


# ---- the load generator (a child process: its threads do not share our GIL) ----


def load(
    port: int,
    cookie: str,
    pages: dict[str, list[str]],
    style: bytes,
    seconds: float,
    max_requests: int,
    concurrency: int,
    pipe: Pipe,
) -> None:
    """Runs the threads; sends ("started", t) when they start and then the results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    pick = view_paths(pages)
    lock = threading.Lock()
    issued = 0
    barrier = threading.Barrier(concurrency + 1)
    deadline = INF
    tallies = [Tally() for _ in range(concurrency)]
    given_up = threading.Event()

    def claim() -> bool:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.monotonic() >= deadline or given_up.is_set():
                return False
            issued += 1
            return True

    def worker(i: int) -> None:
        rng = random.Random(f"tab:{i}")
        tab = Tab(port, cookie)
        tally = tallies[i]
        failures = 0
        barrier.wait()
        try:
            while True:
                for path in pick(rng):
                    if not claim():
                        return
                    failures = 0 if tally.fetch(tab, path, style) else failures + 1
                    if failures >= GIVE_UP_AFTER:
                        given_up.set()
                        return
        finally:
            tab.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    barrier.wait()
    pipe.send(("started", started))
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    # Plain data: under `python -m` this module is __mp_main__ here, not in the parent.
    result = (total.samples, dict(total.errors), dict(total.partials))
    pipe.send(("done", result, elapsed, time.process_time() - cpu0, given_up.is_set()))


# ---- CPU of the servers ----


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[1] == str(pid):
                out.append(int(entry))
    return sorted(out)


def title(pid: int) -> str:
    """nginx's name for its process: `nginx: worker process` → `worker`."""
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "process"
    words = text.split()  # nginx pads its title with spaces
    return " ".join(w for w in words if w not in ("nginx:", "process")) or "process"


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_cpu(pid) for name, pid in pids.items()}


# ---- the builder thread ----


class TrackingPublisher(publish.Publisher):
    """A Publisher that remembers which files it rewrote."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.rewritten: Counter[str] = Counter()

    def write(self, relative: str, data: bytes | str) -> bool:
        wrote = super().write(relative, data)
        if wrote:
            self.rewritten[relative] += 1
        return wrote


@dataclass
class Rewrites:
    """The builder rounds of the load: (start, end) on CLOCK_MONOTONIC, and failures."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    fills: int = 0
    pages: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    crashed: str | None = None


def rewrite_loop(
    conn: db.Conn, builder: build.Builder, user: int, stop: threading.Event, out: Rewrites
) -> None:
    """From the start of the load and then every REWRITE_EVERY_S: a new fill of `user`,
    then one unlimited round."""
    n = FIRST_FILL
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            if n <= LAST_FILL:
                with conn.transaction():
                    site_data.add_fill(conn, user, n)
                n += 1
                out.fills += 1
            done = builder.round(conn, budget_s=INF)
            out.spans.append((t0, time.monotonic()))
            out.pages += len(done.built)
            out.failed.update(done.failed)
            stop.wait(max(0.0, t0 + REWRITE_EVERY_S - time.monotonic()))
    except Exception as exc:  # reported; the load goes on
        out.crashed = f"{type(exc).__name__}: {exc}"


# ---- report ----


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<22} {0:>8}"
    ms = [v * 1000 for v in values]
    return (
        f"  {label:<22} {len(ms):>8,} {percentile(ms, 0.50):>8.2f} {percentile(ms, 0.95):>8.2f}"
        f" {percentile(ms, 0.99):>8.2f} {max(ms):>8.2f}"
    )


def table(samples: list[tuple[float, str, float]], extra: list[tuple[str, list[float]]]) -> None:
    print(f"  {'kind':<22} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind in KINDS:
        print(row(kind, [s[2] for s in samples if s[1] == kind]))
    print(row("all", [s[2] for s in samples]))
    for label, values in extra:
        print(row(label, values))


def during(
    samples: list[tuple[float, str, float]], spans: list[tuple[float, float]]
) -> list[float]:
    """Latencies of the requests that started while a round was running."""
    starts = [a for a, _ in spans]
    out = []
    for started, _, latency in samples:
        i = bisect.bisect_right(starts, started) - 1
        if i >= 0 and started <= spans[i][1]:
            out.append(latency)
    return out


def short(path: str) -> str:
    """markets/0xa1a1…a1.html → markets/0xa1a1….html"""
    return path if len(path) <= 32 else f"{path[:16]}…{Path(path).suffix}"


def problems(label: str, found: Counter[str]) -> None:
    print(f"  {label}: {sum(found.values())}")
    for what, count in found.most_common(5):
        print(f"    {count} × {what}")


def nginx_version() -> str:
    binary = nginx.find()
    if binary is None:
        return "nginx"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().removeprefix("nginx version: ") or "nginx"


# ---- the run ----


def discover(public: Path, user_page: str) -> dict[str, list[str]]:
    """The pages of the mix and the chart URLs each one shows (without ?v=)."""
    pages = {}
    for name in PAGE_WEIGHTS:
        page = user_page if name == "user" else name
        html = (public / page).read_bytes()
        pages[page] = [m.decode() for m in dict.fromkeys(CHART.findall(html))]
    return pages


def login(stack: web.Stack) -> str:
    with stack.client() as client:
        response = stack.login(client)
        cookie = client.cookies.get("oculus_session")
    if response.status_code != 303 or not cookie:
        raise RuntimeError(f"login failed: {response.status_code} {response.text[:200]}")
    return cookie


def unloaded(port: int, cookie: str, pages: dict[str, list[str]], style: bytes) -> Tally:
    pick = view_paths(pages)
    rng = random.Random("unloaded")
    tab, tally = Tab(port, cookie), Tally()
    try:
        while len(tally.samples) < UNLOADED_REQUESTS:
            for path in pick(rng)[: UNLOADED_REQUESTS - len(tally.samples)]:
                tally.fetch(tab, path, style)
    finally:
        tab.close()
    return tally


def wait_message(pipe: Pipe, child: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0.2):
        if not child.is_alive():
            raise RuntimeError(f"the load generator exited ({child.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError("the load generator did not answer")
    return pipe.recv()


def run(args: argparse.Namespace, url: str, conn: db.Conn, tmp: Path) -> int:
    users = site_data.load(conn)
    public = tmp / "public"
    builder = build.Builder(public, clock=lambda: site_data.NOW)
    publisher = TrackingPublisher(public)
    builder.site.publisher = publisher
    t0 = time.perf_counter()
    first = builder.build_all(conn)
    built_s = time.perf_counter() - t0
    if first.failed:
        raise RuntimeError(f"site build failed: {first.failed}")
    publisher.rewritten.clear()
    user_page = f"users/{users[0]}.html"
    pages = discover(public, user_page)
    style = (public / STYLE.lstrip("/")).read_bytes()
    files = [p for p in public.rglob("*") if p.is_file()]
    print(
        f"site latency: {nginx_version()} (1 worker), {os.cpu_count()} CPUs, load average"
        f" {' '.join(Path('/proc/loadavg').read_text().split()[:3])} before the run;"
        f" scratch database {database_name(url)}"
    )
    print(
        f"  site: {len(first.built)} pages, {len(files)} files,"
        f" {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, built in {built_s:.1f} s;"
        " a view = page + its charts + style.css:"
        f" {', '.join(f'{p} ({len(c)} charts)' for p, c in pages.items())}"
    )
    with web.running_stack(url, tmp, site=None) as stack:
        port = int(stack.url.rsplit(":", 1)[1])
        cookie = login(stack)
        base = unloaded(port, cookie, pages, style)
        print(f"unloaded: {UNLOADED_REQUESTS} sequential requests, one keep-alive connection")
        table(base.samples, [])
        if base.errors or base.partials:
            problems("errors", base.errors)
            problems("partial files", base.partials)

        servers = {"nginx master": stack.nginx.pid, "API (uvicorn)": stack.api.pid}
        for pid in children(stack.nginx.pid):  # the worker, the cache manager and loader
            servers[f"nginx {title(pid)}"] = pid
        for pid in children(stack.api.pid):
            servers[f"API child {pid}"] = pid
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(
            target=load,
            args=(
                port,
                cookie,
                pages,
                style,
                args.seconds,
                args.requests,
                args.concurrency,
                theirs,
            ),
            name="site-latency-load",
        )
        stop = threading.Event()
        rewrites = Rewrites()
        rewriter = threading.Thread(
            target=rewrite_loop,
            args=(conn, builder, users[0], stop, rewrites),
            name="site-latency-builder",
            daemon=True,
        )
        child.start()
        try:
            message = wait_message(ours, child, 60)
            assert message[0] == "started"
            cpu0 = cpu_of(servers)
            rewriter.start()
            message = wait_message(ours, child, args.seconds + 120)
            cpu1 = cpu_of(servers)
            stop.set()
            rewriter.join()
        finally:
            stop.set()
            if rewriter.is_alive():
                rewriter.join(30)
            if child.is_alive():
                child.terminate()
            child.join(10)
        _, (samples, errors_seen, partials_seen), elapsed, load_cpu, gave_up = message
        tally = Tally(samples, Counter(errors_seen), Counter(partials_seen))
        n = len(tally.samples)
        print(
            f"loaded: {args.concurrency} connections for {elapsed:.1f} s, {n:,} requests,"
            f" {n / elapsed:,.0f} requests/s; builder: a fill and a round every"
            f" {REWRITE_EVERY_S:.0f} s, {len(rewrites.spans)} rounds"
        )
        in_rounds = during(tally.samples, rewrites.spans)
        table(tally.samples, [("all, during a round", in_rounds)])
        errors = sum(tally.errors.values()) + sum(base.errors.values())
        partials = sum(tally.partials.values()) + sum(base.partials.values())
        problems("errors (must be 0)", tally.errors)
        problems("partial files (must be 0)", tally.partials)
        round_s = [b - a for a, b in rewrites.spans]
        rewritten = ", ".join(f"{short(p)} ×{c}" for p, c in sorted(publisher.rewritten.items()))
        print(
            f"  builder rounds: {rewrites.fills} fills, {rewrites.pages} pages built,"
            f" {sum(round_s):.1f} s in rounds (max {max(round_s, default=0):.2f} s),"
            f" {len(rewrites.failed)} failed; files rewritten: {rewritten or 'none'}"
        )
        if rewrites.crashed:
            print(f"  builder thread stopped: {rewrites.crashed}")
        if gave_up:
            print(f"  the load stopped early: {GIVE_UP_AFTER} connection errors in a row")
        for name, process in (("nginx", stack.nginx), ("the API", stack.api)):
            if process.poll() is not None:
                print(f"  {name} exited during the load (exit code {process.returncode})")
                errors += 1
        cpu = {name: cpu1[name] - cpu0[name] for name in servers}
        nginx_cpu = sum(v for k, v in cpu.items() if k.startswith("nginx"))
        api_cpu = sum(v for k, v in cpu.items() if k.startswith("API"))
        detail = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        print(
            f"  CPU seconds during the load: nginx {nginx_cpu:.2f}, API {api_cpu:.2f}"
            f" ({detail}); load generator {load_cpu:.2f}"
            f" (per 1,000 requests: nginx {1000 * nginx_cpu / max(n, 1):.3f} s)"
        )
        if errors or partials:
            log = stack.nginx_log.read_text(errors="replace").splitlines()
            lines = [x for x in log if re.search(r"\[(warn|error|crit|alert|emerg)\]", x)]
            if lines:
                print("  nginx's log:\n    " + "\n    ".join(lines[-10:]))
            return 1
    return 1 if rewrites.crashed or rewrites.failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.site_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load (default 20)")
    p.add_argument(
        "--concurrency", type=int, default=8, help="connections, one thread each (default 8)"
    )
    p.add_argument(
        "--requests", type=int, default=20_000, help="stop after this many (default 20000)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--database-url",
        help="server to create the scratch database on (default: DATABASE_URL or the"
        " embedded server)",
    )
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    if not 1 <= args.concurrency <= 200:
        p.error("--concurrency must be 1-200 (nginx: worker_connections 256)")
    if args.requests < 1:
        p.error("--requests must be >= 1")
    if nginx.find() is None:
        print(nginx.INSTALL_HINT, file=sys.stderr)
        return 2
    server = args.database_url or db.server_url()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="oculus-latency-") as tmp,
            scratch_database(server, "oculus_bench", keep=args.keep) as url,
            db.connect(url, autocommit=True) as conn,
        ):
            return run(args, url, conn, Path(tmp))
    except KeyboardInterrupt:  # everything above is stopped and dropped by now
        print("site latency: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
