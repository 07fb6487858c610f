"""The sandbox chain WebSocket (JSON-RPC logs) over a raw websockets client."""

import asyncio
import json
from collections import Counter

import httpx
import pytest
from websockets.asyncio.client import connect

from sandbox import chain, testing

pytestmark = pytest.mark.sandbox
ANCHOR = 1_790_000_000_000
OPTIONS = {"clock": "manual", "anchor_ms": ANCHOR, "duration": "2h", "history": "20m"}


@pytest.fixture
def fresh():
    with testing.running_sandbox(seed=7, **OPTIONS) as running:
        yield running


def _get(url: str, **params) -> httpx.Response:
    return httpx.get(url, params=params, timeout=10)


async def _collect(ws, seconds: float) -> list[dict]:
    out = []
    try:
        while True:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), seconds)))
    except TimeoutError:
        return out


async def _subscribe(ws, flt: dict) -> str:
    await ws.send(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", flt]})
    )
    reply = json.loads(await ws.recv())
    assert reply["id"] == 1 and reply["result"].startswith("0x")
    return reply["result"]


def test_subscription_filters_by_topic0_and_owner(fresh):
    wallet = fresh.leaders[0]
    owner_filter = {
        "address": [chain.EXCHANGE.upper().replace("0X", "0x"), chain.NEG_RISK_EXCHANGE],
        "topics": [[chain.ORDER_FILLED], None, chain.padded(wallet)],
    }

    async def scenario() -> tuple[list, list, list]:
        async with connect(fresh.chain_ws_url) as mine, connect(fresh.chain_ws_url) as every:
            await _subscribe(mine, owner_filter)
            await _subscribe(every, {})
            fresh.advance(600_000)
            return await _collect(mine, 1.0), await _collect(every, 0.3), []

    mine, every, _ = asyncio.run(scenario())
    assert mine and every and len(every) > len(mine)
    for note in mine:
        log = note["params"]["result"]
        assert log["topics"][0] == chain.ORDER_FILLED and log["topics"][2] == chain.padded(wallet)
        assert log["removed"] is False and log["blockNumber"].startswith("0x")
    topic0s = Counter(n["params"]["result"]["topics"][0] for n in every)
    assert set(topic0s) == {chain.ORDER_FILLED, chain.ORDERS_MATCHED, chain.POSITIONS_CONVERTED}
    truth = fresh.truth()
    expected = {
        (e["tx_hash"], e["log_index"])
        for e in truth["events"]
        if e["wallet"] == wallet and e["type"] == "TRADE" and e["t_ms"] + 2000 > ANCHOR
    }
    got = {
        (n["params"]["result"]["transactionHash"], int(n["params"]["result"]["logIndex"], 16))
        for n in mine
    }
    assert got == expected


def test_rpc_basics_and_get_logs(fresh):
    async def scenario():
        async with connect(fresh.chain_ws_url) as ws:
            for i, method in enumerate(["eth_chainId", "eth_blockNumber", "nope"]):
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method}))
            replies = [json.loads(await ws.recv()) for _ in range(3)]
            latest = int(replies[1]["result"], 16)
            query = {
                "fromBlock": hex(latest - 900),
                "toBlock": "latest",
                "topics": [chain.ORDER_FILLED],
            }
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": 9, "method": "eth_getLogs", "params": [query]})
            )
            return replies, json.loads(await ws.recv())

    replies, logs = asyncio.run(scenario())
    assert replies[0]["result"] == "0x89"
    assert replies[2]["error"]["code"] == -32601
    assert logs["result"] and all(log["topics"][0] == chain.ORDER_FILLED for log in logs["result"])


def test_get_block_by_number_gives_the_header_of_a_block_up_to_the_head(fresh):
    async def call(ws, rid: int, method: str, params: list) -> dict:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        return json.loads(await ws.recv())

    async def scenario():
        async with connect(fresh.chain_ws_url) as ws:
            head = int((await call(ws, 1, "eth_blockNumber", []))["result"], 16)
            logs = await call(ws, 2, "eth_getLogs", [{"fromBlock": hex(head - 900)}])
            with_logs = int(logs["result"][0]["blockNumber"], 16)
            return (
                head,
                logs["result"],
                [
                    await call(ws, 3, "eth_getBlockByNumber", [hex(with_logs), False]),
                    await call(ws, 4, "eth_getBlockByNumber", ["latest", False]),
                    await call(ws, 5, "eth_getBlockByNumber", [hex(head + 1), False]),
                    await call(ws, 6, "eth_getBlockByNumber", [hex(head), True]),
                ],
            )

    head, logs, (block, latest, future, full) = asyncio.run(scenario())
    number = int(block["result"]["number"], 16)
    assert block["result"]["transactions"] == list(
        dict.fromkeys(x["transactionHash"] for x in logs if int(x["blockNumber"], 16) == number)
    )
    base = fresh.scenario()["base_block"]  # 2 s blocks from the anchor
    assert int(block["result"]["timestamp"], 16) == (ANCHOR + (number - base) * 2000) // 1000
    assert int(latest["result"]["number"], 16) == head
    assert latest["result"]["parentHash"] != latest["result"]["hash"]
    assert future["result"] is None  # past the head: null, as a node answers
    assert full["error"]["code"] == -32602


def test_the_cheap_http_routes_answer_in_their_wire_format(fresh):
    assert _get(fresh.data_api_url + "/").json() == {"data": "OK"}
    fresh.advance(12_345)
    time = _get(fresh.clob_url + "/time")
    assert time.text == str((ANCHOR + 12_345) // 1000)  # a bare number of Unix seconds


def test_reorg_sends_removed_then_reincludes():
    options = {**OPTIONS, "reorg_rate": 0.5, "chain_delay": 0}
    with testing.running_sandbox(seed=9, **options) as sb:
        scen = sb.scenario()
        reorged = [tx for tx in scen["txs"] if tx["reorg"] and 0 < tx["t_ms"] < 3_600_000]
        kept = next(tx for tx in reorged if tx["reorg"]["reinclude"])
        dropped = next(tx for tx in reorged if not tx["reorg"]["reinclude"])

        async def watch(tx) -> list[dict]:
            async with connect(sb.chain_ws_url) as ws:
                sb.set_clock(ANCHOR + tx["t_ms"] - 1)
                await _subscribe(ws, {"topics": [chain.ORDER_FILLED]})
                sb.set_clock(ANCHOR + tx["t_ms"] + 10_000)
                notes = await _collect(ws, 1.0)
            return [
                n["params"]["result"]
                for n in notes
                if n["params"]["result"]["transactionHash"] == tx["hash"]
            ]

        for tx in sorted([kept, dropped], key=lambda tx: tx["t_ms"]):  # the clock only moves on
            flags = [log["removed"] for log in asyncio.run(watch(tx))]
            n = len(tx["makers"]) + 1
            again = [False] * n if tx is kept else []
            assert flags == [False] * n + [True] * n + again
        truth_hashes = {e["tx_hash"] for e in sb.truth()["events"]}
        assert kept["hash"] in truth_hashes and dropped["hash"] not in truth_hashes
        wallet = dropped["wallet"]
        rows = _get(sb.data_api_url + "/trades", user=wallet, takerOnly="false", limit=500).json()
        assert dropped["hash"] not in {r["transactionHash"] for r in rows}


def test_ws_drop_closes_connections(fresh):
    async def scenario() -> int | None:
        async with connect(fresh.chain_ws_url) as ws:
            await _subscribe(ws, {})
            assert fresh.drop_ws() == 1
            try:
                await asyncio.wait_for(ws.recv(), 2)
            except Exception:
                return ws.close_code
            return None

    assert asyncio.run(scenario()) == 1012


def test_ws_faults_periodic_drop_and_truncated_frames():
    options = {**OPTIONS, "ws_drop_every_s": 1.0, "malformed_rate": 1.0}
    with testing.running_sandbox(seed=7, **options) as sb:

        async def scenario() -> tuple[list[str], int | None]:
            frames: list[str] = []
            async with connect(sb.chain_ws_url) as ws:
                await _subscribe(ws, {"topics": [chain.ORDER_FILLED]})
                sb.advance(120_000)
                try:
                    while True:
                        frames.append(await asyncio.wait_for(ws.recv(), 3))
                except Exception:  # the periodic drop ends the stream
                    return frames, ws.close_code
            return frames, None

        frames, code = asyncio.run(scenario())
    assert code == 1012
    broken = [f for f in frames if not _parses(f)]
    whole = [json.loads(f) for f in frames if _parses(f)]
    assert broken and len(whole) == len(broken)
    assert all(n["method"] == "eth_subscription" for n in whole)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
