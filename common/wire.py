"""Shared pieces of the boundary models: exact amount types, identifiers, and the
Batch/Reject pair every parser returns so that a bad row is kept with its reason while
the good rows go on."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from common import http, money

T = TypeVar("T", bound=BaseModel)


def _micros_or_int(value: Any) -> int:
    """Units (a numeric string, JSON number or int) to micros; bools and others refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"amount must be a number or numeric string, got {type(value).__name__}")
    return money.to_micros(value)


def _price_range(value: int) -> int:
    if not 0 <= value <= money.MICROS:
        raise ValueError(f"price {money.format_micros(value)} is outside [0, 1]")
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
    """A payload that did not parse or validate: what, why, and where it came from."""

    source: str
    reason: str
    payload: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Batch(Generic[T]):
    """Parsed rows plus the rows that were rejected (for the quarantine)."""

    items: list[T] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    raw_count: int = 0


def dump_payload(value: Any) -> str:
    """Returns a payload as stable text for the quarantine (Decimals kept exact)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def describe(error: ValidationError) -> str:
    """Returns a one-line reason from a pydantic error: field path and message."""
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "row"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_rows(
    model: type[T], rows: Any, source: str, context: Mapping[str, Any] | None = None
) -> Batch[T]:
    """Validates each row of a list payload; bad rows become Rejects, good ones items."""
    ctx = dict(context or {})
    if not isinstance(rows, list):
        reason = f"expected a JSON array, got {type(rows).__name__}"
        if isinstance(rows, dict) and "error" in rows:
            reason = f"upstream error: {rows['error']}"
        return Batch(rejects=[Reject(source, reason, dump_payload(rows), ctx)])
    batch: Batch[T] = Batch(raw_count=len(rows))
    for row in rows:
        try:
            batch.items.append(model.model_validate(row))
        except ValidationError as exc:
            batch.rejects.append(Reject(source, describe(exc), dump_payload(row), ctx))
    return batch


def parse_one(
    model: type[T], payload: Any, source: str, context: Mapping[str, Any] | None = None
) -> T | Reject:
    """Validates one object; returns the model or a Reject."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return Reject(source, describe(exc), dump_payload(payload), dict(context or {}))


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
        return Reject(source, str(exc), exc.text, dict(context or {}))
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
) -> Batch[T]:
    """Requests a list payload and validates it row by row into `into` (or a new
    Batch); a body that is not JSON, or an envelope `unwrap` refuses, is one Reject."""
    source = f"{upstream.name}{path}"
    batch: Batch[T] = Batch() if into is None else into
    try:
        payload = upstream.request_json(method, path, params=params, body=body)
    except http.BadPayload as exc:
        batch.rejects.append(Reject(source, str(exc), exc.text, dict(context or {})))
        return batch
    if unwrap is not None:
        payload, reject = unwrap(payload, source)
        if reject is not None:
            batch.rejects.append(reject)
            return batch
    part = parse_rows(model, payload, source, context)
    batch.items.extend(part.items)
    batch.rejects.extend(part.rejects)
    batch.raw_count += part.raw_count
    return batch
