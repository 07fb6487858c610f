"""What `make run` becomes once the database is ready (run_local.py execs it):
runs supervisord until it exits or Ctrl-C, and the milestone watcher as a short-lived
child; then stops the embedded Postgres if `make run` started it.

Standard library only, on purpose: this process stays up as long as the system does,
so it must stay small (~10 MB); the watcher, which needs psycopg and httpx, exits once
the dashboard answers and the first copy attempt and equity points are in.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


def step(message: str) -> None:
    print(f"[oculus] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.runtime.supervise", description=__doc__)
    p.add_argument("--conf", required=True, help="supervisord.conf")
    p.add_argument("--watch", nargs=argparse.REMAINDER, default=[], help="the watcher's argv")
    p.add_argument("--stop-embedded", action="store_true", help="stop the embedded Postgres")
    args = p.parse_args(argv)
    supervisord = os.path.join(os.path.dirname(sys.executable), "supervisord")
    # its own session: Ctrl-C reaches only us, and we stop it in order
    proc = subprocess.Popen([supervisord, "-n", "-c", args.conf], start_new_session=True)
    watcher = None
    if args.watch:
        watcher = subprocess.Popen([*args.watch, "--supervisord-pid", str(proc.pid)])
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            print(flush=True)
            step("stopping every process (supervisord)…")
            if watcher is not None and watcher.poll() is None:
                watcher.terminate()
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    step("starting the processes (supervisord); Ctrl-C stops everything")
    code = proc.wait()
    if watcher is not None:
        if watcher.poll() is None:
            watcher.terminate()
        watcher.wait()
    if args.stop_embedded:
        step("stopping the embedded Postgres")
        # DATABASE_URL here is the embedded server's own URL (set for the programs);
        # without it `common.store.db stop` stops the server under OCULUS_VAR_DIR
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        subprocess.run(
            [sys.executable, "-m", "common.store.db", "stop"], env=env, stdout=subprocess.DEVNULL
        )
    step("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
