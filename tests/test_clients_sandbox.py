"""The real clients against the sandbox exchange, unchanged but for base URLs: two
independent readings of the wire format must agree, and faults must be survived."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

import run_local
from common.runtime import settings
from common.upstream import chain, clob, data_api, gamma, http, wire
from sandbox import testing

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[testing.RunningSandbox]:
    with testing.running_sandbox(seed=11, clock="manual", api_lag=5, chain_delay=2) as sb:
        sb.advance(30 * 60 * 1000)  # half an hour of trading after t=0
        yield sb


def settings_for(sb: testing.RunningSandbox, **extra: Any) -> settings.Settings:
    return run_local.demo_settings(sb.port, **extra)


@pytest.fixture
def ups(sandbox: testing.RunningSandbox) -> Iterator[http.Upstreams]:
    with http.make_upstreams(settings_for(sandbox)) as upstreams:
        yield upstreams


def all_trades(ups: http.Upstreams, user: str) -> list[data_api.TradeRow]:
    rows: list[data_api.TradeRow] = []
    offset = 0
    while True:
        batch = data_api.fetch_trades(ups.data_api, user, offset=offset)
        assert batch.rejects == []
        rows.extend(batch.items)
        if batch.raw_count < data_api.MAX_LIMIT:
            return rows
        offset += batch.raw_count


def test_trades_match_the_ground_truth_maker_fills_included(
    sandbox: testing.RunningSandbox, ups: http.Upstreams
) -> None:
    now_ms = sandbox.now_ms()
    truth = sandbox.truth(until_ms=now_ms - 5_000)  # what the API has indexed
    for leader in sandbox.leaders:
        expected = sorted(
            (e["tx_hash"], e["asset"], e["side"], e["shares_micros"])
            for e in truth["events"]
            if e["wallet"] == leader and e["type"] == "TRADE"
        )
        got = sorted((r.transaction_hash, r.asset, r.side, r.size) for r in all_trades(ups, leader))
        assert got == expected
    roles = {e["role"] for e in truth["events"] if e["type"] == "TRADE"}
    assert roles == {"maker", "taker"}


def test_activity_pages_by_time_window(
    sandbox: testing.RunningSandbox, ups: http.Upstreams
) -> None:
    leader = sandbox.leaders[0]
    start = (sandbox.anchor_ms - 30 * 60 * 1000) // 1000
    end = sandbox.now_ms() // 1000
    batch = data_api.fetch_activity(ups.data_api, leader, start=start, end=end)
    assert batch.rejects == []
    times = [r.timestamp for r in batch.items]
    assert times == sorted(times)
    assert {r.type for r in batch.items} >= {"TRADE"}
    for row in batch.items:
        if row.type == "TRADE":
            assert row.asset is not None and row.side is not None
        else:
            assert row.asset is None and row.side is None and row.outcome_index == 999


def test_positions_seed_rows(sandbox: testing.RunningSandbox, ups: http.Upstreams) -> None:
    batch = data_api.fetch_positions(ups.data_api, sandbox.leaders[0])
    assert batch.rejects == []
    assert batch.items and all(p.size > 0 for p in batch.items)


def test_books_are_sorted_locally_and_agree_with_mid_and_price(
    sandbox: testing.RunningSandbox, ups: http.Upstreams
) -> None:
    markets = gamma.fetch_markets(
        ups.gamma, condition_ids=[m["condition_id"] for m in sandbox.scenario()["markets"]]
    )
    assert markets.rejects == []
    open_assets = [t for m in markets.items if not m.closed for t in m.clob_token_ids]
    closed_assets = [t for m in markets.items if m.closed for t in m.clob_token_ids]
    assert open_assets
    for asset in open_assets[:4]:
        book = clob.fetch_book(ups.clob, asset)
        assert isinstance(book, clob.OrderBook)
        assert book.best_bid is not None and book.best_ask is not None
        assert book.best_bid < book.best_ask
        assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
    mids, rejects = clob.fetch_midpoints(ups.clob, open_assets)
    assert rejects == [] and set(mids) == set(open_assets)
    for asset in open_assets[:4]:
        book = clob.fetch_book(ups.clob, asset)
        assert isinstance(book, clob.OrderBook) and mids[asset] == book.mid
    for asset in closed_assets[:1]:
        assert clob.fetch_book(ups.clob, asset) is None  # 404 on a closed market
    last = clob.fetch_last_trade_price(ups.clob, open_assets[0])
    assert isinstance(last, clob.LastTrade)


def test_chain_logs_decode_to_the_truth(sandbox: testing.RunningSandbox) -> None:
    s = settings_for(sandbox)
    leaders = sandbox.leaders
    fills: list[chain.ChainFill] = []
    with ws_connect(sandbox.chain_ws_url, open_timeout=5) as ws:
        ws.send(chain.subscribe_request(1, leaders, s))
        reply = chain.parse_message(ws.recv(timeout=5))
        assert isinstance(reply, chain.RpcReply) and reply.error is None
        before = sandbox.now_ms()
        sandbox.advance(10 * 60 * 1000)
        while True:
            try:
                message = chain.parse_message(ws.recv(timeout=2))
            except TimeoutError:
                break
            assert isinstance(message, chain.LogNotification)
            fills.append(chain.decode_order_filled(message.log, s))
    assert fills, "ten minutes of trading produced no logs"
    assert {f.owner for f in fills} <= set(leaders)
    truth = sandbox.truth(until_ms=sandbox.now_ms())
    expected = {
        (e["tx_hash"], e["log_index"])
        for e in truth["events"]
        if e["type"] == "TRADE" and before - 2_000 <= e["t_ms"] <= sandbox.now_ms() - 2_000
    }
    got = {(f.tx_hash, f.log_index) for f in fills if not f.removed}
    assert expected <= got
    by_key = {(e["tx_hash"], e["log_index"]): e for e in truth["events"] if e["type"] == "TRADE"}
    for f in fills:
        e = by_key.get((f.tx_hash, f.log_index))
        if e is None:
            continue
        assert (f.side, f.asset_id, f.share_micros, f.fee_micros) == (
            e["side"],
            e["asset"],
            e["shares_micros"],
            e["fee_micros"],
        )


def test_faults_are_survived_and_junk_is_rejected_not_fatal(
    sandbox: testing.RunningSandbox,
) -> None:
    s = settings_for(sandbox, http_max_retries=8, breaker_threshold=50)
    with http.make_upstreams(s) as ups:
        clean = data_api.fetch_trades(ups.data_api, sandbox.leaders[0], limit=500)
    page = len(clean.items)
    assert 0 < page < 500  # room for junk: a page never exceeds its limit
    sandbox.set_faults(rate_5xx=0.3, rate_429=0.1, malformed_rate=0.5)
    try:
        with http.make_upstreams(s) as ups:
            ups.data_api.backoff_base_s = ups.data_api.backoff_cap_s = 0.01
            rejects: list[wire.Reject] = []
            rows: list[data_api.TradeRow] = []
            for _ in range(10):
                batch = data_api.fetch_trades(ups.data_api, sandbox.leaders[0], limit=500)
                assert batch.raw_count <= 500 and batch.refused == 0
                rejects.extend(batch.rejects)
                rows.extend(batch.items)
            stats = ups.data_api.stats
    finally:
        sandbox.set_faults(rate_5xx=0.0, rate_429=0.0, malformed_rate=0.0)
    real = {e["tx_hash"] for e in sandbox.truth()["events"]}
    # Every page came through; junk that is well-formed (an unknown asset, say) parses
    # here and is the ingestion job's to refuse, the rest is rejected with a reason.
    assert sum(r.transaction_hash in real for r in rows) == 10 * page
    assert rejects and all(r.reason for r in rejects)
    assert stats.get("http_5xx", 0) + stats.get("http_429", 0) > 0
    json.dumps([r.payload for r in rejects])  # storable as text
