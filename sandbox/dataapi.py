"""Data API v1 routes: /trades, /activity, /positions (bare camelCase arrays), and the
health check `/`."""

import re

from starlette.requests import Request
from starlette.responses import Response

from sandbox import faults, web

MAX_LIMIT = 500
MAX_OFFSET = 5000
_WALLET = re.compile(r"0x[0-9a-fA-F]{40}")
TYPES = ("TRADE", "SPLIT", "MERGE", "REDEEM", "CONVERSION")


def _user(request: Request) -> str:
    user = request.query_params.get("user", "")
    if not _WALLET.fullmatch(user):
        raise web.BadRequest("user is required: a 0x-prefixed 40 hex character address")
    return user.lower()


def _page(request: Request, default_limit: int = 100) -> tuple[int, int]:
    limit = web.int_param(request, "limit", default_limit)
    offset = web.int_param(request, "offset", 0)
    if offset < 0 or limit < 0:
        raise web.BadRequest("limit and offset must not be negative")
    if offset > MAX_OFFSET:
        raise web.BadRequest(f"max historical activity offset of {MAX_OFFSET} exceeded")
    return min(limit, MAX_LIMIT), offset


def _side(request: Request) -> str | None:
    side = request.query_params.get("side")
    if side in (None, ""):
        return None
    if side.upper() not in ("BUY", "SELL"):
        raise web.BadRequest(f"invalid side: {side!r}")
    return side.upper()


def _respond(request: Request, rows: list[dict], limit: int) -> Response:
    sb = web.sandbox(request)
    return web.json_response(faults.sprinkle(sb.fault_rng, rows, sb.knobs.malformed_rate, limit))


async def health(request: Request) -> Response:
    """`GET /`: the health check, `{"data": "OK"}`."""
    return web.json_response({"data": "OK"})


async def trades(request: Request) -> Response:
    try:
        user, (limit, offset) = _user(request), _page(request)
        taker_only = web.bool_param(request, "takerOnly", True)
        side, markets = _side(request), set(web.list_param(request, "market"))
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    sb = web.sandbox(request)
    world, rows = sb.world, sb.world.trade_rows.get(user, [])
    count = world.visible_count(world.trade_times.get(user, []), sb.clock.now_ms(), sb.lag_ms())
    picked = []
    for _, rec, row in reversed(rows[:count]):
        if taker_only and rec["role"] != "taker":
            continue
        if (side and rec["side"] != side) or (markets and rec["condition_id"] not in markets):
            continue
        picked.append(row)
        if len(picked) >= offset + limit:
            break
    return _respond(request, picked[offset : offset + limit], limit)


async def activity(request: Request) -> Response:
    try:
        user, (limit, offset) = _user(request), _page(request)
        types = {t.upper() for t in web.list_param(request, "type")} or set(TYPES)
        if types - set(TYPES):
            raise web.BadRequest(f"invalid type: {', '.join(sorted(types - set(TYPES)))}")
        start = web.int_param(request, "start", None)
        end = web.int_param(request, "end", None)
        side, markets = _side(request), set(web.list_param(request, "market"))
        sort_by = request.query_params.get("sortBy", "TIMESTAMP").upper()
        direction = request.query_params.get("sortDirection", "DESC").upper()
        if sort_by not in ("TIMESTAMP", "TOKENS", "CASH") or direction not in ("ASC", "DESC"):
            raise web.BadRequest("sortBy must be TIMESTAMP|TOKENS|CASH, sortDirection ASC|DESC")
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    sb = web.sandbox(request)
    world, rows = sb.world, sb.world.activity_rows.get(user, [])
    count = world.visible_count(world.activity_times.get(user, []), sb.clock.now_ms(), sb.lag_ms())
    picked = []
    for _, rec, row in rows[:count]:
        ts = row["timestamp"]
        if (start is not None and ts < start) or (end is not None and ts > end):
            continue
        if rec["type"] not in types or (side and rec["side"] != side):
            continue
        if markets and rec["condition_id"] not in markets:
            continue
        picked.append((rec, row))
    if sort_by == "TIMESTAMP":
        picked.sort(key=lambda p: (p[0]["t_ms"], p[0]["log_index"]), reverse=direction == "DESC")
    else:
        field = "shares_micros" if sort_by == "TOKENS" else "usdc_micros"
        picked.sort(key=lambda p: (p[0][field], p[0]["t_ms"]), reverse=direction == "DESC")
    return _respond(request, [row for _, row in picked[offset : offset + limit]], limit)


async def positions(request: Request) -> Response:
    try:
        user, (limit, offset) = _user(request), _page(request)
        threshold = web.float_param(request, "sizeThreshold", 1.0)
        markets = set(web.list_param(request, "market"))
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    sb = web.sandbox(request)
    rows = sb.world.positions(user, sb.clock.now_ms(), sb.lag_ms())
    rows = [r for r in rows if r["size"] >= threshold]
    if markets:
        rows = [r for r in rows if r["conditionId"] in markets]
    return _respond(request, rows[offset : offset + limit], limit)
