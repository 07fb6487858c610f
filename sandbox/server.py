"""Assembles the one-port app (Data API, CLOB, Gamma, chain WS, control) and serves it."""

import asyncio
import contextlib
import json
import socket
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from sandbox import clob, control, dataapi, faults, gamma, market_ws, rand, rtds, ws
from sandbox.clock import Clock
from sandbox.world import World

HOST = "127.0.0.1"


class Sandbox:
    """Everything a request handler needs: the world, the clock, the knobs, the hub."""

    def __init__(self, world: World, clock: Clock, knobs: faults.Knobs):
        self.world, self.clock, self.knobs = world, clock, knobs
        self.fault_rng = rand.rng(world.seed, "faults")
        self.counters: dict[str, int] = {}
        self.hub: ws.Hub | None = None
        self.market_hub: market_ws.MarketHub | None = None
        self.rtds_hub: rtds.RtdsHub | None = None

    def lag_ms(self) -> int:
        return round(self.knobs.api_lag_s * 1000)

    def delay_ms(self) -> int:
        return round(self.knobs.chain_delay_s * 1000)


def build_app(sb: Sandbox) -> Any:
    """Returns the ASGI app (fault middleware outermost)."""

    async def chain_ws(websocket):
        await sb.hub.endpoint(websocket)

    async def clob_market_ws(websocket):
        await sb.market_hub.endpoint(websocket)

    async def rtds_ws(websocket):
        await sb.rtds_hub.endpoint(websocket)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        sb.hub = ws.Hub(sb)
        sb.market_hub = market_ws.MarketHub(sb)
        sb.rtds_hub = rtds.RtdsHub(sb)
        hubs = (sb.hub, sb.market_hub, sb.rtds_hub)
        tasks = [asyncio.create_task(hub.run()) for hub in hubs]
        yield
        for task in tasks:
            task.cancel()
        await sb.hub.drop_all()

    routes = [
        Route("/data-api/", dataapi.health),
        Route("/data-api/trades", dataapi.trades),
        Route("/data-api/activity", dataapi.activity),
        Route("/data-api/positions", dataapi.positions),
        Route("/clob/book", clob.book),
        Route("/clob/books", clob.books, methods=["POST"]),
        Route("/clob/midpoint", clob.midpoint),
        Route("/clob/midpoints", clob.midpoints, methods=["POST"]),
        Route("/clob/price", clob.price),
        Route("/clob/last-trade-price", clob.last_trade_price),
        Route("/clob/time", clob.server_time),
        Route("/gamma/markets", gamma.markets),
        Route("/gamma/markets/{id}", gamma.market),
        Route("/_sandbox/state", control.state),
        Route("/_sandbox/faults", control.set_faults, methods=["POST"]),
        Route("/_sandbox/clock", control.clock, methods=["POST"]),
        Route("/_sandbox/ws/drop", control.ws_drop, methods=["POST"]),
        Route("/_sandbox/truth", control.ground_truth),
        Route("/_sandbox/scenario", control.scenario_file),
        WebSocketRoute("/chain", chain_ws),
        WebSocketRoute("/clob/ws/market", clob_market_ws),
        WebSocketRoute("/rtds", rtds_ws),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = sb
    return faults.FaultMiddleware(app, sb.knobs, sb.fault_rng, sb.counters)


def serve(sb: Sandbox, port: int) -> int:
    """Serves on 127.0.0.1:port until SIGINT/SIGTERM; prints one JSON ready line first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit this: no Nagle stall between the header and body writes
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((HOST, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(sb),
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            ready = {
                "event": "ready",
                "host": HOST,
                "port": bound,
                "seed": sb.world.seed,
                "anchor_ms": sb.world.anchor,
                "clock": sb.clock.mode,
                "leaders": sorted(sb.world.leaders),
            }
            print(json.dumps(ready), flush=True)
        await task

    asyncio.run(main())
    sys.stdout.flush()
    return 0
