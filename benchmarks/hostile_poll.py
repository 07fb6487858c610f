"""A hostile Data API against `python -m functions.poll --once`: what one run costs when
the upstream is always full, ignores `limit`, answers 50 MB, or drips a byte a second.

    .venv/bin/python -m benchmarks.hostile_poll [--modes full,over_limit,huge,drip]

Each mode serves one followed wallet from a loopback server and runs one poll as its
own process (the way the scheduler does), against a scratch database on the configured
Postgres server. Prints, per mode: wall time, the poll's peak RSS, requests served, bytes
sent, the exit code, the run's status and the user's failed item. Loopback only; each
run is killed after --limit-s (default 120 s), so the benchmark always ends.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from benchmarks import scratch
from common.runtime import settings
from common.store import db, users

WALLET = "0x" + "5a" * 20
COND = "0x" + "c1" * 32
ROW_LIMIT = 500


def rows(n: int, start: int, serial: Iterator[int]) -> bytes:
    """`n` distinct TRADE rows of /activity at second `start` (~330 bytes each)."""
    out = [
        {
            "proxyWallet": WALLET,
            "timestamp": start,
            "type": "TRADE",
            "conditionId": COND,
            "size": 1,
            "usdcSize": 0.5,
            "price": 0.5,
            "asset": "123",
            "side": "BUY",
            "transactionHash": f"0x{next(serial):064x}",
            "title": "A market that never ends",
        }
        for _ in range(n)
    ]
    return json.dumps(out).encode()


def activity_answer(mode: str, query: dict[str, list[str]], serial: Iterator[int]) -> bytes:
    start = int(query.get("start", ["0"])[0]) or int(time.time()) - 60
    if mode == "full":  # always a full page, whatever the window or offset
        return rows(ROW_LIMIT, start, serial)
    if mode == "over_limit":  # ignores limit: ten pages at once
        return rows(10 * ROW_LIMIT, start, serial)
    return b"[]"


def handler(mode: str, served: dict[str, int]) -> type[BaseHTTPRequestHandler]:
    serial = iter(range(10**12))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                served["requests"] += 1
            url = urlsplit(self.path)
            body = b"[]"
            if url.path == "/activity":
                if mode == "drip":
                    return self._drip()
                if mode == "huge":
                    return self._huge()
                with lock:
                    body = activity_answer(mode, parse_qs(url.query), serial)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
                served["bytes"] += len(body)
            except OSError:
                pass  # the client hung up (a body over its cap)

        def _huge(self) -> None:
            """50 MiB of valid JSON, sent in 1 MiB writes (never held whole here: the
            poll forked from this process must not inherit a big RSS), with no length
            announced, so the client has to count."""
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            chunk = b"x" * 2**20
            try:
                self.wfile.write(b'[{"title": "')
                for _ in range(50):
                    self.wfile.write(chunk)
                    served["bytes"] += len(chunk)
                self.wfile.write(b'"}]')
            except OSError:
                pass  # the client hung up at its cap
            self.close_connection = True

        def _drip(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "1000000")
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    served["bytes"] += 1
                    time.sleep(1.0)
            except OSError:
                pass

    return Handler


@contextmanager
def serving(mode: str) -> Iterator[tuple[str, dict[str, int]]]:
    served = {"requests": 0, "bytes": 0}
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(mode, served))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def prepare(url: str) -> None:
    """One followed, seeded wallet and its market (so no Gamma call is needed)."""
    now = datetime.now(tz=UTC)
    with db.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO market (condition_id, question) VALUES (%(c)s, 'q')", {"c": COND})
        conn.execute(
            "INSERT INTO outcome_asset (asset_id, condition_id, outcome, outcome_index)"
            " VALUES ('123', %(c)s, 'Yes', 0), ('456', %(c)s, 'No', 1)",
            {"c": COND},
        )
        users.add(conn, WALLET, "hostile", [], now - timedelta(hours=1))
        conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": now - timedelta(hours=1)})


def run_poll(url: str, base: str, limit_s: float, stop_after_s: float | None) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": url, "OCULUS_DATA_API_URL": base}
    env.update(OCULUS_GAMMA_URL=base, OCULUS_CLOB_URL=base)
    env.pop("OCULUS_CLOCK_URL", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "functions.poll", "--once", "--timeout", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    signalled = None
    ended = _reap(proc.pid, started + (stop_after_s or limit_s))
    if ended is None and stop_after_s is not None:
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        ended = _reap(proc.pid, signalled + limit_s)
    if ended is None:
        proc.kill()
        ended = _reap(proc.pid, time.monotonic() + 10)
    assert ended is not None
    status, usage = ended
    ended = time.monotonic()
    return {
        "wall_s": ended - started,
        "stop_s": None if signalled is None else ended - signalled,
        "rss_mib": usage.ru_maxrss / 1024,
        "exit": os.waitstatus_to_exitcode(status),
    }


def _reap(pid: int, until: float) -> tuple[int, Any] | None:
    """Waits for the child until `until`; returns (status, rusage), or None if alive."""
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return status, usage
        if time.monotonic() >= until:
            return None
        time.sleep(0.02)


def outcome(url: str) -> tuple[str, str]:
    with db.connect(url, autocommit=True) as conn:
        run = conn.execute(
            "SELECT status FROM job_run WHERE job = 'poll' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        item = conn.execute("SELECT error FROM failed_item WHERE stage = 'poll'").fetchone()
    return (run["status"] if run else "-"), (item["error"][:110] if item else "-")


MODES: dict[str, Callable[[argparse.Namespace], float | None]] = {
    "full": lambda a: None,
    "over_limit": lambda a: None,
    "huge": lambda a: None,
    "drip": lambda a: a.drip_stop_s,  # SIGTERM this long into the drip
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--limit-s", type=float, default=120.0, help="kill a run after this long")
    p.add_argument("--drip-stop-s", type=float, default=3.0, help="SIGTERM a drip after this")
    args = p.parse_args(argv)
    server = db.server_url(settings.get())
    print(
        f"{'mode':<11} {'wall s':>7} {'stop s':>7} {'RSS MiB':>8} {'requests':>9} "
        f"{'MiB sent':>9} {'exit':>5}  run / failed item"
    )
    for mode in args.modes.split(","):
        with (
            scratch.scratch_database(server, "bench_hostile") as url,
            serving(mode) as (
                base,
                served,
            ),
        ):
            prepare(url)
            got = run_poll(url, base, args.limit_s, MODES[mode](args))
            status, item = outcome(url)
            stop = "-" if got["stop_s"] is None else f"{got['stop_s']:.2f}"
            print(
                f"{mode:<11} {got['wall_s']:>7.2f} {stop:>7} {got['rss_mib']:>8.0f}"
                f" {served['requests']:>9} {served['bytes'] / 2**20:>9.1f} {got['exit']:>5}"
                f"  {status} / {item}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
