"""Typed records at the database edge: one frozen dataclass per stored row kind that
domain code reads, each built by `from_row` from a row of its table's named queries
(`common/store/sql/<table>.sql`). Domain functions take these, never raw dicts, and the
micros carry their kind (`money.Usdc`, `money.Shares`, `money.Price`).

`from_row` takes exactly the record's fields from a row (a mapping by column name);
columns a query does not select fall back to the field's default, and a missing column
without one is a TypeError naming it. Classes whose fields are named apart from their
columns (the copy group, a stored book) say so in their own `from_row`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Self

from common.domain import money, pnl
from common.domain.money import Price, Shares, Usdc

Row = Mapping[str, Any]


class Record:
    """`from_row` by field name, the names read once per class."""

    __slots__ = ()
    _names: ClassVar[tuple[tuple[str, bool], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._names = ()

    @classmethod
    def from_row(cls, row: Row) -> Self:
        names = cls._names
        if not names:  # dataclass fields exist only after the decorator ran
            names = cls._names = tuple(
                (f.name, f.default is MISSING and f.default_factory is MISSING)
                for f in fields(cls)  # type: ignore[arg-type]
            )
        values = {}
        for name, required in names:
            if name in row:
                values[name] = row[name]
            elif required:
                raise TypeError(f"{cls.__name__}.from_row: the row has no column {name!r}")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class TradeEvent(Record):
    """A `trade_event`: one fill of a followed wallet (Data API row, chain log or both).
    `chain_contradicts` is computed by the pending-fills query (see trade_event.sql)."""

    id: int
    followed_user_id: int
    asset_id: str
    condition_id: str | None
    side: str  # BUY / SELL: the leader's side of their own asset, never YES / NO
    price_micros: Price
    share_micros: Shares
    usdc_notional_micros: Usdc
    fee_micros: Usdc
    event_time: datetime
    detect_time: datetime
    source: str | None = None
    confirmed_at: datetime | None = None
    tx_hash: str | None = None
    wallet: str | None = None
    payload: Any = None
    chain_contradicts: bool = False


@dataclass(frozen=True, slots=True)
class ActivityEvent(Record):
    """An `activity_event`: a SPLIT / MERGE / REDEEM / CONVERSION of a followed wallet."""

    id: int
    followed_user_id: int
    activity_type: str
    condition_id: str | None
    share_micros: Shares
    usdc_micros: Usdc
    event_time: datetime
    tx_hash: str | None = None
    # A CONVERSION: DATA_API (legs unknown) or CHAIN (PositionsConverted: the neg-risk
    # market and the index set of the questions whose NO shares were converted).
    source: str | None = None
    detect_time: datetime | None = None
    neg_risk_market_id: str | None = None
    index_set: str | None = None  # hex
    confirmed: bool = False  # a CHAIN one the Data API reports too
    before_seed: bool = False  # older than the user's seed


@dataclass(frozen=True, slots=True)
class OutcomeAsset(Record):
    """One outcome of a market, in outcome order, with its payout once resolved."""

    condition_id: str
    asset_id: str
    payout_micros: Price | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry(Record):
    """A stored `ledger_entry`. `copied_from` is the followed user whose copy attempt
    wrote it (the global portfolio's attribution), when the query joins it."""

    portfolio_scope: str
    followed_user_id: int | None
    entry_type: str
    asset_id: str | None
    condition_id: str | None
    share_delta_micros: Shares
    cash_delta_micros: Usdc
    price_micros: Price | None
    id: int = 0
    copied_from: int | None = None
    ref_id: str | None = None
    effective_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class CopyGroup(Record):
    """A `copy_group`: the leader's fills of one asset (or one SPLIT / MERGE) inside a
    window, as the copy engine decides it (SPEC §4)."""

    id: int
    key: str
    user_id: int
    action: str  # BUY / SELL / MERGE / SPLIT
    condition_id: str | None
    asset_id: str | None
    window_start: datetime
    first_detect_time: datetime
    close_time: datetime
    decide_at: datetime
    their_shares: Shares
    their_notional: Usdc
    their_price: Price | None
    book_id: int | None = None  # the order_book_snapshot it was decided on, once stored

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            id=row["id"],
            key=row["group_key"],
            user_id=row["followed_user_id"],
            action=row["action"],
            condition_id=row["condition_id"],
            asset_id=row["asset_id"],
            window_start=row["window_start"],
            first_detect_time=row["first_detect_time"],
            close_time=row["close_time"],
            decide_at=row["decide_at"],
            their_shares=row["their_share_micros"],
            their_notional=row["their_notional_micros"],
            their_price=row["their_price_micros"],
            book_id=row.get("order_book_snapshot_id"),
        )


@dataclass(frozen=True, slots=True)
class Market(Record):
    """A `market` with its outcome assets in order."""

    condition_id: str
    assets: tuple[str, ...]
    end_time: datetime | None = None
    closed: bool = False
    blacklisted: bool = False
    fees_enabled: bool = False
    fee_rate_micros: int = 0
    fee_exponent: int = 1


Level = tuple[Price, Shares]


@dataclass(frozen=True, slots=True)
class Book:
    """Both sides of an order book, best level first."""

    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    snapshot_id: int | None = None
    min_order_size: int = 0  # the smallest order the book takes, in share micros


@dataclass(frozen=True, slots=True)
class OrderBookSnapshot(Record):
    """A stored `order_book_snapshot`, levels best first as stored."""

    book: Book
    asset_id: str
    fetched_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Self:
        book = Book(
            bids=tuple(zip(row["bid_prices_micros"], row["bid_sizes_micros"], strict=True)),
            asks=tuple(zip(row["ask_prices_micros"], row["ask_sizes_micros"], strict=True)),
            snapshot_id=row["id"],
            min_order_size=row.get("min_order_size_micros") or 0,
        )
        return cls(book, row["asset_id"], row["fetched_at"])

    @property
    def mid(self) -> Price | None:
        b = self.book
        if not b.bids or not b.asks:
            return None
        return Price(money.div_round(b.bids[0][0] + b.asks[0][0], 2))


@dataclass(frozen=True, slots=True)
class CopyAttempt(Record):
    """A `copy_attempt`: one decision of one group in one executable portfolio."""

    id: int
    portfolio_scope: str
    followed_user_id: int
    group_key: str
    copy_group_id: int | None
    action: str
    decision: str  # EXECUTE / SKIP
    reason_codes: list[str]
    target_notional_micros: Usdc
    target_share_micros: Shares
    filled_share_micros: Shares
    filled_notional_micros: Usdc
    fee_micros: Usdc
    decision_time: datetime
    condition_id: str | None = None
    asset_id: str | None = None
    vwap_micros: Price | None = None
    mid_micros: Price | None = None


@dataclass(frozen=True, slots=True)
class PortfolioState(Record):
    """A `portfolio_state` row: the snapshot fold's running totals of one portfolio."""

    portfolio_scope: str
    followed_user_id: int | None
    cash_micros: Usdc
    contributed_micros: Usdc
    realized_pnl_micros: Usdc
    fees_micros: Usdc


@dataclass(frozen=True, slots=True)
class PositionRow(Record):
    """A `portfolio_position` row: one asset of one portfolio at average cost."""

    portfolio_scope: str
    followed_user_id: int | None
    asset_id: str
    condition_id: str | None
    share_micros: Shares
    cost_micros: Usdc
    last_price_micros: Price | None
    realized_micros: int = 0
    closed_by: str | None = None
    closed_at: datetime | None = None
    opened_at: datetime | None = None

    def position(self) -> pnl.Position:
        """The fold's position this saved row holds."""
        return pnl.Position(
            self.share_micros,
            self.cost_micros,
            self.condition_id,
            self.last_price_micros,
            self.realized_micros,
            self.closed_by,
            self.closed_at,
            self.opened_at,
        )
