"""The pages, in one table: for each kind of page its file, template, typed context and
charts, how often the browser reloads it, its place in a round, and the watermarks
(`changes.read`) it depends on. Building (`build.build_page`) and invalidation
(`changes.dirty`) both read this table, so a new page is one entry here.

A key names a page: the kind alone for a page of one file ("overview"), or
"kind:subject" for one of many ("user:3", "market:0x…", "config-test:7"). A kind's
`inputs` are the watermarks whose move rebuilds it (every page of the kind, for a kind of
many); its `touched` map a watermark to the subjects the id range since the last round
touched, so only those pages of the kind are rebuilt."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common.runtime import settings
from common.store import db
from site_builder import exports, output
from site_builder.pages import (
    alerts,
    attempt,
    config,
    latency,
    leaders,
    markets,
    overview,
    portfolio,
    real_copy,
    status,
    trades,
    users,
)

# Watermarks whose move rebuilds every page (who is followed, config, the pause).
EVERYTHING = ("audit_log", "users_at", "users_n", "control_at")
ALWAYS = "*always*"  # a pseudo-watermark: rebuilt every round
CLOSED_ROWS = 200  # closed positions shown on a page (the CSV has them all)


@dataclass(frozen=True)
class Options:
    """What a page build needs besides the connection and the time."""

    stale_after_s: float = 180.0
    rules_path: Path = field(default_factory=lambda: settings.get().rules_path)


Built = dict[str, Any]  # the template's variables besides `refresh` and `nav`
Build = Callable[[db.Conn, output.Site, str, datetime, Options], Built | None]
# (conn, the watermarks before, after) → the subjects whose pages moved
Touched = Callable[[db.Conn, dict[str, Any], dict[str, Any]], set[str]]


@dataclass(frozen=True)
class Page:
    kind: str
    template: str
    context: type  # the typed context the template reads as `c`
    path: Callable[[str], str]  # subject → file under public/
    build: Build  # None: the subject no longer exists
    nav: str
    refresh: int  # seconds between the browser's reloads; 0: none
    inputs: tuple[str, ...] = ()
    touched: dict[str, Touched] = field(default_factory=dict)
    every: Callable[[db.Conn, datetime], Iterable[str]] | None = None  # kinds of many
    hot: bool = False  # built first every round: its freshness is the point
    prune: bool = False  # files of subjects no longer in `every` are deleted (full rebuild)


# --- touched subjects ---------------------------------------------------------------


def _event_users(table: str, mark: str) -> Touched:
    """The users of the `table` rows in the id range the watermark `mark` moved over."""
    query = (
        f"SELECT DISTINCT followed_user_id AS u FROM {table}"  # noqa: S608  (a table name)
        " WHERE id > %(lo)s AND id <= %(hi)s"
    )

    def users_of(conn: db.Conn, o: dict[str, Any], n: dict[str, Any]) -> set[str]:
        return {str(r["u"]) for r in conn.execute(query, {"lo": o[mark], "hi": n[mark]})}

    return users_of


def _attempts(column: str, mark: str) -> Touched:
    """The users (column "u") or markets ("c") of the copy attempts in the id range the
    watermark `mark` moved over."""

    def subjects(conn: db.Conn, o: dict[str, Any], n: dict[str, Any]) -> set[str]:
        rows = conn.execute(
            """SELECT DISTINCT followed_user_id AS u, condition_id AS c FROM copy_attempt
               WHERE id > %(lo)s AND id <= %(hi)s""",
            {"lo": o[mark], "hi": n[mark]},
        )
        return {str(r[column]) for r in rows if r[column]}

    return subjects


# --- builds ---------------------------------------------------------------------------


def _overview(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    ctx = overview.context(conn, now)
    url = site.ranged(
        "overview-equity", ctx.series, lambda since: overview.equity_chart(ctx, since), now
    )
    waterfall = site.chart(
        "overview-waterfall", ctx.retention["30d"], lambda: overview.waterfall_chart(ctx)
    )
    return {"c": ctx, "equity_chart": url, "waterfall_chart": waterfall}


def _users(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    return {"c": users.users_context(conn, now)}


def _user(conn: db.Conn, site: output.Site, arg: str, now: datetime, o: Options) -> Built | None:
    u = users.user_context(conn, int(arg), now)
    if u is None:
        return None
    base = f"user-{arg}"
    charts = {
        "waterfall": site.chart(
            f"{base}-waterfall", u.retention["30d"], lambda: users.waterfall_chart(u)
        ),
        "equity": site.ranged(
            f"{base}-equity", u.curve, lambda since: users.equity_chart(u, since), now
        ),
        "gap": site.ranged(f"{base}-gap", u.curve, lambda since: users.gap_chart(u, since), now),
    }
    if (lat := u.latency) is not None:
        charts["decay"] = site.chart(f"{base}-decay", lat, lambda: latency.retention_chart(lat))
        charts["decay_pnl"] = site.chart(f"{base}-decay-pnl", lat, lambda: latency.pnl_chart(lat))
    if (real := u.real) is not None:
        month = u.retention["30d"]
        charts["sim_waterfall"] = site.chart(
            f"{base}-sim-waterfall", month, lambda: real_copy.sim_waterfall_chart(month)
        )
        charts["real_waterfall"] = site.chart(
            f"{base}-real-waterfall", real.retention["30d"], lambda: real_copy.waterfall_chart(real)
        )
        charts["sim_curve"] = site.chart(
            f"{base}-sim-curve",
            real.curves["sim"],
            lambda: real_copy.curve_chart(real, "sim", u.frame.now),
        )
        charts["real_curve"] = site.chart(
            f"{base}-real-curve",
            real.curves["real"],
            lambda: real_copy.curve_chart(real, "real", u.frame.now),
        )
    return {"c": u, "charts": charts}


def _leaders(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    lc = leaders.context(conn, now)
    rows = [dataclasses.asdict(x) for x in lc.leaders]
    return {
        "c": lc,
        "csv": {"leaders": site.csv("csv/leaders.csv", exports.table(exports.LEADERS, rows))},
    }


def _portfolio(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    pc = portfolio.context(conn, now)
    charts = {
        "drawdown": site.ranged(
            "portfolio-drawdown", pc.series, lambda since: portfolio.drawdown_chart(pc, since), now
        ),
        "markets": site.chart(
            "portfolio-markets", pc.by_market[:12], lambda: portfolio.market_chart(pc)
        ),
        "users": site.chart("portfolio-users", pc.by_user[:12], lambda: portfolio.user_chart(pc)),
    }
    files = {
        "positions": site.csv("csv/positions.csv", exports.table(exports.POSITIONS, pc.positions)),
        "closed": site.csv("csv/closed-positions.csv", exports.table(exports.CLOSED, pc.closed)),
    }
    return {"c": pc, "charts": charts, "csv": files, "closed_rows": CLOSED_ROWS}


def _trades(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    tc = trades.context(conn, now)
    age = trades.CSV_AGE_S
    return {
        "c": tc,
        "csv": {
            "attempts": site.csv(
                "csv/attempts.csv",
                lambda: exports.table(exports.ATTEMPTS, trades.csv_attempts(conn)),
                max_age_s=age,
            ),
            "fills": site.csv(
                "csv/fills.csv",
                lambda: exports.table(exports.FILLS, trades.csv_trades(conn)),
                max_age_s=age,
            ),
        },
        "csv_rows": trades.CSV_ROWS,
    }


def _markets(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    return {"c": markets.markets_context(conn, now)}


def _market(conn: db.Conn, site: output.Site, arg: str, now: datetime, o: Options) -> Built | None:
    m = markets.market_context(conn, arg, now)
    if m is None:
        return None
    chart = None
    if not m.history.empty:  # one range: the stored marks reach back a day or two
        chart = site.chart(
            f"market-{arg}-history",
            (m.history, now.replace(second=0, microsecond=0)),
            lambda: markets.history_chart(m, now - markets.HISTORY),
        )
    return {"c": m, "history_svg": chart}


def _attempt(conn: db.Conn, site: output.Site, arg: str, now: datetime, o: Options) -> Built | None:
    ac = attempt.context(conn, int(arg), now)
    if ac is None:
        return None
    # what it shows never changes: no reload, and never "stale"
    return {"c": ac, "latency": attempt.latency_ms, "notional": attempt.notional, "static": True}


def _new_attempts(conn: db.Conn, o: dict[str, Any], n: dict[str, Any]) -> set[str]:
    """The attempts written since the last round (each gets its page once); of a burst
    (a backlog caught up), only the newest attempt.PAGES, the ones that keep a page."""
    lo = max(o["copy_attempt"], n["copy_attempt"] - attempt.PAGES)
    rows = conn.execute(
        "SELECT id FROM copy_attempt WHERE id > %(lo)s AND id <= %(hi)s",
        {"lo": lo, "hi": n["copy_attempt"]},
    )
    return {str(r["id"]) for r in rows}


def _held_markets(conn: db.Conn, o: dict[str, Any], n: dict[str, Any]) -> set[str]:
    """The markets an executable portfolio holds: a new snapshot minute moves their
    marks (markets only the shadows hold wait for the full rebuild)."""
    rows = conn.execute(
        """SELECT DISTINCT condition_id FROM portfolio_position
           WHERE share_micros <> 0 AND portfolio_scope <> 'SHADOW_USER'
             AND condition_id IS NOT NULL"""
    )
    return {r["condition_id"] for r in rows}


def _config(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    return {"c": config.context(conn, now)}


def _config_test(
    conn: db.Conn, site: output.Site, arg: str, now: datetime, o: Options
) -> Built | None:
    t = config.test_context(conn, int(arg), now)
    if t is None:
        return None
    # A test still running reloads itself until its result is in.
    return {"c": t, "refresh": 3 if t.test["state"] in ("PENDING", "RUNNING") else 0}


def _alerts(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    return {"c": alerts.context(conn, now, o.rules_path)}


def _status(conn: db.Conn, site: output.Site, _: str, now: datetime, o: Options) -> Built:
    return {"c": status.context(conn, now, o.stale_after_s)}


def _followed(conn: db.Conn, now: datetime) -> list[str]:
    return [str(r["id"]) for r in conn.execute("SELECT id FROM followed_user")]


def _listed_markets(conn: db.Conn, now: datetime) -> list[str]:
    return markets.listed_ids(conn, now)


def _tests(conn: db.Conn, now: datetime) -> list[str]:
    return [str(i) for i in config.test_ids(conn)]


def _markets_since(conn: db.Conn, o: dict[str, Any], n: dict[str, Any]) -> set[str]:
    """The markets whose metadata was fetched since the last round."""
    rows = conn.execute(
        """SELECT condition_id FROM market
           WHERE %(t)s::timestamptz IS NULL OR metadata_fetched_at > %(t)s""",
        {"t": o["markets_at"]},
    )
    return {r["condition_id"] for r in rows}


def _single(name: str) -> Callable[[str], str]:
    return lambda _: name


# In the order a round builds them when they wait equally long.
PAGES = (
    Page(
        "status",
        "status.html",
        status.StatusContext,
        _single("status.html"),
        _status,
        "status",
        10,
        (ALWAYS,),
        hot=True,
    ),
    Page(
        "overview",
        "overview.html",
        overview.OverviewContext,
        _single("index.html"),
        _overview,
        "overview",
        10,
        (
            "trade_event",
            "activity_event",
            "snapshot_at",
            "rollup_attempt",
            "rollup_trade",
            "rollup_ledger",
            "attribution_at",
        ),
        hot=True,
    ),
    Page(
        "trades",
        "trades.html",
        trades.TradesContext,
        _single("trades.html"),
        _trades,
        "trades",
        5,
        ("trade_event", "activity_event", "copy_attempt"),
        hot=True,
    ),
    Page(
        "leaders",
        "leaders.html",
        leaders.LeadersContext,
        _single("leaders.html"),
        _leaders,
        "leaders",
        60,
        ("snapshot_at", "attribution_at", "rollup_attempt", "sweep_at"),
    ),
    Page(
        "alerts",
        "alerts.html",
        alerts.AlertsContext,
        _single("alerts.html"),
        _alerts,
        "alerts",
        30,
        ("alert_at", "alert_eval_at", "delivery_at"),
    ),
    Page(
        "users",
        "users.html",
        users.UsersContext,
        _single("users.html"),
        _users,
        "users",
        30,
        ("snapshot_at", "rollup_attempt"),
    ),
    Page(
        "portfolio",
        "portfolio.html",
        portfolio.PortfolioContext,
        _single("portfolio.html"),
        _portfolio,
        "portfolio",
        30,
        ("snapshot_at", "rollup_ledger"),
    ),
    Page(
        "markets",
        "markets.html",
        markets.MarketsContext,
        _single("markets.html"),
        _markets,
        "markets",
        30,
        (
            "copy_attempt",
            "snapshot_at",
            "rollup_attempt",
            "markets_at",
            "markets_n",
            "blacklisted_n",
        ),
    ),
    Page(
        "config",
        "config.html",
        config.ConfigContext,
        _single("config.html"),
        _config,
        "config",
        0,
        ("markets_at", "markets_n", "blacklisted_n", "config_test", "config_test_done"),
    ),
    Page(
        "config-test",
        "config_test.html",
        config.ConfigTestContext,
        lambda arg: f"config-test/{arg}.html",
        _config_test,
        "config",
        0,
        ("config_test", "config_test_done"),
        every=_tests,
    ),
    Page(
        "user",
        "user.html",
        users.UserContext,
        lambda arg: f"users/{arg}.html",
        _user,
        "users",
        10,
        ("snapshot_at", "sweep_at"),
        touched={
            "trade_event": _event_users("trade_event", "trade_event"),
            "activity_event": _event_users("activity_event", "activity_event"),
            "copy_attempt": _attempts("u", "copy_attempt"),
            "rollup_attempt": _attempts("u", "rollup_attempt"),
            "rollup_trade": _event_users("trade_event", "rollup_trade"),
        },
        every=_followed,
    ),
    Page(
        "market",
        "market.html",
        markets.MarketContext,
        lambda arg: f"markets/{arg}.html",
        _market,
        "markets",
        30,
        touched={
            "copy_attempt": _attempts("c", "copy_attempt"),
            "rollup_attempt": _attempts("c", "rollup_attempt"),
            "snapshot_at": _held_markets,
            "markets_at": _markets_since,
            "markets_n": _markets_since,
            "blacklisted_n": _markets_since,
        },
        every=_listed_markets,
    ),
    Page(
        "attempt",
        "attempt.html",
        attempt.AttemptContext,
        lambda arg: f"attempts/{arg}.html",
        _attempt,
        "trades",
        0,
        touched={"copy_attempt": _new_attempts},
        every=attempt.newest,
        prune=True,
    ),
)
BY_KIND = {p.kind: p for p in PAGES}
SINGLE_PAGES = tuple(p.kind for p in PAGES if p.every is None)
HOT = frozenset(p.kind for p in PAGES if p.hot)


def of(key: str) -> tuple[Page, str]:
    """The page kind of a key, and its subject ("" for a page of one file)."""
    kind, _, arg = key.partition(":")
    page = BY_KIND.get(kind)
    if page is None:
        raise ValueError(f"unknown page {key!r}")
    return page, arg
