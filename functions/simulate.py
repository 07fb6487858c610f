"""Simulate (SPEC §4, §5): for every closed group, what a copy would have done — once in
the user's own executable portfolio (EXEC_USER) and once in the global one
(EXEC_GLOBAL) — against the L2 book at decision time.

Groups are taken FIFO (first detect time, then window start, then key). Live, each is
decided at its `decide_at` (group close + 750 ms + jitter from its key): the run waits
until then (`--wait` bounds how long a run waits for the next one), fetches `/book`
once, stores it, and only then decides, so a rerun after a crash decides on the same
book. Both attempts, their fills and the exec ledger entries are written in one
transaction keyed by (scope, user, group key), with the group marked DONE: a rerun is a
no-op. One simulator runs at a time (advisory lock).

`--replay` decides every closed group at once on the books already stored (NO_BOOK
where none is), in batches: to rebuild the exec portfolios, and for the benchmark.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime

from common import clob, copy_config, copy_data, db, decide, http, jobs, portfolio, quarantine, wire
from functions import group

log = logging.getLogger(__name__)
SIM_LOCK = 0x6F63_0003
FETCH = 200  # groups read per query
SCOPES = ("EXEC_USER", "EXEC_GLOBAL")
MAX_WAITS = 100  # a run ends after this many waits even if work keeps coming


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
    ) -> None:
        self.conn, self.clock, self.ups = conn, clock, ups
        self.replay, self.batch = replay, batch
        self.configs = copy_config.load(conn)
        self.users = copy_data.users(conn)
        self.paused = copy_data.paused(conn)
        self.markets = copy_data.Markets(conn)
        self.portfolios: dict[portfolio.Key, portfolio.Portfolio] = {}
        self.marks = portfolio.Marks()
        self._refs: dict[tuple[portfolio.Key, datetime], portfolio.BreakerRefs] = {}
        self.counts: dict[str, int] = {}
        self.latencies_ms: list[float] = []  # decide + commit, book already in hand

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def portfolio_of(self, scope: str, user_id: int | None) -> portfolio.Portfolio:
        key = (scope, user_id)
        if key not in self.portfolios:
            cfg = self.configs.base if user_id is None else self.configs.for_user(user_id)
            p = portfolio.load(self.conn, scope, user_id, cfg.starting_cash_micros)
            self.marks.merge(portfolio.Marks.load(self.conn, set(p.shares), self.clock()))
            self.portfolios[key] = p
        return self.portfolios[key]

    def refs(self, p: portfolio.Portfolio, at: datetime) -> portfolio.BreakerRefs:
        minute = at.replace(second=0, microsecond=0)
        key = (p.key, minute)
        if key not in self._refs:
            self._refs[key] = portfolio.breaker_refs(self.conn, p, at)
        return self._refs[key]

    def book_for(self, g: decide.Group, stored_id: int | None) -> copy_data.StoredBook | None:
        """Returns the group's book: the stored one, else (live) one fetched now and
        stored (committed before the decision, so a rerun decides on the same book)."""
        if g.asset_id is None or g.action not in ("BUY", "SELL"):
            return None
        if stored_id is not None:
            return copy_data.load_books(self.conn, [stored_id]).get(stored_id)
        if self.replay or self.ups is None:
            return None
        at = self.clock()
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
            book_id = copy_data.store_book(self.conn, fetched, at)
            self.conn.execute(
                "UPDATE copy_group SET order_book_snapshot_id = %(b)s WHERE id = %(g)s",
                {"b": book_id, "g": g.id},
            )
        return copy_data.load_books(self.conn, [book_id])[book_id]

    def decide_group(
        self, g: decide.Group, book: copy_data.StoredBook | None
    ) -> list[decide.Decision]:
        """Decides the group in both portfolios and moves them in memory (pure of I/O
        once the portfolios are loaded); returns the decisions."""
        at = book.fetched_at if book is not None else g.decide_at
        if book is not None and g.asset_id is not None:
            self.marks.observe(g.asset_id, book.fetched_at, book.mid, book.book.snapshot_id or 0)
        cfg = self.configs.for_user(g.user_id)
        user = self.users.get(g.user_id, copy_data.User(False, "REMOVED"))
        market = self.markets.get(g.condition_id)
        out = []
        for scope in SCOPES:
            p = self.portfolio_of(scope, g.user_id if scope == "EXEC_USER" else None)
            sit = decide.Situation(
                now=at,
                paused=self.paused,
                user_enabled=user.enabled,
                user_mode=user.mode,
                market=market,
                book=book.book if book is not None else None,
                refs=self.refs(p, at),
            )
            out.append(decide.decide(g, p, cfg, sit, self.marks))
        return out

    def write(self, decisions: list[decide.Decision], book_id: int | None) -> None:
        g = decisions[0].group
        cfg = self.configs.for_user(g.user_id)
        ids = {
            "guardrail_id": cfg.guardrail_id,
            "sizing_id": cfg.sizing_id,
            "guardrail_override_id": cfg.guardrail_override_id,
            "sizing_override_id": cfg.sizing_override_id,
        }
        market = self.markets.get(g.condition_id)
        assets = market.assets if market is not None else ()
        for d in decisions:
            p = self.portfolio_of(d.scope, d.user_id)
            deposit = None if p.funded else p.starting_cash
            if copy_data.write(self.conn, d, ids, book_id, assets, deposit) is None:
                raise RuntimeError(f"attempt for {g.key} in {d.scope} already exists")
            decide.apply(p, d, assets)
            self.count(f"{d.scope.lower()}_{d.decision.lower()}")
        self.conn.execute(
            "UPDATE copy_group SET state = 'DONE', done_at = %(now)s WHERE id = %(id)s",
            {"now": decisions[0].decided_at, "id": g.id},
        )

    def run(self, wait_until: Callable[[datetime], None], max_wait_s: float) -> int:
        """Decides closed groups in FIFO order until none is due within `max_wait_s`;
        returns how many groups it decided."""
        done = 0
        while True:
            rows = self.conn.execute(copy_data.CLOSED_GROUPS, {"n": FETCH}).fetchall()
            if not rows:
                return done
            pending: list[tuple[list[decide.Decision], int | None]] = []
            for r in rows:
                g = copy_data.group_of(r)
                if not self.replay and g.decide_at > self.clock():
                    if (g.decide_at - self.clock()).total_seconds() > max_wait_s:
                        self._flush(pending)
                        return done
                    self._flush(pending)
                    pending = []
                    wait_until(g.decide_at)
                book = self.book_for(g, r["order_book_snapshot_id"])
                started = time.perf_counter()
                try:
                    decisions = self.decide_group(g, book)
                except Exception:
                    self._reload()
                    raise
                pending.append((decisions, book.book.snapshot_id if book else None))
                if len(pending) >= self.batch:
                    self._flush(pending)
                    pending = []
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                done += 1
            self._flush(pending)
            if len(rows) < FETCH:
                return done

    def _flush(self, pending: list[tuple[list[decide.Decision], int | None]]) -> None:
        if not pending:
            return
        try:
            with self.conn.transaction():
                for decisions, book_id in pending:
                    self.write(decisions, book_id)
        except Exception:
            self._reload()
            raise
        pending.clear()

    def _reload(self) -> None:
        """Forgets the in-memory portfolios (after a failed write they may be ahead of
        the ledger); the next use reloads them."""
        self.portfolios.clear()
        self._refs.clear()


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
    max_wait = float(getattr(args, "wait", 2.0))
    decided = 0
    try:
        engine = Engine(
            conn,
            ctx.clock,
            ups=ctx.resources.get("ups"),
            replay=bool(getattr(args, "replay", False)),
            batch=int(getattr(args, "batch", 1) or 1),
        )
        for _ in range(MAX_WAITS):
            for k, v in group.step(conn, ctx.clock()).items():
                ctx.count(f"group_{k}", v)
            decided += engine.run(ctx.wait_until, max_wait)
            row = conn.execute(_NEXT).fetchone()
            due = row["t"] if row else None
            if due is None or engine.replay or (due - ctx.clock()).total_seconds() > max_wait:
                break
            ctx.wait_until(due)
        for k, v in engine.counts.items():
            ctx.count(k, v)
        return decided
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (SIM_LOCK,))


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
