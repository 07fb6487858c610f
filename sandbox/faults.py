"""Runtime fault knobs, the HTTP fault middleware and the Data API junk rows."""

import asyncio
import json
import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

FAULTY_PREFIXES = ("/data-api/", "/clob/", "/gamma/")
MAXIMA = {
    "market_ws_drop_after": 1_000_000,
    "market_ws_delay_ms": 60_000,
    "rtds_silent": 1,
    "rtds_delay_ms": 60_000,
}


@dataclass
class Knobs:
    """Every runtime knob; POST /_sandbox/faults changes any subset of them."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow_rate: float = 0.0
    slow_ms: int = 1500
    ws_drop_every_s: float = 0.0
    malformed_rate: float = 0.0
    api_lag_s: float = 5.0
    chain_delay_s: float = 2.0
    # CLOB market channel: close a connection once it has sent this many data frames;
    # a share of price_change frames with one wrong size (hashes stay true); a fixed
    # delivery delay per frame (PONG included)
    market_ws_drop_after: int = 0
    market_ws_corrupt_rate: float = 0.0
    market_ws_delay_ms: int = 0
    # RTDS (sandbox/rtds.py): a share of messages never sent, sent twice, or followed
    # (a followed wallet's) by a fill that never settles; a share of broken frames; 1 =
    # silent (PONGs only, the live lapse); a fixed delay per frame
    rtds_drop_rate: float = 0.0
    rtds_duplicate_rate: float = 0.0
    rtds_phantom_rate: float = 0.0
    rtds_malformed_rate: float = 0.0
    rtds_silent: int = 0
    rtds_delay_ms: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Applies changes; raises ValueError naming any unknown or invalid knob."""
        kinds = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(changes) - set(kinds))
        if unknown:
            raise ValueError(f"unknown knobs: {', '.join(unknown)}")
        staged = {}
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if value < 0 or ((name.startswith("rate") or name.endswith("_rate")) and value > 1):
                raise ValueError(f"{name} out of range: {value}")
            if value > MAXIMA.get(name, math.inf):
                raise ValueError(f"{name} out of range: {value} (max {MAXIMA[name]})")
            staged[name] = int(value) if kinds[name] in (int, "int") else float(value)
        for name, value in staged.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultMiddleware:
    """ASGI middleware: 429s, 5xxs and slow responses on the Polymarket routes only."""

    def __init__(self, app, knobs: Knobs, rng: random.Random, counters: dict[str, int]):
        self.app, self.knobs, self.rng, self.counters = app, knobs, rng, counters

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(FAULTY_PREFIXES):
            return await self.app(scope, receive, send)
        self.counters["requests"] = self.counters.get("requests", 0) + 1
        knobs, rng = self.knobs, self.rng
        if knobs.slow_rate and rng.random() < knobs.slow_rate:
            self.counters["slow"] = self.counters.get("slow", 0) + 1
            await asyncio.sleep(knobs.slow_ms / 1000)
        if knobs.rate_429 and rng.random() < knobs.rate_429:
            self.counters["429"] = self.counters.get("429", 0) + 1
            headers = [(b"retry-after", str(rng.randint(1, 3)).encode())]
            return await _send(send, 429, {"error": "Too Many Requests"}, headers)
        if knobs.rate_5xx and rng.random() < knobs.rate_5xx:
            status = rng.choice((500, 502, 503))
            self.counters["5xx"] = self.counters.get("5xx", 0) + 1
            return await _send(send, status, {"error": "upstream error"}, [])
        return await self.app(scope, receive, send)


async def _send(send, status: int, body: dict[str, Any], headers: list) -> None:
    data = json.dumps(body).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": data})


# Fields without which a Data API row is not a fill or an activity at all.
REQUIRED_FIELDS = ("proxyWallet", "timestamp", "conditionId", "size", "transactionHash")


def junk_rows(rng: random.Random, template: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Returns `count` broken copies of a real row: each breaks it in one way."""
    out = []
    for _ in range(count):
        row = dict(template)
        row["transactionHash"] = "0x" + rng.getrandbits(256).to_bytes(32, "big").hex()
        kind = rng.randrange(7)
        if kind == 0:  # drop fields, at least one every row must have
            required = [k for k in REQUIRED_FIELDS if k in row]
            doomed = {rng.choice(required), *rng.sample(sorted(row), k=2)}
            for key in doomed:
                row.pop(key, None)
        elif kind == 1:
            row["size"] = -abs(row.get("size") or 1.0)
        elif kind == 2:
            row["price"] = rng.choice(["abc", math.nan, 1.7, -0.2])
        elif kind == 3:
            row["timestamp"] = str(row.get("timestamp"))
            row["size"] = str(row.get("size"))
        elif kind == 4:
            row["asset"] = str(rng.getrandbits(250))
            row["conditionId"] = "0x" + rng.getrandbits(256).to_bytes(32, "big").hex()
        elif kind == 5:
            row["side"] = rng.choice(["HOLD", 1, None])
        else:
            row["proxyWallet"] = None
            row["outcomeIndex"] = "zero"
        out.append(row)
    return out


def sprinkle(
    rng: random.Random, rows: list[dict[str, Any]], rate: float, limit: int | None = None
) -> list[dict[str, Any]]:
    """Returns rows with 1–3 junk rows inserted at random places, with probability rate;
    never more rows than `limit` (a page past its limit is refused whole by clients, so
    a full page gets no junk)."""
    room = 3 if limit is None else min(3, limit - len(rows))
    if not rows or not rate or room < 1 or rng.random() >= rate:
        return rows
    out = list(rows)
    for junk in junk_rows(rng, rng.choice(rows), rng.randint(1, room)):
        out.insert(rng.randrange(len(out) + 1), junk)
    return out
