"""The sandbox over raw HTTP and WebSocket, as the real clients will see it."""

import json
from collections import Counter

import httpx
import pytest

from sandbox import testing

pytestmark = pytest.mark.sandbox
ANCHOR = 1_790_000_000_000
OPTIONS = {"clock": "manual", "anchor_ms": ANCHOR, "duration": "2h", "history": "20m"}


@pytest.fixture(scope="module")
def sb():
    with testing.running_sandbox(seed=7, **OPTIONS) as running:
        running.set_clock(ANCHOR + 90 * 60_000)  # past the first close and resolution
        yield running


@pytest.fixture
def fresh():
    """A private sandbox for tests that move the clock or change knobs."""
    with testing.running_sandbox(seed=7, **OPTIONS) as running:
        yield running


def _get(url: str, **params) -> httpx.Response:
    return httpx.get(url, params=params, timeout=10)


def _open_token(sb) -> str:
    markets = _get(sb.gamma_url + "/markets", closed="false").json()
    return json.loads(markets[0]["clobTokenIds"])[0]


def test_book_best_levels_are_last(sb):
    token = _open_token(sb)
    book = _get(sb.clob_url + "/book", token_id=token).json()
    bids = [float(level["price"]) for level in book["bids"]]
    asks = [float(level["price"]) for level in book["asks"]]
    assert bids == sorted(bids) and asks == sorted(asks, reverse=True)
    assert bids[-1] < asks[-1]
    assert all(isinstance(v, str) for level in book["bids"] for v in level.values())
    assert isinstance(book["timestamp"], str) and isinstance(book["neg_risk"], bool)
    assert {"min_order_size", "tick_size", "hash", "last_trade_price", "market"} <= set(book)
    best_bid = _get(sb.clob_url + "/price", token_id=token, side="BUY").json()["price"]
    best_ask = _get(sb.clob_url + "/price", token_id=token, side="SELL").json()["price"]
    assert (best_bid, best_ask) == (book["bids"][-1]["price"], book["asks"][-1]["price"])
    mid = _get(sb.clob_url + "/midpoint", token_id=token).json()["mid"]
    assert float(mid) == pytest.approx((bids[-1] + asks[-1]) / 2, abs=1e-6)
    batch = httpx.post(sb.clob_url + "/midpoints", json=[{"token_id": token}]).json()
    assert batch == {token: mid}
    books = httpx.post(sb.clob_url + "/books", json=[{"token_id": token}] * 2).json()
    assert len(books) == 2 and books[0]["asset_id"] == token


def test_batch_limit_and_unknown_token(sb):
    too_many = [{"token_id": "1"}] * 501
    assert httpx.post(sb.clob_url + "/books", json=too_many).status_code == 400
    response = _get(sb.clob_url + "/book", token_id="123")
    assert response.status_code == 404
    assert response.json() == {"error": "No orderbook exists for the requested token id"}


def test_gamma_fields_are_json_strings_and_filters_accept_both_forms(sb):
    markets = _get(sb.gamma_url + "/markets").json()
    assert len(markets) == 8
    for market in markets:
        for field in ("outcomes", "outcomePrices", "clobTokenIds"):
            assert isinstance(market[field], str)
            assert len(json.loads(market[field])) == 2
        assert isinstance(market["id"], str) and market["endDate"].endswith("Z")
    ids = [m["conditionId"] for m in markets[:3]]
    repeated = httpx.get(sb.gamma_url + "/markets", params=[("condition_ids", c) for c in ids])
    commas = _get(sb.gamma_url + "/markets", condition_ids=",".join(ids))
    assert [m["id"] for m in repeated.json()] == [m["id"] for m in commas.json()]
    assert len(commas.json()) == 3
    token = json.loads(markets[4]["clobTokenIds"])[1]
    assert _get(sb.gamma_url + "/markets", clob_token_ids=token).json()[0]["id"] == markets[4]["id"]
    one = _get(f"{sb.gamma_url}/markets/{markets[2]['id']}").json()
    assert one["conditionId"] == markets[2]["conditionId"]
    fee = [m for m in markets if m["feesEnabled"]]
    assert fee and fee[0]["feeSchedule"]["takerOnly"] is True


def test_taker_only_defaults_to_true(sb):
    wallet = sb.leaders[1]  # the maker-style leader
    default = _get(sb.data_api_url + "/trades", user=wallet, limit=500).json()
    everything = _get(sb.data_api_url + "/trades", user=wallet, limit=500, takerOnly="false").json()
    assert 0 < len(default) < len(everything)
    hashes = {row["transactionHash"] for row in default}
    truth = sb.truth()["events"]
    maker_hashes = {e["tx_hash"] for e in truth if e["wallet"] == wallet and e["role"] == "maker"}
    assert maker_hashes - hashes, "maker fills must be missing without takerOnly=false"
    stamps = [row["timestamp"] for row in everything]
    assert stamps == sorted(stamps, reverse=True)
    row = everything[0]
    assert isinstance(row["size"], float) and isinstance(row["timestamp"], int)
    assert row["proxyWallet"] == wallet and row["side"] in ("BUY", "SELL")


def test_data_api_errors_and_limits(sb):
    wallet = sb.leaders[0]
    over = _get(sb.data_api_url + "/activity", user=wallet, offset=5001)
    assert over.status_code == 400 and "error" in over.json()
    assert _get(sb.data_api_url + "/trades", user="nobody").status_code == 400
    assert _get(sb.data_api_url + "/trades").status_code == 400
    clamped = _get(sb.data_api_url + "/activity", user=wallet, limit=100_000).json()
    assert clamped == _get(sb.data_api_url + "/activity", user=wallet, limit=500).json()
    assert len(_get(sb.data_api_url + "/activity", user=wallet, limit=3).json()) == 3
    assert _get(sb.data_api_url + "/trades", user="0x" + "9" * 40).json() == []


def test_activity_rows_and_windows(sb):
    wallet = sb.leaders[2]
    rows = _get(sb.data_api_url + "/activity", user=wallet, limit=500, sortDirection="ASC").json()
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps)
    others = [r for r in rows if r["type"] != "TRADE"]
    assert others
    for row in others:
        assert (row["outcomeIndex"], row["asset"], row["side"], row["outcome"]) == (999, "", "", "")
        assert row["conditionId"].startswith("0x") and row["size"] > 0
    start, end = stamps[5], stamps[15]
    window = _get(sb.data_api_url + "/activity", user=wallet, start=start, end=end).json()
    assert {r["transactionHash"] for r in window} == {
        r["transactionHash"] for r in rows if start <= r["timestamp"] <= end
    }
    splits = _get(sb.data_api_url + "/activity", user=wallet, type="SPLIT,MERGE").json()
    assert splits and {r["type"] for r in splits} <= {"SPLIT", "MERGE"}


def test_positions_equal_truth(sb):
    now = sb.now_ms()
    truth = sb.truth(until_ms=now - 5000)
    for wallet in sb.leaders:
        rows = _get(sb.data_api_url + "/positions", user=wallet, sizeThreshold=0, limit=500).json()
        served = {r["asset"]: round(r["size"] * 1_000_000) for r in rows}
        from_events: dict[str, int] = {}
        for event in truth["events"]:
            if event["wallet"] == wallet:
                for asset, delta in event["deltas"].items():
                    from_events[asset] = from_events.get(asset, 0) + delta
        assert served == {a: n for a, n in from_events.items() if n}
        assert served == truth["leaders"][wallet]["positions"]
    trades = [e for e in truth["events"] if e["type"] == "TRADE"]
    assert {e["role"] for e in trades} == {"maker", "taker"}
    wallet = sb.leaders[0]
    rows = _get(sb.data_api_url + "/trades", user=wallet, takerOnly="false", limit=500).json()
    assert len(rows) == sum(1 for e in trades if e["wallet"] == wallet)


def test_api_lag_visibility(fresh):
    wallet = fresh.leaders[0]
    upcoming = [e for e in fresh.truth(until_ms=ANCHOR + 3_600_000)["events"] if e["t_ms"] > ANCHOR]
    event = next(e for e in upcoming if e["wallet"] == wallet and e["type"] == "TRADE")

    def visible() -> bool:
        rows = _get(fresh.data_api_url + "/trades", user=wallet, takerOnly="false").json()
        return event["tx_hash"] in {r["transactionHash"] for r in rows}

    fresh.set_clock(event["t_ms"] + 4_999)
    assert not visible()
    fresh.set_clock(event["t_ms"] + 5_000)
    assert visible()
    fresh.set_faults(api_lag_s=60)
    assert not visible()


def test_closed_market_404_and_resolution(fresh):
    scen = fresh.scenario()
    first = min(scen["markets"], key=lambda m: m["end_ms"])
    token = first["tokens"][0]
    assert _get(fresh.clob_url + "/book", token_id=token).status_code == 200
    fresh.set_clock(ANCHOR + first["end_ms"])
    assert _get(fresh.clob_url + "/book", token_id=token).status_code == 404
    assert _get(fresh.clob_url + "/midpoint", token_id=token).status_code == 404
    market = _get(f"{fresh.gamma_url}/markets/{first['id']}").json()
    assert market["closed"] is True and market["acceptingOrders"] is False
    fresh.set_clock(ANCHOR + first["resolve_ms"])
    market = _get(f"{fresh.gamma_url}/markets/{first['id']}").json()
    assert sorted(json.loads(market["outcomePrices"])) == ["0", "1"]
    assert market["umaResolutionStatus"] == "resolved"
    closed = _get(fresh.gamma_url + "/markets", closed="true").json()
    assert first["id"] in {m["id"] for m in closed}


def test_faults_hit_at_about_the_configured_rate(fresh):
    fresh.set_faults(rate_429=0.3, rate_5xx=0.1)
    statuses = Counter()
    retry_after = set()
    with httpx.Client(timeout=10) as client:
        for _ in range(400):
            response = client.get(
                fresh.clob_url + "/midpoint", params={"token_id": _open_token_cached(fresh)}
            )
            statuses[response.status_code] += 1
            if response.status_code == 429:
                retry_after.add(response.headers.get("retry-after"))
                assert response.json() == {"error": "Too Many Requests"}
    assert 80 <= statuses[429] <= 160, statuses
    fives = statuses[500] + statuses[502] + statuses[503]
    assert 10 <= fives <= 60, statuses
    assert retry_after and None not in retry_after
    for _ in range(20):  # control routes are never faulted
        assert httpx.get(fresh.control_url + "/state").status_code == 200
    assert httpx.post(fresh.control_url + "/faults", json={"nope": 1}).status_code == 400


_TOKENS: dict[int, str] = {}


def _open_token_cached(sb) -> str:
    if sb.port not in _TOKENS:
        _TOKENS[sb.port] = _open_token(sb)
    return _TOKENS[sb.port]


def test_malformed_rows_are_added_never_replacing(fresh):
    wallet = fresh.leaders[0]
    clean = _get(fresh.data_api_url + "/trades", user=wallet, takerOnly="false", limit=50).json()
    fresh.set_faults(malformed_rate=1.0)
    dirty = _get(fresh.data_api_url + "/trades", user=wallet, takerOnly="false", limit=50)
    rows = json.loads(dirty.text)  # may carry NaN, which Python's json accepts
    assert len(rows) > len(clean)
    assert [r for r in rows if r in clean] == clean
