"""The CLOB market channel (`/clob/ws/market`), in Polymarket's wire format.

A client's first text frame is `{"assets_ids": [...], "type": "market", ...}`; later ones
are `{"operation": "subscribe"|"unsubscribe", "assets_ids": [...]}`; a text `PING` gets a
text `PONG`. Each connection keeps, per subscribed asset, the book it last told the
client about, so that `book` + the `price_change` frames after it always rebuild the
book `/clob/book` serves at the same clock (the books are a function of time).
"""

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from typing import Any

from starlette.websockets import WebSocket

from sandbox import money, wire

_CLOSE = object()
INVALID = "INVALID OPERATION"
SIDES = (("BUY", 0), ("SELL", 1))  # side label, index in (bids, asks)


class AssetState:
    """What one connection has told its client about one asset."""

    def __init__(self, now_ms: int):
        self.sides: tuple[list, list] | None = None  # best first, as the world gives them
        self.trades_upto = now_ms  # trades after this (absolute ms) are still to report


class Conn:
    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.assets: dict[str, AssetState] = {}
        self.started = False  # the initial `type: market` frame arrived
        self.sent = 0  # data frames sent (PONG and INVALID OPERATION not counted)


class MarketHub:
    """Owns the market-channel connections; a tick sends what changed since the last."""

    def __init__(self, sb: Any):
        self.sb = sb
        self.connections: set[Conn] = set()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drop_all(self) -> int:
        conns = list(self.connections)
        for conn in conns:
            conn.queue.put_nowait(_CLOSE)
        return len(conns)

    async def run(self) -> None:
        """Brings every connection up to date every 20 ms or when woken, forever."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.02)
            self._wake.clear()
            now = self.sb.clock.now_ms()
            for conn in list(self.connections):
                self._sync(conn, now)

    # -- the socket ------------------------------------------------------------------------
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
                self.handle(conn, text)
        except RuntimeError:
            pass  # the writer closed the socket (a drop)
        finally:
            self.connections.discard(conn)
            conn.queue.put_nowait(_CLOSE)
            await asyncio.wait([writer], timeout=1)

    def _put(self, conn: Conn, text: str, data: bool = True) -> None:
        due = time.monotonic() + self.sb.knobs.market_ws_delay_ms / 1000
        conn.queue.put_nowait((due, text, data))

    async def _writer(self, conn: Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if item is _CLOSE:
                    break
                due, text, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await conn.websocket.send_text(text)
                if data:
                    conn.sent += 1
                    limit = self.sb.knobs.market_ws_drop_after
                    if limit and conn.sent >= limit:
                        counters = self.sb.counters
                        counters["market_ws_drops"] = counters.get("market_ws_drops", 0) + 1
                        break
            self.connections.discard(conn)
            await conn.websocket.close(code=1012)
        except Exception:  # the peer went away; the reader notices
            self.connections.discard(conn)

    # -- the protocol ----------------------------------------------------------------------
    def handle(self, conn: Conn, text: str) -> None:
        if text.strip() == "PING":
            self._sync(conn, self.sb.clock.now_ms())  # PONG comes after everything due
            self._put(conn, "PONG", data=False)
            return
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._put(conn, INVALID, data=False)
            return
        assets = request.get("assets_ids")
        if not isinstance(assets, list) or not all(isinstance(a, str) for a in assets):
            self._put(conn, INVALID, data=False)
            return
        operation = request.get("operation")
        if not conn.started:
            if str(request.get("type", "")).lower() != "market" or operation is not None:
                self._put(conn, INVALID, data=False)
                return
            conn.started = True
            self._subscribe(conn, assets)
        elif operation == "subscribe":
            self._subscribe(conn, assets)
        elif operation == "unsubscribe":
            for asset in assets:
                conn.assets.pop(asset, None)
        else:  # a second initial frame is refused, as by the real server
            self._put(conn, INVALID, data=False)

    def _subscribe(self, conn: Conn, assets: list[str]) -> None:
        """Sends one array frame with a `book` per new asset that has an open book; unknown
        or closed assets stay subscribed silently (no book), already subscribed ones too."""
        now = self.sb.clock.now_ms()
        self._sync(conn, now)
        frames = []
        for asset in dict.fromkeys(assets):
            if asset in conn.assets:
                continue
            state = conn.assets[asset] = AssetState(now)
            found = self.sb.world.book(asset, now)
            if found is not None:
                frames.append(self._book(state, found, now))
        if frames:
            self._put(conn, _dumps(frames))

    def _sync(self, conn: Conn, now: int) -> None:
        """Sends, for every subscribed asset, the trades since the last sync (each a
        `last_trade_price`, then one fresh `book`) or else the level changes, grouped by
        market into one `price_change` frame."""
        world = self.sb.world
        changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for asset, state in conn.assets.items():
            found = world.book(asset, now)
            trades = world.trades_between(asset, state.trades_upto, now)
            state.trades_upto = now
            if found is None:  # closed (or unknown): no book, nothing more to send
                state.sides = None
                continue
            market, _, sides = found
            if trades:
                for trade in trades:
                    self._put(conn, _dumps(_last_trade(market, asset, trade)))
                self._put(conn, _dumps(self._book(state, found, now)))
            elif state.sides is None:  # reopened (the manual clock went back)
                self._put(conn, _dumps(self._book(state, found, now)))
            elif sides != state.sides:
                changes[market["condition_id"]] += self._changes(state, found, now)
        for condition_id, rows in changes.items():
            self._maybe_corrupt(rows)
            frame = {
                "market": condition_id,
                "price_changes": rows,
                "timestamp": str(now),
                "event_type": "price_change",
            }
            self._put(conn, _dumps(frame))

    def _summary(self, found: tuple, now: int) -> dict[str, Any]:
        market, outcome, sides = found
        last = self.sb.world.last_trade(market["tokens"][outcome], now)
        return wire.book(market, outcome, sides, now, money.text(last[0]) if last else "")

    def _book(self, state: AssetState, found: tuple, now: int) -> dict[str, Any]:
        """Returns a WS `book` event (the real frame's fields and order: no min_order_size
        or neg_risk, though the hash covers them) and records it as told."""
        state.sides = found[2]
        summary = self._summary(found, now)
        return {
            "market": summary["market"],
            "asset_id": summary["asset_id"],
            "timestamp": summary["timestamp"],
            "hash": summary["hash"],
            "bids": summary["bids"],
            "asks": summary["asks"],
            "tick_size": summary["tick_size"],
            "event_type": "book",
            "last_trade_price": summary["last_trade_price"],
        }

    def _changes(self, state: AssetState, found: tuple, now: int) -> list[dict[str, Any]]:
        """Returns the `price_changes` rows taking the told book to the current one: the
        new total size at each changed level ("0" removes it)."""
        sides = found[2]
        old = state.sides
        assert old is not None
        state.sides = sides
        summary = self._summary(found, now)
        best_bid = summary["bids"][-1]["price"] if summary["bids"] else ""
        best_ask = summary["asks"][-1]["price"] if summary["asks"] else ""
        rows = []
        for label, index in SIDES:
            before, after = dict(old[index]), dict(sides[index])
            for price in sorted(before.keys() | after.keys(), reverse=index == 0):
                size = after.get(price, 0)
                if before.get(price) == size:
                    continue
                rows.append(
                    {
                        "asset_id": summary["asset_id"],
                        "price": money.text(price),
                        "size": money.text(size),
                        "side": label,
                        "hash": summary["hash"],
                        "best_bid": best_bid,
                        "best_ask": best_ask,
                    }
                )
        return rows

    def _maybe_corrupt(self, rows: list[dict[str, Any]]) -> None:
        """With market_ws_corrupt_rate, gives one row a wrong size (the hash stays that of
        the true book, so a client that checks it, or compares with REST, sees drift)."""
        rate, rng = self.sb.knobs.market_ws_corrupt_rate, self.sb.fault_rng
        if not rows or not rate or rng.random() >= rate:
            return
        row = rng.choice(rows)
        true = round(float(row["size"]) * money.MICRO)
        row["size"] = money.text(true + rng.randint(1, 50) * money.MICRO)
        counters = self.sb.counters
        counters["market_ws_corrupted"] = counters.get("market_ws_corrupted", 0) + 1


def _last_trade(market: dict[str, Any], asset: str, trade: dict[str, Any]) -> dict[str, Any]:
    return {
        "asset_id": asset,
        "event_type": "last_trade_price",
        "fee_rate_bps": str(trade["fee_rate_bps"]),
        "market": market["condition_id"],
        "price": money.text(trade["price"]),
        "side": trade["side"],
        "size": money.text(trade["shares"]),
        "timestamp": str(trade["t_ms"]),
        "transaction_hash": trade["tx_hash"],
    }


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))
