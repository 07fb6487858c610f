"""Probes (SPEC §11): one cheap request to each upstream, every 30 s from
functions.metrics, so latency, errors and the chain's head are measured whether or not
the pipeline is busy.

- Data API: `GET /`, its health check (`{"data": "OK"}`).
- CLOB: `GET /time`, the server's clock in Unix seconds (a bare number).
- Gamma: `GET /markets?limit=1`, the smallest page of the route the pipeline reads.
- chain: on the listener's WebSocket (OCULUS_CHAIN_WS_URL), `eth_blockNumber`, then
  `eth_getBlockByNumber(<head>, false)` for the head block's timestamp.

Each probe is one attempt (a retry would hide what is measured) bounded by
PROBE_TIMEOUT_S from connect to the answer's last byte, of at most BODY_MAX bytes; its
latency is that whole time (the chain's: connect and both calls). Probes do not draw on
the request budget: four requests per 30 s are nothing against it, and a probe measures
the upstream, not our own queue for it. A probe never raises: an upstream that is down,
slow or answers garbage gives a Probe with ok=False and why (at most ERROR_CHARS).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, RootModel, ValidationError

from common.runtime import settings as settings_mod
from common.upstream import chain, http, wire

if TYPE_CHECKING:
    import httpx
    from websockets.sync.client import ClientConnection

UPSTREAMS = ("data_api", "clob", "gamma", "chain")
PROBE_TIMEOUT_S = 5.0
BODY_MAX = 64 * 1024
ERROR_CHARS = 300
Clock = Callable[[], float]


@dataclass(frozen=True)
class Probe:
    """One probe's outcome (a row of `upstream_probe`)."""

    upstream: str
    ok: bool
    latency_micros: int
    status: int | None = None  # the HTTP status, when there was an answer
    error: str | None = None  # why it failed, one line of at most ERROR_CHARS
    head_block: int | None = None  # chain: eth_blockNumber
    head_at: datetime | None = None  # chain: that block's timestamp


class Failed(Exception):
    """The answer came but is not what the probe asked for."""


# --- what each upstream is asked, and the models its answer must fit -----------------


class DataApiHealth(wire.WireModel):
    data: str


class ClobTime(RootModel[Annotated[datetime, BeforeValidator(wire.seconds_to_datetime)]]):
    pass


class GammaPage(RootModel[list[dict[str, Any]]]):
    pass


def _hex_quantity(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not a hex quantity: {str(value)[:40]!r}")
    return int(value, 16)


HexQuantity = Annotated[int, BeforeValidator(_hex_quantity)]


class BlockNumber(RootModel[HexQuantity]):
    pass


class BlockHeader(wire.WireModel):
    number: HexQuantity
    timestamp: Annotated[
        datetime, BeforeValidator(wire.seconds_to_datetime), BeforeValidator(_hex_quantity)
    ]


def _health_ok(body: Any) -> None:
    said = DataApiHealth.model_validate(body).data
    if said.upper() != "OK":
        raise Failed(f"health check says {said[:60]!r}")


@dataclass(frozen=True)
class Target:
    """An HTTP upstream's probe: the path asked and the check of its parsed answer."""

    upstream: str
    path: str
    params: dict[str, str]
    check: Callable[[Any], object]  # raises ValidationError or Failed on a wrong answer


TARGETS = (
    Target("data_api", "/", {}, _health_ok),
    Target("clob", "/time", {}, ClobTime.model_validate),
    Target("gamma", "/markets", {"limit": "1"}, GammaPage.model_validate),
)


def base_url(s: settings_mod.Settings, upstream: str) -> str:
    urls = {"data_api": s.data_api_url, "clob": s.clob_url, "gamma": s.gamma_url}
    return urls[upstream]


# --- running them ------------------------------------------------------------------------


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _why(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "unexpected answer: " + wire.describe(exc)
    if isinstance(exc, Failed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _micros(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


def _read(response: httpx.Response, deadline: float, clock: Clock) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > BODY_MAX:
            raise Failed(f"answer over {BODY_MAX} bytes")
        if clock() > deadline:
            raise TimeoutError(f"no whole answer within {PROBE_TIMEOUT_S:g}s")
    return bytes(data)


def probe_http(
    client: httpx.Client,
    target: Target,
    url: str,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    clock: Clock = time.monotonic,
) -> Probe:
    """Asks `target` once at base `url`; never raises."""
    import httpx  # the process's client has imported it already

    started = clock()
    status: int | None = None
    try:
        with client.stream(
            "GET", url + target.path, params=target.params, timeout=httpx.Timeout(timeout_s)
        ) as response:
            status = response.status_code
            body = _read(response, started + timeout_s, clock)
        latency = _micros(clock() - started)
        if not 200 <= status < 300:
            text = body[:200].decode("utf-8", "replace")
            return Probe(target.upstream, False, latency, status, one_line(f"HTTP {status} {text}"))
        target.check(http.parse_json(body.decode("utf-8", "replace")))
    except Exception as exc:  # a probe reports, it never raises
        return Probe(
            target.upstream, False, _micros(clock() - started), status, one_line(_why(exc))
        )
    return Probe(target.upstream, True, latency, status)


def _call(
    ws: ClientConnection, rid: int, method: str, params: list[Any], deadline: float, clock: Clock
) -> Any:
    """Sends one JSON-RPC request; returns its result (other messages are skipped)."""
    ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    while True:
        left = deadline - clock()
        if left <= 0:
            raise TimeoutError(f"{method}: no answer within {PROBE_TIMEOUT_S:g}s")
        message = chain.parse_message(ws.recv(timeout=left))
        if isinstance(message, wire.Reject):
            raise Failed(f"{method}: {message.reason}")
        if isinstance(message, chain.RpcReply) and message.id == rid:
            if message.error is not None:
                raise Failed(f"{method}: error {json.dumps(message.error, default=str)[:200]}")
            return message.result


def probe_chain(
    url: str, *, timeout_s: float = PROBE_TIMEOUT_S, clock: Clock = time.monotonic
) -> Probe:
    """The chain's head block and its time, on a WebSocket of its own; never raises."""
    from websockets.sync.client import connect

    started = clock()
    deadline = started + timeout_s
    try:
        with connect(url, open_timeout=timeout_s, close_timeout=1, max_size=BODY_MAX) as ws:
            head = BlockNumber.model_validate(_call(ws, 1, "eth_blockNumber", [], deadline, clock))
            block = _call(ws, 2, "eth_getBlockByNumber", [hex(head.root), False], deadline, clock)
            latency = _micros(clock() - started)
        if block is None:
            raise Failed(f"eth_getBlockByNumber: no block {head.root}")
        header = BlockHeader.model_validate(block)
    except Exception as exc:  # a probe reports, it never raises
        return Probe("chain", False, _micros(clock() - started), error=one_line(_why(exc)))
    return Probe("chain", True, latency, head_block=header.number, head_at=header.timestamp)


def probe_all(
    s: settings_mod.Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> list[Probe]:
    """One probe of each upstream, at once (a run takes at most about `timeout_s`), in
    UPSTREAMS order."""
    client = http.make_client(s, transport)
    try:
        with futures.ThreadPoolExecutor(len(UPSTREAMS), thread_name_prefix="probe") as pool:
            running = [
                pool.submit(probe_http, client, t, base_url(s, t.upstream), timeout_s=timeout_s)
                for t in TARGETS
            ]
            running.append(pool.submit(probe_chain, s.chain_ws_url, timeout_s=timeout_s))
            return [f.result() for f in running]
    finally:
        client.close()
