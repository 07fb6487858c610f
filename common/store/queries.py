"""Named queries, one file per table under `common/store/sql/`, kept the way
procrastinate keeps its own (`procrastinate/sql/queries.sql`): each query opens with a
`-- name --` line, then comment lines saying what it does, then the SQL. Comment lines
may head the file.

    -- pending_for_user --
    -- A user's fills not yet applied to the shadow ledger, oldest first.
    SELECT ...

`load("trade_event")` parses `trade_event.sql` once and returns its queries by name;
a name the file lacks raises KeyError listing the ones it has. The loaders and writers
of each table (`store.*`) read their SQL from here, so every statement touching a
table is in one file a reviewer can read top to bottom.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from psycopg.rows import args_row

from common.store import db

R = TypeVar("R")

SQL_DIR = Path(__file__).with_name("sql")
_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)


class Queries(Mapping[str, str]):
    """The named queries of one table file."""

    def __init__(self, table: str, queries: dict[str, str]) -> None:
        self.table, self._queries = table, queries

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            known = ", ".join(sorted(self._queries))
            raise KeyError(f"{self.table}.sql has no query {name!r} (it has: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse(table: str, text: str) -> Queries:
    """Splits a query file into its named queries (without their comment lines).
    Raises ValueError on text before the first name, an empty query or a name twice."""
    parts = _HEADER.split(text)
    if any(line and not line.startswith("--") for line in parts[0].strip().splitlines()):
        raise ValueError(f"{table}.sql: SQL before the first '-- name --' line")
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("-- ")
        ).strip()
        if not sql:
            raise ValueError(f"{table}.sql: query {name!r} is empty")
        if name in queries:
            raise ValueError(f"{table}.sql: query {name!r} is named twice")
        queries[name] = sql.rstrip(";")
    return Queries(table, queries)


@functools.cache
def load(table: str) -> Queries:
    """Returns the named queries of `sql/<table>.sql` (read once)."""
    return parse(table, (SQL_DIR / f"{table}.sql").read_text(encoding="utf-8"))


def fetch(conn: db.Conn, record: type[R], sql: str, params: Any = None) -> list[R]:
    """Runs a query whose columns are the first fields of `record`, in order, and
    returns its rows as records built straight from each result row (positionally: no
    dict per row, for the loops that read thousands). Raises ValueError when the columns
    are not those fields."""
    with conn.cursor(row_factory=args_row(record)) as cur:
        cur.execute(sql, params)
        columns = [c.name for c in cur.description or []]
        fields = list(record.__dataclass_fields__)  # type: ignore[attr-defined]
        if columns != fields[: len(columns)]:
            raise ValueError(f"{record.__name__}: columns {columns} are not its fields {fields}")
        return cur.fetchall()


def tables() -> list[str]:
    return sorted(p.stem for p in SQL_DIR.glob("*.sql"))
