"""Gamma routes: /markets with filters, /markets/{id}."""

from starlette.requests import Request
from starlette.responses import Response

from sandbox import web, wire


def _render(request: Request, market: dict) -> dict:
    sb = web.sandbox(request)
    now = sb.clock.now_ms()
    return wire.gamma_market(market, sb.world.anchor, now, sb.world.outcome_prices(market, now))


async def markets(request: Request) -> Response:
    sb = web.sandbox(request)
    try:
        limit = web.int_param(request, "limit", 100)
        offset = web.int_param(request, "offset", 0)
        closed = request.query_params.get("closed")
        if closed is not None:
            closed = web.bool_param(request, "closed", False)
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    conditions = {c.lower() for c in web.list_param(request, "condition_ids")}
    tokens = set(web.list_param(request, "clob_token_ids"))
    ids = set(web.list_param(request, "id"))
    slugs = set(web.list_param(request, "slug"))
    now = sb.clock.now_ms()
    picked = []
    for market in sorted(sb.world.markets, key=lambda m: int(m["id"])):
        if conditions and market["condition_id"] not in conditions:
            continue
        if tokens and not tokens.intersection(market["tokens"]):
            continue
        if (ids and market["id"] not in ids) or (slugs and market["slug"] not in slugs):
            continue
        is_closed = sb.world.market_state(market, now) != "open"
        if closed is not None and is_closed != closed:
            continue
        picked.append(market)
    page = picked[max(0, offset) : max(0, offset) + max(0, min(limit, 500))]
    return web.json_response([_render(request, m) for m in page])


async def market(request: Request) -> Response:
    found = web.sandbox(request).world.by_id.get(request.path_params["id"])
    if found is None:
        return web.error(404, "market not found")
    return web.json_response(_render(request, found))
