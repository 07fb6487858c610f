"""Queries several pages share: the page frame, equity series, the newest snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution, copy_config, histograms, portfolio
from common.domain.pnl import Position
from common.store import copy_configs, db, portfolios
from site_builder import svg

Row = dict[str, Any]
SERIES_DAYS = 30  # the 30 d range; "all" reaches back to HISTORY_DAYS, hourly
HISTORY_DAYS = 366
MINUTE_RESOLUTION = timedelta(hours=24)


@dataclass(frozen=True)
class Frame:
    """What every page's header and footer show."""

    now: datetime  # when the page was built
    paused: bool
    pause_reason: str | None
    user_count: int
    data_at: datetime | None  # its data is as of this: the older of the last poll and snapshot


# The data's "as of": the last poll (fills in) and the last snapshot (portfolios valued)
# that ended well, the older of the two; each the newest OK run of its job (an index
# walk from the newest run).
_FRAME = """
SELECT c.paused, c.reason,
       (SELECT count(*) FROM followed_user WHERE copy_mode <> 'REMOVED') AS users,
       (SELECT finished_at FROM job_run WHERE job = 'poll' AND status = 'OK'
        ORDER BY started_at DESC LIMIT 1) AS poll_at,
       (SELECT finished_at FROM job_run WHERE job = 'snapshot' AND status = 'OK'
        ORDER BY started_at DESC LIMIT 1) AS snapshot_at
FROM system_control c WHERE c.id = 1
"""


def frame(conn: db.Conn, now: datetime) -> Frame:
    row = conn.execute(_FRAME).fetchone()
    assert row is not None
    seen = [t for t in (row["poll_at"], row["snapshot_at"]) if t is not None]
    return Frame(
        now=now,
        paused=row["paused"],
        pause_reason=row["reason"],
        user_count=row["users"],
        data_at=min(seen) if len(seen) == 2 else None,
    )


def marks_as_of(conn: db.Conn) -> datetime | None:
    """When the newest snapshot took its marks (every portfolio's row of that minute was
    valued at once, at the same marks)."""
    row = conn.execute(
        """SELECT max(as_of) AS t FROM portfolio_snapshot
           WHERE bucket = (SELECT max(bucket) FROM portfolio_snapshot)"""
    ).fetchone()
    return row["t"] if row else None


def marks(conn: db.Conn, assets: set[str], as_of: datetime | None) -> portfolio.Marks:
    """The assets' marks as the newest snapshot saw them (none without a snapshot)."""
    return portfolios.load_marks(conn, assets, as_of) if as_of else portfolio.Marks()


MARKED_BY = {True: "mid", False: "last fill"}


def valued(
    conn: db.Conn,
    rows: list[Row],
    as_of: datetime | None = None,
    known: portfolio.Marks | None = None,
) -> list[Row]:
    """Values position rows (`portfolio_position` columns) as the newest snapshot did:
    at its marks (`marks_as_of`) by the fold's own rule (`portfolio.valued`), so an asset
    shows one mark on every page and a portfolio's positions add up to its cards. Adds
    `mark_micros` (the price used; None when valued at cost), `marked_by` ("mid", "last
    fill" or "cost"), `value_micros` and `unrealized_micros`; returns the rows, most
    valuable first. `known`: the marks at `as_of`, when the caller has them already."""
    if known is not None:
        found = known
    else:
        found = marks(conn, {r["asset_id"] for r in rows}, as_of or marks_as_of(conn))
    for r in rows:
        mid = found.get(r["asset_id"])
        pos = Position(r["share_micros"], r["cost_micros"], None, r["last_price_micros"])
        value, price = portfolio.valued(pos, mid)
        r["mark_micros"] = price
        r["marked_by"] = "cost" if price is None else MARKED_BY[mid is not None]
        r["value_micros"] = value
        r["unrealized_micros"] = value - r["cost_micros"]
    rows.sort(key=lambda r: (-r["value_micros"], r["asset_id"]))
    return rows


def by_market(held: list[Row]) -> list[Row]:
    """Valued positions (`valued`) summed by market (|value|, as exposure counts), the
    largest first."""
    out: dict[str, Row] = {}
    for p in held:
        m = out.setdefault(
            p["condition_id"] or "?",
            {"condition_id": p["condition_id"], "question": p["question"], "value_micros": 0},
        )
        m["value_micros"] += abs(p["value_micros"])
    return sorted(out.values(), key=lambda m: (-m["value_micros"], m["condition_id"] or ""))


def top(rows: list[Row], n: int, others: Row) -> list[Row]:
    """The first `n` rows, then one row (`others`, its `value_micros` and `count` set)
    for the rest, so a top list still adds up to its total."""
    if len(rows) <= n:
        return rows
    rest = rows[n:]
    return [
        *rows[:n],
        {**others, "value_micros": sum(r["value_micros"] for r in rest), "count": len(rest)},
    ]


# The hourly points are fetched by exact bucket (an index probe each) and the last 24 h by
# a range: filtering every minute row of a month would read ~43k rows per portfolio.
_SERIES_USER = """
SELECT bucket, equity_micros, contributed_micros, exposure_micros, cash_micros
FROM portfolio_snapshot
WHERE portfolio_scope = %(scope)s AND followed_user_id = %(user)s
  AND bucket = ANY(ARRAY(SELECT generate_series(%(first_hour)s::timestamptz, %(recent)s,
                                                '1 hour')))
  AND bucket >= %(since)s AND bucket < %(recent)s
UNION ALL
SELECT bucket, equity_micros, contributed_micros, exposure_micros, cash_micros
FROM portfolio_snapshot
WHERE portfolio_scope = %(scope)s AND followed_user_id = %(user)s AND bucket >= %(recent)s
ORDER BY bucket
"""
_SERIES_GLOBAL = """
SELECT bucket, equity_micros, contributed_micros, exposure_micros, cash_micros
FROM portfolio_snapshot
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL
  AND bucket = ANY(ARRAY(SELECT generate_series(%(first_hour)s::timestamptz, %(recent)s,
                                                '1 hour')))
  AND bucket >= %(since)s AND bucket < %(recent)s
UNION ALL
SELECT bucket, equity_micros, contributed_micros, exposure_micros, cash_micros
FROM portfolio_snapshot
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL AND bucket >= %(recent)s
ORDER BY bucket
"""


# The first snapshot (an index probe: IS NOT DISTINCT FROM would not use the index).
_FIRST_USER = """SELECT min(bucket) AS b FROM portfolio_snapshot
WHERE portfolio_scope = %(scope)s AND followed_user_id = %(user)s"""
_FIRST_GLOBAL = """SELECT min(bucket) AS b FROM portfolio_snapshot
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL"""


def series(conn: db.Conn, scope: str, user: int | None, now: datetime) -> list[Row]:
    """The portfolio's snapshots since its first (at most HISTORY_DAYS back): hourly, and
    by the minute for the last 24 h (a line chart needs no more points than that)."""
    first = conn.execute(
        _FIRST_GLOBAL if user is None else _FIRST_USER, {"scope": scope, "user": user}
    ).fetchone()
    since = max(first["b"] if first and first["b"] else now, now - timedelta(days=HISTORY_DAYS))
    params = {
        "scope": scope,
        "user": user,
        "since": since,
        "first_hour": since.replace(minute=0, second=0, microsecond=0),
        "recent": now - MINUTE_RESOLUTION,
    }
    query = _SERIES_GLOBAL if user is None else _SERIES_USER
    return list(conn.execute(query, params))


def latest_bucket(conn: db.Conn, at: datetime | None = None) -> datetime | None:
    """The newest snapshot minute (at or before `at`); every portfolio has a row there."""
    if at is None:
        row = conn.execute("SELECT max(bucket) AS b FROM portfolio_snapshot").fetchone()
    else:
        row = conn.execute(
            "SELECT max(bucket) AS b FROM portfolio_snapshot WHERE bucket <= %(at)s", {"at": at}
        ).fetchone()
    return row["b"] if row else None


def snapshots_at(conn: db.Conn, bucket: datetime | None) -> dict[tuple[str, int | None], Row]:
    """Every portfolio's snapshot at one minute, keyed by (scope, user)."""
    if bucket is None:
        return {}
    rows = conn.execute("SELECT * FROM portfolio_snapshot WHERE bucket = %(b)s", {"b": bucket})
    return {(r["portfolio_scope"], r["followed_user_id"]): r for r in rows}


# The newest global snapshot at or before a time. Ordered on every key column so the
# planner walks the unique index backwards (it misjudges how many rows the global
# portfolio has and would otherwise read its whole month forwards).
GLOBAL_AT = """
SELECT equity_micros, contributed_micros FROM portfolio_snapshot
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL AND bucket <= %(at)s
ORDER BY portfolio_scope DESC, followed_user_id DESC, bucket DESC LIMIT 1
"""
GLOBAL_PEAK = """
SELECT max(equity_micros) AS peak FROM portfolio_snapshot
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL
"""


def global_pnl_since(conn: db.Conn, now_row: Row | None, at: datetime) -> tuple[int, int] | None:
    """The global copy's PnL since `at` and its equity then (None without a snapshot
    now; a portfolio younger than `at` made all its PnL since, from its contribution)."""
    if now_row is None:
        return None
    total = int(now_row["equity_micros"] - now_row["contributed_micros"])
    then = conn.execute(GLOBAL_AT, {"at": at}).fetchone()
    if then is None:
        return total, int(now_row["contributed_micros"])
    return total - int(then["equity_micros"] - then["contributed_micros"]), int(
        then["equity_micros"]
    )


def pnl(row: Row | None) -> int | None:
    """Profit so far: equity minus what was put in."""
    return None if row is None else row["equity_micros"] - row["contributed_micros"]


def value(row: Row | None, name: str) -> int | None:
    """One integer column of a row that may be missing."""
    return None if row is None else int(row[name])


def config(conn: db.Conn) -> copy_config.ConfigSet:
    return copy_configs.load(conn)


def merge_histograms(rows: list[Row], column: str) -> dict[str, int]:
    """Sums day-by-day {bucket: count} histograms."""
    out: dict[str, int] = {}
    for r in rows:
        for key, count in (r[column] or {}).items():
            out[key] = out.get(key, 0) + int(count)
    return out


def keyed(
    histogram: dict[str, int], edges: tuple[int, ...], label: Any = None
) -> list[tuple[str, int, str]]:
    """The histogram in edge order, every bucket present (zeros too), as (label, count,
    key): labelled "≤ edge" (or `label(edge)`), keyed as the rollup keys it."""
    name = label or str
    keys = [str(e) for e in edges] + ["inf"]
    return [
        (
            (("≤ " + name(int(k))) if k != "inf" else f"> {name(edges[-1])}").replace("-", "−"),
            histogram.get(k, 0),
            k,
        )
        for k in keys
    ]


def duration(ms: int) -> str:
    """250 → "250ms", 2000 → "2s", 60000 → "1min"."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:g}s"
    return f"{ms / 60_000:g}min"


def quantile(histogram: dict[str, int], q: float) -> float | None:
    """The upper edge of the bucket holding the q-quantile (None when empty; "inf" → the
    last edge, a lower bound)."""
    total = sum(histogram.values())
    if not total:
        return None
    numeric = sorted(((float(k) if k != "inf" else float("inf")), v) for k, v in histogram.items())
    seen = 0
    for edge, count in numeric:
        seen += count
        if seen >= q * total:
            return edge
    return numeric[-1][0]


LAG_EDGES = histograms.LAG_EDGES_MS
SLIP_EDGES = histograms.SLIP_EDGES_BPS


def ratio(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def retention_chart(
    r: attribution.Retention,
    whose: str,
    unit: str = "attempts",
    width: float = svg.W,
) -> bytes:
    """The waterfall ideal → sizing → skips by reason → unfilled → latency → slippage →
    fees → exec of one retention window (SPEC §10), in USD."""
    ratio = "n/a" if r.ratio is None else f"{r.ratio:.0%}"
    title = f"{whose}, {r.window}: {r.n} {unit}, retention {ratio}"
    return svg.waterfall(
        f"Where the alpha went: {title}" if width == svg.W else title.capitalize(),
        ("ideal", r.ideal / 1e6),
        [(label, v / 1e6) for label, v in r.steps()],
        ("exec", r.exec / 1e6),
        width=width,
    )
