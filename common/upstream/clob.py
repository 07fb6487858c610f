"""Polymarket CLOB: order books, midpoints, prices and last trade prices, plus the
market-channel WebSocket messages.

Book ordering trap: real payloads list bids ascending and asks descending, so the best
bid and best ask are the LAST elements (the docs say otherwise). `OrderBook` sorts
locally and never trusts array order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from common.domain import money
from common.upstream import http, wire

if TYPE_CHECKING:
    import httpx

MAX_BATCH = 500
Millis = Annotated[datetime, BeforeValidator(wire.millis_to_datetime)]


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


class Level(wire.WireModel):
    price: wire.PriceMicros
    size: wire.NonNegMicros


class BookPayload(wire.WireModel):
    """`GET /book` / `POST /books` object, and the market channel's `book` message."""

    market: wire.Hash32
    asset_id: wire.AssetId
    timestamp: Millis
    hash: str = ""
    bids: list[Level]
    asks: list[Level]
    min_order_size: wire.NonNegMicros | None = None
    tick_size: wire.PriceMicros | None = None
    neg_risk: bool | None = None
    last_trade_price: Annotated[wire.PriceMicros | None, BeforeValidator(_blank_to_none)] = None

    def normalized(self) -> OrderBook:
        """Returns the book with levels sorted best first and empty levels dropped."""
        bids = sorted(((lv.price, lv.size) for lv in self.bids if lv.size > 0), reverse=True)
        asks = sorted((lv.price, lv.size) for lv in self.asks if lv.size > 0)
        return OrderBook(
            asset_id=self.asset_id,
            market=self.market,
            book_time=self.timestamp,
            hash=self.hash,
            bids=tuple(bids),
            asks=tuple(asks),
            tick_size=self.tick_size,
            min_order_size=self.min_order_size,
            neg_risk=self.neg_risk,
            last_trade_price=self.last_trade_price,
        )


@dataclass(frozen=True)
class OrderBook:
    """An L2 book in micros: `bids` best (highest) first, `asks` best (lowest) first."""

    asset_id: str
    market: str
    book_time: datetime
    hash: str
    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]
    tick_size: int | None = None
    min_order_size: int | None = None
    neg_risk: bool | None = None
    last_trade_price: int | None = None

    @property
    def best_bid(self) -> int | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> int | None:
        return self.asks[0][0] if self.asks else None

    @property
    def mid(self) -> int | None:
        """(best bid + best ask) / 2, rounded half-to-even; None on a one-sided book."""
        if self.best_bid is None or self.best_ask is None:
            return None
        return money.div_round(self.best_bid + self.best_ask, 2)

    @property
    def spread(self) -> int | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return self.best_ask - self.best_bid


class LastTrade(wire.WireModel):
    price: wire.PriceMicros
    side: Annotated[Literal["BUY", "SELL"] | None, BeforeValidator(_blank_to_none)] = None

    @property
    def is_default(self) -> bool:
        """The CLOB answers 0.5 with an empty side when the asset never traded."""
        return self.side is None


class Midpoint(wire.WireModel):
    mid: wire.PriceMicros


# Market channel (wss …/ws/market) messages, for marks and resolution.
class PriceChange(wire.WireModel):
    asset_id: wire.AssetId
    price: wire.PriceMicros
    side: Literal["BUY", "SELL"]
    size: wire.NonNegMicros
    hash: str = ""
    # "" when that side is empty (the channel writes an absent decimal as "")
    best_bid: Annotated[wire.PriceMicros | None, BeforeValidator(_blank_to_none)] = None
    best_ask: Annotated[wire.PriceMicros | None, BeforeValidator(_blank_to_none)] = None


class PriceChangeMessage(wire.WireModel):
    event_type: Literal["price_change"]
    market: wire.Hash32
    price_changes: list[PriceChange]
    timestamp: Millis


class LastTradeMessage(wire.WireModel):
    event_type: Literal["last_trade_price"]
    market: wire.Hash32
    asset_id: wire.AssetId
    price: wire.PriceMicros
    side: Literal["BUY", "SELL"]
    size: wire.NonNegMicros
    fee_rate_bps: int = 0
    timestamp: Millis


class MarketResolvedMessage(wire.WireModel):
    event_type: Literal["market_resolved"]
    market: wire.Hash32
    assets_ids: list[wire.AssetId]
    winning_asset_id: wire.AssetId
    winning_outcome: str
    timestamp: Millis
    tags: list[str] = Field(default_factory=list)


# The order of the fields the server hashes a book summary over (its struct's order).
HASH_FIELDS = ("market", "asset_id", "timestamp", "hash", "bids", "asks", "min_order_size",
               "tick_size", "neg_risk", "last_trade_price")  # fmt: skip


def book_hash(raw: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """The hash the CLOB gives a book summary (`GET /book`, the market channel's `book`):
    SHA-1 of its compact JSON, fields in HASH_FIELDS order, `hash` blanked, levels in the
    server's order with their strings as sent (Polymarket/py-clob-client-v2
    `generate_orderbook_summary_hash`). A `book` message lacks `min_order_size` and
    `neg_risk`: `defaults` supplies them (from the asset's REST book)."""
    merged = {**(defaults or {}), **raw}
    payload = {k: merged.get(k) for k in HASH_FIELDS}
    payload["hash"] = ""
    for side in ("bids", "asks"):
        payload[side] = [
            {"price": lv.get("price"), "size": lv.get("size")}
            for lv in (merged.get(side) or [])
            if isinstance(lv, dict)
        ]
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class BookMessage(BookPayload):
    event_type: Literal["book"]


MarketMessage = BookMessage | PriceChangeMessage | LastTradeMessage | MarketResolvedMessage
_BY_TYPE: dict[str, type[wire.WireModel]] = {
    "book": BookMessage,
    "price_change": PriceChangeMessage,
    "last_trade_price": LastTradeMessage,
    "market_resolved": MarketResolvedMessage,
}
IGNORED_TYPES = ("tick_size_change", "best_bid_ask", "new_market")


def market_events(text: str) -> tuple[list[tuple[dict[str, Any], Any]], list[str]]:
    """Splits one market-channel frame (a JSON object or an array of them; `PONG` and
    empty frames carry nothing) into (raw event, parsed message) pairs, and the reasons
    the events it could not use were refused (bounded). Known but unused event types are
    left out quietly; an unknown one is refused with its type."""
    text = text.strip()
    if not text or text == "PONG":
        return [], []
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return [], [f"not JSON: {str(exc)[:200]}"]
    items = data if isinstance(data, list) else [data]
    out: list[tuple[dict[str, Any], Any]] = []
    refused: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            refused.append(f"an event that is not an object: {type(item).__name__}")
            continue
        kind = item.get("event_type")
        model = _BY_TYPE.get(kind) if isinstance(kind, str) else None
        if model is None:
            if kind not in IGNORED_TYPES:
                refused.append(f"unknown event_type {str(kind)[:40]!r}")
            continue
        try:
            out.append((item, model.model_validate(item)))
        except ValueError as exc:
            refused.append(f"{kind}: {' '.join(str(exc).split())[:300]}")
    return out, refused[:20]


def fetch_book_raw(
    upstream: http.Upstream, token_id: str
) -> tuple[dict[str, Any], OrderBook] | wire.Reject | None:
    """`fetch_book`, with the payload as sent (its strings, its level order: what the
    book's hash is computed over)."""
    ctx = {"token_id": token_id}
    source = f"{upstream.name}/book"
    try:
        payload = upstream.get("/book", ctx)
    except http.UpstreamStatusError as exc:
        if exc.status == 404:
            return None
        raise
    except http.BadPayload as exc:
        return wire.Reject.of_bad_payload(source, exc, ctx)
    parsed = wire.parse_one(BookPayload, payload, source, ctx)
    if isinstance(parsed, wire.Reject):
        return parsed
    return payload, parsed.normalized()


def fetch_book(upstream: http.Upstream, token_id: str) -> OrderBook | wire.Reject | None:
    """Returns the asset's normalized book; None when the CLOB has none (404: closed or
    resolved market); a Reject when the payload does not parse."""
    ctx = {"token_id": token_id}
    parsed = wire.fetch_one(upstream, "/book", BookPayload, params=ctx, context=ctx)
    return parsed.normalized() if isinstance(parsed, BookPayload) else parsed


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def fetch_midpoints(
    upstream: http.Upstream, token_ids: list[str]
) -> tuple[dict[str, int], list[wire.Reject]]:
    """Returns {asset: mid micros} for the assets that have a book (`POST /midpoints`,
    ≤ 500 per call), and the entries that did not parse."""
    mids: dict[str, int] = {}
    rejects: list[wire.Reject] = []
    for chunk in _chunks(token_ids, MAX_BATCH):
        try:
            payload = upstream.post("/midpoints", [{"token_id": t} for t in chunk])
        except http.BadPayload as exc:
            rejects.append(wire.Reject.of_bad_payload("clob/midpoints", exc))
            continue
        if not isinstance(payload, dict):
            rejects.append(
                wire.Reject(
                    "clob/midpoints", "expected an object of mids", wire.dump_payload(payload)
                )
            )
            continue
        for token, value in payload.items():
            parsed = wire.parse_one(Midpoint, {"mid": value}, "clob/midpoints", {"token_id": token})
            if isinstance(parsed, wire.Reject):
                rejects.append(parsed)
            else:
                mids[str(token)] = parsed.mid
    return mids, rejects


def fetch_last_trade_price(
    upstream: http.Upstream, token_id: str
) -> LastTrade | wire.Reject | None:
    """Returns the last trade (check `is_default`: 0.5 with no side means none)."""
    ctx = {"token_id": token_id}
    return wire.fetch_one(upstream, "/last-trade-price", LastTrade, params=ctx, context=ctx)


class LiveBooks:
    """The book watcher's live books (`functions.watch_books`' BookServer, at
    OCULUS_LIVE_BOOKS_URL): a decision's book without the CLOB's round trip. Any
    failure — refused, slow (past `timeout_s`), 404 (not watched or not synced), a body
    that does not parse — is None, and the caller reads REST; a bad body is never kept."""

    MAX_BODY = 2**22  # 4 MiB: a book is far smaller

    def __init__(
        self, url: str, timeout_s: float = 0.2, transport: httpx.BaseTransport | None = None
    ) -> None:
        import httpx  # jobs import httpx only when a request is made (tests/test_imports)

        self.client = httpx.Client(base_url=url, timeout=timeout_s, transport=transport)

    def fetch(self, token_id: str) -> OrderBook | None:
        import httpx

        try:
            with self.client.stream("GET", "/book", params={"token_id": token_id}) as r:
                if r.status_code != 200:
                    return None
                body = bytearray()
                for chunk in r.iter_bytes():  # read no more than MAX_BODY, however much comes
                    body += chunk
                    if len(body) > self.MAX_BODY:
                        return None
            book = BookPayload.model_validate_json(bytes(body)).normalized()
        except (httpx.HTTPError, ValueError):  # pydantic's ValidationError is a ValueError
            return None
        return book if book.asset_id == token_id else None

    def close(self) -> None:
        self.client.close()
