"""What-if ("Test config", SPEC §7.7): re-decide the groups of a time range under a
proposed configuration, on the books stored at decision time, without writing anything;
report executed vs skipped by reason code, and the PnL difference against the config in
force, per portfolio scope.

Both configurations are evaluated the same way (`evaluate`, a pure function): the
portfolios start from their ledger state at the range start, groups are decided FIFO
with `decide.decide` and moved with `decide.apply`, marks move with each stored book,
and PnL is the change in equity over the range (marked at the last mids seen). Circuit
breakers use the equity at the range start, then the first equity of each UTC day /
ISO week and the running peak (no snapshots are written, so none can be read back).
Groups without a stored book are NO_BOOK in both.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.domain import copy_config, decide, portfolio, records
from common.store import copy_configs, copy_data, db, portfolios, queries

SCOPES = ("EXEC_USER", "EXEC_GLOBAL")


@dataclass(frozen=True)
class Inputs:
    """Everything a re-evaluation reads, loaded once."""

    groups: list[decide.Group]
    books: dict[int, copy_data.StoredBook]  # by group id
    markets: dict[str, decide.Market | None]
    users: dict[int, copy_data.User]
    paused: bool
    portfolios: dict[portfolio.Key, portfolio.Portfolio]  # state at the range start
    marks: portfolio.Marks
    contexts: dict[int, copy_data.GroupContext] = field(default_factory=dict)  # by group id


@dataclass
class Outcome:
    executed: int = 0
    skipped: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    start_equity: int = 0
    end_equity: int = 0
    filled_notional: int = 0
    fees: int = 0

    @property
    def pnl(self) -> int:
        return self.end_equity - self.start_equity

    def as_dict(self) -> dict[str, Any]:
        return {
            "executed": self.executed,
            "skipped": self.skipped,
            "by_reason": dict(sorted(self.by_reason.items())),
            "pnl_micros": self.pnl,
            "filled_notional_micros": self.filled_notional,
            "fees_micros": self.fees,
        }


class _Refs:
    """Breaker references kept in memory as the evaluation moves through time."""

    def __init__(self, start_equity: int) -> None:
        self.day: tuple[datetime, int] | None = None
        self.week: tuple[datetime, int] | None = None
        self.peak = start_equity
        self.start = start_equity

    def at(self, t: datetime, equity: int) -> portfolio.BreakerRefs:
        d, w = portfolio.day_start(t), portfolio.week_start(t)
        if self.day is None or self.day[0] != d:
            self.day = (d, self.start if self.day is None else equity)
        if self.week is None or self.week[0] != w:
            self.week = (w, self.start if self.week is None else equity)
        self.peak = max(self.peak, equity)
        return portfolio.BreakerRefs(self.day[1], self.week[1], self.peak)


Observe = Callable[[str, decide.Decision], None]


def evaluate(
    inputs: Inputs, configs: copy_config.ConfigSet, observe: Observe | None = None
) -> dict[str, Outcome]:
    """Re-decides every group under `configs` (pure: the inputs are not changed);
    `observe(scope, decision)` sees each decision (the latency sweep's figures)."""
    state = {k: copy.deepcopy(p) for k, p in inputs.portfolios.items()}
    marks = copy.deepcopy(inputs.marks)
    outcomes = {s: Outcome() for s in SCOPES}
    refs: dict[portfolio.Key, _Refs] = {}

    def book_of(scope: str, user_id: int | None, cfg: copy_config.Config) -> portfolio.Portfolio:
        key = (scope, user_id)
        if key not in state:
            state[key] = portfolio.Portfolio(scope, user_id, cfg.starting_cash_micros)
            state[key].cash = cfg.starting_cash_micros
        p = state[key]
        if key not in refs:
            refs[key] = _Refs(p.equity(marks))
            outcomes[scope].start_equity += refs[key].start
        return p

    for g in inputs.groups:
        stored = inputs.books.get(g.id)
        at = copy_data.moment(g, stored, marks)
        cfg = configs.for_user(g.user_id)
        user = inputs.users.get(g.user_id, copy_data.User(False, "REMOVED"))
        market = inputs.markets.get(g.condition_id or "")
        for scope in SCOPES:
            p = book_of(scope, g.user_id if scope == "EXEC_USER" else None, configs.base)
            refs_now = refs[p.key].at(at, p.equity(marks))
            context = inputs.contexts.get(g.id)
            sit = copy_data.situation(at, inputs.paused, user, market, stored, refs_now, context)
            d = decide.decide(g, p, cfg, sit, marks)
            if observe is not None:
                observe(scope, d)
            out = outcomes[scope]
            if d.decision == "EXECUTE":
                out.executed += 1
                out.filled_notional += d.filled_notional
                out.fees += d.fee
                decide.apply(p, d, market.assets if market is not None else ())
            else:
                out.skipped += 1
                out.by_reason.update(d.reasons)
    for key, p in state.items():
        if key in refs:
            outcomes[key[0]].end_equity += p.equity(marks)
    return outcomes


GROUPS = queries.load("copy_group")
ATTEMPTS = queries.load("copy_attempt")


def load(conn: db.Conn, start: datetime, end: datetime) -> Inputs:
    """Reads the groups decided in [start, end) and what deciding them needs (read only)."""
    rows = conn.execute(GROUPS["decided_between"], {"start": start, "end": end})
    groups = [decide.Group.from_row(r) for r in rows]
    by_book = {g.book_id: g.id for g in groups if g.book_id}
    stored = copy_data.load_books(conn, list(by_book))
    markets = copy_data.Markets(conn)
    configs = copy_configs.load(conn)
    keys = {("EXEC_GLOBAL", None)} | {("EXEC_USER", g.user_id) for g in groups}
    loaded = {
        (scope, user): portfolios.load(
            conn,
            scope,
            user,
            (configs.base if user is None else configs.for_user(user)).starting_cash_micros,
            until=start,
        )
        for scope, user in keys
    }
    books = {by_book[i]: b for i, b in stored.items()}
    moments = {g.id: books[g.id].fetched_at if g.id in books else g.decide_at for g in groups}
    theirs = copy_data.leader_positions(conn, [(g, moments[g.id]) for g in groups])
    contexts = {}
    for g in groups:  # as simulate reads them (never fetching: the what-if writes nothing)
        at = moments[g.id]
        market = markets.get(g.condition_id)
        their = theirs.get(g.id)
        contexts[g.id] = copy_data.group_context(conn, g, market, at, at, their=their)
    return Inputs(
        groups=groups,
        books=books,
        markets={g.condition_id: markets.get(g.condition_id) for g in groups if g.condition_id},
        users=copy_data.users(conn),
        paused=copy_data.paused(conn),
        portfolios=loaded,
        marks=portfolios.load_marks(conn, portfolio.held_assets(loaded.values()), start),
        contexts=contexts,
    )


def recorded(conn: db.Conn, start: datetime, end: datetime) -> dict[str, Outcome]:
    """What the simulator actually decided for the same groups (for comparison)."""
    out = {s: Outcome() for s in SCOPES}
    for r in conn.execute(ATTEMPTS["of_groups_between"], {"start": start, "end": end}):
        a = records.CopyAttempt.from_row(r)
        o = out[a.portfolio_scope]
        if a.decision == "EXECUTE":
            o.executed += 1
        else:
            o.skipped += 1
            o.by_reason.update(a.reason_codes)
    return out


def report(
    conn: db.Conn,
    start: datetime,
    end: datetime,
    proposed: copy_config.ConfigSet,
    inputs: Inputs | None = None,
) -> dict[str, Any]:
    """Returns the what-if report: per scope, the config in force re-evaluated, the
    proposal, what was recorded, and the PnL difference (proposed − current). `inputs`:
    as `load` read them, when the caller has them already."""
    inputs = load(conn, start, end) if inputs is None else inputs
    current = evaluate(inputs, copy_configs.load(conn))
    new = evaluate(inputs, proposed)
    seen = recorded(conn, start, end)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "groups": len(inputs.groups),
        "groups_with_book": len(inputs.books),
        "scopes": {
            s: {
                "current": current[s].as_dict(),
                "proposed": new[s].as_dict(),
                "recorded": {k: v for k, v in seen[s].as_dict().items() if "micros" not in k},
                "pnl_difference_micros": new[s].pnl - current[s].pnl,
            }
            for s in SCOPES
        },
    }
