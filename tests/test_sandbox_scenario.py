"""Sandbox scenario engine, books, chain encoding: pure tests, no server."""

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import books, chain, cli, fills, keccak, money, records, scenario, truth

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"
SHORT = {"duration_ms": 2 * 3_600_000, "history_ms": 15 * 60_000}


@pytest.fixture(scope="module")
def scen():
    return scenario.generate(7, reorg_rate=0.2, **SHORT)


def test_topics_are_keccak_of_the_signatures():
    assert keccak.keccak256(b"").hex().startswith("c5d2460186f7233c")
    assert (
        chain.ORDER_FILLED == "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee"
    )
    assert chain.ORDERS_MATCHED not in (chain.ORDER_FILLED, "0x" + "0" * 64)


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not mounted")
def test_taker_fee_matches_every_real_vector():
    vectors = json.loads((FIXTURES / "nautilus_chain_order_filled_taker_fees.json").read_text())
    for v in vectors:
        maker, taker = int(v["maker_amount_filled"]), int(v["taker_amount_filled"])
        shares = taker if v["side"] == "BUY" else maker
        price = round(float(v["price"]) * 1_000_000)
        rate_bps = round(float(v["fee_rate"]) * 10_000)
        assert money.taker_fee(shares, price, rate_bps) == int(v["fee"]), v


def test_same_seed_gives_byte_identical_scenario():
    first = scenario.dumps(scenario.generate(11, **SHORT))
    assert first == scenario.dumps(scenario.generate(11, **SHORT))
    assert first != scenario.dumps(scenario.generate(12, **SHORT))


def test_generate_cli_writes_the_canonical_file(tmp_path):
    out = tmp_path / "s.json"
    assert cli.main(["generate", "--seed", "5", "--duration", "1h", "--out", str(out)]) == 0
    loaded = scenario.load(out)
    assert out.read_text() == scenario.dumps(loaded)
    assert loaded["params"]["duration_ms"] == 3_600_000


def test_markets_look_real(scen):
    markets = scen["markets"]
    assert any(0 < m["end_ms"] <= 3_600_000 for m in markets), "one market closes in hour one"
    assert any(m["neg_risk"] for m in markets) and any(m["tick_micros"] == 1000 for m in markets)
    assert any(m["fee_rate_bps"] for m in markets)
    for m in markets:
        assert re.fullmatch(r"0x[0-9a-f]{64}", m["condition_id"])
        assert all(len(t) in (77, 78) and t.isdigit() for t in m["tokens"])
    assert len({m["id"] for m in markets}) == len(markets)


def test_leaders_never_hold_negative_and_history_exists(scen):
    recs = records.build(scen)
    held: dict[tuple[str, str], int] = {}
    for rec in recs:
        for asset, delta in rec["deltas"].items():
            key = (rec["wallet"], asset)
            held[key] = held.get(key, 0) + delta
            assert held[key] >= 0, rec
    assert any(rec["t_ms"] < 0 for rec in recs)
    kinds = {rec["type"] for rec in recs}
    assert {"TRADE", "SPLIT", "MERGE"} <= kinds
    assert {rec["role"] for rec in recs if rec["type"] == "TRADE"} == {"maker", "taker"}


def test_scenario_has_bursts_twins_and_reorgs(scen):
    trades = [r for r in records.build(scen) if r["type"] == "TRADE"]
    twins = {}
    for r in trades:
        key = (r["tx_hash"], r["asset"], r["side"], r["shares_micros"], r["usdc_micros"])
        twins[key] = twins.get(key, 0) + 1
    assert max(twins.values()) >= 2, "a dedupe trap: two identical fills in one transaction"
    bursts = [
        (a, b)
        for a, b in itertools.pairwise(trades)
        if a["wallet"] == b["wallet"]
        and a["asset"] == b["asset"]
        and a["tx_hash"] != b["tx_hash"]
        and a["side"] == b["side"]
        and 0 < b["t_ms"] - a["t_ms"] < 2000
    ]
    assert bursts
    reorgs = [tx for tx in scen["txs"] if tx["reorg"]]
    assert any(tx["reorg"]["reinclude"] for tx in reorgs)
    assert any(not tx["reorg"]["reinclude"] for tx in reorgs)
    dropped = {tx["hash"] for tx in reorgs if not tx["reorg"]["reinclude"]}
    assert not dropped & {r["tx_hash"] for r in trades}


def test_taker_order_totals_its_maker_fills(scen):
    for tx in scen["txs"]:
        if tx["kind"] != "match":
            continue
        taker, makers = tx["taker"], tx["makers"]
        assert taker["shares"] == sum(m["shares"] for m in makers)
        assert taker["collateral"] == sum(m["collateral"] for m in makers)
        assert all(m["fee"] == 0 for m in makers)
        assert {m["side"] for m in makers} == {"SELL" if taker["side"] == "BUY" else "BUY"}
        maker_amount, taker_amount = fills.amounts(taker)
        if taker["side"] == "BUY":
            assert (maker_amount, taker_amount) == (taker["collateral"], taker["shares"])


def test_taker_buys_walk_the_book_at_their_time(scen):
    for tx in scen["txs"][:200]:
        if tx["kind"] != "match" or tx["taker"]["wallet"] != tx["wallet"]:
            continue
        market = scen["markets"][tx["market"]]
        bids, asks = books.book(market, tx["outcome"], tx["t_ms"])
        levels = asks if tx["taker"]["side"] == "BUY" else bids
        assert [m["price_micros"] for m in tx["makers"]] == [
            p for p, _ in levels[: len(tx["makers"])]
        ]


def test_order_filled_log_encoding(scen):
    tx = next(tx for tx in scen["txs"] if tx["kind"] == "match")
    market = scen["markets"][tx["market"]]
    logs = chain.match_logs(tx, market)
    assert len(logs) == len(tx["makers"]) + 2
    assert logs[-1]["topics"][0] == chain.ORDERS_MATCHED
    taker_log = chain.render(logs[-2], tx, len(logs) - 2, tx["hash"], 7, 0)
    decoded = chain.decode_order_filled(taker_log)
    assert decoded["taker"] == logs[-2]["address"]  # the taker order's counterparty: exchange
    assert decoded["maker"] == tx["taker"]["wallet"]
    assert decoded["token_id"] == market["tokens"][tx["outcome"]]
    assert len(taker_log["data"]) == 2 + 7 * 64
    assert decoded["fee"] == tx["taker"]["fee"]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 7), st.integers(-3_600_000, 30_000_000), st.integers(0, 1))
def test_books_are_consistent(scen, index, t_ms, outcome):
    market = scen["markets"][index]
    tick = market["tick_micros"]
    bids, asks = books.book(market, outcome, t_ms)
    assert bids and asks and bids[0][0] < asks[0][0]
    assert all(a[0] > b[0] for a, b in itertools.pairwise(bids))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(asks))
    assert all(0 < p < 1_000_000 and p % tick == 0 and s > 0 for p, s in bids + asks)
    other_bids, _ = books.book(market, 1 - outcome, t_ms)
    assert [1_000_000 - p for p, _ in asks] == [p for p, _ in other_bids]
    assert books.book(market, outcome, t_ms) == (bids, asks)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({}, True),
        ({"address": "0xE111180000d2663C0091e4f400237545B87B996B"}, True),
        ({"address": ["0x" + "1" * 40]}, False),
        ({"topics": [chain.ORDER_FILLED]}, True),
        ({"topics": [[chain.ORDERS_MATCHED, chain.ORDER_FILLED]]}, True),
        ({"topics": [chain.ORDERS_MATCHED]}, False),
        ({"topics": [None, None, chain.padded("0x" + "ab" * 20)]}, True),
        ({"topics": [None, None, chain.padded("0x" + "cd" * 20)]}, False),
        ({"topics": [None, None, None, None, None]}, False),
    ],
)
def test_log_filter_semantics(flt, expected):
    log = {
        "address": chain.EXCHANGE,
        "topics": [
            chain.ORDER_FILLED,
            "0x" + "0" * 64,
            chain.padded("0x" + "AB" * 20),
            "0x" + "0" * 64,
        ],
    }
    assert chain.matches(log, chain.normalise_filter(flt)) is expected


def test_truth_cli_matches_records(capsys):
    assert cli.main(["truth", "--seed", "3", "--duration", "1h", "--until-ms", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    scen = scenario.generate(3, duration_ms=3_600_000)
    expected = truth.build(records.build(scen), sorted(x["wallet"] for x in scen["leaders"]), 0, 0)
    assert printed == expected
    assert printed["events"] and all(e["t_ms"] <= 0 for e in printed["events"])
