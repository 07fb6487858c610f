"""Every payload in ../shared/fixtures/polymarket parses with the client models (the
real ones completely; the synthetic ones row by row, each bad row rejected with a
reason), and the traps the fixtures show are handled: book ordering, JSON-string Gamma
fields, v1/v2 field names, chain amounts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from common.domain import money
from common.runtime import settings
from common.upstream import chain, clob, data_api, gamma, http, wire

pytestmark = pytest.mark.fixtures


def load(folder: Path, name: str) -> Any:
    return http.parse_json((folder / name).read_text())


def rows_of(folder: Path, name: str) -> Any:
    rows, reject = data_api.unwrap(load(folder, name), name)
    assert reject is None
    return rows


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("pysdk_data_v2_trades.json", data_api.TradeRow),
        ("pysdk_data_v2_activity.json", data_api.ActivityRow),
        ("pysdk_data_v2_positions.json", data_api.PositionRow),
        ("pysdk_data_v2_prices-history.json", data_api.PricePoint),
        ("pysdk_data_v2_resolutions.json", data_api.UmaResolution),
        ("nautilus_data_api_trades_captured_response.json", data_api.TradeRow),
        ("nautilus_data_api_trades_captured_response_v1.json", data_api.TradeRow),
    ],
)
def test_real_data_api_rows_parse_completely(
    shared_fixtures: Path, name: str, model: type[wire.WireModel]
) -> None:
    batch = wire.parse_rows(model, rows_of(shared_fixtures, name), name)
    assert batch.rejects == []
    assert len(batch.items) == batch.raw_count > 0


def test_portfolio_value(shared_fixtures: Path) -> None:
    value = data_api.PortfolioValue.model_validate(
        load(shared_fixtures, "pysdk_data_v2_value.json")
    )
    assert value.value == 684_953_894_200


def test_v1_and_v2_trades_carry_the_same_values(shared_fixtures: Path) -> None:
    v1 = wire.parse_rows(
        data_api.TradeRow,
        rows_of(shared_fixtures, "nautilus_data_api_trades_captured_response_v1.json"),
        "v1",
    ).items
    v2 = wire.parse_rows(
        data_api.TradeRow,
        rows_of(shared_fixtures, "nautilus_data_api_trades_captured_response.json"),
        "v2",
    ).items
    assert [r.model_dump() for r in v1] == [r.model_dump() for r in v2]
    first = v1[0]
    assert (first.side, first.size, first.price) == ("SELL", 92_590_000, 700_000)
    assert first.notional_micros == 64_813_000


def test_v2_activity_trade_row_amounts(shared_fixtures: Path) -> None:
    rows = wire.parse_rows(
        data_api.ActivityRow, rows_of(shared_fixtures, "pysdk_data_v2_activity.json"), "a"
    ).items
    trade = rows[0]
    assert trade.type == "TRADE" and trade.side == "BUY"
    assert (trade.size, trade.usdc_size, trade.price) == (14_285_715, 13_285_715, 930_000)


def test_v2_positions_opposite_sides(shared_fixtures: Path) -> None:
    rows = wire.parse_rows(
        data_api.PositionRow, rows_of(shared_fixtures, "pysdk_data_v2_positions.json"), "p"
    ).items
    a, b = rows
    assert a.opposite_asset == b.asset and b.opposite_asset == a.asset
    assert a.size == 400_000_000_000 and a.negative_risk


@pytest.mark.parametrize(
    "name",
    [
        "nautilus_data_api_trades_response.json",
        "nautilus_http_responses_trades.json",
        "nautilus_data_api_positions_response.json",
    ],
)
def test_synthetic_data_api_payloads_parse_row_by_row(shared_fixtures: Path, name: str) -> None:
    model = data_api.PositionRow if "positions" in name else data_api.TradeRow
    batch = wire.parse_rows(model, rows_of(shared_fixtures, name), name)
    assert len(batch.items) + len(batch.rejects) == batch.raw_count > 0
    assert all(r.reason and r.payload for r in batch.rejects)


def test_activity_non_trade_rows_have_blank_asset_and_side() -> None:
    row = data_api.ActivityRow.model_validate(
        {
            "proxyWallet": "0x" + "1" * 40,
            "timestamp": 1788886609,
            "conditionId": "0x" + "c" * 64,
            "type": "REDEEM",
            "size": 10,
            "usdcSize": 10,
            "transactionHash": "0x" + "a" * 64,
            "price": 0,
            "asset": "",
            "side": "",
            "outcome": "",
            "outcomeIndex": 999,
        }
    )
    assert (row.asset, row.side, row.outcome, row.price) == (None, None, None, 0)
    with pytest.raises(ValueError, match="TRADE row without asset"):
        data_api.ActivityRow.model_validate({**row.model_dump(), "type": "TRADE"})


REAL_BOOKS = [
    "nautilus_http_responses_book.json",
    "nautilus_clob_book_response_empty_ask.json",
    "nautilus_ws_book_snapshot_captured.json",
]


@pytest.mark.parametrize("name", REAL_BOOKS)
def test_real_books_put_the_best_level_last(shared_fixtures: Path, name: str) -> None:
    payload = load(shared_fixtures, name)
    wire_bids = [money.to_micros(lv["price"]) for lv in payload["bids"]]
    wire_asks = [money.to_micros(lv["price"]) for lv in payload["asks"]]
    # The trap: on the wire the best bid (highest) and best ask (lowest) come LAST.
    assert wire_bids == sorted(wire_bids)
    assert wire_asks == sorted(wire_asks, reverse=True)
    book = clob.BookPayload.model_validate(payload).normalized()
    if wire_bids:
        assert book.best_bid == wire_bids[-1]
    if wire_asks:
        assert book.best_ask == wire_asks[-1]


@pytest.mark.parametrize("name", [*REAL_BOOKS, "nautilus_clob_book_response.json"])
def test_books_sort_locally_whatever_the_wire_order(shared_fixtures: Path, name: str) -> None:
    # The synthetic fixture lists asks ascending, as the docs claim: sorting must not care.
    payload = load(shared_fixtures, name)
    book = clob.BookPayload.model_validate(payload).normalized()
    wire_bids = [money.to_micros(lv["price"]) for lv in payload["bids"]]
    wire_asks = [money.to_micros(lv["price"]) for lv in payload["asks"]]
    assert [p for p, _ in book.bids] == sorted(wire_bids, reverse=True)
    assert [p for p, _ in book.asks] == sorted(wire_asks)
    if wire_bids and wire_asks:
        assert book.best_bid == max(wire_bids) and book.best_ask == min(wire_asks)


def test_real_book_values(shared_fixtures: Path) -> None:
    book = clob.BookPayload.model_validate(
        load(shared_fixtures, "nautilus_http_responses_book.json")
    ).normalized()
    assert (book.best_bid, book.best_ask, book.spread, book.mid) == (
        100_000,
        140_000,
        40_000,
        120_000,
    )
    assert book.book_time.year == 2024
    empty_ask = clob.BookPayload.model_validate(
        load(shared_fixtures, "nautilus_clob_book_response_empty_ask.json")
    )
    normalized = empty_ask.normalized()
    assert normalized.best_ask is None and normalized.mid is None
    assert normalized.best_bid == 2_000
    assert empty_ask.last_trade_price is None and empty_ask.tick_size == 1_000


def test_market_channel_messages(shared_fixtures: Path) -> None:
    resolved = clob.MarketResolvedMessage.model_validate(
        load(shared_fixtures, "nautilus_ws_market_resolved_msg.json")
    )
    assert resolved.winning_asset_id == resolved.assets_ids[0]
    change = clob.PriceChangeMessage.model_validate(
        load(shared_fixtures, "nautilus_ws_market_price_change_msg.json")
    )
    assert change.price_changes[0].best_ask == 520_000
    last = clob.LastTradeMessage.model_validate(
        load(shared_fixtures, "nautilus_ws_market_last_trade_msg.json")
    )
    assert (last.price, last.size) == (510_000, 25_000_000)


def test_gamma_json_string_fields_are_decoded(shared_fixtures: Path) -> None:
    live = gamma.GammaMarket.model_validate(
        load(shared_fixtures, "nautilus_gamma_market_live.json")
    )
    assert live.outcomes == ["Yes", "No"]
    assert live.outcome_prices == [232_500, 767_500]
    assert len(live.clob_token_ids) == 2 and all(t.isdigit() for t in live.clob_token_ids)
    assert live.neg_risk and not live.resolved and live.fee_rate == 40_000
    assert live.tick_size == 1_000 and live.min_order_size == 5_000_000
    # what a neg-risk CONVERSION names: the adapter's market id and the question's index
    assert live.neg_risk_market_id == (
        "0x2c3d7e0eee6f058be3006baabf0d54a07da254ba47fe6e3e095e7990c7814700"
    )
    assert live.question_index == 0
    closed = gamma.GammaMarket.model_validate(
        load(shared_fixtures, "nautilus_gamma_market_closed_binary_accepting_false.json")
    )
    assert closed.closed and closed.resolved and closed.accepting_orders is False
    assert closed.payouts() == dict(zip(closed.clob_token_ids, [0, 1_000_000], strict=True))
    assert closed.fee_rate == 0
    if not closed.neg_risk:
        assert closed.question_index is None
    sports = gamma.GammaMarket.model_validate(
        load(shared_fixtures, "nautilus_gamma_market_fee_sports.json")
    )
    assert sports.fee_rate == 50_000 and sports.fee_schedule is not None
    assert sports.fee_schedule.taker_only


def _v2_log(vector: dict[str, str], index: int, s: settings.Settings) -> dict[str, Any]:
    exchange = s.exchange_addresses_v2[1 if vector["exchange"] == "neg_risk" else 0]
    words = [
        0 if vector["side"] == "BUY" else 1,
        123456789,
        int(vector["maker_amount_filled"]),
        int(vector["taker_amount_filled"]),
        int(vector["fee"]),
        0,
        0,
    ]
    return {
        "address": exchange,
        "topics": [
            s.order_filled_topic_v2,
            "0x" + f"{index:064x}",
            chain.pad_address("0x" + "77" * 20),
            chain.pad_address(exchange),
        ],
        "data": "0x" + "".join(f"{w:064x}" for w in words),
        "blockNumber": "0x10",
        "transactionHash": "0x" + f"{index + 1:064x}",
        "logIndex": hex(index),
        "removed": False,
    }


def test_real_v2_order_filled_amounts_decode_to_clob_prices_and_fees(
    shared_fixtures: Path,
) -> None:
    s = settings.Settings()
    vectors = load(shared_fixtures, "nautilus_chain_order_filled_taker_fees.json")
    assert len(vectors) == 21
    for i, vector in enumerate(vectors):
        fill = chain.decode_order_filled(chain.ChainLog.model_validate(_v2_log(vector, i, s)), s)
        assert fill.side == vector["side"] and fill.is_taker_order
        clob_price = money.to_micros(vector["price"])
        # The on-chain ratio rounds to the CLOB's price within a hundredth of a tick.
        assert abs(fill.price_micros - clob_price) <= 100, vector
        # V2 fee: shares × rate × p × (1 − p), in collateral.
        rate, p = Decimal(vector["fee_rate"]), Decimal(vector["price"])
        expected_fee = Decimal(fill.share_micros) * rate * p * (1 - p)
        assert abs(fill.fee_micros - expected_fee) <= 10, vector


def test_a_malformed_neg_risk_id_does_not_cost_the_market_its_metadata(
    shared_fixtures: Path,
) -> None:
    row = dict(load(shared_fixtures, "nautilus_gamma_market_live.json"))
    row["negRiskMarketID"], row["questionID"] = "0xnot-hex", 12345
    market = gamma.GammaMarket.model_validate(row)
    assert market.neg_risk_market_id is None and market.question_index is None
    assert market.clob_token_ids and market.fee_rate == 40_000
