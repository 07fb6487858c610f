"""Control routes under /_sandbox (never faulted): state, faults, clock, truth, scenario."""

from starlette.requests import Request
from starlette.responses import Response

from sandbox import scenario, truth, web


async def state(request: Request) -> Response:
    sb = web.sandbox(request)
    now = sb.clock.now_ms()
    world = sb.world
    return web.json_response(
        {
            "seed": world.seed,
            "anchor_ms": world.anchor,
            "now_ms": now,
            "offset_ms": now - world.anchor,
            "clock": sb.clock.mode,
            "speed": sb.clock.speed,
            "block_number": world.block_at(now - world.anchor - sb.delay_ms()),
            "knobs": sb.knobs.as_dict(),
            "counts": {
                **sb.counters,
                "ws_connections": len(sb.hub.connections),
                "ws_subscriptions": sum(len(c.subs) for c in sb.hub.connections),
                "market_ws_connections": len(sb.market_hub.connections),
                "market_ws_assets": sum(len(c.assets) for c in sb.market_hub.connections),
                "rtds_connections": len(sb.rtds_hub.connections),
                "markets": len(world.markets),
                "leaders": len(world.leaders),
                "records": len(world.records),
                "logs": len(world.deliveries),
            },
            "leaders": sorted(world.leaders),
        }
    )


async def set_faults(request: Request) -> Response:
    sb = web.sandbox(request)
    try:
        body = await web.json_body(request)
        if not isinstance(body, dict):
            raise web.BadRequest("body must be a JSON object of knobs")
        sb.knobs.update(body)
    except (web.BadRequest, ValueError) as exc:
        return web.error(400, str(exc))
    return web.json_response(sb.knobs.as_dict())


async def clock(request: Request) -> Response:
    sb = web.sandbox(request)
    try:
        body = await web.json_body(request)
        if not isinstance(body, dict) or len(body) != 1:
            raise web.BadRequest('body must be {"advance_ms": N} or {"set_ms": T}')
        ((key, value),) = body.items()
        if key not in ("advance_ms", "set_ms") or not isinstance(value, int):
            raise web.BadRequest('body must be {"advance_ms": N} or {"set_ms": T}')
        now = sb.clock.advance(value) if key == "advance_ms" else sb.clock.set(value)
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    except ValueError as exc:
        return web.error(409, str(exc))
    sb.hub.wake()
    sb.market_hub.wake()
    sb.rtds_hub.wake()
    return web.json_response({"now_ms": now, "offset_ms": now - sb.world.anchor})


async def ws_drop(request: Request) -> Response:
    dropped = await web.sandbox(request).hub.drop_all()
    return web.json_response({"dropped": dropped})


async def ground_truth(request: Request) -> Response:
    sb = web.sandbox(request)
    try:
        until = web.int_param(request, "until_ms", None)
    except web.BadRequest as exc:
        return web.error(400, str(exc))
    until = sb.clock.now_ms() if until is None else until
    world = sb.world
    return web.json_response(truth.build(world.records, sorted(world.leaders), world.anchor, until))


async def scenario_file(request: Request) -> Response:
    text = scenario.dumps(web.sandbox(request).world.scenario)
    return Response(text, media_type="application/json")
