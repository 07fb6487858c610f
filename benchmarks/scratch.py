"""What the benchmarks share: a percentile of their samples, and a scratch database on
the configured Postgres server (migrated, dropped after unless kept)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from common import db, migrate


def percentile(values: list[float], q: float) -> float:
    """The sample at rank round(q × (n - 1)) of the sorted `values` (not interpolated)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
