"""A job for the scheduler's tests (`python -m tests.scheduled_job`): sleeps, fails or
exits early as its flags say, through the same job frame as the real jobs."""

from __future__ import annotations

import sys
import time

from common.runtime import jobs
from common.store import db


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    if ctx.args.ignore_stop:
        time.sleep(ctx.args.sleep)
    else:  # as a long job does: it checks its stop flag
        ctx.stop.sleep(ctx.args.sleep)
    if ctx.args.fail:
        raise RuntimeError("asked to fail")
    return 1


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("scheduled_job", __doc__ or "")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds each run takes")
    p.add_argument("--fail", action="store_true", help="the run raises")
    p.add_argument("--ignore-stop", action="store_true", help="sleep through a stop request")
    p.add_argument("--crash", action="store_true", help="raise before the job frame")
    p.add_argument("--exit-early", type=int, help="exit with this code before the job frame")
    args = p.parse_args(argv)
    if args.exit_early is not None:
        return int(args.exit_early)
    if args.crash:
        raise ValueError("crashed before the job frame")
    return jobs.main("scheduled_job", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
