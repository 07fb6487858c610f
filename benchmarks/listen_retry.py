"""The listener against a chain node that refuses every connection: how many attempts it
makes and how long a run with a quiet time ends after (the timing the test suite used to
assert; the test now waits on the attempts).

    .venv/bin/python -m benchmarks.listen_retry [--idle-s 1.2] [--runs 5]

Loopback only (port 9, refused at once), a scratch database; it stops by itself.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import scratch
from common.runtime import jobs, settings
from common.store import db
from functions import listen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--idle-s", type=float, default=1.2, help="quiet time that ends a run")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    s = settings.get().model_copy(update={"chain_ws_url": "ws://127.0.0.1:9/chain"})
    with scratch.scratch_database(db.server_url(s), "bench_listen") as url:
        for i in range(args.runs):
            listener = listen.Listener(url, s, stop=jobs.StopFlag(), jitter=lambda: 0.0)
            began = time.monotonic()
            listener.run(idle_s=args.idle_s)
            took = time.monotonic() - began
            print(
                f"run {i + 1}: ended after {took:.2f} s (quiet time {args.idle_s:g} s),"
                f" {listener.attempts} connection attempts, {listener.sessions} sessions"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
