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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from common.domain import copy_config, decide, portfolio, records
from common.domain import exits as overlays
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

    def take(
        self,
        p: portfolio.Portfolio,
        d: decide.Decision,
        market: decide.Market | None,
        skip_reasons: Iterable[str],
    ) -> None:
        """Counts a decision and moves the portfolio by it (an EXECUTE); a SKIP counts
        `skip_reasons`."""
        if d.decision == "EXECUTE":
            self.executed += 1
            self.filled_notional += d.filled_notional
            self.fees += d.fee
            decide.apply(p, d, market.assets if market is not None else ())
        else:
            self.skipped += 1
            self.by_reason.update(skip_reasons)

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
    inputs: Inputs,
    configs: copy_config.ConfigSet,
    observe: Observe | None = None,
    *,
    exits: bool = False,
    until: datetime | None = None,
) -> dict[str, Outcome]:
    """Re-decides every group under `configs` (pure: the inputs are not changed);
    `observe(scope, decision)` sees each decision, a group's or an exit's (the latency
    sweep's figures; an exit's group key starts with `exits.KEY_PREFIX`).
    With `exits`, every portfolio held at the range start counts from the start (not
    from its first group), and the exit overlays of `configs` are checked at every
    minute boundary up to the last group, or to `until` (`_Exits`)."""
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

    overlay = _Exits(inputs, configs, state, refs, outcomes, observe) if exits else None
    if overlay is not None:
        for scope, user_id in sorted(state, key=str):
            book_of(scope, user_id, configs.base)
    for g in inputs.groups:
        stored = inputs.books.get(g.id)
        if overlay is not None:
            overlay.until(g.decide_at if stored is None else stored.fetched_at, marks)
        at = copy_data.moment(g, stored, marks)
        if overlay is not None:
            # the earliest moment not checked since (groups come in detection order,
            # so their moments may run backwards)
            overlay.changed = at if overlay.changed is None else min(overlay.changed, at)
            if stored is not None and g.asset_id is not None:
                overlay.books[g.asset_id] = stored
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
            outcomes[scope].take(p, d, market, d.reasons)
    if overlay is not None and until is not None:
        overlay.until(until, marks)
    for key, p in state.items():
        if key in refs:
            outcomes[key[0]].end_equity += p.equity(marks)
    return outcomes


class _Exits:
    """The exit overlays in a what-if, checked at minute boundaries as `functions.exits`
    checks them: every portfolio the evaluation has reached, on the marks seen so far,
    its exits decided on the newest stored book of the asset seen so far in the range
    (NO_BOOK before any). Only the boundaries where a check could decide anew are
    visited: the first after the start, the first after each group (marks and positions
    moved), and the first at or after each time rule's deadline — so a skipped exit is
    counted once per such moment, not once a minute."""

    def __init__(
        self,
        inputs: Inputs,
        configs: copy_config.ConfigSet,
        state: dict[portfolio.Key, portfolio.Portfolio],
        refs: dict[portfolio.Key, _Refs],
        outcomes: dict[str, Outcome],
        observe: Observe | None = None,
    ) -> None:
        self.inputs, self.configs, self.state = inputs, configs, state
        self.refs, self.outcomes, self.observe = refs, outcomes, observe
        self.books: dict[str, copy_data.StoredBook] = {}
        self.last: datetime | None = None  # the last boundary checked
        self.changed: datetime | None = None  # a group moved things then, not checked since
        self.start: datetime | None = None  # the first boundary

    def _config(self, key: portfolio.Key) -> copy_config.Config:
        return self.configs.base if key[1] is None else self.configs.for_user(key[1])

    def _next(self, at: datetime, start: datetime) -> datetime | None:
        """The next boundary to check, if at or before `at`."""
        ticks = [start] if self.last is None else []
        if self.changed is not None:
            tick = _ceil_minute(self.changed + timedelta(microseconds=1))
            if self.last is not None and tick <= self.last:  # a moment behind the checks:
                tick = self.last + timedelta(minutes=1)  # the next boundary sees it
            ticks.append(tick)
        for key in self.refs:
            p = self.state[key]
            for t in overlays.deadlines(p, self.inputs.markets, self._config(key)):
                tick = max(_ceil_minute(t), start)  # one passed before the start: at it
                if self.last is None or tick > self.last:
                    ticks.append(tick)
        due = min(ticks, default=None)
        return due if due is not None and due <= at else None

    def until(self, at: datetime, marks: portfolio.Marks) -> None:
        """Checks the boundaries due up to `at` (the first call's minute starts them)."""
        if self.start is None:
            self.start = at.replace(second=0, microsecond=0)
        while (t := self._next(at, self.start)) is not None:
            self._check(t, marks)
            self.last = t
            if self.changed is not None and self.changed < t:
                self.changed = None

    def _check(self, now: datetime, marks: portfolio.Marks) -> None:
        for key in sorted(self.refs, key=str):
            p = self.state[key]
            if not p.positions:
                continue
            cfg = self._config(key)
            for ex in overlays.plan(p, marks, self.inputs.markets, cfg, now):
                market = self.inputs.markets.get(ex.condition_id or "")
                stored = self.books.get(ex.asset_id)
                for u in ex.sellers:
                    user = self.inputs.users.get(u, copy_data.User(False, "REMOVED"))
                    refs = portfolio.BreakerRefs(0, 0, 0)  # a reduction passes the breakers
                    sit = copy_data.situation(now, self.inputs.paused, user, market, stored, refs)
                    d = overlays.decide_exit(ex, u, p, cfg, sit, marks, now)
                    if self.observe is not None:
                        self.observe(key[0], d)  # an exit: its group's key says so
                    out = self.outcomes[key[0]]
                    out.by_reason.update(d.reasons[:1])  # the exit's code, executed or not
                    out.take(p, d, market, d.reasons[1:])


def _ceil_minute(t: datetime) -> datetime:
    """The first minute boundary at or after `t`."""
    floor = t.replace(second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(minutes=1)


GROUPS = queries.load("copy_group")
ATTEMPTS = queries.load("copy_attempt")


_EXEC_USERS_BEFORE = """
SELECT DISTINCT followed_user_id FROM ledger_entry
WHERE portfolio_scope = 'EXEC_USER' AND effective_time < %(start)s
"""


def load(conn: db.Conn, start: datetime, end: datetime, *, every_portfolio: bool = False) -> Inputs:
    """Reads the groups decided in [start, end) and what deciding them needs (read only);
    with `every_portfolio` (the exit overlays act on positions whoever's groups come),
    also every per-user portfolio with ledger entries before the range."""
    rows = conn.execute(GROUPS["decided_between"], {"start": start, "end": end})
    groups = [decide.Group.from_row(r) for r in rows]
    by_book = {g.book_id: g.id for g in groups if g.book_id}
    stored = copy_data.load_books(conn, list(by_book))
    markets = copy_data.Markets(conn)
    configs = copy_configs.load(conn)
    keys = {("EXEC_GLOBAL", None)} | {("EXEC_USER", g.user_id) for g in groups}
    if every_portfolio:
        rows = conn.execute(_EXEC_USERS_BEFORE, {"start": start})
        keys |= {("EXEC_USER", r["followed_user_id"]) for r in rows}
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
        markets={g.condition_id: markets.get(g.condition_id) for g in groups if g.condition_id}
        | _held_markets(markets, loaded.values()),
        users=copy_data.users(conn),
        paused=copy_data.paused(conn),
        portfolios=loaded,
        marks=portfolios.load_marks(conn, portfolio.held_assets(loaded.values()), start),
        contexts=contexts,
    )


def _held_markets(
    markets: copy_data.Markets, held: Iterable[portfolio.Portfolio]
) -> dict[str, decide.Market | None]:
    """The markets of the positions held at the range start (the exit overlays judge
    their end times)."""
    conditions = {pos.condition_id for p in held for pos in p.positions.values()}
    return {c: markets.get(c) for c in sorted(c for c in conditions if c)}


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


def overlays_on(*config_sets: copy_config.ConfigSet) -> bool:
    """Whether any config of these sets turns an exit overlay on."""
    return any(overlays.enabled(c) for cs in config_sets for c in (cs.base, *cs.users.values()))


def load_for(
    conn: db.Conn, start: datetime, end: datetime, proposed: copy_config.ConfigSet
) -> Inputs:
    """`load`, with every portfolio held at the start when the config in force or the
    proposal turns an exit overlay on (an exit may sell what no group of the range
    touches)."""
    every = overlays_on(copy_configs.load(conn), proposed)
    return load(conn, start, end, every_portfolio=every)


def report(
    conn: db.Conn,
    start: datetime,
    end: datetime,
    proposed: copy_config.ConfigSet,
    inputs: Inputs | None = None,
) -> dict[str, Any]:
    """Returns the what-if report: per scope, the config in force re-evaluated, the
    proposal, what was recorded, and the PnL difference (proposed − current); and under
    `exit_overlays` the proposal without and with its exit overlays (SPEC §12). `inputs`:
    as `load_for` read them, when the caller has them already."""
    in_force = copy_configs.load(conn)
    inputs = load_for(conn, start, end, proposed) if inputs is None else inputs
    current = evaluate(inputs, in_force)
    new = evaluate(inputs, proposed)
    seen = recorded(conn, start, end)
    return {
        "exit_overlays": overlay_report(inputs, proposed, end),
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


def without_overlays(configs: copy_config.ConfigSet) -> copy_config.ConfigSet:
    """`configs` with every exit overlay off (its four fields at 0), globally and per user."""
    off = {f: 0 for f in overlays.FIELDS}
    return copy_config.ConfigSet(
        configs.base.with_values(off), {u: c.with_values(off) for u, c in configs.users.items()}
    )


def overlay_report(
    inputs: Inputs, configs: copy_config.ConfigSet, until: datetime | None = None
) -> dict[str, Any]:
    """Per scope, `configs` evaluated without its exit overlays (all four at 0) and with
    them, the same way (`evaluate(exits=True)`), and the PnL difference (with − without).
    `by_reason` of "with" counts every exit by its EXIT_* code (executed or not) besides
    the skips' codes."""
    without = evaluate(inputs, without_overlays(configs), exits=True, until=until)
    with_exits = evaluate(inputs, configs, exits=True, until=until)
    return {
        "enabled": overlays.enabled(configs.base)
        or any(overlays.enabled(c) for c in configs.users.values()),
        "scopes": {
            s: {
                "without": without[s].as_dict(),
                "with": with_exits[s].as_dict(),
                "pnl_difference_micros": with_exits[s].pnl - without[s].pnl,
            }
            for s in SCOPES
        },
    }
