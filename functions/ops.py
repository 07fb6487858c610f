"""Operator commands (docs/runbooks/ says when to use which):

python -m functions.ops status [--json]   pending work per stage, each job's last run
                                          and next one, failed items, heartbeats
python -m functions.ops ready             exit 0 when ready (database reachable, the
                                          processes beating), else 1 with the reasons
python -m functions.ops backfill 6h       re-poll every followed user's last 6 hours
                                          (the running poller serves the request;
                                          --wait S waits for it)
python -m functions.ops rerun-failed      retry the open failed items now and report
                                          which resolved
python -m functions.ops clear-stuck       show work left behind by dead processes;
                                          --yes clears it (only what is provably dead)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString

from psycopg.types.json import Jsonb

from common.runtime import jobs, settings
from common.store import checkpoints, db, failures, status

STAGE_JOBS = {"poll": "poll", "simulate": "simulate"}  # failed_item stage → job to wake
IDLE_TX_LIMIT = timedelta(minutes=5)  # an Oculus session idle in a transaction this long


def ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    s = (now - t).total_seconds()
    if s < 0:
        return f"in {-s:.0f}s"
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago" if s < 172_800 else f"{s / 86400:.0f}d ago"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in [header, *rows]
    ]
    return "\n".join("  " + line.rstrip() for line in lines)


def snapshot(conn: db.Conn, now: datetime, s: settings.Settings) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what --json prints)."""
    beats = status.heartbeats(conn)
    checks = status.readiness(conn, now, s.reconcile_stale_after_s)
    return {
        "now": now,
        "ready": status.ready(checks),
        "checks": [vars(c) for c in checks],
        "processes": [
            {k: b[k] for k in ("process", "pid", "host", "started_at", "beat_at")} for b in beats
        ],
        "jobs": status.jobs(conn, now),
        "crontab_errors": status.scheduler_info(beats).get("errors") or [],
        "pending": [vars(p) for p in status.pending(conn)],
        "failed_items": status.failed_items(conn),
    }


def print_status(data: dict[str, Any]) -> None:
    now: datetime = data["now"]
    verdict = "READY" if data["ready"] else "NOT READY"
    print(f"Oculus at {now:%Y-%m-%d %H:%M:%S}Z: {verdict}")
    for c in data["checks"]:
        print(f"  {'ok ' if c['ok'] else 'BAD'}  {c['name']}: {c['detail']}")
    print("\nProcesses (heartbeats)")
    rows = [
        [p["process"], str(p["pid"]), p["host"], ago(p["beat_at"], now), ago(p["started_at"], now)]
        for p in data["processes"]
    ]
    print(table(rows, ["process", "pid", "host", "last beat", "up since"]) if rows else "  none")
    print("\nJobs (newest run of each)")
    rows = [
        [
            j["job"],
            ago(j["started_at"], now),
            j["trigger"] or "-",
            j["status"],
            str(j["items"]),
            f"{(j['duration_ms'] or 0) / 1000:.1f}s",
            str(j["failures_1h"]),
            ago(j["last_ok_at"], now),
            (j["next_at"] or "-")[11:19],
            (j["error"] or "")[:60],
        ]
        for j in data["jobs"]
    ]
    header = [
        "job",
        "last run",
        "by",
        "status",
        "items",
        "took",
        "fails 1h",
        "last ok",
        "next",
        "error",
    ]
    print(table(rows, header) if rows else "  no job has run")
    print("\nPending work")
    print(
        table(
            [[p["stage"], str(p["count"]), p["who"]] for p in data["pending"]],
            ["stage", "items", "moved on by"],
        )
    )
    print("\nFailed items (open)")
    rows = [
        [
            f["stage"],
            f["item_key"],
            str(f["attempts"]),
            ago(f["first_failed_at"], now),
            f["error"][:70],
        ]
        for f in data["failed_items"]
    ]
    print(table(rows, ["stage", "item", "attempts", "since", "error"]) if rows else "  none")


def cmd_status(conn: db.Conn, args: argparse.Namespace, s: settings.Settings) -> int:
    data = snapshot(conn, jobs.utcnow(), s)
    if args.json:
        print(json.dumps(data, default=str, indent=2))
    else:
        print_status(data)
    return 0


def cmd_ready(conn: db.Conn, args: argparse.Namespace, s: settings.Settings) -> int:
    checks = status.readiness(conn, jobs.utcnow(), s.reconcile_stale_after_s)
    for c in checks:
        print(f"{'ok ' if c.ok else 'BAD'}  {c.name}: {c.detail}")
    return 0 if status.ready(checks) else 1


def cmd_backfill(conn: db.Conn, args: argparse.Namespace, s: settings.Settings) -> int:
    now = jobs.utcnow()
    since = now - args.duration
    number = checkpoints.request_backfill(conn, since, now)  # also wakes the poller
    print(f"backfill request #{number}: every followed user from {since:%Y-%m-%d %H:%M:%S}Z")
    if not args.wait:
        print("the poller serves it on its next run (woken now); `ops status` shows it pending")
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        request = checkpoints.pending_backfill(conn)
        if request is None or request[1] != number:
            print(f"served in {(jobs.utcnow() - now).total_seconds():.0f}s")
            return 0
        time.sleep(0.5)
    print(
        f"not served within {args.wait:g}s: is the scheduler running? By hand (same effect):"
        f" python -m functions.poll --once --backfill {args.duration_text}",
        file=sys.stderr,
    )
    return 1


def cmd_rerun_failed(conn: db.Conn, args: argparse.Namespace, s: settings.Settings) -> int:
    items = failures.open_items(conn, args.stage)
    if not items:
        print("no open failed items")
        return 0
    stages = sorted({i["stage"] for i in items})
    for stage in stages:
        job = STAGE_JOBS.get(stage)
        if job is None:
            print(f"{stage}: no job reruns these; see the runbook (docs/runbooks/clear-stuck.md)")
            continue
        jobs.wake(conn, job)  # poll: the users' checkpoints did not move; simulate retries
        print(f"{stage}: {sum(i['stage'] == stage for i in items)} items; woke {job}")
    deadline = time.monotonic() + args.wait
    keys = {(i["stage"], i["item_key"]) for i in items}
    while True:
        left = {(i["stage"], i["item_key"]) for i in failures.open_items(conn, args.stage)} & keys
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    print(f"resolved {len(keys) - len(left)} of {len(keys)}")
    for stage, key in sorted(left):
        print(f"  still failing: {stage} {key}")
    return 0 if not left else 1


@dataclass(frozen=True)
class Finding:
    what: str
    fix: str | None  # what clearing it does; None: not ours to clear
    sql: LiteralString | None = None  # how it is cleared (one statement)
    params: tuple[Any, ...] = ()


def run_name(r: dict[str, Any]) -> str:
    return f"job_run {r['id']} ({r['job']}, pid {r['pid']} on {r['host']})"


def find_stuck(conn: db.Conn, now: datetime, stale_after: timedelta) -> list[Finding]:
    """Work held by processes that are gone or hung; only provably dead owners get a
    fix (a process on this host whose pid is gone, an idle transaction past its limit)."""
    found: list[Finding] = []
    for r in jobs.dead_runs(conn):
        found.append(
            Finding(
                f"{run_name(r)} RUNNING but its process is gone",
                "mark it FAILED",
                jobs.ABANDON,
                (now, "abandoned: its process is gone (ops clear-stuck)", [r["id"]]),
            )
        )
    foreign = conn.execute(
        """SELECT id, job, pid, host FROM job_run WHERE status = 'RUNNING'
             AND host <> %s AND started_at < %s ORDER BY id""",
        (jobs.host_id(), now - timedelta(hours=1)),
    )
    for r in foreign:
        found.append(Finding(f"{run_name(r)} RUNNING for over an hour on another host", None))
    idle = conn.execute(
        """SELECT pid, application_name, xact_start FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND application_name LIKE 'oculus %%' AND state LIKE 'idle in transaction%%'
             AND xact_start < %(cut)s""",
        {"cut": now - IDLE_TX_LIMIT},
    )
    for r in idle:
        found.append(
            Finding(
                f"session {r['pid']} ({r['application_name']}) idle in a transaction"
                f" since {r['xact_start']:%H:%M:%S}",
                "terminate it (its transaction rolls back, its locks are released)",
                "SELECT pg_terminate_backend(%s)",
                (r["pid"],),
            )
        )
    for r in conn.execute("SELECT process, pid, host, beat_at FROM process_heartbeat"):
        if jobs.gone(r["pid"], r["host"]) and r["beat_at"] < now - stale_after:
            found.append(
                Finding(
                    f"heartbeat of {r['process']} (pid {r['pid']}, gone) from"
                    f" {r['beat_at']:%Y-%m-%d %H:%M}",
                    "delete the row",
                    "DELETE FROM process_heartbeat WHERE process = %s AND beat_at = %s",
                    (r["process"], r["beat_at"]),
                )
            )
    for f in failures.open_items(conn, "simulate"):
        found.append(
            Finding(
                f"group {f['item_key']} fails to decide ({f['error'][:80]}) and holds the"
                f" copy engine; if it cannot be fixed: python -m functions.ops clear-stuck"
                f" --void-group {f['item_key']} --yes",
                None,
            )
        )
    return found


def void_group(conn: db.Conn, key: str, now: datetime) -> int:
    """Takes a group that fails to decide out of the copy engine's queue (VOID, audited)
    so the engine goes on with the next. Returns 1 when the group is not waiting."""
    actor = f"ops:{os.environ.get('USER', 'operator')}"
    with conn.transaction():
        row = conn.execute(
            """UPDATE copy_group SET state = 'VOID', done_at = %s
               WHERE group_key = %s AND state = 'CLOSED' RETURNING id""",
            (now, key),
        ).fetchone()
        if row is None:
            print(
                f"group {key} is not waiting for a decision (unknown or decided)", file=sys.stderr
            )
            return 1
        conn.execute(
            """INSERT INTO audit_log (actor, action, target_type, target_id, before, after)
               VALUES (%s, 'group.void', 'copy_group', %s, %s, %s)""",
            (actor, str(row["id"]), Jsonb({"state": "CLOSED"}), Jsonb({"state": "VOID"})),
        )
        failures.resolve(conn, "simulate", [key], now)
    print(f"group {key} voided (audited); the copy engine goes on with the next")
    return 0


def cmd_clear_stuck(conn: db.Conn, args: argparse.Namespace, s: settings.Settings) -> int:
    now = jobs.utcnow()
    if args.void_group:
        if not args.yes:
            print(f"would void group {args.void_group}; add --yes")
            return 1
        return void_group(conn, args.void_group, now)
    found = find_stuck(conn, now, timedelta(seconds=s.reconcile_stale_after_s))
    if not found:
        print("nothing stuck")
        return 0
    for f in found:
        if args.yes and f.sql:
            conn.execute(f.sql, f.params)
            print(f"cleared: {f.what}: {f.fix}")
        else:
            print(f"found:   {f.what}" + (f"\n         fix: {f.fix}" if f.fix else ""))
    if not args.yes and any(f.sql for f in found):
        print("\n(dry run: add --yes to clear what has a fix)")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m functions.ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="pending work, jobs, failed items, heartbeats")
    st.add_argument("--json", action="store_true", help="machine-readable")
    sub.add_parser("ready", help="exit 0 when ready, else 1")
    bf = sub.add_parser("backfill", help="re-poll every user's last DURATION (e.g. 6h)")
    bf.add_argument("duration_text", metavar="DURATION")
    bf.add_argument("--wait", type=float, default=0.0, help="wait this long for it to be served")
    rf = sub.add_parser("rerun-failed", help="retry the open failed items now")
    rf.add_argument("--stage", help="only this stage (poll, simulate)")
    rf.add_argument("--wait", type=float, default=30.0, help="how long to wait for them")
    cs = sub.add_parser(
        "clear-stuck", help="show (and with --yes clear) work left by dead processes"
    )
    cs.add_argument("--yes", action="store_true", help="clear it")
    cs.add_argument(
        "--void-group", metavar="KEY", help="take a group that fails to decide out of the queue"
    )
    args = p.parse_args(argv)
    if args.command == "backfill":
        try:
            args.duration = jobs.parse_duration(args.duration_text)
        except argparse.ArgumentTypeError as exc:
            p.error(str(exc))
    return args


COMMANDS = {
    "status": cmd_status,
    "ready": cmd_ready,
    "backfill": cmd_backfill,
    "rerun-failed": cmd_rerun_failed,
    "clear-stuck": cmd_clear_stuck,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings.get()
    try:
        conn = db.connect(args.database_url, autocommit=True)
    except db.DatabaseUnavailable as exc:
        print(f"database unavailable: {exc}", file=sys.stderr)
        return 2 if args.command != "ready" else 1
    with conn:
        conn.execute("SELECT set_config('application_name', 'oculus ops', false)")
        return COMMANDS[args.command](conn, args, s)


if __name__ == "__main__":
    sys.exit(main())
