"""The league table (SPEC §10): rank = ROI 30 d × n / (n + 20), ties by retention, fewer
than 10 attempts listed last unranked; and the Leaders page's figures against the rows
they come from."""

from __future__ import annotations

from decimal import Decimal

from common.domain import league
from common.store import db
from site_builder.pages import leaders
from tests import site_data


def st(user: int, roi: str | None, n: int, retention: str | None = None) -> league.Standing:
    return league.Standing(
        user,
        None if roi is None else Decimal(roi),
        n,
        None if retention is None else Decimal(retention),
    )


def test_a_thin_sample_shrinks_and_ties_go_to_retention_and_too_few_come_last() -> None:
    table = league.order(
        [
            st(1, "0.10", 10),  # 10 % on 10 attempts: 0.10 × 10/30 = 3.3 %
            st(2, "0.05", 100),  # 5 % on 100: 4.2 %
            st(3, "0.05", 100, "0.9"),  # the same, better retention
            st(4, "0.50", 9),  # too few copies, whatever its ROI
            st(5, None, 50),  # no snapshot yet: unranked
            st(6, "-0.02", 40),
        ]
    )
    assert [(rank, s.user_id) for rank, s in table] == [
        (1, 3), (2, 2), (3, 1), (4, 6), (None, 4), (None, 5)
    ]  # fmt: skip
    assert league.ranks([s for _, s in table]) == {3: 1, 2: 2, 1: 3, 6: 4}


def test_the_leaders_page_figures_come_from_the_copy_s_own_rows(conn: db.Conn) -> None:
    site_data.load(conn)
    now = site_data.NOW
    ctx = leaders.context(conn, now)
    assert {x.user["label"] for x in ctx.leaders} == {label for label, _ in site_data.USERS}
    for leader in ctx.leaders:
        assert leader.rank is None  # two attempts each: too few copies
        n = conn.execute(
            "SELECT count(*) AS n, count(*) FILTER (WHERE decision = 'EXECUTE') AS x"
            " FROM copy_attempt WHERE portfolio_scope = 'EXEC_USER' AND followed_user_id = %s",
            (leader.user["id"],),
        ).fetchone()
        assert leader.attempts == n["n"] and leader.fill_rate == n["x"] / n["n"]
        snap = conn.execute(
            "SELECT equity_micros - contributed_micros AS pnl, equity_micros AS e FROM"
            " portfolio_snapshot WHERE portfolio_scope = 'EXEC_USER' AND followed_user_id = %s"
            " ORDER BY bucket",
            (leader.user["id"],),
        ).fetchall()
        first, last = snap[0], snap[-1]  # the dataset's 3 days: the 30-day window's start
        want = (Decimal(last["pnl"] - first["pnl"]) / Decimal(first["e"])).quantize(
            Decimal("0.0001")
        )
        assert leader.roi_30d == want
