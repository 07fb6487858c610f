"""`python -m site_builder --once` builds every page into public/ and exits;
`--loop` rebuilds what changed every few seconds until SIGTERM, writing a heartbeat
(process `site_builder`) the status page and reconcile read; it exits 69 when its
database connection is lost (supervisord restarts it) and waits for a database that is
down when it starts."""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

from common.runtime import clock as clocks
from common.runtime import jobs, memory, settings
from common.store import db
from site_builder import build

log = logging.getLogger("site_builder")
PROCESS = "site_builder"


def main(argv: list[str] | None = None) -> int:
    s = settings.get()
    p = argparse.ArgumentParser(prog="python -m site_builder", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="build everything and exit (default)")
    mode.add_argument("--loop", action="store_true", help="rebuild what changed until SIGTERM")
    p.add_argument(
        "--interval", type=float, default=s.site_interval_s, help="seconds between rounds"
    )
    p.add_argument(
        "--budget", type=float, default=s.site_budget_s, help="seconds of work per round"
    )
    p.add_argument("--out", type=Path, default=s.public_dir, help="where the site is written")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = p.parse_args(argv)
    jobs.setup_logging(s)
    source = clocks.configured(s.clock_url)
    builder = build.Builder(
        args.out,
        budget_s=args.budget,
        stale_after_s=s.reconcile_stale_after_s,
        clock=source.now,
    )
    stop = jobs.StopFlag()
    try:
        if args.loop:  # a database down at start is waited for (under supervisord)
            stop.install()
            found = jobs.connect_waiting(args.database_url, stop, "site")
            if found is None:
                return 0
            conn = found
        else:
            conn = db.connect(args.database_url, autocommit=True)
    except db.DatabaseUnavailable as exc:
        log.error("site: database unavailable: %s", exc)
        return 1
    try:
        if not args.loop:
            done = builder.build_all(conn)
            log.info(
                "site: built %d pages in %.2fs (%d files written, %d charts drawn), %d failed",
                len(done.built),
                done.seconds,
                builder.site.publisher.written,
                builder.site.charts_drawn,
                len(done.failed),
            )
            return 1 if done.failed else 0
        while not stop.stopped:
            started = time.monotonic()
            try:
                done = builder.round(conn)
                if done.built or done.failed:
                    log.info(
                        "site: %d pages in %.2fs, %d left, %d failed",
                        len(done.built),
                        done.seconds,
                        done.left,
                        len(done.failed),
                    )
                jobs.heartbeat(
                    conn,
                    PROCESS,
                    source.now(),
                    {
                        "pages": len(done.built),
                        "left": done.left,
                        "failed": done.failed,
                        "round_ms": round(done.seconds * 1000),
                        "peak_rss_mb": round(
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                        ),
                    },
                )
            except Exception as exc:
                if db.lost(conn, exc):  # the pages stay as they are meanwhile
                    return jobs.lost_exit("site", exc)
                log.exception("site: round failed")
            memory.trim()  # a round's pages and rows, freed, back to the system
            stop.sleep(max(0.0, args.interval - (time.monotonic() - started)))
        return 0
    finally:
        conn.close()
        source.close()


if __name__ == "__main__":
    sys.exit(main())
