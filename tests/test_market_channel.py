"""The CLOB market channel's wire format (common/upstream/clob.py): the book hash as the
server computes it, on real captures, and frames split into typed events."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.upstream import clob


@pytest.fixture
def fixture(shared_fixtures: Path) -> Callable[[str], dict[str, Any]]:
    def load(name: str) -> dict[str, Any]:
        data = json.loads((shared_fixtures / name).read_text())
        assert isinstance(data, dict)
        return data

    return load


def test_the_hash_of_a_real_rest_book(fixture: Callable[[str], dict[str, Any]]) -> None:
    raw = fixture("nautilus_clob_book_response_empty_ask.json")
    assert clob.book_hash(raw) == raw["hash"] == "d7df883ae546b09533a4f485bfae0810da1af04e"


def test_the_hash_of_a_real_market_channel_book_needs_the_rest_book_s_fields(
    fixture: Callable[[str], dict[str, Any]],
) -> None:
    raw = fixture("nautilus_ws_book_snapshot_captured.json")
    assert "min_order_size" not in raw and "neg_risk" not in raw
    assert clob.book_hash(raw) != raw["hash"]
    assert clob.book_hash(raw, {"min_order_size": "5", "neg_risk": False}) == raw["hash"]
    changed = {**raw, "bids": list(reversed(raw["bids"]))}
    assert clob.book_hash(changed, {"min_order_size": "5", "neg_risk": False}) != raw["hash"]


def test_a_frame_is_an_object_or_an_array_of_events(
    fixture: Callable[[str], dict[str, Any]],
) -> None:
    book = fixture("nautilus_ws_book_snapshot_captured.json")
    change = fixture("nautilus_ws_market_price_change_msg.json")
    events, refused = clob.market_events(json.dumps([book, change]))
    assert refused == []
    assert [type(m).__name__ for _, m in events] == ["BookMessage", "PriceChangeMessage"]
    assert events[0][0] is not events[1][0] and events[0][0]["hash"] == book["hash"]
    one, _ = clob.market_events(json.dumps(change))
    assert len(one) == 1
    assert clob.market_events("PONG") == ([], []) and clob.market_events("  ") == ([], [])


def test_bad_events_are_refused_with_a_reason_and_the_rest_kept(
    fixture: Callable[[str], dict[str, Any]],
) -> None:
    change = fixture("nautilus_ws_market_price_change_msg.json")
    frame = json.dumps(
        [
            change,
            {"event_type": "price_change", "market": "nope"},
            {"event_type": "tick_size_change", "asset_id": "1"},
            {"event_type": "mystery"},
            7,
        ]
    )
    events, refused = clob.market_events(frame)
    assert len(events) == 1
    assert refused[0].startswith("price_change: ")
    assert refused[1:] == ["unknown event_type 'mystery'", "an event that is not an object: int"]
    assert clob.market_events("{not json")[1][0].startswith("not JSON")
    assert clob.market_events("[" * 100_000)[1][0].startswith("not JSON")
