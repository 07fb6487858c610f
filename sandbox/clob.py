"""CLOB routes: books (best level LAST), midpoints, prices, last trade price."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox import money, web, wire

NO_BOOK = "No orderbook exists for the requested token id"
MAX_BATCH = 500


def _book_json(request: Request, token: str) -> dict[str, Any] | None:
    sb = web.sandbox(request)
    now = sb.clock.now_ms()
    found = sb.world.book(token, now)
    if found is None:
        return None
    market, outcome, sides = found
    last = sb.world.last_trade(token, now)
    return wire.book(market, outcome, sides, now, money.text(last[0]) if last else "")


def _mid(request: Request, token: str) -> str | None:
    sb = web.sandbox(request)
    found = sb.world.book(token, sb.clock.now_ms())
    if found is None:
        return None
    bids, asks = found[2]
    return money.text((bids[0][0] + asks[0][0] + 1) // 2)


async def _tokens(request: Request) -> list[str]:
    body = await web.json_body(request)
    if not isinstance(body, list) or not all(isinstance(b, dict) for b in body):
        raise web.BadRequest('body must be a JSON array of {"token_id": ...}')
    if len(body) > MAX_BATCH:
        raise web.BadRequest(f"too many token ids: at most {MAX_BATCH}")
    return [str(b.get("token_id", "")) for b in body]


async def book(request: Request) -> Response:
    token = request.query_params.get("token_id", "")
    if not token:
        return web.error(400, "Invalid token id")
    body = _book_json(request, token)
    return web.json_response(body) if body else web.error(404, NO_BOOK)


async def books(request: Request) -> Response:
    try:
        tokens = await _tokens(request)
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    found = [b for b in (_book_json(request, t) for t in tokens) if b]
    return web.json_response(found)


async def midpoint(request: Request) -> Response:
    mid = _mid(request, request.query_params.get("token_id", ""))
    return web.json_response({"mid": mid}) if mid else web.error(404, NO_BOOK)


async def midpoints(request: Request) -> Response:
    try:
        tokens = await _tokens(request)
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    out = {}
    for token in tokens:
        mid = _mid(request, token)
        if mid:
            out[token] = mid
    return web.json_response(out)


async def price(request: Request) -> Response:
    side = request.query_params.get("side", "").upper()
    if side not in ("BUY", "SELL"):
        return web.error(400, "Invalid side")
    sb = web.sandbox(request)
    found = sb.world.book(request.query_params.get("token_id", ""), sb.clock.now_ms())
    if found is None:
        return web.error(404, NO_BOOK)
    bids, asks = found[2]
    best = bids[0][0] if side == "BUY" else asks[0][0]
    return web.json_response({"price": money.text(best)})


async def last_trade_price(request: Request) -> Response:
    token = request.query_params.get("token_id", "")
    sb = web.sandbox(request)
    if token not in sb.world.by_token:
        return web.error(404, NO_BOOK)
    last = sb.world.last_trade(token, sb.clock.now_ms())
    if last is None:
        return web.json_response({"price": "0.5", "side": ""})
    return web.json_response({"price": money.text(last[0]), "side": last[1]})


async def server_time(request: Request) -> Response:
    """`GET /time`: the server's clock in Unix seconds, a bare JSON number."""
    return web.json_response(web.sandbox(request).clock.now_ms() // 1000)
