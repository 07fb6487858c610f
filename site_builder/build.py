"""The builder: one round reads what changed, rebuilds those pages (the overview, feeds
and status always first, then the oldest queued) and stops at its time budget, having
moved the backlog by at least one page (a page its kind's recent build time says would
end past the budget waits); what is left waits for the next round.
A page that fails keeps its previous file (writes are atomic), is logged, and is tried
again on its next change."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common.store import db
from site_builder import changes, output, publish, registry

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
BACKGROUND = 1_000_000  # queue position of the periodic full rebuild's pages
RANK = {p.kind: i for i, p in enumerate(registry.PAGES)}


@dataclass
class Round:
    built: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    left: int = 0
    seconds: float = 0.0


def build_page(
    conn: db.Conn, site: output.Site, key: str, now: datetime, stale_after_s: float
) -> bool:
    """Builds one page by key, as the registry says, reading one snapshot of the database
    (a repeatable-read transaction, so the snapshot job committing between two of its
    queries cannot make its tables disagree with its cards); returns False when its
    subject no longer exists."""
    page, arg = registry.of(key)
    # One snapshot of the database (a caller's own transaction, e.g. a test's, is kept).
    with conn.transaction() if conn.autocommit else contextlib.nullcontext():
        if conn.autocommit:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        built = page.build(conn, site, arg, now, registry.Options(stale_after_s))
    if built is None:
        return False
    context = {
        "refresh": page.refresh,
        "static": False,
        **built,
        "nav": page.nav,
        "stale_s": stale_after_s,
    }
    site.page(page.path(arg), page.template, **context)
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
        self.site = output.Site(publish.Publisher(root))
        self.budget_s = budget_s
        self.full_every_s = full_every_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.marks: changes.Marks | None = None
        self.pending: set[str] = set()
        self.queued: dict[str, int] = {}  # key → the round it has waited since
        self.cost: dict[str, float] = {}  # page kind → its recent build time (s), smoothed
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
        """Turns "*" (every page) and "kind:*" (every page of a kind) into page keys."""
        out = {k for k in keys if not k.endswith(":*") and k != changes.ALL}
        every = changes.ALL in keys
        for page in registry.PAGES:
            if page.every is None:
                if every:
                    out.add(page.kind)
            elif every or f"{page.kind}:*" in keys:
                out |= {f"{page.kind}:{s}" for s in page.every(conn, now)}
        return out

    def _prune(self, conn: db.Conn, now: datetime) -> int:
        """Deletes the pages of subjects that left their kind's `every` (the oldest
        attempts' pages), so public/ stays bounded; returns how many."""
        removed = 0
        for page in registry.PAGES:
            if not page.prune or page.every is None:
                continue
            keep = {page.path(s) for s in page.every(conn, now)}
            folder = Path(page.path("x")).parent
            for f in sorted(self.site.publisher.path(str(folder)).glob("*.html")):
                relative = str(folder / f.name)
                if relative not in keep:
                    f.unlink(missing_ok=True)
                    self.site.publisher.digests.pop(relative, None)
                    removed += 1
        return removed

    def _order(self, key: str) -> tuple[bool, int, int, str]:
        """The hot pages first; then oldest first (so a backlog drains and no page
        starves), then in the registry's order."""
        kind = key.partition(":")[0]
        rank = RANK.get(kind, len(RANK))
        return (kind not in registry.HOT, self.queued.get(key, self.rounds), rank, key)

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
            self._prune(conn, now)
            for key in self._expand(conn, {changes.ALL}, now) - self.pending:
                self.queued[key] = self.rounds + BACKGROUND
                self.pending.add(key)
        done = Round()
        progressed = False  # built a page that is not hot: the backlog moved
        for key in sorted(self.pending, key=self._order):
            kind = key.partition(":")[0]
            hot = kind in registry.HOT
            # A page expected to run past the budget waits for the next round (its kind's
            # recent build time), once the backlog has moved this round.
            expected = self.cost.get(kind, 0.0)
            if not hot and progressed and time.monotonic() - started + expected >= budget:
                break
            progressed = progressed or not hot
            self.pending.discard(key)
            self.queued.pop(key, None)
            began = time.monotonic()
            try:
                build_page(conn, self.site, key, now, self.stale_after_s)
                done.built.append(key)
                took = time.monotonic() - began
                self.cost[kind] = (
                    took if kind not in self.cost else 0.7 * self.cost[kind] + 0.3 * took
                )
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
