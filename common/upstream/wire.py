"""Shared pieces of the boundary models: exact amount types, identifiers, and the
Batch/Reject pair every parser returns so that a bad row is kept with its reason while
the good rows go on."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from common.domain import money
from common.upstream import http

T = TypeVar("T", bound=BaseModel)

# The largest share or collateral amount one wire field may carry: ten billion units,
# more than all the USDC on Polygon. Past it a row is garbage, and its micros (10^16)
# still leave room to add thousands of them in a bigint.
MAX_AMOUNT_UNITS = 10**10
MAX_AMOUNT_MICROS = MAX_AMOUNT_UNITS * money.MICROS
# What a Reject keeps of its payload: enough to read the row, never a whole 50 MB body.
MAX_PAYLOAD_CHARS = 16 * 1024


def _micros_or_int(value: Any) -> int:
    """Units (a numeric string, JSON number or int) to micros; bools and others refused,
    and so is anything past MAX_AMOUNT_UNITS either way."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"amount must be a number or numeric string, got {type(value).__name__}")
    micros = money.to_micros(value)
    if abs(micros) > MAX_AMOUNT_MICROS:
        raise ValueError(f"amount {value!r:.40} is past the ceiling of {MAX_AMOUNT_UNITS:,} units")
    return micros


def _price_range(value: int) -> int:
    if not 0 <= value <= money.MICROS:
        raise ValueError(f"price {money.format_micros(value)} is outside [0, 1]")
    return value


def _traded_price(value: int) -> int:
    """A fill changes hands at a price above 0: a 0 (or one that rounds to 0 micros) is a
    broken row, and would book shares for nothing."""
    if value <= 0:
        raise ValueError("a fill's price must be above 0")
    return value


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError(f"amount must be positive, got {money.format_micros(value)}")
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"amount must not be negative, got {money.format_micros(value)}")
    return value


def _hex_of_length(digits: int, what: str) -> AfterValidator:
    def check(value: str) -> str:
        value = value.lower()
        if len(value) != digits + 2 or not value.startswith("0x"):
            raise ValueError(f"{what} must be 0x + {digits} hex digits")
        int(value[2:], 16)
        return value

    return AfterValidator(check)


def _asset_id(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isdigit() or len(text) > 78:
        raise ValueError("asset id must be a decimal token id")
    return text.lstrip("0") or "0"


def json_number(value: Any) -> Any:
    """The Data API sends amounts and times as JSON numbers; a string there is a changed
    or broken payload, refused rather than guessed at."""
    if isinstance(value, datetime):  # already validated (a model re-validating its dump)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"expected a JSON number, got {type(value).__name__}")
    return value


# Amounts in micros, parsed exactly from strings or JSON numbers (Decimal, never float math).
Micros = Annotated[int, BeforeValidator(_micros_or_int)]
PriceMicros = Annotated[int, BeforeValidator(_micros_or_int), AfterValidator(_price_range)]
SharesMicros = Annotated[int, BeforeValidator(_micros_or_int), AfterValidator(_positive)]
NonNegMicros = Annotated[int, BeforeValidator(_micros_or_int), AfterValidator(_non_negative)]
# The same, for APIs whose wire format sends JSON numbers (the Data API).
NumPriceMicros = Annotated[PriceMicros, BeforeValidator(json_number)]
NumFillPriceMicros = Annotated[NumPriceMicros, AfterValidator(_traded_price)]
NumSharesMicros = Annotated[SharesMicros, BeforeValidator(json_number)]
NumNonNegMicros = Annotated[NonNegMicros, BeforeValidator(json_number)]
Wallet = Annotated[str, _hex_of_length(40, "wallet")]
Hash32 = Annotated[str, _hex_of_length(64, "hash")]
AssetId = Annotated[str, BeforeValidator(_asset_id)]


class WireModel(BaseModel):
    """Base of every boundary model: immutable, extra fields ignored (upstreams add
    fields freely), names accepted in camelCase (v1) or snake_case (v2) via aliases."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def _whole_number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"{what} must be a number")
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError as exc:
        raise ValueError(f"{what} is not a number: {value!r}") from exc
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"{what} is not a whole number: {value!r}")
    return int(number)


def _epoch(value: Any, per_second: int, unit: str) -> datetime:
    if isinstance(value, datetime):
        return value
    count = _whole_number(value, "timestamp")
    # 2001-09-09 .. 2286-11-20: anything outside is the wrong unit or garbage.
    if not 1_000_000_000 * per_second <= count <= 10_000_000_000 * per_second:
        raise ValueError(f"timestamp {count} is not Unix {unit}")
    seconds, rest = divmod(count, per_second)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(seconds=rest / per_second)


def seconds_to_datetime(value: Any) -> datetime:
    """Returns a UTC datetime from Unix seconds (int, numeric string or Decimal)."""
    return _epoch(value, 1, "seconds")


def millis_to_datetime(value: Any) -> datetime:
    """Returns a UTC datetime from Unix milliseconds (the CLOB sends them as strings)."""
    return _epoch(value, 1000, "milliseconds")


@dataclass(frozen=True)
class Reject:
    """A payload that did not parse or validate: what, why, and where it came from.
    `payload` is at most MAX_PAYLOAD_CHARS; `payload_sha256` and `payload_bytes` are of
    the whole (so the same 50 MB body seen twice is one quarantine row, counted)."""

    source: str
    reason: str
    payload: str
    context: Mapping[str, Any] = field(default_factory=dict)
    payload_sha256: str = ""
    payload_bytes: int = -1

    def __post_init__(self) -> None:
        if self.payload_bytes < 0:  # built from the whole text: keep its digest
            whole = self.payload.encode(errors="replace")
            object.__setattr__(self, "payload_bytes", len(whole))
            object.__setattr__(self, "payload_sha256", hashlib.sha256(whole).hexdigest())
        object.__setattr__(self, "payload", self.payload[:MAX_PAYLOAD_CHARS])

    @classmethod
    def of_bad_payload(
        cls, source: str, exc: http.BadPayload, context: Mapping[str, Any] | None = None
    ) -> Reject:
        """The reject of a body that is not usable: its prefix, with the size and digest
        of all the client read (a 50 MB answer is never held whole)."""
        return cls(
            source,
            str(exc),
            exc.text,
            dict(context or {}),
            payload_sha256=exc.sha256,
            payload_bytes=exc.size,
        )


@dataclass
class Batch(Generic[T]):
    """Parsed rows plus the rows that were rejected (for the quarantine). `seen_at[i]`
    is when the page holding `items[i]` arrived (a fill's detect time), `raw[i]` the row
    as received (kept as the event's payload), and `refused`
    counts whole pages refused (not JSON, a bad envelope, more rows than asked): a
    listing with a refused page is incomplete, so its caller must not move past it."""

    items: list[T] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    raw_count: int = 0
    seen_at: list[datetime] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)
    refused: int = 0

    def add(self, other: Batch[T]) -> None:
        """Appends another batch (its items keep their arrival times and raw rows)."""
        self.items.extend(other.items)
        self.seen_at.extend(other.seen_at)
        self.raw.extend(other.raw)
        self.rejects.extend(other.rejects)
        self.raw_count += other.raw_count
        self.refused += other.refused

    def keep(self, wanted: Callable[[T], bool]) -> None:
        """Drops the items `wanted` refuses (and their arrival times and raw rows)."""
        kept = [r for r in self.received() if wanted(r[0])]
        self.items = [i for i, _, _ in kept]
        self.seen_at = [t for _, t, _ in kept]
        self.raw = [w for _, _, w in kept]

    def received(self) -> list[tuple[T, datetime, Any]]:
        """Returns (item, arrival time, row as received) triples."""
        return list(zip(self.items, self.seen_at, self.raw, strict=True))


def dump_payload(value: Any) -> str:
    """Returns a payload as stable text for the quarantine (Decimals kept exact)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


_EXACT = re.compile(r'"\\u0000decimal:([-+0-9.eE]+)"')


def json_text(value: Any) -> str:
    """Returns a payload as JSON text with its numbers as received: the exact Decimals
    the parser read are written back digit for digit (never through a float)."""
    text = json.dumps(value, default=_exact_marker, separators=(",", ":"))
    return _EXACT.sub(r"\1", text)


def _exact_marker(value: Any) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return f"\u0000decimal:{value}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def describe(error: ValidationError) -> str:
    """Returns a one-line reason from a pydantic error: field path and message."""
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "row"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _validate(model: type[T], payload: Any) -> T | str:
    """Returns the model, or why the payload is refused. A validator that raises what
    pydantic does not wrap (an arithmetic or recursion error deep in a number) refuses
    that one payload too: it must never stop the rows after it."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return describe(exc)
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        return f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"


def parse_rows(
    model: type[T],
    rows: Any,
    source: str,
    context: Mapping[str, Any] | None = None,
    *,
    limit: int | None = None,
    seen_at: datetime | None = None,
) -> Batch[T]:
    """Validates each row of a list payload; bad rows become Rejects, good ones items
    (stamped `seen_at`). A payload that is not a list, or has more rows than the `limit`
    asked for, is refused whole: one Reject, and `refused` counts it."""
    ctx = dict(context or {})
    if not isinstance(rows, list):
        reason = f"expected a JSON array, got {type(rows).__name__}"
        if isinstance(rows, dict) and "error" in rows:
            reason = f"upstream error: {str(rows['error'])[:500]}"
        return Batch(rejects=[Reject(source, reason, dump_payload(rows), ctx)], refused=1)
    if limit is not None and len(rows) > limit:
        reason = f"listing returned {len(rows)} rows for limit {limit}: malformed, refused whole"
        return Batch(rejects=[Reject(source, reason, dump_payload(rows), ctx)], refused=1)
    batch: Batch[T] = Batch(raw_count=len(rows))
    stamp = seen_at or datetime.now(tz=UTC)
    for row in rows:
        parsed = _validate(model, row)
        if isinstance(parsed, str):
            batch.rejects.append(Reject(source, parsed, dump_payload(row), ctx))
        else:
            batch.items.append(parsed)
            batch.seen_at.append(stamp)
            batch.raw.append(row)
    return batch


def parse_one(
    model: type[T], payload: Any, source: str, context: Mapping[str, Any] | None = None
) -> T | Reject:
    """Validates one object; returns the model or a Reject."""
    parsed = _validate(model, payload)
    if isinstance(parsed, str):
        return Reject(source, parsed, dump_payload(payload), dict(context or {}))
    return parsed


def fetch_one(
    upstream: http.Upstream,
    path: str,
    model: type[T],
    *,
    params: Any = None,
    context: Mapping[str, Any] | None = None,
) -> T | Reject | None:
    """GETs one object and validates it: the model, a Reject (not JSON, or invalid), or
    None when the upstream answers 404 (a closed market's book, an unknown id)."""
    source = f"{upstream.name}{path}"
    try:
        payload = upstream.get(path, params)
    except http.UpstreamStatusError as exc:
        if exc.status == 404:
            return None
        raise
    except http.BadPayload as exc:
        return Reject.of_bad_payload(source, exc, context)
    return parse_one(model, payload, source, context)


def fetch_rows(
    upstream: http.Upstream,
    method: str,
    path: str,
    model: type[T],
    *,
    params: Any = None,
    body: Any = None,
    context: Mapping[str, Any] | None = None,
    unwrap: Callable[[Any, str], tuple[Any, Reject | None]] | None = None,
    into: Batch[T] | None = None,
    limit: int | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Batch[T]:
    """Requests a list payload and validates it row by row into `into` (or a new
    Batch), its rows stamped with `clock()` as the page arrives; a body that is not
    JSON, an envelope `unwrap` refuses, or more rows than `limit` is one Reject."""
    source = f"{upstream.name}{path}"
    batch: Batch[T] = Batch() if into is None else into
    try:
        payload = upstream.request_json(method, path, params=params, body=body)
    except http.BadPayload as exc:
        batch.rejects.append(Reject.of_bad_payload(source, exc, context))
        batch.refused += 1
        return batch
    arrived = clock() if clock is not None else datetime.now(tz=UTC)
    if unwrap is not None:
        payload, reject = unwrap(payload, source)
        if reject is not None:
            batch.rejects.append(reject)
            batch.refused += 1
            return batch
    batch.add(parse_rows(model, payload, source, context, limit=limit, seen_at=arrived))
    return batch
