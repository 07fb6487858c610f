"""The copy-fill CSV (SPEC §10), pure: a header naming the columns `timestamp`,
`tx_hash`, `asset`, `side`, `price`, `size` and optionally `fee` (any order, any case;
other columns are ignored), then one fill per row.

- `timestamp`: ISO 8601 (`2026-11-30T14:05:09Z`, `2026-11-30 14:05:09.250+01:00`; one
  without an offset is UTC) or unix seconds (`1764511509`, `1764511509.25`);
- `tx_hash`: 0x and 64 hex digits; `asset`: the outcome token id (decimal digits);
- `side`: BUY or SELL (any case); `price` in (0, 1), `size` > 0 and `fee` ≥ 0 (USDC,
  empty means 0), each with at most 6 decimals.

A row that breaks any of these is a `BadRow` with its reason; the caller keeps it with
its line number. Each good row has a key made of its fields, so importing the same fill
again adds nothing (`Row.key`; the caller numbers identical rows within one file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from common.domain import money

REQUIRED = ("timestamp", "tx_hash", "asset", "side", "price", "size")
OPTIONAL = ("fee",)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)  # before Polymarket's CLOB: not a fill time
FUTURE_SLACK = timedelta(days=1)
_TX = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ASSET = re.compile(r"^[0-9]{1,78}$")
_UNIX = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,6})?$")
_DECIMAL = re.compile(r"^([0-9]{0,12})(?:\.([0-9]*))?$")  # < 10^12 units: fits a bigint
_TIME_OF_DAY = re.compile(r"[T ][0-9]{2}:[0-9]{2}")
_LONG_FRACTION = re.compile(r"\.[0-9]{7,}")
_SURROGATE = re.compile("[\udc80-\udcff]")  # an undecodable byte, kept by the reader


class HeaderError(ValueError):
    """The header cannot be read: the file is refused whole."""


class BadRow(ValueError):
    """A row that is not a fill; the message says why."""


@dataclass(frozen=True)
class Row:
    at: datetime
    tx_hash: str
    asset_id: str
    side: str
    price: int  # micros
    size: int
    fee: int

    @property
    def key(self) -> str:
        """The fill's identity: its fields (the same row imported again collides)."""
        ts = (self.at - EPOCH) // timedelta(microseconds=1)  # exact: no float in a key
        return (
            f"{self.tx_hash}|{self.asset_id}|{self.side}|{self.price}|{self.size}|{self.fee}|{ts}"
        )


def columns(header: list[str]) -> dict[str, int]:
    """The index of each known column in the header; HeaderError when a required one is
    missing or one is named twice."""
    names = [h.strip().lstrip("\ufeff").lower() for h in header]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in REQUIRED + OPTIONAL:
            if name in seen:
                raise HeaderError(
                    f"column {name!r} is named twice (columns {seen[name] + 1} and {i + 1})"
                )
            seen[name] = i
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        raise HeaderError(
            f"the header lacks {', '.join(missing)} (it has: {', '.join(names) or 'nothing'});"
            f" the columns are {', '.join(REQUIRED)} and optionally fee"
        )
    return seen


def timestamp(text: str, now: datetime) -> datetime:
    """ISO 8601 or unix seconds, in [2020, now + 1 day]; BadRow else."""
    value = text.strip()
    if not value:
        raise BadRow("timestamp is empty")
    if _UNIX.match(value):
        seconds = Decimal(value)
        if seconds >= 10**11:
            raise BadRow(f"timestamp {value} looks like milliseconds: give unix seconds")
        at = EPOCH + timedelta(microseconds=int(seconds * 1_000_000))  # Decimal: exact
    else:
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise BadRow(f"timestamp {value[:40]!r} is neither ISO 8601 nor unix seconds") from None
        if not _TIME_OF_DAY.search(value):
            raise BadRow(f"timestamp {value[:40]!r} has no time of day (ISO 8601 date and time)")
        if _LONG_FRACTION.search(value):
            raise BadRow(f"timestamp {value[:40]} has more than 6 decimals of a second")
        try:
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 shifted by its offset
            raise BadRow(f"timestamp {value[:40]} is out of range") from None
    if not EARLIEST <= at <= now + FUTURE_SLACK:
        raise BadRow(f"timestamp {value[:40]} is out of range ({EARLIEST.year} to now)")
    return at


def amount(name: str, text: str, *, empty_is_zero: bool = False) -> int:
    """A non-negative decimal with at most 6 decimals, in micros; BadRow else."""
    value = text.strip()
    if not value and empty_is_zero:
        return 0
    if value.startswith("-"):
        raise BadRow(f"{name} {value[:40]} is negative")
    found = _DECIMAL.match(value)
    if not found or value == "." or not value:
        raise BadRow(f"{name} {value[:40]!r} is not a decimal number (up to 12 digits, a point, 6)")
    units, fraction = found.group(1), (found.group(2) or "").rstrip("0")
    if len(fraction) > 6:
        raise BadRow(f"{name} {value} has more than 6 decimals")
    return int(units or 0) * money.MICROS + int(fraction.ljust(6, "0"))


def row(fields: list[str], cols: dict[str, int], now: datetime) -> Row:
    """One CSV row as a fill; BadRow with the reason else."""
    width = max(cols.values()) + 1
    if len(fields) < width:
        raise BadRow(f"{len(fields)} fields, the header needs at least {width}")
    if _SURROGATE.search("".join(fields)):
        raise BadRow("not UTF-8")
    get = {name: fields[i] for name, i in cols.items()}
    tx = get["tx_hash"].strip()
    if not _TX.match(tx):
        raise BadRow(f"tx_hash {tx[:80]!r} is not 0x and 64 hex digits")
    asset = get["asset"].strip()
    if not _ASSET.match(asset):
        raise BadRow(f"asset {asset[:80]!r} is not a token id (decimal digits)")
    side = get["side"].strip().upper()
    if side not in ("BUY", "SELL"):
        raise BadRow(f"side {get['side'][:20]!r} is not BUY or SELL")
    price = amount("price", get["price"])
    if not 0 < price < money.MICROS:
        raise BadRow(f"price {get['price'].strip()} is not between 0 and 1")
    size = amount("size", get["size"])
    if size <= 0:
        raise BadRow("size is 0")
    fee = amount("fee", get.get("fee", ""), empty_is_zero=True) if "fee" in cols else 0
    return Row(timestamp(get["timestamp"], now), tx.lower(), asset, side, price, size, fee)
