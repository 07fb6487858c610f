"""What the benchmarks share: a percentile of their samples, the CPU time of a
connection's server process, and a scratch database on the configured Postgres server
(migrated, dropped after unless kept)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from common.store import db, migrate


def percentile(values: list[float], q: float) -> float:
    """The sample at rank round(q × (n - 1)) of the sorted `values` (not interpolated)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def backend_cpu(conn: db.Conn) -> float | None:
    """CPU seconds used so far by the connection's server process (loopback server on
    this host), or None when /proc does not show it."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def database_name(url: str) -> str:
    """The database name in connection string `url`."""
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


@contextmanager
def scratch_database(server_url: str, prefix: str, keep: bool = False) -> Iterator[str]:
    """Creates database `<prefix>_<8 random hex>` on the server behind `server_url`,
    applies the migrations and yields its URL; drops it after (WITH (FORCE), so
    connections still open do not block it) unless `keep`."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server_url, name)
    url = db.with_database(server_url, name)
    try:
        with db.connect(url, autocommit=True) as conn:
            migrate.apply(conn)
        yield url
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn_:
                conn_.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
