"""The executable portfolios as the copy engine sees them: cash, shares per asset, the
shares the global portfolio copied from each user, marks, and the reference equities of
the circuit breakers. Loaded from the ledger (the truth), then kept in memory while a
batch of decisions is made, so a batch and a one-at-a-time run decide alike.

Equity = cash + Σ shares × mark (SPEC §6). A mark is the newest of the stored
`market_price_snapshot` mid and the mid of a stored decision book, at or before the
time asked for; an asset with neither is marked at our last fill price for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common import db, money

Key = tuple[str, int | None]  # (portfolio scope, followed user or None for global)


def deposit_ref(user_id: int | None) -> str:
    return "deposit" if user_id is None else f"deposit:user:{user_id}"


@dataclass
class Portfolio:
    scope: str
    user_id: int | None
    starting_cash: int
    cash: int = 0
    shares: dict[str, int] = field(default_factory=dict)
    market_of: dict[str, str] = field(default_factory=dict)
    last_price: dict[str, int] = field(default_factory=dict)
    by_user: dict[int, dict[str, int]] = field(default_factory=dict)  # global only
    funded: bool = False

    @property
    def key(self) -> Key:
        return (self.scope, self.user_id)

    def held(self, asset_id: str) -> int:
        return max(0, self.shares.get(asset_id, 0))

    def mark(self, asset_id: str, marks: Marks) -> int:
        """The asset's mark: the newest stored mid, else our last fill price."""
        mark = marks.get(asset_id)
        return self.last_price.get(asset_id, 0) if mark is None else mark

    def value(self, asset_id: str, marks: Marks) -> int:
        """Returns the marked value of the position in one asset."""
        n = self.shares.get(asset_id, 0)
        return money.mul_micros(n, self.mark(asset_id, marks)) if n else 0

    def totals(self, marks: Marks, condition_id: str | None = None) -> tuple[int, int, int]:
        """Returns (equity, exposure, exposure to `condition_id`) in one pass."""
        equity, exposure, market = self.cash, 0, 0
        for asset, n in self.shares.items():
            v = money.mul_micros(n, self.mark(asset, marks))
            equity += v
            exposure += abs(v)
            if condition_id is not None and self.market_of.get(asset) == condition_id:
                market += abs(v)
        return equity, exposure, market

    def equity(self, marks: Marks) -> int:
        return self.totals(marks)[0]

    def exposure(self, marks: Marks) -> int:
        return self.totals(marks)[1]

    def market_exposure(self, condition_id: str | None, marks: Marks) -> int:
        return self.totals(marks, condition_id)[2]

    def user_exposure(self, user_id: int, marks: Marks) -> int:
        """Global portfolio: the marked value of what was copied from this user (a user
        whose copies net short an asset another user bought counts zero there)."""
        return sum(
            money.mul_micros(n, self.mark(asset, marks))
            for asset, n in self.by_user.get(user_id, {}).items()
            if n > 0
        )

    def move(self, asset_id: str, condition_id: str | None, shares: int, user_id: int) -> None:
        """Applies a share change (and its attribution in the global portfolio); closed
        positions are dropped so the hot loops see only what is held."""
        _add(self.shares, asset_id, shares)
        if condition_id is not None:
            self.market_of[asset_id] = condition_id
        if self.scope == "EXEC_GLOBAL":
            _add(self.by_user.setdefault(user_id, {}), asset_id, shares)


def _add(book: dict[str, int], key: str, delta: int) -> None:
    n = book.get(key, 0) + delta
    if n:
        book[key] = n
    else:
        book.pop(key, None)


class Marks:
    """Newest mid per asset, as of the time the caller has reached."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[datetime, int, int]] = {}

    def get(self, asset_id: str) -> int | None:
        hit = self._latest.get(asset_id)
        return None if hit is None else hit[2]

    def observe(self, asset_id: str, at: datetime, mid: int | None, order: int = 0) -> None:
        if mid is None:
            return
        hit = self._latest.get(asset_id)
        if hit is None or (at, order) >= hit[:2]:
            self._latest[asset_id] = (at, order, mid)

    def merge(self, other: Marks) -> None:
        for asset, (at, order, mid) in other._latest.items():
            self.observe(asset, at, mid, order)

    @classmethod
    def load(cls, conn: db.Conn, asset_ids: set[str], until: datetime) -> Marks:
        """Returns the newest stored mid of each asset at or before `until`."""
        marks = cls()
        if not asset_ids:
            return marks
        params = {"a": sorted(asset_ids), "t": until}
        for r in conn.execute(
            """SELECT a.asset_id, b.fetched_at, b.id, b.bid, b.ask
               FROM unnest(%(a)s::text[]) AS a(asset_id)
               CROSS JOIN LATERAL (
                 SELECT fetched_at, id, bid_prices_micros[1] AS bid, ask_prices_micros[1] AS ask
                 FROM order_book_snapshot o
                 WHERE o.asset_id = a.asset_id AND o.fetched_at <= %(t)s
                   AND cardinality(bid_prices_micros) > 0 AND cardinality(ask_prices_micros) > 0
                 ORDER BY fetched_at DESC, id DESC LIMIT 1) b""",
            params,
        ):
            marks.observe(
                r["asset_id"], r["fetched_at"], money.div_round(r["bid"] + r["ask"], 2), r["id"]
            )
        for r in conn.execute(
            """SELECT a.asset_id, m.observed_at, m.mid_micros
               FROM unnest(%(a)s::text[]) AS a(asset_id)
               CROSS JOIN LATERAL (
                 SELECT observed_at, mid_micros FROM market_price_snapshot p
                 WHERE p.asset_id = a.asset_id AND p.observed_at <= %(t)s
                 ORDER BY bucket DESC LIMIT 1) m""",
            params,
        ):
            marks.observe(r["asset_id"], r["observed_at"], r["mid_micros"])
        return marks


def load(
    conn: db.Conn,
    scope: str,
    user_id: int | None,
    starting_cash: int,
    until: datetime | None = None,
) -> Portfolio:
    """Returns the portfolio as its ledger says (unfunded if it has no DEPOSIT yet),
    counting only entries effective before `until` when given."""
    p = Portfolio(scope, user_id, starting_cash)
    params = {"s": scope, "u": user_id, "until": until}
    for r in conn.execute(
        """SELECT asset_id, min(condition_id) AS condition_id,
                  sum(share_delta_micros)::bigint AS shares, sum(cash_delta_micros)::bigint AS cash,
                  sum(cash_delta_micros) FILTER (WHERE entry_type = 'DEPOSIT')::bigint AS deposit,
                  (array_agg(price_micros ORDER BY id DESC)
                      FILTER (WHERE entry_type = 'TRADE_FILL' AND price_micros IS NOT NULL))[1]
                      AS last_price
           FROM ledger_entry
           WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
             AND (%(until)s::timestamptz IS NULL OR effective_time < %(until)s)
           GROUP BY asset_id""",
        params,
    ):
        p.cash += int(r["cash"])
        if r["deposit"] is not None:
            p.funded, p.starting_cash = True, int(r["deposit"])
        if r["asset_id"] is not None:
            if r["shares"]:
                p.shares[r["asset_id"]] = int(r["shares"])
            if r["condition_id"] is not None:
                p.market_of[r["asset_id"]] = r["condition_id"]
            if r["last_price"] is not None:
                p.last_price[r["asset_id"]] = int(r["last_price"])
    if scope == "EXEC_GLOBAL":
        for r in conn.execute(
            """SELECT a.followed_user_id AS u, l.asset_id, sum(l.share_delta_micros)::bigint AS n
               FROM ledger_entry l JOIN copy_attempt a ON a.id = l.copy_attempt_id
               WHERE l.portfolio_scope = 'EXEC_GLOBAL' AND l.asset_id IS NOT NULL
                 AND (%(until)s::timestamptz IS NULL OR l.effective_time < %(until)s)
               GROUP BY 1, 2""",
            params,
        ):
            p.by_user.setdefault(r["u"], {})[r["asset_id"]] = int(r["n"])
    if not p.funded:
        p.cash += starting_cash
    return p


@dataclass(frozen=True)
class BreakerRefs:
    """Equities the circuit breakers compare against: at the start of the UTC day and of
    the ISO week, and the peak so far."""

    day_start: int
    week_start: int
    peak: int


def day_start(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def week_start(t: datetime) -> datetime:
    return day_start(t) - timedelta(days=t.weekday())


_REF = """
SELECT COALESCE(
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
     AND bucket <= %(start)s ORDER BY bucket DESC LIMIT 1),
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
     AND bucket > %(start)s AND bucket <= %(t)s ORDER BY bucket LIMIT 1)) AS equity
"""
_PEAK = """
SELECT max(equity_micros) AS equity FROM portfolio_snapshot
WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s AND bucket <= %(t)s
"""


def breaker_refs(conn: db.Conn, p: Portfolio, at: datetime) -> BreakerRefs:
    """Reads the reference equities from `portfolio_snapshot` (so they survive restarts):
    the last snapshot at or before each period's start (else the period's first one,
    else the starting cash), and the highest snapshot so far."""

    def query(sql: str, start: datetime | None = None) -> int:
        params = {"s": p.scope, "u": p.user_id, "t": at, "start": start}
        row = conn.execute(sql, params).fetchone()
        return p.starting_cash if row is None or row["equity"] is None else int(row["equity"])

    return BreakerRefs(
        day_start=query(_REF, day_start(at)),
        week_start=query(_REF, week_start(at)),
        peak=max(p.starting_cash, query(_PEAK)),
    )


def held_assets(portfolios: list[Portfolio]) -> set[str]:
    return {a for p in portfolios for a, n in p.shares.items() if n}
