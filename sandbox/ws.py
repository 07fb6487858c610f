"""Chain JSON-RPC over WebSocket: eth_subscribe logs, eth_getLogs and friends, plus the
broadcaster that delivers logs (and reorg removals) at event time + chain delay."""

import asyncio
import bisect
import contextlib
import json
import time
from typing import Any

from starlette.websockets import WebSocket

from sandbox import chain, rand

_CLOSE = object()
MAX_BLOCK_RANGE = 100_000


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Conn:
    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.subs: dict[str, Any] = {}


class Hub:
    """Owns the WebSocket connections and the log delivery cursor."""

    def __init__(self, sb: Any):
        self.sb = sb
        self.connections: set[Conn] = set()
        self.sub_rng = rand.rng(sb.world.seed, "subscriptions")
        self.cursor = bisect.bisect_right(sb.world.delivery_times, self._offset_now())
        self._wake = asyncio.Event()
        self._last_drop = time.monotonic()

    def _offset_now(self) -> int:
        return self.sb.clock.now_ms() - self.sb.world.anchor - self.sb.delay_ms()

    def wake(self) -> None:
        self._wake.set()

    async def drop_all(self) -> int:
        """Closes every chain, market-channel and RTDS connection; returns how many."""
        conns = list(self.connections)
        for conn in conns:
            conn.queue.put_nowait(_CLOSE)
        dropped = len(conns)
        if self.sb.market_hub is not None:
            dropped += await self.sb.market_hub.drop_all()
        if self.sb.rtds_hub is not None:
            dropped += await self.sb.rtds_hub.drop_all()
        self.sb.counters["ws_drops"] = self.sb.counters.get("ws_drops", 0) + dropped
        return dropped

    async def run(self) -> None:
        """Delivers due logs to matching subscriptions, forever (cancelled on shutdown)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.02)
            self._wake.clear()
            self._deliver()
            every = self.sb.knobs.ws_drop_every_s
            if every and time.monotonic() - self._last_drop >= every:
                self._last_drop = time.monotonic()
                await self.drop_all()
            elif not every:
                self._last_drop = time.monotonic()

    def _deliver(self) -> None:
        world = self.sb.world
        upto = bisect.bisect_right(world.delivery_times, self._offset_now())
        if upto <= self.cursor:
            return
        due, self.cursor = world.deliveries[self.cursor : upto], upto
        rate, rng = self.sb.knobs.malformed_rate, self.sb.fault_rng
        for _, _, log in due:
            for conn in list(self.connections):
                for sub_id, flt in conn.subs.items():
                    if not chain.matches(log, flt):
                        continue
                    params = {"subscription": sub_id, "result": log}
                    text = json.dumps(
                        {"jsonrpc": "2.0", "method": "eth_subscription", "params": params}
                    )
                    if rate and rng.random() < rate:
                        conn.queue.put_nowait(text[: len(text) // 2])
                    conn.queue.put_nowait(text)

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        conn = Conn(websocket)
        self.connections.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text") or (message.get("bytes") or b"").decode(
                    "utf-8", "replace"
                )
                reply = self.handle(conn, text)
                if reply is not None:
                    conn.queue.put_nowait(json.dumps(reply))
        except RuntimeError:
            pass  # the writer closed the socket (a drop)
        finally:
            self.connections.discard(conn)
            conn.queue.put_nowait(_CLOSE)
            await asyncio.wait([writer], timeout=1)

    async def _writer(self, conn: Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if item is _CLOSE:
                    self.connections.discard(conn)
                    await conn.websocket.close(code=1012)
                    return
                await conn.websocket.send_text(item)
        except Exception:  # the peer went away; the reader notices
            self.connections.discard(conn)

    # -- JSON-RPC ------------------------------------------------------------------------
    def handle(self, conn: Conn, text: str) -> Any:
        try:
            request = json.loads(text)
        except ValueError:
            return _error(None, -32700, "parse error")
        if isinstance(request, list):
            return [self._one(conn, item) for item in request] or _error(
                None, -32600, "empty batch"
            )
        return self._one(conn, request)

    def _one(self, conn: Conn, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "invalid request")
        rid, method, params = request.get("id"), request["method"], request.get("params") or []
        handler = getattr(self, "_rpc_" + method, None)
        if handler is None:
            return _error(rid, -32601, f"the method {method} does not exist/is not available")
        try:
            return {"jsonrpc": "2.0", "id": rid, "result": handler(conn, params)}
        except RpcError as exc:
            return _error(rid, exc.code, str(exc))
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            return _error(rid, -32602, f"invalid params: {exc}")

    def _rpc_eth_chainId(self, conn: Conn, params: list) -> str:
        return chain.CHAIN_ID

    def _rpc_net_version(self, conn: Conn, params: list) -> str:
        return "137"

    def _rpc_eth_blockNumber(self, conn: Conn, params: list) -> str:
        return hex(self.sb.world.block_at(self._offset_now()))

    def _rpc_eth_getBlockByNumber(self, conn: Conn, params: list) -> dict[str, Any] | None:
        """The block header (geth's field names, hex quantities) with its transactions'
        hashes; null for a block past the head, as a node answers."""
        if len(params) > 1 and params[1]:
            raise RpcError(-32602, "full transaction objects are not served here")
        world = self.sb.world
        latest = world.block_at(self._offset_now())
        number = _block(params[0] if params else "latest", latest, world.base_block)
        if number > latest:
            return None
        seed = world.seed
        txs = world.block_tx_hashes(number, self._offset_now())
        return {
            "number": hex(number),
            "hash": chain.block_hash(seed, number),
            "parentHash": chain.block_hash(seed, number - 1),
            "timestamp": hex(world.block_start_ms(number) // 1000),
            "miner": "0x0000000000000000000000000000000000000000",
            "gasLimit": hex(30_000_000),
            "gasUsed": hex(21_000 * len(txs)),
            "baseFeePerGas": hex(30_000_000_000),
            "difficulty": "0x1",
            "extraData": "0x",
            "transactions": txs,
            "uncles": [],
        }

    def _rpc_eth_subscribe(self, conn: Conn, params: list) -> str:
        if not params or params[0] != "logs":
            raise RpcError(-32602, "only 'logs' subscriptions are supported")
        flt = chain.normalise_filter(params[1] if len(params) > 1 and params[1] else {})
        sub_id = f"0x{self.sub_rng.getrandbits(128):032x}"
        conn.subs[sub_id] = flt
        return sub_id

    def _rpc_eth_unsubscribe(self, conn: Conn, params: list) -> bool:
        return conn.subs.pop(str(params[0]), None) is not None

    def _rpc_eth_getLogs(self, conn: Conn, params: list) -> list:
        spec = params[0] if params else {}
        if not isinstance(spec, dict):
            raise RpcError(-32602, "filter must be an object")
        latest = self.sb.world.block_at(self._offset_now())
        first = _block(spec.get("fromBlock"), latest, self.sb.world.base_block)
        last = _block(spec.get("toBlock"), latest, self.sb.world.base_block)
        if last - first > MAX_BLOCK_RANGE:
            raise RpcError(-32005, f"block range too large (max {MAX_BLOCK_RANGE})")
        flt = chain.normalise_filter(spec)
        return self.sb.world.canonical_logs(first, min(last, latest), self._offset_now(), flt)


def _block(tag: Any, latest: int, base: int) -> int:
    if tag is None or tag in ("latest", "pending", "safe", "finalized"):
        return latest
    if tag == "earliest":
        return 0
    if isinstance(tag, str) and tag.startswith("0x"):
        return int(tag, 16)
    raise RpcError(-32602, f"invalid block tag: {tag!r}")


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
