"""Reading the copy configuration: the newest row per (scope, user) of
`guardrail_config` and `copy_sizing_config`, merged by `domain.copy_config`."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from common.domain import copy_config
from common.store import db

_LATEST_GUARDRAILS = """
SELECT DISTINCT ON (scope, followed_user_id) * FROM guardrail_config
ORDER BY scope, followed_user_id, version DESC
"""
_LATEST_SIZING = """
SELECT DISTINCT ON (scope, followed_user_id) * FROM copy_sizing_config
ORDER BY scope, followed_user_id, version DESC
"""


def latest_rows(conn: db.Conn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Returns the newest row per (scope, user) of `guardrail_config` and of
    `copy_sizing_config` (NULL fields of a USER row inherit)."""
    guardrails = [dict(r) for r in conn.execute(_LATEST_GUARDRAILS)]
    return guardrails, [dict(r) for r in conn.execute(_LATEST_SIZING)]


def load(conn: db.Conn) -> copy_config.ConfigSet:
    """Returns the configuration in force now."""
    return copy_config.merge(*latest_rows(conn))


def propose(
    conn: db.Conn,
    global_values: dict[str, Any],
    user_values: dict[int, dict[str, Any]] | None = None,
) -> copy_config.ConfigSet:
    """Returns the configuration in force with proposed changes laid over it (nothing is
    written): global field values, and per-user override values (None = inherit)."""
    changes = [(None, global_values), *sorted((user_values or {}).items())]
    for _, values in changes:
        copy_config.check_names(values)
    guardrails, sizings = latest_rows(conn)
    rows = {"g": guardrails, "s": sizings}
    for user, values in changes:
        for kind, fields in (("g", copy_config.GUARDRAIL_FIELDS), ("s", copy_config.SIZING_FIELDS)):
            mine = {k: v for k, v in values.items() if k in fields}
            if not mine:
                continue
            scope = "GLOBAL" if user is None else "USER"
            row = next(
                (r for r in rows[kind] if r["scope"] == scope and r["followed_user_id"] == user),
                None,
            )
            if row is None:
                row = {"scope": scope, "followed_user_id": user, "id": None}
                rows[kind].append(row)
            row.update(mine)
            row["id"] = None  # a proposal is not a stored version
    return copy_config.merge(rows["g"], rows["s"])


def used_by(
    conn: db.Conn, user_id: int, guardrails: list[int | None], sizings: list[int | None]
) -> copy_config.Config:
    """The configuration a decision was made under, from the rows it names: its GLOBAL
    guardrail and sizing rows and the user's overrides of each (each table has its own
    ids; rows are never updated)."""

    def rows(table: str, ids: list[int | None]) -> list[dict[str, Any]]:
        query = sql.SQL("SELECT * FROM {} WHERE id = ANY(%(i)s) ORDER BY scope, id").format(
            sql.Identifier(table)
        )
        return [dict(r) for r in conn.execute(query, {"i": [i for i in ids if i is not None]})]

    merged = copy_config.merge(
        rows("guardrail_config", guardrails), rows("copy_sizing_config", sizings)
    )
    return merged.for_user(user_id)
