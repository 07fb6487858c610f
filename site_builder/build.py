"""The builder: one round reads what changed, rebuilds those pages (the overview, feeds
and status always first, then the oldest queued) and stops at its time budget, having
moved the backlog by at least one page; what is left waits for the next round.
A page that fails keeps its previous file (writes are atomic), is logged, and is tried
again on its next change."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common.store import db
from site_builder import changes, publish, render
from site_builder.pages import config, markets, overview, portfolio, status, trades, users

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
# Seconds between a page's automatic reloads in the browser (SPEC §7).
REFRESH = {"overview": 10, "trades": 5, "status": 10, "user": 10, "default": 30}
PRIORITY = (
    "status",
    "overview",
    "trades",
    "users",
    "portfolio",
    "markets",
    "config",
    "config-test",
    "user",
    "market",
)
SINGLE_PAGES = PRIORITY[:7]  # the pages that are one file each
BACKGROUND = 1_000_000  # queue position of the periodic full rebuild's pages
# Cheap pages whose freshness is the point (a new fill must show within seconds): every
# round builds these first, whatever else is queued.
# Which inputs drew each chart (a dotfile: nginx serves no dotfiles).
MANIFEST = "charts/.manifest.json"
# A user's month-long curves are redrawn at most this often (their numbers are current).
CURVE_AGE_S = 300.0
HOT = frozenset({"status", "overview", "trades"})


@dataclass
class Site:
    """What a page's publish step needs: the publisher and the chart cache (a chart is
    redrawn only when its inputs change)."""

    publisher: publish.Publisher
    chart_drawn: dict[str, tuple[str, float]] = field(default_factory=dict)  # digest, when
    manifest_dirty: bool = False
    charts_drawn: int = 0

    def chart(
        self, name: str, inputs: Any, draw: Callable[[], bytes], *, max_age_s: float = 0.0
    ) -> str:
        """Publishes charts/<name>.png if its inputs changed; returns its URL (versioned,
        so a browser fetches the new one). With `max_age_s`, a chart drawn less than that
        long ago is kept even if its inputs moved: a month-long equity curve that gains a
        point a minute need not be redrawn every minute for every user (the page's
        numbers are current; the picture is at most `max_age_s` old)."""
        path = f"charts/{name}.png"
        digest = hashlib.sha256(repr(inputs).encode()).hexdigest()[:16]
        drawn = self.chart_drawn.get(path)
        fresh = drawn is not None and time.time() - drawn[1] < max_age_s
        if (
            drawn is not None
            and (drawn[0] == digest or fresh)
            and self.publisher.path(path).exists()
        ):
            return f"/{path}?v={drawn[0]}"
        self.publisher.write(path, draw())
        self.chart_drawn[path] = (digest, time.time())
        self.charts_drawn += 1
        self.manifest_dirty = True
        return f"/{path}?v={digest}"

    def load_manifest(self) -> None:
        """Reads which inputs drew the charts already in public/ (a restarted builder
        then redraws only what changed). A missing or unreadable manifest means none."""
        try:
            raw = json.loads(self.publisher.path(MANIFEST).read_text())
            self.chart_drawn = {str(k): (str(v[0]), float(v[1])) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            self.chart_drawn = {}

    def save_manifest(self) -> None:
        if self.manifest_dirty:
            data = {k: list(v) for k, v in sorted(self.chart_drawn.items())}
            self.publisher.write(MANIFEST, json.dumps(data, separators=(",", ":")))
            self.manifest_dirty = False

    def page(self, path: str, template: str, **context: Any) -> None:
        self.publisher.write(path, render.page(template, **context))


@dataclass
class Round:
    built: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    left: int = 0
    seconds: float = 0.0


def _refresh(kind: str) -> int:
    return REFRESH.get(kind, REFRESH["default"])


def build_page(conn: db.Conn, site: Site, key: str, now: datetime, stale_after_s: float) -> bool:
    """Builds one page by key; returns False when its subject no longer exists."""
    kind, _, arg = key.partition(":")
    if kind == "overview":
        ctx = overview.context(conn, now)
        url = site.chart("overview-equity", ctx.series, lambda: overview.equity_chart(ctx))
        site.page(
            "index.html",
            "overview.html",
            c=ctx,
            equity_png=url,
            refresh=_refresh(kind),
            nav="overview",
        )
    elif kind == "users":
        uc = users.users_context(conn, now)
        site.page("users.html", "users.html", c=uc, refresh=_refresh(kind), nav="users")
    elif kind == "user":
        u = users.user_context(conn, int(arg), now)
        if u is None:
            return False
        base = f"user-{arg}"
        pngs = {
            "equity": site.chart(
                f"{base}-equity", u.curve, lambda: users.equity_chart(u), max_age_s=CURVE_AGE_S
            ),
            "gap": site.chart(
                f"{base}-gap", u.curve, lambda: users.gap_chart(u), max_age_s=CURVE_AGE_S
            ),
            "slippage": site.chart(
                f"{base}-slippage", u.slippage_their, lambda: users.slippage_chart(u)
            ),
            "lag": site.chart(f"{base}-lag", u.lag, lambda: users.lag_chart(u)),
            "reasons": site.chart(
                f"{base}-reasons", u.skip_reasons, lambda: users.reasons_chart(u)
            ),
        }
        site.page(
            f"users/{arg}.html", "user.html", c=u, png=pngs, refresh=_refresh(kind), nav="users"
        )
    elif kind == "portfolio":
        pc = portfolio.context(conn, now)
        pngs = {
            "drawdown": site.chart(
                "portfolio-drawdown", pc.series, lambda: portfolio.drawdown_chart(pc)
            ),
            "markets": site.chart(
                "portfolio-markets", pc.by_market[:12], lambda: portfolio.market_chart(pc)
            ),
            "users": site.chart(
                "portfolio-users", pc.by_user[:12], lambda: portfolio.user_chart(pc)
            ),
        }
        site.page(
            "portfolio.html",
            "portfolio.html",
            c=pc,
            png=pngs,
            refresh=_refresh(kind),
            nav="portfolio",
        )
    elif kind == "trades":
        tc = trades.context(conn, now)
        site.page("trades.html", "trades.html", c=tc, refresh=_refresh(kind), nav="trades")
    elif kind == "markets":
        mc = markets.markets_context(conn, now)
        site.page("markets.html", "markets.html", c=mc, refresh=_refresh(kind), nav="markets")
    elif kind == "market":
        m = markets.market_context(conn, arg, now)
        if m is None:
            return False
        site.page(f"markets/{arg}.html", "market.html", c=m, refresh=_refresh(kind), nav="markets")
    elif kind == "config":
        cc = config.context(conn, now)
        site.page("config.html", "config.html", c=cc, refresh=0, nav="config")
    elif kind == "config-test":
        t = config.test_context(conn, int(arg), now)
        if t is None:
            return False
        refresh = 3 if t.test["state"] in ("PENDING", "RUNNING") else 0
        site.page(f"config-test/{arg}.html", "config_test.html", c=t, refresh=refresh, nav="config")
    elif kind == "status":
        sc = status.context(conn, now, stale_after_s)
        site.page("status.html", "status.html", c=sc, refresh=_refresh(kind), nav="status")
    else:
        raise ValueError(f"unknown page {key!r}")
    return True


class Builder:
    """Keeps what the last round saw; each `round` rebuilds what moved since."""

    def __init__(
        self,
        root: Path,
        *,
        budget_s: float = 0.8,
        full_every_s: float = 1800.0,
        stale_after_s: float = 180.0,
        clock: Callable[[], datetime],
    ) -> None:
        self.site = Site(publish.Publisher(root))
        self.budget_s = budget_s
        self.full_every_s = full_every_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.marks: changes.Marks | None = None
        self.pending: set[str] = set()
        self.queued: dict[str, int] = {}  # key → the round it has waited since
        self.rounds = 0
        self.last_full = 0.0
        self.started = False

    def _start(self) -> None:
        """Publishes what does not depend on data: the assets and the login page."""
        self.site.publisher.remove_stale_temps()
        self.site.load_manifest()
        self.site.publisher.copy_tree(STATIC, "static")
        self.site.page("login.html", "login.html")
        self.started = True

    def _expand(self, conn: db.Conn, keys: set[str], now: datetime) -> set[str]:
        out = {k for k in keys if not k.endswith(":*") and k != changes.ALL}
        every = changes.ALL in keys
        if every:
            out |= set(SINGLE_PAGES)
        if every or changes.ALL_USERS in keys:
            out |= {f"user:{r['id']}" for r in conn.execute("SELECT id FROM followed_user")}
        if every or changes.ALL_MARKETS in keys:
            out |= {f"market:{m['condition_id']}" for m in markets.listed(conn, now)}
        if every or "config-test:*" in keys:
            out |= {f"config-test:{i}" for i in config.test_ids(conn)}
        return out

    def _order(self, key: str) -> tuple[bool, int, int, str]:
        """The hot pages first; then oldest first (so a backlog drains and no page
        starves), then by priority."""
        kind = key.partition(":")[0]
        rank = PRIORITY.index(kind) if kind in PRIORITY else len(PRIORITY)
        return (kind not in HOT, self.queued.get(key, self.rounds), rank, key)

    def round(self, conn: db.Conn, *, budget_s: float | None = None) -> Round:
        """One build round; returns what it built, what failed, and how many are left."""
        started = time.monotonic()
        budget = self.budget_s if budget_s is None else budget_s
        if not self.started:
            self._start()
        now = self.clock()
        new = changes.read(conn)
        keys = self._expand(conn, changes.dirty(conn, self.marks, new), now)
        self.marks = new
        self.rounds += 1
        for key in keys:  # a change promotes a page queued by the safety net
            self.queued[key] = min(self.queued.get(key, self.rounds), self.rounds)
        self.pending |= keys
        if time.monotonic() - self.last_full >= self.full_every_s:
            # The safety net (anything a watermark missed) queues every page behind
            # whatever changes queue, so it never delays them.
            self.last_full = time.monotonic()
            for key in self._expand(conn, {changes.ALL}, now) - self.pending:
                self.queued[key] = self.rounds + BACKGROUND
                self.pending.add(key)
        done = Round()
        progressed = False  # built a page that is not hot: the backlog moved
        for key in sorted(self.pending, key=self._order):
            hot = key.partition(":")[0] in HOT
            if not hot and progressed and time.monotonic() - started >= budget:
                break
            progressed = progressed or not hot
            self.pending.discard(key)
            self.queued.pop(key, None)
            try:
                build_page(conn, self.site, key, now, self.stale_after_s)
                done.built.append(key)
            except Exception as exc:
                if db.lost(conn, exc):
                    raise  # every page after it would fail the same way
                if not conn.autocommit:
                    conn.rollback()
                log.exception("site: page %s failed", key)
                done.failed[key] = f"{type(exc).__name__}: {exc}"
        self.site.save_manifest()
        done.left = len(self.pending)
        done.seconds = time.monotonic() - started
        return done

    def build_all(self, conn: db.Conn) -> Round:
        """Everything, no budget (the `--once` build)."""
        self.pending |= self._expand(conn, {changes.ALL}, self.clock())
        return self.round(conn, budget_s=float("inf"))
