"""functions.exits against Postgres and a fake CLOB (httpx.MockTransport speaking the real
/book wire format): positions the simulator opened are sold when an overlay fires, in
both portfolios, as SELL copy attempts with the exit's code first; a rerun in the same
minute sells nothing; a guardrail's skip is recorded with its reason and tried again the
next minute; off by default, nothing happens. Also: the overlays through the write API
and the config page, and the what-if without and with them."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api import api_client
from test_simulate import ASSET, T0, attach_books, ctx_at, fill, setup

from api import models
from common.domain import copy_config
from common.runtime import jobs, settings
from common.store import copy_configs, db, groups, marks, whatif, writes
from functions import exits, simulate
from site_builder.pages import config as config_page

S = settings.Settings(clob_url="http://clob.test", http_max_retries=0)
NOW = T0 + timedelta(minutes=10, seconds=4)
NARROW = (["0.39", "0.40"], ["0.42", "0.41"])  # bids, asks as sent: best last
WIDE = (["0.39", "0.40"], ["0.60", "0.50"])


class FakeClob:
    """GET /book of the one asset, from `levels`; counts the requests."""

    def __init__(self) -> None:
        self.levels = NARROW
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.url.path != "/book":
            return httpx.Response(404, text="{}")
        bids, asks = self.levels
        body = {
            "market": "0x" + "d" * 64,
            "asset_id": request.url.params["token_id"],
            "timestamp": str(int(NOW.timestamp() * 1000) + self.requests),
            "hash": f"h{self.requests}",
            "bids": [{"price": p, "size": "1000"} for p in bids],
            "asks": [{"price": p, "size": "1000"} for p in asks],
            "min_order_size": "5",
            "tick_size": "0.01",
            "neg_risk": False,
            "last_trade_price": "0.40",
        }
        return httpx.Response(200, text=json.dumps(body))


@pytest.fixture
def clob() -> FakeClob:
    return FakeClob()


def ctx_for(clob: FakeClob, now: datetime) -> jobs.Context:
    from common.upstream import http

    ups = http.make_upstreams(S, transport=httpx.MockTransport(clob.handler))
    return jobs.Context(
        args=argparse.Namespace(),
        settings=S,
        clock=lambda: now,
        resources={"ups": ups},
    )


def bought(conn: db.Conn) -> int:
    """Two users' BUYs copied into both portfolios at 0.50; returns the first user."""
    u1, u2 = setup(conn)
    fill(conn, u1, 0, 1_000, 100)
    fill(conn, u2, 10_000, 11_000, 200)
    groups.step(conn, T0 + timedelta(seconds=60))
    attach_books(conn)
    ctx = ctx_at(T0 + timedelta(seconds=61), [])
    assert jobs.run_recorded(conn, "simulate", ctx, simulate.run_once) == 2
    return u1


def set_global(conn: db.Conn, **values: int) -> None:
    writes.change_config(conn, writes.By("test", "test"), None, values)


def mark(conn: db.Conn, mid: int, at: datetime = NOW - timedelta(seconds=10)) -> None:
    marks.store(conn, [(ASSET, mid, "MIDPOINT")], at)


def attempts(conn: db.Conn) -> list[dict[str, Any]]:
    return list(
        conn.execute(
            """SELECT portfolio_scope, followed_user_id, group_key, decision, reason_codes,
                      filled_share_micros, copy_group_id, order_book_snapshot_id
               FROM copy_attempt WHERE group_key LIKE 'exit:%' ORDER BY id"""
        )
    )


def held(conn: db.Conn) -> dict[tuple[str, int | None], int]:
    rows = conn.execute(
        """SELECT portfolio_scope, followed_user_id, sum(share_delta_micros)::bigint AS n
           FROM ledger_entry WHERE portfolio_scope <> 'SHADOW_USER' AND asset_id = %(a)s
           GROUP BY 1, 2""",
        {"a": ASSET},
    )
    return {(r["portfolio_scope"], r["followed_user_id"]): int(r["n"]) for r in rows}


def test_off_by_default_nothing_is_sold(conn: db.Conn, clob: FakeClob) -> None:
    bought(conn)
    mark(conn, 10_000)  # −98 %
    ctx = ctx_for(clob, NOW)
    assert jobs.run_recorded(conn, "exits", ctx, exits.run_once) == 0
    assert ctx.counts.get("off") == 1 and clob.requests == 0 and attempts(conn) == []


def test_a_stop_loss_sells_both_portfolios_once(conn: db.Conn, clob: FakeClob) -> None:
    u1 = bought(conn)
    before = held(conn)
    assert all(n > 0 for n in before.values()) and len(before) == 3
    set_global(conn, stop_loss_bps=2_000)
    mark(conn, 400_001, NOW - timedelta(seconds=40))  # just above −20 %: holds
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 0
    assert clob.requests == 0
    mark(conn, 400_000, NOW - timedelta(seconds=5))  # at −20 %: sells
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 4
    rows = attempts(conn)
    assert {(r["portfolio_scope"], r["followed_user_id"]) for r in rows} == {
        ("EXEC_USER", u1),
        ("EXEC_USER", u1 + 1),
        ("EXEC_GLOBAL", u1),
        ("EXEC_GLOBAL", u1 + 1),
    }
    for r in rows:
        assert r["decision"] == "EXECUTE" and r["reason_codes"] == ["EXIT_STOP_LOSS"]
        assert r["copy_group_id"] is None and r["order_book_snapshot_id"] is not None
        assert r["group_key"] == f"exit:{r['followed_user_id']}:{ASSET}:2026-11-02T09:10Z"
    assert clob.requests == 1  # one fresh book per asset per run
    assert set(held(conn).values()) == {0}
    # A rerun in the same minute and one the next minute sell nothing more.
    for at in (NOW + timedelta(seconds=30), NOW + timedelta(seconds=60)):
        assert jobs.run_recorded(conn, "exits", ctx_for(clob, at), exits.run_once) == 0
    assert len(attempts(conn)) == 4


def test_an_exit_s_attempt_page_says_what_it_is(
    conn: db.Conn, clob: FakeClob, tmp_path: Path
) -> None:
    from site_builder import build

    bought(conn)
    set_global(conn, stop_loss_bps=2_000)
    mark(conn, 350_000)
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 4
    done = build.Builder(tmp_path, clock=lambda: NOW).build_all(conn)
    assert not done.failed
    exit_id = conn.execute(
        "SELECT max(id) AS id FROM copy_attempt WHERE group_key LIKE 'exit:%'"
    ).fetchone()
    assert exit_id is not None
    page = (tmp_path / f"attempts/{exit_id['id']}.html").read_text()
    assert "an exit overlay's sale of the whole position, at the mark 0.350" in page
    assert "EXIT_STOP_LOSS" in page and "No fills recorded" not in page


def test_a_rerun_in_the_same_minute_never_sells_twice(conn: db.Conn, clob: FakeClob) -> None:
    bought(conn)
    set_global(conn, max_hold_s=60)
    clob.levels = WIDE  # skipped: the position is still held, yet this minute is done
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 4
    again = ctx_for(clob, NOW + timedelta(seconds=50))
    assert jobs.run_recorded(conn, "exits", again, exits.run_once) == 0
    assert again.counts.get("already_recorded") == 3  # user 1, user 2, global
    assert {r["reason_codes"][0] for r in attempts(conn)} == {"EXIT_MAX_HOLD"}
    assert len(attempts(conn)) == 4 and clob.requests == 1


def test_a_guardrail_skip_is_recorded_retried_each_minute_and_written_once_an_hour(
    conn: db.Conn, clob: FakeClob
) -> None:
    bought(conn)
    set_global(conn, take_profit_bps=1_000)
    mark(conn, 550_000)
    clob.levels = WIDE
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 4
    rows = attempts(conn)
    assert {r["decision"] for r in rows} == {"SKIP"}
    assert all(r["reason_codes"][:1] == ["EXIT_TAKE_PROFIT"] for r in rows)
    assert all("SPREAD_TOO_WIDE" in r["reason_codes"] for r in rows)
    assert all(n > 0 for n in held(conn).values())
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 0
    # the next minutes: the same skip is tried again, but not written again for an hour
    for m in (1, 2, 30):
        t = NOW + timedelta(minutes=m)
        mark(conn, 550_000, t - timedelta(seconds=5))
        assert jobs.run_recorded(conn, "exits", ctx_for(clob, t), exits.run_once) == 0
    t = NOW + timedelta(minutes=61)
    mark(conn, 550_000, t - timedelta(seconds=5))
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, t), exits.run_once) == 4
    clob.levels = (["0.54", "0.55"], ["0.57", "0.56"])
    later = NOW + timedelta(minutes=62)
    mark(conn, 550_000, later - timedelta(seconds=5))
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, later), exits.run_once) == 4
    assert [r["decision"] for r in attempts(conn)] == ["SKIP"] * 8 + ["EXECUTE"] * 4
    assert set(held(conn).values()) == {0}


def test_a_user_override_turns_an_overlay_on_for_that_user_only(
    conn: db.Conn, clob: FakeClob
) -> None:
    u1 = bought(conn)
    writes.change_config(conn, writes.By("test", "test"), u1, {"stop_loss_bps": 1_000})
    mark(conn, 300_000)
    assert jobs.run_recorded(conn, "exits", ctx_for(clob, NOW), exits.run_once) == 1
    ((scope, user),) = [(r["portfolio_scope"], r["followed_user_id"]) for r in attempts(conn)]
    assert (scope, user) == ("EXEC_USER", u1)


def test_the_overlays_are_validated_and_round_trip_through_the_api_and_the_page(
    db_url: str, conn: db.Conn, tmp_path: Path
) -> None:
    for bad in (
        {"stop_loss_bps": 10_001},
        {"take_profit_bps": -1},
        {"exit_before_close_s": 2_592_001},
        {"max_hold_s": 1.5},
        {"max_hold_s": "60"},
    ):
        with pytest.raises(ValueError):
            models.UserConfigChange.model_validate(bad)
    assert models.ConfigFields.range_of("stop_loss_bps") == (0, 10_000)
    setup(conn, users=1)
    with api_client(db_url, tmp_path) as api:
        r = api.post("/api/config/global", json={"take_profit_bps": 2_500, "max_hold_s": 3_600})
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["take_profit_bps"] == 2_500
        r = api.post("/api/config/user/1", json={"take_profit_bps": 0, "stop_loss_bps": 500})
        assert r.status_code == 200, r.text
        assert api.post("/api/config/user/1", json={"stop_loss_bps": 20_000}).status_code == 422
    configs = copy_configs.load(conn)
    assert (configs.base.take_profit_bps, configs.base.max_hold_s) == (2_500, 3_600)
    assert configs.base.stop_loss_bps == 0 and configs.base.exit_before_close_s == 0
    mine = configs.for_user(1)
    assert (mine.take_profit_bps, mine.stop_loss_bps, mine.max_hold_s) == (0, 500, 3_600)
    ctx = config_page.context(conn, NOW)
    assert ctx.base["take_profit_bps"] == 2_500
    assert [o.values for o in ctx.overrides] == [{"take_profit_bps": 0, "stop_loss_bps": 500}]
    assert copy_config.Config().take_profit_bps == 0  # off by default


def whatif_data(conn: db.Conn) -> tuple[int, int]:
    """u1 bought at 0.50 before the range; at +30 min u2 buys on a book at 0.30/0.31."""
    u1, u2 = setup(conn)
    fill(conn, u1, 0, 1_000, 100)
    groups.step(conn, T0 + timedelta(seconds=60))
    attach_books(conn)
    assert (
        jobs.run_recorded(
            conn, "simulate", ctx_at(T0 + timedelta(seconds=61), []), simulate.run_once
        )
        == 1
    )
    # Later the other user trades the asset on a book at 0.30: the mark falls.
    low = conn.execute(
        """INSERT INTO order_book_snapshot (asset_id, condition_id, book_time, fetched_at,
               bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros)
           VALUES (%(a)s, '0x' || repeat('d', 64), %(t)s, %(t)s, '{300000}', '{900000000}',
                   '{310000}', '{900000000}') RETURNING id""",
        {"a": ASSET, "t": T0 + timedelta(minutes=30)},
    ).fetchone()
    assert low is not None
    fill(conn, u2, 30 * 60_000, 30 * 60_000 + 500, 100)
    groups.step(conn, T0 + timedelta(minutes=31))
    conn.execute(
        "UPDATE copy_group SET order_book_snapshot_id = %(b)s WHERE order_book_snapshot_id IS NULL",
        {"b": low["id"]},
    )
    return u1, u2


def test_the_whatif_compares_without_and_with_the_overlays(conn: db.Conn) -> None:
    u1, _ = whatif_data(conn)
    start, end = T0 + timedelta(seconds=30), T0 + timedelta(hours=1)
    inputs = whatif.load(conn, start, end, every_portfolio=True)
    assert ("EXEC_USER", u1) in inputs.portfolios  # held from before the range
    proposal = copy_configs.propose(conn, {"stop_loss_bps": 2_000})
    without = whatif.evaluate(inputs, proposal, until=end)
    with_exits = whatif.evaluate(inputs, proposal, exits=True, until=end)
    assert whatif.evaluate(inputs, proposal, until=end) == without  # pure
    # u1's own portfolio sells its position (0.50 → 0.305); the global one holds u1's
    # 10 shares at 0.50 and u2's at 0.31, −25 % on average: it sells both users' shares.
    sold = {"EXEC_USER": 1, "EXEC_GLOBAL": 2}
    for scope in whatif.SCOPES:
        assert without[scope].by_reason["EXIT_STOP_LOSS"] == 0
        assert with_exits[scope].by_reason["EXIT_STOP_LOSS"] == sold[scope]
        assert with_exits[scope].executed == without[scope].executed + sold[scope]
    # Without a tick after the fall (no `until`), nothing sees the low mark.
    blind = whatif.evaluate(inputs, proposal, exits=True)
    assert all(blind[s].by_reason["EXIT_STOP_LOSS"] == 0 for s in whatif.SCOPES)
    report = whatif.report(conn, start, end, proposal)
    assert {"scopes", "groups", "groups_with_book"} <= set(report)
    part = report["exit_overlays"]
    assert part["enabled"] is True
    for s in whatif.SCOPES:
        assert part["scopes"][s]["without"]["by_reason"].get("EXIT_STOP_LOSS") is None
        assert part["scopes"][s]["with"]["by_reason"]["EXIT_STOP_LOSS"] == sold[s]
        # Sold at 0.30 what was then marked 0.305: the exit costs the half cent a share.
        assert part["scopes"][s]["pnl_difference_micros"] == -50_000 * sold[s]
    off = whatif.report(conn, start, end, copy_configs.load(conn))["exit_overlays"]
    assert off["enabled"] is False
    for s in whatif.SCOPES:
        assert off["scopes"][s]["with"] == off["scopes"][s]["without"]


def test_the_whatif_checks_a_deadline_between_groups_and_jumps_to_it(conn: db.Conn) -> None:
    whatif_data(conn)
    start, end = T0 + timedelta(seconds=30), datetime(2100, 1, 1, tzinfo=T0.tzinfo)
    inputs = whatif.load(conn, start, end, every_portfolio=True)
    # Held since 09:00: 45 min is 09:45, after the last group (09:30), before the end.
    hold = copy_configs.propose(conn, {"max_hold_s": 45 * 60})
    out = whatif.evaluate(inputs, hold, exits=True, until=end)  # 74 years: only deadlines
    assert out["EXEC_USER"].by_reason == {"EXIT_MAX_HOLD": 2}  # u1 at 09:45, u2 at 10:15
    assert out["EXEC_GLOBAL"].by_reason == {"EXIT_MAX_HOLD": 2}  # the position's age: 09:45
    short = whatif.evaluate(inputs, hold, exits=True, until=T0 + timedelta(minutes=44))
    assert sum(short[s].by_reason["EXIT_MAX_HOLD"] for s in whatif.SCOPES) == 0
    at = whatif.evaluate(inputs, hold, exits=True, until=T0 + timedelta(minutes=45))
    assert at["EXEC_USER"].by_reason == {"EXIT_MAX_HOLD": 1}
