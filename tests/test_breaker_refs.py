"""The circuit breaker's reference equities (common/store/portfolios.breaker_refs) read
from the snapshots: for a leader's copy and for the global portfolio alike, each the
same figures a plain reading of its own rows gives."""

from __future__ import annotations

from datetime import timedelta

from common.domain import portfolio
from common.store import db, portfolios
from tests import site_data


def expected(conn: db.Conn, scope: str, user: int | None, at: object) -> portfolio.BreakerRefs:
    rows = conn.execute(
        "SELECT bucket, equity_micros FROM portfolio_snapshot WHERE portfolio_scope = %s"
        " AND followed_user_id IS NOT DISTINCT FROM %s AND bucket <= %s ORDER BY bucket",
        (scope, user, at),
    ).fetchall()

    def ref(start: object) -> int:
        before = [r["equity_micros"] for r in rows if r["bucket"] <= start]
        after = [r["equity_micros"] for r in rows if r["bucket"] > start]
        return before[-1] if before else after[0]

    assert isinstance(at, type(site_data.NOW))
    return portfolio.BreakerRefs(
        day_start=ref(portfolio.day_start(at)),
        week_start=ref(portfolio.week_start(at)),
        peak=max(r["equity_micros"] for r in rows),
    )


def test_breaker_refs_of_a_leader_copy_and_of_the_global_portfolio(conn: db.Conn) -> None:
    users = site_data.load(conn)
    at = site_data.NOW - timedelta(hours=5)
    for scope, user in (("EXEC_USER", users[1]), ("EXEC_GLOBAL", None)):
        p = portfolio.Portfolio(scope, user, starting_cash=1)
        got = portfolios.breaker_refs(conn, p, at)
        assert got == expected(conn, scope, user, at), scope
        assert got.day_start != got.peak  # the figures differ: a mix-up would show
