"""Simulate (SPEC §4, §5): for every closed group, what a copy would have done — once in
the user's own executable portfolio (EXEC_USER) and once in the global one
(EXEC_GLOBAL) — against the L2 book at decision time.

Groups are taken FIFO (first detect time, then window start, then key). Live, each is
decided at its `decide_at` (group close + 750 ms + jitter from its key): the run waits
until then (`--wait` bounds how long a run waits for the next one), fetches `/book`
once, stores it, and only then decides, so a rerun after a crash decides on the same
book. Both attempts, their fills and the exec ledger entries are written in one
transaction keyed by (scope, user, group key), with the group marked DONE: a rerun is a
no-op. One simulator runs at a time (its own session lock `locks.SIMULATE`). It holds
the exec-ledger lock only inside each write transaction, never across its waits, so
snapshot, rollup and settlement get their cut at once. A loop keeps its portfolios in
memory between runs; every write checks, under that lock, that the newest exec ledger
entry is still its own, and when another writer (settlement, which takes the lock for
its transaction) moved the ledgers, rereads them and decides the pending groups again.

`--replay` decides every closed group at once on the books already stored (NO_BOOK
where none is), in batches: to rebuild the exec portfolios, and for the benchmark.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime

from common.domain import decide, portfolio
from common.runtime import jobs
from common.store import (
    copy_configs,
    copy_data,
    db,
    failures,
    groups,
    locks,
    polling,
    portfolios,
    quarantine,
)
from common.upstream import clob, http, wire

log = logging.getLogger(__name__)
SIM_LOCK = locks.SIMULATE
FLUSH_TRIES = 3  # decide again on fresh portfolios at most this often per write
FETCH = 200  # groups read per query
SCOPES = ("EXEC_USER", "EXEC_GLOBAL")
MAX_WAITS = 100  # a run ends after this many waits even if work keeps coming


class Stale(RuntimeError):
    """Another writer moved the exec ledgers since the portfolios were read."""


Pending = list[tuple[decide.Group, copy_data.StoredBook | None, list[copy_data.Row]]]


def _live_books(ctx: jobs.Context) -> clob.LiveBooks | None:
    """The watcher's live books (OCULUS_LIVE_BOOKS_URL), kept for the process; None: off."""
    url = ctx.settings.live_books_url
    if not url:
        return None
    live = ctx.resources.get("live_books")
    if not isinstance(live, clob.LiveBooks):
        live = ctx.resources["live_books"] = clob.LiveBooks(url)
    return live


class Engine:
    """Decides groups in FIFO order, keeping the portfolios in memory between them."""

    def __init__(
        self,
        conn: db.Conn,
        clock: Callable[[], datetime],
        *,
        ups: http.Upstreams | None = None,
        replay: bool = False,
        batch: int = 1,
        live: clob.LiveBooks | None = None,
    ) -> None:
        self.conn, self.clock, self.ups, self.live = conn, clock, ups, live
        self.replay, self.batch = replay, batch
        self.portfolios: dict[portfolio.Key, portfolio.Portfolio] = {}
        self.marks = portfolio.Marks()
        self._refs: dict[tuple[portfolio.Key, datetime], portfolio.BreakerRefs] = {}
        self._books: dict[int, copy_data.StoredBook] = {}
        self._their: dict[int, int] = {}
        self._watermark: int | None = None
        self._marks_due = False
        self.counts: dict[str, int] = {}
        self.latencies_ms: list[float] = []  # decide + commit, book already in hand
        self.refresh()

    def refresh(self) -> None:
        """Rereads what the operator may have changed (config, users, pause, markets),
        and drops the in-memory portfolios if another writer touched the exec ledgers
        since this engine's last commit. Marks are reread before the next decision."""
        self.configs = copy_configs.load(self.conn)
        self.users = copy_data.users(self.conn)
        self.paused = copy_data.paused(self.conn)
        self.markets = copy_data.Markets(self.conn)
        if self._exec_watermark() != self._watermark:
            self._reload()
        self._marks_due = True

    def _exec_watermark(self) -> int | None:
        return copy_data.exec_watermark(self.conn)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def portfolio_of(self, scope: str, user_id: int | None) -> portfolio.Portfolio:
        key = (scope, user_id)
        if key not in self.portfolios:
            cfg = self.configs.base if user_id is None else self.configs.for_user(user_id)
            p = portfolios.load(self.conn, scope, user_id, cfg.starting_cash_micros)
            self.marks.merge(portfolios.load_marks(self.conn, set(p.positions), self.clock()))
            self.portfolios[key] = p
        return self.portfolios[key]

    def refs(self, p: portfolio.Portfolio, at: datetime) -> portfolio.BreakerRefs:
        minute = at.replace(second=0, microsecond=0)
        key = (p.key, minute)
        if key not in self._refs:
            self._refs[key] = portfolios.breaker_refs(self.conn, p, at)
        return self._refs[key]

    def _leader_positions(self, groups: list[decide.Group]) -> dict[int, int]:
        """The leaders' positions before the reductions among `groups` whose decision
        moment is known already (a stored book's fetch time, or in a replay the group's
        decide_at), read in one statement; the others are read when decided."""
        known = []
        for g in groups:
            book = self._books.get(g.book_id) if g.book_id is not None else None
            if book is not None:
                known.append((g, book.fetched_at))
            elif self.replay:
                known.append((g, g.decide_at))
        return copy_data.leader_positions(self.conn, known)

    def book_for(self, g: decide.Group) -> copy_data.StoredBook | None:
        """Returns the group's book: the stored one, else (live) one fetched now and
        stored (committed before the decision, so a rerun decides on the same book)."""
        if g.asset_id is None or g.action not in ("BUY", "SELL"):
            return None
        stored_id = g.book_id
        if stored_id is not None:
            hit = self._books.pop(stored_id, None)
            return hit or copy_data.load_books(self.conn, [stored_id]).get(stored_id)
        if self.replay or self.ups is None:
            return None
        at = self.clock()
        live = self.live.fetch(g.asset_id) if self.live is not None else None
        if live is not None:  # the watcher's live book: no round trip to the CLOB
            self.count("book_live")
            fetched: clob.OrderBook | wire.Reject | None = live
        else:
            try:
                fetched = clob.fetch_book(self.ups.clob, g.asset_id)
            except http.UpstreamError as exc:
                log.warning("book for %s failed: %s", g.key, exc)
                self.count("book_failed")
                return None
        if isinstance(fetched, wire.Reject):
            quarantine.record(self.conn, [fetched], at)
            self.count("book_rejected")
            return None
        if fetched is None:
            self.count("book_missing")
            return None
        with self.conn.transaction():
            source = "LIVE" if live is not None else "REST"
            stored = copy_data.store_book(self.conn, fetched, at, source)
            copy_data.set_book(self.conn, g.id, stored.book.snapshot_id)
        return stored

    def decide_group(
        self, g: decide.Group, book: copy_data.StoredBook | None
    ) -> list[copy_data.Row]:
        """Decides the group in both portfolios and moves them in memory at once (a later
        group of the same batch sees this one); returns the rows to write."""
        if self._marks_due:
            held = portfolio.held_assets(self.portfolios.values())
            self.marks.merge(portfolios.load_marks(self.conn, held, self.clock()))
            self._marks_due = False
        at = copy_data.moment(g, book, self.marks)
        cfg = self.configs.for_user(g.user_id)
        ids = {
            "guardrail_id": cfg.guardrail_id,
            "sizing_id": cfg.sizing_id,
            "guardrail_override_id": cfg.guardrail_override_id,
            "sizing_override_id": cfg.sizing_override_id,
        }
        user = self.users.get(g.user_id, copy_data.User(False, "REMOVED"))
        market = self.markets.get(g.condition_id)
        assets = market.assets if market is not None else ()
        rows = []
        live = None if self.replay or self.ups is None else polling.midpoints_of(self.ups)
        books = [self.portfolio_of(s, g.user_id if s == "EXEC_USER" else None) for s in SCOPES]
        legs = (g.asset_id,) if g.asset_id is not None else assets
        holding = any(decide.ours(g, p, a) > 0 for p in books for a in legs)
        their = self._their.pop(g.id, None)
        context = copy_data.group_context(
            self.conn, g, market, at, self.clock(), live, holding, their
        )
        for scope, p in zip(SCOPES, books, strict=True):
            refs = self.refs(p, at)
            sit = copy_data.situation(at, self.paused, user, market, book, refs, context)
            d = decide.decide(g, p, cfg, sit, self.marks)
            deposit = None if p.funded else p.starting_cash
            made = decide.apply(p, d, assets)  # the entries, computed once: written as-is
            book_id = book.book.snapshot_id if book else None
            rows.append(copy_data.Row(d, ids, book_id, assets, deposit, made))
            self.count(f"{scope.lower()}_{d.decision.lower()}")
        return rows

    def run(self, wait_until: Callable[[datetime], None], max_wait_s: float) -> int:
        """Decides closed groups in FIFO order until none is due within `max_wait_s`;
        returns how many groups it decided."""
        done = 0
        while True:
            fetch = max(FETCH, self.batch)
            groups = copy_data.closed_groups(self.conn, fetch)
            if not groups:
                return done
            stored = [g.book_id for g in groups if g.book_id]
            self._books = copy_data.load_books(self.conn, stored) if stored else {}
            self._their = self._leader_positions(groups)
            pending: Pending = []
            for g in groups:
                if not self.replay and g.decide_at > self.clock():
                    if (g.decide_at - self.clock()).total_seconds() > max_wait_s:
                        self._flush(pending)
                        return done
                    self._flush(pending)
                    pending = []
                    wait_until(g.decide_at)
                book = self.book_for(g)
                started = time.perf_counter()
                try:
                    pending.append((g, book, self.decide_group(g, book)))
                except Exception as exc:
                    self._reload()  # the group holds the FIFO: show it on the status page
                    error = f"{type(exc).__name__}: {exc}"
                    failures.record(self.conn, "simulate", g.key, error, self.clock(), {"id": g.id})
                    raise
                if len(pending) >= self.batch:
                    self._flush(pending)
                    pending = []
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                done += 1
            self._flush(pending)
            if len(groups) < fetch:
                return done

    def _flush(self, pending: Pending) -> None:
        """Writes the pending groups in one transaction (attempts, fills, ledger entries,
        groups DONE) under the exec-ledger lock, taken for that transaction only. If
        another writer moved the exec ledgers since the portfolios were read, the
        portfolios are reread and the pending groups decided again on them (same books),
        up to FLUSH_TRIES times. On any other failure the in-memory portfolios are
        dropped (they are ahead of the ledger) and reread on next use."""
        if not pending:
            return
        for _ in range(FLUSH_TRIES):
            try:
                self._write(pending)
                break
            except Stale:
                self.count("decided_again", len(pending))
                self._reload()
                try:
                    pending[:] = [(g, b, self.decide_group(g, b)) for g, b, _ in pending]
                except Exception:
                    self._reload()  # partly moved in memory: reread on next use
                    raise
            except Exception:
                self._reload()
                raise
        else:
            self._reload()
            raise Stale(f"the exec ledgers moved under {FLUSH_TRIES} writes in a row")
        pending.clear()

    def _write(self, pending: Pending) -> None:
        with self.conn.transaction():
            db.lock_exec_ledgers(self.conn)
            if self._exec_watermark() != self._watermark:
                raise Stale("another writer moved the exec ledgers")
            copy_data.write_many(self.conn, [row for _, _, rows in pending for row in rows])
            copy_data.mark_done(self.conn, [rows[0].decision for _, _, rows in pending])
            self._watermark = self._exec_watermark()  # ours: read under the lock

    def _reload(self) -> None:
        """Forgets the in-memory portfolios (after a failed write they may be ahead of
        the ledger); the next use reloads them."""
        self.portfolios.clear()
        self._refs.clear()
        self.marks = portfolio.Marks()
        self._watermark = self._exec_watermark()


_NEXT = """
SELECT min(t) AS t FROM (
  SELECT min(close_time) AS t FROM copy_group WHERE state = 'OPEN'
  UNION ALL SELECT min(decide_at) FROM copy_group WHERE state = 'CLOSED') due
"""


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    """Groups, then decides what is due; while the next close or decision time is
    within `--wait`, waits for it and goes on. Returns the groups decided."""
    args = ctx.args
    locked = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SIM_LOCK,)).fetchone()
    if not locked or not locked["ok"]:
        ctx.count("busy")
        return 0
    replay = bool(getattr(args, "replay", False))
    if replay:  # a replay rebuilds the exec ledgers: no settlement between its batches
        db.lock_exec_ledgers_session(conn)
    max_wait = float(getattr(args, "wait", 2.0))
    decided = 0
    try:
        engine = ctx.resources.get("engine")
        if isinstance(engine, Engine) and engine.conn is conn:
            engine.refresh()  # a loop keeps its portfolios in memory between runs
            engine.counts.clear()
        else:
            engine = ctx.resources["engine"] = Engine(
                conn,
                ctx.clock,
                ups=ctx.resources.get("ups"),
                replay=replay,
                batch=int(getattr(args, "batch", 1) or 1),
                live=None if replay else _live_books(ctx),
            )
        for _ in range(MAX_WAITS):
            for k, v in groups.step(conn, ctx.clock()).items():
                ctx.count(f"group_{k}", v)
            decided += engine.run(ctx.wait_until, max_wait)
            row = conn.execute(_NEXT).fetchone()
            due = row["t"] if row else None
            if due is None or engine.replay or (due - ctx.clock()).total_seconds() > max_wait:
                break
            ctx.wait_until(due)
        for k, v in engine.counts.items():
            ctx.count(k, v)
        if decided:
            ctx.count("failed_resolved", resolve_failed(conn, ctx.clock()))
        return decided
    finally:
        if replay:
            conn.execute("SELECT pg_advisory_unlock(%s)", (db.EXEC_LEDGER_LOCK,))
        conn.execute("SELECT pg_advisory_unlock(%s)", (SIM_LOCK,))


def resolve_failed(conn: db.Conn, now: datetime) -> int:
    """Resolves the failed groups that have been decided (or voided) since."""
    keys = [r["item_key"] for r in failures.open_items(conn, "simulate")]
    if not keys:
        return 0
    done = conn.execute(
        "SELECT group_key FROM copy_group WHERE group_key = ANY(%s) AND state IN ('DONE', 'VOID')",
        (keys,),
    )
    return failures.resolve(conn, "simulate", [r["group_key"] for r in done], now)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("simulate", __doc__ or "")
    p.set_defaults(interval=0.25)
    p.add_argument("--wait", type=float, default=2.0, help="longest wait for a decision time")
    p.add_argument("--replay", action="store_true", help="decide all closed groups on stored books")
    p.add_argument("--batch", type=int, default=None, help="groups per transaction")
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = 500 if args.replay else 1
    return jobs.main("simulate", args, run_once, upstreams=True)


if __name__ == "__main__":
    sys.exit(main())
