"""Rows of the exit overlays (functions.exits, SPEC §12): which executable portfolios hold
anything, which exits a minute has recorded already, and the markets of held positions.
The exits themselves are written as copy attempts by `copy_data.write_many`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.domain import decide, portfolio
from common.store import copy_data, db

# The executable portfolios holding some asset: the positions the snapshot job kept at
# its last cut, moved by the ledger entries since (as functions.price reads held assets).
_HOLDERS = """
SELECT DISTINCT portfolio_scope, followed_user_id FROM (
  SELECT portfolio_scope, followed_user_id, asset_id, share_micros AS n
  FROM portfolio_position WHERE share_micros <> 0 AND portfolio_scope <> 'SHADOW_USER'
  UNION ALL
  SELECT portfolio_scope, followed_user_id, asset_id, share_delta_micros
  FROM ledger_entry
  WHERE asset_id IS NOT NULL AND portfolio_scope <> 'SHADOW_USER' AND id > coalesce((
    SELECT cursor_int FROM system_checkpoint
    WHERE name = 'snapshot.ledger' AND followed_user_id IS NULL), 0)) moved
GROUP BY portfolio_scope, followed_user_id, asset_id HAVING sum(n) > 0
ORDER BY portfolio_scope, followed_user_id NULLS FIRST
"""
Row = dict[str, Any]
_RECORDED = """
SELECT followed_user_id, group_key FROM copy_attempt
WHERE portfolio_scope = %(s)s AND group_key = ANY(%(k)s)
"""


_NEWEST = """
SELECT decision, reason_codes FROM copy_attempt
WHERE portfolio_scope = %(s)s AND followed_user_id = %(u)s AND group_key = ANY(%(k)s)
ORDER BY id DESC LIMIT 1
"""


def newest(conn: db.Conn, scope: str, user_id: int, keys: list[str]) -> Row | None:
    """The newest of a seller's exit attempts of `scope` under `keys` (exact keys: the
    unique index serves them), or None."""
    row: Row | None = conn.execute(_NEWEST, {"s": scope, "u": user_id, "k": keys}).fetchone()
    return row


def holders(conn: db.Conn) -> list[portfolio.Key]:
    """The executable portfolios (scope, user: None for the global one) holding shares."""
    return [(r["portfolio_scope"], r["followed_user_id"]) for r in conn.execute(_HOLDERS)]


def recorded(conn: db.Conn, scope: str, keys: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which of the (followed user, group key) attempts of `scope` exist already."""
    wanted = set(keys)
    if not wanted:
        return set()
    rows = conn.execute(_RECORDED, {"s": scope, "k": sorted({k for _, k in wanted})})
    return {(r["followed_user_id"], r["group_key"]) for r in rows} & wanted


def markets_of(
    markets: copy_data.Markets, p: portfolio.Portfolio
) -> dict[str, decide.Market | None]:
    """The markets of the portfolio's open positions, by condition id."""
    conditions = {pos.condition_id for pos in p.positions.values() if pos.condition_id}
    return {c: markets.get(c) for c in sorted(conditions)}
