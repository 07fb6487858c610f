"""Polymarket's real-time data service (RTDS) at `/rtds`, topic `activity`, type `trades`.

A client sends `{"action":"subscribe","subscriptions":[{"topic":"activity","type":"trades"}]}`
(and the same with "unsubscribe"); a text `PING` (any case) gets a text `PONG`. The first
frame after subscribing is empty, as live. Every order of every match is sent at the
match's own time — before its chain log, which the chain delay holds back — once per
side (each order's wallet with its side), to every subscriber (the stream is global).
A message is `{"connection_id","topic","type","timestamp"(ms),"payload"}`; several due in
one tick go out as one JSON array. The payload is a Data API /trades row with the wallet
checksummed (mixed case), as live. A match later reorged out for good was still sent:
a fill that never settles.

Fault knobs: rtds_drop_rate (a message is never sent), rtds_duplicate_rate (sent twice),
rtds_phantom_rate (a followed wallet's message is followed by a copy under a transaction
that never exists: a fill that never settles), rtds_malformed_rate (a frame is broken),
rtds_silent (1: the socket answers PING but sends no data, the live lapse),
rtds_delay_ms (every frame late by this much).
"""

import asyncio
import bisect
import contextlib
import functools
import json
import time
from typing import Any

from starlette.websockets import WebSocket

from sandbox import keccak, money, rand

_CLOSE = object()
TOPIC, TYPE = "activity", "trades"


@functools.cache
def checksummed(wallet: str) -> str:
    """EIP-55 mixed case, as RTDS sends wallets."""
    plain = wallet.lower()[2:]
    digest = keccak.keccak256(plain.encode()).hex()[:40]
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(plain, digest, strict=True)
    )


def _payload(tx, order, market, leader, anchor: int) -> dict[str, Any]:
    outcome = tx["outcome"]
    profile = leader or {}
    row = {
        "proxyWallet": checksummed(order["wallet"]),
        "side": order["side"],
        "asset": market["tokens"][outcome],
        "conditionId": market["condition_id"],
        "outcome": market["outcomes"][outcome],
        "outcomeIndex": outcome,
        "price": money.ratio(order["collateral"], order["shares"]),
        "size": money.num(order["shares"]),
        "timestamp": (anchor + tx["t_ms"]) // 1000,
        "transactionHash": tx["hash"],
        "title": market["question"],
        "slug": market["slug"],
        "eventSlug": market["event_slug"],
        "icon": f"https://example.invalid/icons/{market['slug']}.png",
        "name": profile.get("name", ""),
        "pseudonym": profile.get("pseudonym", ""),
        "bio": profile.get("bio", ""),
        "profileImage": profile.get("profile_image", ""),
    }
    if order["fee"]:
        row["fee"] = money.num(order["fee"])
    return row


def deliveries(world: Any) -> list[tuple[int, int, dict[str, Any]]]:
    """Every order of every match, at its match time: (offset_ms, seq, payload)."""
    out = []
    for tx in world.scenario["txs"]:
        if tx["kind"] != "match":
            continue
        market = world.markets[tx["market"]]
        for order in [*tx["makers"], tx["taker"]]:
            leader = world.leaders.get(order["wallet"])
            out.append((tx["t_ms"], len(out), _payload(tx, order, market, leader, world.anchor)))
    out.sort(key=lambda d: d[:2])
    return out


class Conn:
    def __init__(self, websocket: WebSocket, cid: str):
        self.websocket = websocket
        self.cid = cid
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribed = False


class RtdsHub:
    """Owns the RTDS connections and the delivery cursor (no replay: a connection gets
    the trades matched after it subscribed)."""

    def __init__(self, sb: Any):
        self.sb = sb
        self.connections: set[Conn] = set()
        self.items = deliveries(sb.world)
        self.times = [t for t, _, _ in self.items]
        self.rng = rand.rng(sb.world.seed, "rtds")
        self.cursor = bisect.bisect_right(self.times, self._offset_now())
        self._wake = asyncio.Event()

    def _offset_now(self) -> int:
        return self.sb.clock.now_ms() - self.sb.world.anchor

    def wake(self) -> None:
        self._wake.set()

    def _count(self, name: str, n: int = 1) -> None:
        self.sb.counters[name] = self.sb.counters.get(name, 0) + n

    async def drop_all(self) -> int:
        conns = list(self.connections)
        for conn in conns:
            conn.queue.put_nowait(_CLOSE)
        return len(conns)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.02)
            self._wake.clear()
            self._deliver()

    def _deliver(self) -> None:
        upto = bisect.bisect_right(self.times, self._offset_now())
        if upto <= self.cursor:
            return
        due, self.cursor = self.items[self.cursor : upto], upto
        knobs, rng = self.sb.knobs, self.rng
        if knobs.rtds_silent:
            self._count("rtds_silenced", len(due))
            return
        payloads: list[dict[str, Any]] = []
        for _, _, payload in due:
            if knobs.rtds_drop_rate and rng.random() < knobs.rtds_drop_rate:
                self._count("rtds_dropped")
                continue
            payloads.append(payload)
            if knobs.rtds_duplicate_rate and rng.random() < knobs.rtds_duplicate_rate:
                self._count("rtds_duplicated")
                payloads.append(payload)
            followed = payload["proxyWallet"].lower() in self.sb.world.leaders
            if followed and knobs.rtds_phantom_rate and rng.random() < knobs.rtds_phantom_rate:
                self._count("rtds_phantoms")
                payloads.append({**payload, "transactionHash": rand.hex_bytes(rng, 32)})
        if not payloads:
            return
        now = self.sb.clock.now_ms()
        for conn in list(self.connections):
            if not conn.subscribed:
                continue
            messages = [
                {"connection_id": conn.cid, "topic": TOPIC, "type": TYPE, "timestamp": now}
                | {"payload": p}
                for p in payloads
            ]
            text = json.dumps(messages[0] if len(messages) == 1 else messages)
            if knobs.rtds_malformed_rate and rng.random() < knobs.rtds_malformed_rate:
                self._count("rtds_malformed")
                self._put(conn, _broken(rng, messages[0]))
            self._put(conn, text)
            self._count("rtds_messages", len(messages))

    def _put(self, conn: Conn, text: str) -> None:
        conn.queue.put_nowait((time.monotonic() + self.sb.knobs.rtds_delay_ms / 1000, text))

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        conn = Conn(websocket, rand.hex_bytes(self.rng, 8)[2:])
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

    def handle(self, conn: Conn, text: str) -> None:
        if text.strip().upper() == "PING":
            self._put(conn, "PONG")
            return
        try:
            request = json.loads(text)
        except ValueError:
            return  # the live service ignores what it cannot read
        if not isinstance(request, dict) or not isinstance(request.get("subscriptions"), list):
            return
        wants = any(
            isinstance(s, dict) and s.get("topic") == TOPIC and s.get("type") == TYPE
            for s in request["subscriptions"]
        )
        if request.get("action") == "subscribe" and wants:
            conn.subscribed = True
            self._put(conn, "")  # the empty first frame, as live
        elif request.get("action") == "unsubscribe" and wants:
            conn.subscribed = False

    async def _writer(self, conn: Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if item is _CLOSE:
                    break
                due, text = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await conn.websocket.send_text(text)
            self.connections.discard(conn)
            await conn.websocket.close(code=1012)
        except Exception:  # the peer went away; the reader notices
            self.connections.discard(conn)


def _broken(rng, message: dict[str, Any]) -> str:
    """One broken frame: truncated, a wrong type, a missing field, or not an object."""
    kind = rng.randrange(4)
    if kind == 0:
        text = json.dumps(message)
        return text[: len(text) // 2]
    payload = dict(message["payload"])
    if kind == 1:
        payload[rng.choice(["price", "size", "timestamp"])] = rng.choice(["abc", -1, None, [1]])
    elif kind == 2:
        payload.pop(rng.choice(["proxyWallet", "transactionHash", "asset", "side"]))
    else:
        return json.dumps([1, "two", None])
    return json.dumps({**message, "payload": payload})
