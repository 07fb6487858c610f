"""Polymarket's real-time data service (RTDS), topic `activity`, type `trades`: one global
stream of matched trades, each naming its wallet (docs/research/market_channel_and_rtds.md
§1). Undocumented in the current docs and known to lapse silently, so it is a best-effort
third source: the chain and the Data API stay the sources of truth.

Wire format (Polymarket/real-time-data-client): subscribe with
`{"action":"subscribe","subscriptions":[{"topic":"activity","type":"trades"}]}`; send the
text `PING` every 5 s, the server answers `PONG`. A data frame is one message
`{topic, type, timestamp (ms), payload, connection_id}` or a JSON array of them; an empty
frame is a keepalive. A trade's payload is a Data API `/trades` row: `proxyWallet`
(checksummed: lower-cased here), `side` (that wallet's), `asset`, `conditionId`, `price`
(0..1), `size` (shares), `timestamp` (Unix seconds), `transactionHash`. Each fill is sent
once per side, so a trade of two followed wallets is two fills, one each.

`parse_frame` never raises: every message it cannot use as a trade is a Reject with its
reason, except keepalives, PONGs and other topics' messages, which are counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field

from common.domain import money
from common.upstream import wire

SOURCE = "rtds/ws"
TOPIC, TYPE = "activity", "trades"
PING, PONG = "PING", "PONG"
SUBSCRIBE = json.dumps(
    {"action": "subscribe", "subscriptions": [{"topic": TOPIC, "type": TYPE}]},
    separators=(",", ":"),
)
MAX_FRAME_BYTES = 1 << 20  # a frame past this is refused by the socket itself
MAX_MESSAGES = 1000  # a frame carrying more is refused whole (a flood, not a batch)

Seconds = Annotated[datetime, BeforeValidator(wire.seconds_to_datetime)]
Millis = Annotated[datetime, BeforeValidator(wire.millis_to_datetime)]


def _alias(*names: str) -> Any:
    return Field(validation_alias=AliasChoices(*names))


def _fill_price(value: int) -> int:
    if value <= 0:
        raise ValueError("a trade's price must be above 0")
    return value


class Trade(wire.WireModel):
    """One side of one matched trade. Numbers are taken as JSON numbers or numeric
    strings (third parties saw both), exactly (never through a float)."""

    proxy_wallet: wire.Wallet = _alias("proxyWallet", "proxy_wallet")
    side: Literal["BUY", "SELL"]
    asset: wire.AssetId = _alias("asset", "token_id")
    condition_id: wire.Hash32 = _alias("conditionId", "condition_id")
    size: wire.SharesMicros
    price: Annotated[wire.PriceMicros, AfterValidator(_fill_price)]
    timestamp: Seconds
    transaction_hash: wire.Hash32 = _alias("transactionHash", "transaction_hash")
    outcome: str | None = None
    outcome_index: int | None = Field(
        default=None, validation_alias=AliasChoices("outcomeIndex", "outcome_index")
    )

    @property
    def notional_micros(self) -> int:
        return money.mul_micros(self.price, self.size)


class Envelope(wire.WireModel):
    topic: str
    type: str
    timestamp: Millis | None = None
    payload: dict[str, Any]
    connection_id: str | None = None


@dataclass
class Frame:
    """What one frame held: trades (with their payloads as received), rejects, and the
    count of messages that were not trades (keepalive, PONG, other topics)."""

    trades: list[tuple[Trade, dict[str, Any]]] = field(default_factory=list)
    rejects: list[wire.Reject] = field(default_factory=list)
    pong: bool = False
    other: int = 0
    sent_at: list[datetime] = field(default_factory=list)


def parse_frame(data: str | bytes) -> Frame:
    """Returns the trades, rejects and control messages of one WebSocket frame."""
    out = Frame()
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    text = data.strip()
    if not text:
        out.other += 1  # the keepalive (and the first frame after subscribing)
        return out
    if text.upper() == PONG:
        out.pong = True
        return out
    if len(text) > MAX_FRAME_BYTES:
        out.rejects.append(wire.Reject(SOURCE, f"frame of {len(text):,} characters refused", data))
        return out
    try:
        decoded = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        out.rejects.append(wire.Reject(SOURCE, f"not JSON ({str(exc)[:200]})", data))
        return out
    messages = decoded if isinstance(decoded, list) else [decoded]
    if len(messages) > MAX_MESSAGES:
        reason = f"a frame of {len(messages):,} messages refused (at most {MAX_MESSAGES:,})"
        out.rejects.append(wire.Reject(SOURCE, reason, data))
        return out
    for message in messages:
        try:
            _message(message, out)
        except RecursionError:  # json.loads took it; re-encoding or validating it did not
            why = "a message nested too deeply to read"
            out.rejects.append(wire.Reject(SOURCE, why, text[:MAX_REJECT_CHARS]))
    return out


MAX_REJECT_CHARS = 4_000  # what a too-deep message keeps of its frame, for quarantine


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _message(message: Any, out: Frame) -> None:
    raw = wire.dump_payload(message)
    if not isinstance(message, dict):
        out.rejects.append(wire.Reject(SOURCE, "message is not a JSON object", raw))
        return
    if "payload" not in message and "topic" not in message:
        # an RTDS status or error message ({"message": ..., "statusCode": ...})
        out.rejects.append(wire.Reject(SOURCE, "not a data message", raw))
        return
    envelope = wire.parse_one(Envelope, message, SOURCE)
    if isinstance(envelope, wire.Reject):
        out.rejects.append(envelope)
        return
    if (envelope.topic, envelope.type) != (TOPIC, TYPE):
        out.other += 1  # another subscription's message: not ours to judge
        return
    context = {"wallet": str(envelope.payload.get("proxyWallet"))[:42]}
    trade = wire.parse_one(Trade, envelope.payload, SOURCE, context)
    if isinstance(trade, wire.Reject):
        out.rejects.append(wire.Reject(SOURCE, trade.reason, raw, context))
        return
    out.trades.append((trade, envelope.payload))
    if envelope.timestamp is not None:
        out.sent_at.append(envelope.timestamp)


def followed(frame: Frame, wallets: dict[str, int]) -> list[tuple[Trade, dict[str, Any], int]]:
    """Returns the frame's trades of followed wallets as (trade, payload, user id): the
    wallet's own side of each fill; the other side is another wallet's."""
    return [
        (trade, payload, wallets[trade.proxy_wallet])
        for trade, payload in frame.trades
        if trade.proxy_wallet in wallets
    ]
