"""The request budget: paths with a tighter limit of their own draw on two buckets, and
the jobs' buckets live in Postgres, one budget for every process and host on it
(common/store/budget.py). Two SharedBudget objects are two processes: each has its own
connection, as two processes on two hosts would."""

from __future__ import annotations

import logging

import httpx
import pydantic
import pytest

from common.runtime import settings
from common.store import budget, db
from common.upstream import http
from tests.test_http import make


def test_path_limits_are_parsed_and_bad_ones_refused() -> None:
    assert settings.parse_path_limits(" data_api/trades=20:40; clob/book=5.5:10,") == {
        "data_api": {"/trades": (20.0, 40)},
        "clob": {"/book": (5.5, 10)},
    }
    for bad in ("data_api=20:40", "data_api/trades=0:40", "data_api/x=1:0", "chain/x=1:1"):
        with pytest.raises(ValueError):
            settings.parse_path_limits(bad)
    with pytest.raises(pydantic.ValidationError, match="rps:burst"):
        settings.Settings(rate_limit_paths="data_api/trades=fast")


def test_a_path_with_its_own_limit_draws_on_both_buckets_and_a_429_slows_only_its_own() -> None:
    answers = iter([httpx.Response(429), *[httpx.Response(200, json=[]) for _ in range(20)]])
    ups, clock = make(
        lambda r: next(answers),
        rate_limit_rps=100,
        rate_limit_burst=100,
        rate_limit_paths="data_api/trades=2:2",
    )
    assert set(ups.data_api.paths) == {"/trades"} and not ups.clob.paths
    ups.data_api.get("/trades", {"user": "0x1"})  # a 429, then an answer
    trades = ups.data_api.paths["/trades"]
    assert trades.rate == pytest.approx(1.0 * 1.1)  # halved to 1, then 10 % back
    assert ups.data_api.bucket.rate == 100  # the upstream's own rate is untouched
    before = len(clock.slept)
    for _ in range(3):
        ups.data_api.get("/trades")
    assert len(clock.slept) - before == 3  # paced by /trades' 1.x rps, not 100
    slept = len(clock.slept)
    for _ in range(5):
        ups.data_api.get("/activity")  # other paths only by the upstream's burst
    assert len(clock.slept) == slept


def test_two_processes_share_one_budget(db_url: str) -> None:
    one, two = budget.SharedBudget(db_url), budget.SharedBudget(db_url)
    try:
        a, b = one.bucket("data_api", 5, 4), two.bucket("data_api", 5, 4)
        assert [a.reserve() for _ in range(2)] == [0.0, 0.0]
        assert [b.reserve() for _ in range(2)] == [0.0, 0.0]
        # the burst is spent by both together: the next one waits its turn, ~1/5 s
        wait = b.reserve()
        assert 0.1 < wait <= 0.2
        assert a.reserve() > wait  # queued behind it, not beside it
        other = two.bucket("clob", 5, 4)
        assert other.reserve() == 0.0  # another upstream has its own budget
    finally:
        one.close()
        two.close()


def test_a_429_anywhere_halves_everyone_s_rate_and_successes_win_it_back(db_url: str) -> None:
    one, two = budget.SharedBudget(db_url), budget.SharedBudget(db_url)
    try:
        a, b = one.bucket("gamma", 20, 40), two.bucket("gamma", 20, 40)
        a.reserve()
        a.slow_down()
        a.slow_down()
        b.reserve()
        assert b.rate == pytest.approx(5.0)  # the other process sees it at once
        b.recover()
        assert b.rate == pytest.approx(5.5)
        for _ in range(40):
            b.recover()
        assert b.rate == 20.0
        b.recover()  # at the nominal rate: no statement at all
        for _ in range(10):
            a.slow_down()
        a.reserve()
        assert a.rate == budget.MIN_RATE
        row = one.run(
            "SELECT requests, slowed_at FROM request_budget WHERE name = %(n)s", {"n": "gamma"}
        )
        assert row is not None and row["requests"] == 3 and row["slowed_at"] is not None
    finally:
        one.close()
        two.close()


def test_a_lower_configured_rate_applies_at_once(db_url: str) -> None:
    one = budget.SharedBudget(db_url)
    try:
        one.bucket("data_api", 100, 1).reserve()
        slow = one.bucket("data_api", 2, 1)
        assert slow.reserve() == pytest.approx(0.5, abs=0.05)  # in debt one token at 2 rps
        assert slow.rate == 2
    finally:
        one.close()


def test_without_the_database_the_process_s_own_bucket_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = budget.SharedBudget("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    bucket = shared.bucket("data_api", 10, 2)
    with caplog.at_level(logging.WARNING):
        waits = [bucket.reserve() for _ in range(3)]
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # paced all the same
    assert sum("own bucket serves" in r.message for r in caplog.records) == 1  # said once


def test_the_jobs_upstreams_draw_on_the_shared_budget(db_url: str, conn: db.Conn) -> None:
    ups = budget.make_upstreams(settings.Settings(), db_url)
    try:
        assert isinstance(ups.data_api.bucket, budget.SharedBucket)
        assert isinstance(ups.data_api.paths["/trades"], budget.SharedBucket)
        assert ups.data_api.paths["/positions"].rate == 15
        ups.data_api.paths["/trades"].reserve()
        names = {r["name"] for r in conn.execute("SELECT name FROM request_budget")}
        assert names == {"data_api/trades"}
    finally:
        ups.close()
    own = budget.make_upstreams(settings.Settings(rate_limit_shared=False))
    assert isinstance(own.data_api.bucket, http.TokenBucket)
    own.close()
