"""Group: form copy groups from the followed users' new events and close the due ones
(`common.store.groups`, whose docstring `--help` prints). `simulate` runs the same step
before each batch."""

from __future__ import annotations

import sys

from common.runtime import jobs
from common.store import db, groups


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    counts = groups.step(conn, ctx.clock())
    for k, v in counts.items():
        ctx.count(k, v)
    return counts["grouped"] + counts["closed"]


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("group", groups.__doc__ or "")
    p.set_defaults(interval=1.0)
    args = p.parse_args(argv)
    return jobs.main("group", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
