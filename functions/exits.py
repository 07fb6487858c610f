"""Exits (every 60 s): the exit overlays of SPEC §12 — take profit, stop loss, exit before
the market's end, max holding time — on every executable portfolio (each leader's
EXEC_USER one under that user's effective config, EXEC_GLOBAL under the global one).

For each portfolio holding anything with an overlay on, the positions are judged on the
stored marks (`domain.exits.plan`). Each one that must exit gets a fresh REST `/book`
(stored, committed before the decision, as the simulator does), then, holding the
exec-ledger lock, the portfolio is read again and the exit decided by the same `decide`
(book walk and guardrails) as a copied SELL of the whole position, and written as a
SELL `copy_attempt` (group key `exit:<user>:<asset>:<minute>`, no copy group) with its
fills and ledger entries. The exit's reason code comes first on the attempt, executed or
skipped. A second run in the same minute finds the keys recorded and sells nothing; a
skipped exit is tried again next minute while its rule still holds.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.domain import copy_config, decide, exits, portfolio
from common.runtime import jobs
from common.store import copy_configs, copy_data, db, portfolios, quarantine
from common.store import exits as store_exits
from common.upstream import clob, http, wire

log = logging.getLogger(__name__)


def config_of(configs: copy_config.ConfigSet, key: portfolio.Key) -> copy_config.Config:
    """A per-user portfolio follows its user's effective config, the global one the base."""
    return configs.base if key[1] is None else configs.for_user(key[1])


class Books:
    """Fresh books by asset, fetched at most once per run and stored before use."""

    def __init__(self, conn: db.Conn, ctx: jobs.Context) -> None:
        self.conn, self.ctx = conn, ctx
        self.ups: http.Upstreams | None = ctx.resources.get("ups")
        self._got: dict[str, copy_data.StoredBook | None] = {}

    def get(self, asset_id: str) -> copy_data.StoredBook | None:
        if asset_id not in self._got:
            self._got[asset_id] = self._fetch(asset_id)
        return self._got[asset_id]

    def _fetch(self, asset_id: str) -> copy_data.StoredBook | None:
        if self.ups is None:
            return None
        at = self.ctx.clock()
        try:
            fetched = clob.fetch_book(self.ups.clob, asset_id)
        except http.UpstreamError as exc:
            log.warning("book for exit of %s failed: %s", asset_id, exc)
            self.ctx.count("book_failed")
            return None
        if isinstance(fetched, wire.Reject):
            quarantine.record(self.conn, [fetched], at)
            self.ctx.count("book_rejected")
            return None
        if fetched is None:
            self.ctx.count("book_missing")
            return None
        with self.conn.transaction():
            return copy_data.store_book(self.conn, fetched, at)


@dataclass(frozen=True)
class Check:
    """One portfolio's check: its config, the marks it was judged on, the exits due."""

    key: portfolio.Key
    cfg: copy_config.Config
    marks: portfolio.Marks
    due: list[exits.Exit]


def check(
    conn: db.Conn,
    key: portfolio.Key,
    cfg: copy_config.Config,
    markets: copy_data.Markets,
    now: datetime,
) -> Check:
    """Judges one portfolio's positions on the stored marks (nothing is written)."""
    p = portfolios.load(conn, key[0], key[1], cfg.starting_cash_micros)
    marks = portfolios.load_marks(conn, set(p.positions), now)
    return Check(
        key, cfg, marks, exits.plan(p, marks, store_exits.markets_of(markets, p), cfg, now)
    )


def record(
    conn: db.Conn,
    ctx: jobs.Context,
    c: Check,
    markets: copy_data.Markets,
    books: Books,
    now: datetime,
) -> int:
    """Decides and writes a checked portfolio's exits not recorded yet this minute;
    returns how many attempts it wrote."""
    scope, cfg = c.key[0], c.cfg
    done = store_exits.recorded(
        conn, scope, [(u, exits.key(u, ex.asset_id, now)) for ex in c.due for u in ex.sellers]
    )
    wanted = [
        ex
        for ex in c.due
        if any((u, exits.key(u, ex.asset_id, now)) not in done for u in ex.sellers)
    ]
    ctx.count("already_recorded", len(c.due) - len(wanted))
    if not wanted:
        return 0
    fetched = {ex.asset_id: books.get(ex.asset_id) for ex in wanted}
    users = copy_data.users(conn)
    paused = copy_data.paused(conn)
    ids = {
        "guardrail_id": cfg.guardrail_id,
        "sizing_id": cfg.sizing_id,
        "guardrail_override_id": cfg.guardrail_override_id,
        "sizing_override_id": cfg.sizing_override_id,
    }
    with conn.transaction():
        db.lock_exec_ledgers(conn)
        # The portfolio is read again under the lock (the simulator or settlement may
        # have moved it); the marks stay the check's: the fresh books just stored are
        # newer marks, but the rules were judged on these.
        p = portfolios.load(conn, scope, c.key[1], cfg.starting_cash_micros)
        due = exits.plan(p, c.marks, store_exits.markets_of(markets, p), cfg, now)
        pairs = [(ex, u) for ex in due if ex.asset_id in fetched for u in ex.sellers]
        done = store_exits.recorded(
            conn, scope, [(u, exits.key(u, ex.asset_id, now)) for ex, u in pairs]
        )
        rows = []
        for ex, u in pairs:
            if (u, exits.key(u, ex.asset_id, now)) in done:
                continue
            stored = fetched[ex.asset_id]
            at = stored.fetched_at if stored is not None else now
            market = markets.get(ex.condition_id)
            refs = portfolio.BreakerRefs(0, 0, 0)  # a reduction passes the breakers
            user = users.get(u, copy_data.User(False, "REMOVED"))
            sit = copy_data.situation(at, paused, user, market, stored, refs)
            d = exits.decide_exit(ex, u, p, cfg, sit, c.marks, now)
            if d.decision == "SKIP" and _repeats(conn, scope, u, ex.asset_id, d, now):
                ctx.count("skip_repeated")  # tried again this minute; not written again
                continue
            assets = market.assets if market is not None else ()
            made = decide.apply(p, d, assets)
            book_id = stored.book.snapshot_id if stored is not None else None
            rows.append(copy_data.Row(d, ids, book_id, assets, None, made))
            ctx.count(f"{scope.lower()}_{d.decision.lower()}")
            ctx.count(ex.code.lower())
        copy_data.write_many(conn, rows)
    return len(rows)


REPEAT_WINDOW = 60  # minutes: a skip the same as one of this long ago is not written again


def _repeats(
    conn: db.Conn, scope: str, user_id: int, asset_id: str, d: decide.Decision, now: datetime
) -> bool:
    """Whether the seller's newest exit attempt of this asset in the last REPEAT_WINDOW
    minutes was a skip for the same reasons: an exit that keeps failing (a wide spread,
    no book after the market closed) is tried every minute but written once an hour."""
    keys = [exits.key(user_id, asset_id, now - timedelta(minutes=m))
            for m in range(1, REPEAT_WINDOW + 1)]  # fmt: skip
    last = store_exits.newest(conn, scope, user_id, keys)
    return (
        last is not None
        and last["decision"] == "SKIP"
        and (list(last["reason_codes"] or ()) == list(d.reasons))
    )


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    """Checks every executable portfolio with an overlay on — all on the marks stored
    before this run fetched any book — then records the exits due; returns how many
    attempts it wrote."""
    now = ctx.clock()
    configs = copy_configs.load(conn)
    if not exits.enabled(configs.base) and not any(
        exits.enabled(c) for c in configs.users.values()
    ):
        ctx.count("off")
        return 0
    markets = copy_data.Markets(conn)
    checks = []
    for key in store_exits.holders(conn):
        cfg = config_of(configs, key)
        if exits.enabled(cfg):
            ctx.count("portfolios_checked")
            checks.append(check(conn, key, cfg, markets, now))
    books = Books(conn, ctx)
    return sum(record(conn, ctx, c, markets, books, now) for c in checks if c.due)


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("exits", __doc__ or "")
    p.set_defaults(interval=60.0)
    args = p.parse_args(argv)
    return jobs.main("exits", args, run_once, upstreams=True)


if __name__ == "__main__":
    sys.exit(main())
