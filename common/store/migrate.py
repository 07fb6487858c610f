"""Applies `migrations/NNNN_name.sql` in order, each once, each in its own transaction.

`python -m common.store.migrate` is idempotent: applied files are recorded in
`schema_migration` with a checksum, and an applied file that was edited afterwards is an
error (merged migrations are never edited; write a new one).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from common.runtime import settings
from common.store import db, locks

log = logging.getLogger(__name__)

MIGRATIONS_DIR = settings.ROOT / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = locks.MIGRATE  # one migrator at a time


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Returns the migrations in `directory`, ordered; rejects misnamed or duplicate ones."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return found


def apply(conn: db.Conn, migrations: list[Migration] | None = None) -> list[str]:
    """Applies pending migrations on an autocommit connection; returns their names."""
    migrations = discover() if migrations is None else migrations
    conn.execute("SELECT pg_advisory_lock(%(k)s)", {"k": _LOCK_KEY})
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migration (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = conn.execute("SELECT version, name, checksum FROM schema_migration").fetchall()
        applied = {r["version"]: r for r in rows}
        done: list[str] = []
        for m in migrations:
            recorded = applied.get(m.version)
            if recorded is not None:
                if recorded["checksum"] != m.checksum:
                    raise MigrationError(
                        f"{m.name} was edited after it was applied; add a new migration instead"
                    )
                continue
            with conn.transaction():
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migration (version, name, checksum)"
                    " VALUES (%(v)s, %(n)s, %(c)s)",
                    {"v": m.version, "n": m.name, "c": m.checksum},
                )
            log.info("applied %s", m.name)
            done.append(m.name)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%(k)s)", {"k": _LOCK_KEY})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.store.migrate", description="Apply pending SQL migrations."
    )
    parser.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=settings.get().log_level, format="%(levelname)s %(name)s %(message)s")
    try:
        with db.connect(args.database_url, autocommit=True) as conn:
            done = apply(conn)
    except (MigrationError, db.DatabaseUnavailable) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: {len(done)} applied" + (f" ({', '.join(done)})" if done else ", up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
