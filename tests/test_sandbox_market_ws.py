"""The sandbox's CLOB market channel over a raw websockets client: the real protocol,
real book hashes, and snapshot + deltas that always rebuild the REST book."""

import asyncio
import json
import random
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sandbox import testing, wire

pytestmark = pytest.mark.sandbox
ANCHOR = 1_790_000_000_000
OPTIONS = {"clock": "manual", "anchor_ms": ANCHOR, "duration": "2h", "history": "20m"}
WS_BOOK_FIELDS = [  # the real captured frame's fields, in its order
    "market",
    "asset_id",
    "timestamp",
    "hash",
    "bids",
    "asks",
    "tick_size",
    "event_type",
    "last_trade_price",
]
CHANGE_FIELDS = {"asset_id", "price", "size", "side", "hash", "best_bid", "best_ask"}


@pytest.fixture
def fresh():
    with testing.running_sandbox(seed=7, **OPTIONS) as running:
        yield running


def _rest_book(sb, token: str) -> dict[str, Any]:
    response = httpx.get(sb.clob_url + "/book", params={"token_id": token}, timeout=10)
    response.raise_for_status()
    return response.json()


def _open_markets(sb, horizon_ms: int) -> list[dict[str, Any]]:
    """Markets still open horizon_ms after the anchor."""
    return [m for m in sb.scenario()["markets"] if m["end_ms"] > horizon_ms]


def _initial(assets: list[str]) -> str:
    return json.dumps({"assets_ids": assets, "type": "market", "custom_feature_enabled": False})


def _events(text: str) -> list[dict[str, Any]]:
    body = json.loads(text)
    return body if isinstance(body, list) else [body]


async def _until_pong(ws, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Sends PING and returns every event received before the PONG (a barrier: the
    server sends everything due at its clock before answering)."""
    await ws.send("PING")
    out: list[dict[str, Any]] = []
    while True:
        text = await asyncio.wait_for(ws.recv(), timeout)
        if text == "PONG":
            return out
        out.extend(_events(text))


class Mirror:
    """A client's copy of the books, built from `book` and `price_change` events only."""

    def __init__(self, meta: dict[str, dict[str, Any]]):
        self.meta = meta  # asset -> {min_order_size, neg_risk} (from REST, as a client would)
        self.books: dict[str, dict[str, Any]] = {}
        self.hash_mismatches = 0

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event_type"]
        if kind == "book":
            assert list(event) == WS_BOOK_FIELDS
            assert wire.summary_hash({**event, **self.meta[event["asset_id"]]}) == event["hash"]
            self.books[event["asset_id"]] = {
                "BUY": {lv["price"]: lv["size"] for lv in event["bids"]},
                "SELL": {lv["price"]: lv["size"] for lv in event["asks"]},
                "market": event["market"],
                "tick_size": event["tick_size"],
                "last_trade_price": event["last_trade_price"],
            }
        elif kind == "price_change":
            assert set(event) == {"market", "price_changes", "timestamp", "event_type"}
            touched: dict[str, str] = {}
            for row in event["price_changes"]:
                assert set(row) == CHANGE_FIELDS and row["side"] in ("BUY", "SELL")
                book = self.books[row["asset_id"]]
                assert book["market"] == event["market"]
                if row["size"] == "0":
                    book[row["side"]].pop(row["price"])
                else:
                    book[row["side"]][row["price"]] = row["size"]
                touched[row["asset_id"]] = row["hash"]
            for asset, expected in touched.items():
                summary = self.summary(asset, event["timestamp"])
                bids, asks = summary["bids"], summary["asks"]
                row = next(r for r in event["price_changes"] if r["asset_id"] == asset)
                assert row["best_bid"] == (bids[-1]["price"] if bids else "")
                assert row["best_ask"] == (asks[-1]["price"] if asks else "")
                if wire.summary_hash(summary) != expected:
                    self.hash_mismatches += 1
        elif kind == "last_trade_price":
            self.books[event["asset_id"]]["last_trade_price"] = event["price"]
        else:
            raise AssertionError(f"unexpected event {kind}")

    def summary(self, asset: str, timestamp: str) -> dict[str, Any]:
        book = self.books[asset]
        bids = sorted(book["BUY"].items(), key=lambda kv: Decimal(kv[0]))
        asks = sorted(book["SELL"].items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        return {
            "market": book["market"],
            "asset_id": asset,
            "timestamp": timestamp,
            "bids": [{"price": p, "size": s} for p, s in bids],
            "asks": [{"price": p, "size": s} for p, s in asks],
            "tick_size": book["tick_size"],
            "last_trade_price": book["last_trade_price"],
            **self.meta[asset],
        }


def _meta(sb, assets: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for asset in assets:
        rest = _rest_book(sb, asset)
        out[asset] = {"min_order_size": rest["min_order_size"], "neg_risk": rest["neg_risk"]}
    return out


def test_summary_hash_reproduces_real_hashes(shared_fixtures):
    rest = json.loads((shared_fixtures / "nautilus_clob_book_response_empty_ask.json").read_text())
    assert wire.summary_hash(rest) == rest["hash"] == "d7df883ae546b09533a4f485bfae0810da1af04e"
    ws = json.loads((shared_fixtures / "nautilus_ws_book_snapshot_captured.json").read_text())
    # the WS frame lacks min_order_size and neg_risk, which the hash covers
    assert wire.summary_hash({**ws, "min_order_size": "5", "neg_risk": False}) == ws["hash"]
    assert wire.summary_hash(ws) != ws["hash"]


def test_subscribe_sends_one_book_per_asset_matching_rest(fresh):
    markets = _open_markets(fresh, 3_600_000)[:3]
    assets = [token for m in markets for token in m["tokens"]]
    unknown = "12345678901234567890"

    async def scenario() -> list[Any]:
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial([*assets, unknown]))
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    frame = asyncio.run(scenario())
    assert isinstance(frame, list)  # the initial dump is one array frame
    assert [event["asset_id"] for event in frame] == assets
    for event in frame:
        rest = _rest_book(fresh, event["asset_id"])  # same manual clock: same timestamp
        assert list(event) == WS_BOOK_FIELDS and event["event_type"] == "book"
        assert event["hash"] == rest["hash"]
        assert {k: event[k] for k in WS_BOOK_FIELDS if k != "event_type"} == {
            k: rest[k] for k in WS_BOOK_FIELDS if k != "event_type"
        }
        assert event["timestamp"] == str(ANCHOR)
        bids = [Decimal(level["price"]) for level in event["bids"]]
        asks = [Decimal(level["price"]) for level in event["asks"]]
        assert bids == sorted(bids) and asks == sorted(asks, reverse=True)
        assert bids[-1] < asks[-1]
        extra = {"min_order_size": rest["min_order_size"], "neg_risk": rest["neg_risk"]}
        assert wire.summary_hash({**event, **extra}) == event["hash"]


def test_ping_pong_and_invalid_operations(fresh):
    token = _open_markets(fresh, 3_600_000)[0]["tokens"][0]

    async def scenario() -> list[str]:
        async with connect(fresh.market_ws_url) as ws:
            replies = []
            await ws.send("PING")
            replies.append(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(_initial([token]))
            assert _events(await asyncio.wait_for(ws.recv(), 5))[0]["asset_id"] == token
            for bad in (_initial([token]), "not json", json.dumps({"operation": "subscribe"})):
                await ws.send(bad)
                replies.append(await asyncio.wait_for(ws.recv(), 5))
            await ws.send("PING")
            replies.append(await asyncio.wait_for(ws.recv(), 5))
            return replies

    assert asyncio.run(scenario()) == ["PONG"] + ["INVALID OPERATION"] * 3 + ["PONG"]


def test_clock_moves_push_price_changes_without_polling(fresh):
    token = _open_markets(fresh, 3_600_000)[0]["tokens"][0]

    async def scenario() -> dict[str, Any]:
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial([token]))
            await asyncio.wait_for(ws.recv(), 5)
            fresh.advance(1_000)  # a new second: a new book
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    event = asyncio.run(scenario())
    assert event["event_type"] == "price_change" and event["timestamp"] == str(ANCHOR + 1_000)
    assert event["price_changes"] and all(
        row["asset_id"] == token for row in event["price_changes"]
    )


def test_subscribe_later_and_unsubscribe(fresh):
    first, second = _open_markets(fresh, 3_600_000)[:2]

    async def scenario() -> tuple[set[str], set[str], set[str]]:
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial(first["tokens"]))
            await asyncio.wait_for(ws.recv(), 5)
            await ws.send(json.dumps({"operation": "subscribe", "assets_ids": second["tokens"]}))
            added = {e["asset_id"] for e in _events(await asyncio.wait_for(ws.recv(), 5))}
            fresh.advance(2_000)
            both = {row["asset_id"] for e in await _until_pong(ws) for row in e["price_changes"]}
            await ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": first["tokens"]}))
            seen: set[str] = set()
            for _ in range(5):
                fresh.advance(1_000)
                for event in await _until_pong(ws):
                    seen |= {row["asset_id"] for row in event.get("price_changes", [])}
                    seen |= {event["asset_id"]} if "asset_id" in event else set()
            return added, both, seen

    added, both, after = asyncio.run(scenario())
    assert added == set(second["tokens"])
    assert both == set(first["tokens"]) | set(second["tokens"])
    assert after and after <= set(second["tokens"])


def test_snapshot_plus_deltas_equals_rest_at_random_moments(fresh):
    """Property: at seeded random moments (sub-second and multi-second steps, through
    trades), the book rebuilt from the channel is exactly the REST book, and every
    price_change hash matches the rebuilt book."""
    rng = random.Random(20)
    txs = [t for t in fresh.scenario()["txs"] if t["kind"] == "match" and 0 < t["t_ms"] < 600_000]
    markets = {m["index"]: m for m in _open_markets(fresh, 3_600_000)}
    traded = sorted({t["market"] for t in txs} & set(markets))[:3]
    assets = [token for i in traded for token in markets[i]["tokens"]]
    assert assets, "the scenario has no trades in open markets in its first 10 minutes"
    deadline = time.monotonic() + 20

    async def scenario() -> tuple[Mirror, int, dict[str, int]]:
        mirror = Mirror(_meta(fresh, assets))
        kinds: dict[str, int] = {}
        checks = 0
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial(assets))
            for event in _events(await asyncio.wait_for(ws.recv(), 5)):
                mirror.apply(event)
            while fresh.now_ms() < ANCHOR + 600_000 and time.monotonic() < deadline:
                fresh.advance(rng.choice([0, 1, 250, 999, 1_000, 3_000, rng.randint(1, 20_000)]))
                for event in await _until_pong(ws):
                    kinds[event["event_type"]] = kinds.get(event["event_type"], 0) + 1
                    mirror.apply(event)
                for asset in rng.sample(assets, k=min(2, len(assets))):
                    rest = _rest_book(fresh, asset)
                    mine = mirror.summary(asset, rest["timestamp"])
                    assert (mine["bids"], mine["asks"]) == (rest["bids"], rest["asks"])
                    assert mine["last_trade_price"] == rest["last_trade_price"]
                    assert wire.summary_hash(mine) == rest["hash"]
                    checks += 1
        return mirror, checks, kinds

    mirror, checks, kinds = asyncio.run(scenario())
    assert checks >= 20 and mirror.hash_mismatches == 0
    assert kinds.get("price_change", 0) > 10
    assert kinds.get("last_trade_price", 0) >= 1 and kinds.get("book", 0) >= 1


def test_trade_sends_last_trade_price_then_a_fresh_book(fresh):
    markets = {m["index"]: m for m in _open_markets(fresh, 3_600_000)}
    tx = next(
        t
        for t in fresh.scenario()["txs"]
        if t["kind"] == "match" and t["t_ms"] > 0 and t["market"] in markets and not t["reorg"]
    )
    token = markets[tx["market"]]["tokens"][tx["outcome"]]
    fresh.set_clock(ANCHOR + tx["t_ms"] - 1)

    async def scenario() -> list[dict[str, Any]]:
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial([token]))
            await asyncio.wait_for(ws.recv(), 5)
            fresh.advance(1)
            return await _until_pong(ws)

    events = asyncio.run(scenario())
    trades = [e for e in events if e["event_type"] == "last_trade_price"]
    assert trades and events[-1]["event_type"] == "book"
    trade = trades[0]
    assert trade["transaction_hash"] == tx["hash"] and trade["timestamp"] == str(
        ANCHOR + tx["t_ms"]
    )
    assert set(trade) == {
        "asset_id",
        "event_type",
        "fee_rate_bps",
        "market",
        "price",
        "side",
        "size",
        "timestamp",
        "transaction_hash",
    }
    assert events[-1]["last_trade_price"] == trades[-1]["price"]
    assert events[-1]["hash"] == _rest_book(fresh, token)["hash"]


def test_fault_drop_after_n_frames(fresh):
    token = _open_markets(fresh, 3_600_000)[0]["tokens"][0]
    fresh.set_faults(market_ws_drop_after=3)

    async def scenario() -> list[str]:
        got: list[str] = []
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial([token]))
            try:
                for _ in range(10):
                    fresh.advance(1_000)
                    got.append(await asyncio.wait_for(ws.recv(), 5))
            except ConnectionClosed:
                return got
        raise AssertionError("the connection was not dropped")

    frames = asyncio.run(scenario())
    assert len(frames) == 3  # the book, then two price changes: then the close
    assert fresh.state()["counts"]["market_ws_drops"] == 1
    fresh.set_faults(market_ws_drop_after=0)


def test_fault_corrupted_delta_is_caught_by_hash_and_rest(fresh):
    assets = _open_markets(fresh, 3_600_000)[0]["tokens"]
    fresh.set_faults(market_ws_corrupt_rate=1.0)

    async def scenario() -> Mirror:
        mirror = Mirror(_meta(fresh, assets))
        async with connect(fresh.market_ws_url) as ws:
            await ws.send(_initial(assets))
            for event in _events(await asyncio.wait_for(ws.recv(), 5)):
                mirror.apply(event)
            fresh.advance(1_000)
            for event in await _until_pong(ws):
                mirror.apply(event)
        return mirror

    mirror = asyncio.run(scenario())
    assert mirror.hash_mismatches == 1  # one frame (both tokens of the market), one bad row
    drift = []
    for asset in assets:
        rest = _rest_book(fresh, asset)
        mine = mirror.summary(asset, rest["timestamp"])
        drift.append((mine["bids"], mine["asks"]) != (rest["bids"], rest["asks"]))
    assert drift.count(True) == 1
    assert fresh.state()["counts"]["market_ws_corrupted"] == 1


def test_fault_delay_and_bounds(fresh):
    knobs = fresh.state()["knobs"]
    assert (knobs["market_ws_drop_after"], knobs["market_ws_corrupt_rate"]) == (0, 0.0)
    assert knobs["market_ws_delay_ms"] == 0
    for bad in ({"market_ws_delay_ms": 600_000}, {"market_ws_corrupt_rate": 1.5}):
        assert httpx.post(fresh.control_url + "/faults", json=bad, timeout=10).status_code == 400
    fresh.set_faults(market_ws_delay_ms=400)

    async def scenario() -> float:
        async with connect(fresh.market_ws_url) as ws:
            started = time.monotonic()
            await ws.send("PING")
            assert await asyncio.wait_for(ws.recv(), 5) == "PONG"
            return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.39
    fresh.set_faults(market_ws_delay_ms=0)


def test_ws_drop_closes_market_connections_too(fresh):
    async def scenario() -> int:
        async with connect(fresh.market_ws_url) as ws:
            await ws.send("PING")
            await asyncio.wait_for(ws.recv(), 5)
            assert fresh.state()["counts"]["market_ws_connections"] == 1
            dropped = fresh.drop_ws()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return dropped

    assert asyncio.run(scenario()) == 1


def test_fault_knobs_as_serve_flags():
    flags = {"market_ws_drop_after": 5, "market_ws_corrupt_rate": 0.5, "market_ws_delay_ms": 20}
    with testing.running_sandbox(seed=7, **OPTIONS, **flags) as running:
        knobs = running.state()["knobs"]
    assert {name: knobs[name] for name in flags} == flags


def test_real_clock_deltas_flow_and_keep_the_hashes():
    with testing.running_sandbox(seed=7, clock="real", speed=5, duration="2h") as running:
        assets = [t for m in _open_markets(running, 3_600_000)[:2] for t in m["tokens"]]

        async def scenario() -> tuple[Mirror, int]:
            mirror = Mirror(_meta(running, assets))
            changes = 0
            async with connect(running.market_ws_url) as ws:
                await ws.send(_initial(assets))
                ends = time.monotonic() + 2.0
                while (left := ends - time.monotonic()) > 0:
                    try:
                        text = await asyncio.wait_for(ws.recv(), left)
                    except TimeoutError:
                        break
                    for event in _events(text):
                        mirror.apply(event)
                        changes += event["event_type"] == "price_change"
            return mirror, changes

        mirror, changes = asyncio.run(scenario())
    assert changes >= 5 and mirror.hash_mismatches == 0
