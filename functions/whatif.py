"""What-if (read only): re-decides the groups of a time range under a proposed config,
on the books stored at decision time, and prints executed vs skipped by reason and the
PnL difference per portfolio scope as JSON. Writes nothing.

With --sweep, the latency sweep instead (SPEC §12, `common/store/sweep.py`): the same
groups re-decided at each ladder delay (OCULUS_LADDER_DELAYS_S) on the book as it was
then, under the proposed config (the one in force without --set/--user): per leader and
for the global portfolio, PnL, retention, fill rate and median slippage per delay, and
the half-life.

    python -m functions.whatif --hours 24 --set max_spread_micros=30000 \\
        --user 3:copy_pct_bps=200
    python -m functions.whatif --sweep --hours 24
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from common.runtime import jobs, settings
from common.store import copy_configs, db, sweep, whatif


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text)


def parse_changes(items: list[str]) -> dict[str, Any]:
    """Parses NAME=VALUE pairs (integers or true/false)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        out[name.strip()] = _value(value.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m functions.whatif", description=__doc__)
    p.add_argument("--hours", type=float, default=24.0, help="range: the last N hours")
    p.add_argument("--start", type=datetime.fromisoformat, help="range start (ISO, UTC)")
    p.add_argument("--end", type=datetime.fromisoformat, help="range end (ISO, UTC)")
    p.add_argument("--set", action="append", default=[], help="global NAME=VALUE change")
    p.add_argument("--user", action="append", default=[], help="USER_ID:NAME=VALUE override")
    p.add_argument("--sweep", action="store_true", help="the latency sweep (SPEC §12)")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = p.parse_args(argv)
    try:
        global_values = parse_changes(args.set)
        users: dict[int, dict[str, Any]] = {}
        for item in args.user:
            user, sep, change = item.partition(":")
            if not sep:
                raise ValueError(f"expected USER_ID:NAME=VALUE, got {item!r}")
            users.setdefault(int(user), {}).update(parse_changes([change]))
    except ValueError as exc:
        p.error(str(exc))
    end = args.end or jobs.utcnow()
    start = args.start or end - timedelta(hours=args.hours)
    with db.connect(args.database_url, autocommit=True) as conn:
        try:
            proposed = copy_configs.propose(conn, global_values, users)
        except (ValueError, TypeError) as exc:
            p.error(str(exc))
        if args.sweep:
            s = settings.get()
            inputs = whatif.load_for(conn, start, end, proposed)
            result = {"start": start.isoformat(), "end": end.isoformat(),
                      **sweep.report(conn, inputs, proposed, s.ladder_delays_ms,
                                     min(end, jobs.utcnow()), s.score_mark_max_age_s)}  # fmt: skip
        else:
            result = whatif.report(conn, start, end, proposed)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
