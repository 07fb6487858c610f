"""Polling the Data API for the followed users (what `functions.poll` runs, and what
reconcile's backfill, the listener's catch-up and `follow add`'s seed share):
`/activity` by time window and, when needed (`Due.trades`), `/trades?takerOnly=false`,
read into `trade_event` / `activity_event` exactly once (`store.ingest`), then the
shadow ledger applies what is new (`store.shadow`). Which users a run polls follows
their activity (`Due`). Listings are bounded (OCULUS_POLL_MAX_ROWS), stamped as their
pages arrive, and a user whose listing is not whole keeps its checkpoint."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from common.domain import ledger
from common.runtime import settings
from common.store import (
    checkpoints,
    db,
    failures,
    ingest,
    markets,
    marks,
    quarantine,
    shadow,
)
from common.upstream import clob, data_api, http, wire

log = logging.getLogger(__name__)
CHECKPOINT = "poll.activity"


@dataclass(frozen=True)
class User:
    id: int
    wallets: tuple[str, ...]
    seeded: bool
    checkpoint: datetime | None


def followed_users(conn: db.Conn) -> list[User]:
    rows = conn.execute(
        """SELECT u.id, u.seeded_at IS NOT NULL AS seeded,
                  array_agg(w.wallet ORDER BY w.id) AS wallets, c.cursor_time
           FROM followed_user u
           JOIN followed_user_proxy_wallet w ON w.followed_user_id = u.id
           LEFT JOIN system_checkpoint c ON c.name = %(cp)s AND c.followed_user_id = u.id
           WHERE u.enabled AND u.copy_mode <> 'REMOVED'
           GROUP BY u.id, c.cursor_time ORDER BY u.id""",
        {"cp": CHECKPOINT},
    ).fetchall()
    return [User(r["id"], tuple(r["wallets"]), r["seeded"], r["cursor_time"]) for r in rows]


class ListingError(http.UpstreamError):
    """A wallet's listing could not be read whole this run: a page was refused, or it
    passed the run's caps. What was read whole is stored; the checkpoint stays behind."""


# How often one window may be halved: 2^24 s is 194 days, so any real window ends in
# one second long before this; it only stops an upstream that is always full.
MAX_SPLIT_DEPTH = 24


@dataclass
class Budget:
    """Rows one user's poll may still read this run (memory and requests stay bounded
    whatever an upstream sends)."""

    rows: int
    limit: int

    @classmethod
    def of(cls, limit: int) -> Budget:
        return cls(limit, limit)


@dataclass
class Listing:
    """Activity read in ascending windows: the rows, the last second read whole
    (`start - 1` when none) and, when it stopped early, why."""

    rows: wire.Batch[data_api.ActivityRow]
    done_until: int
    problem: str | None = None


def fetch_activity_window(
    upstream: http.Upstream,
    wallet: str,
    start: int,
    end: int,
    *,
    budget: Budget,
    clock: data_api.Clock | None = None,
) -> Listing:
    """Returns the activity rows in [start, end] (seconds), ascending, paging by offset
    and halving a window whenever the offset cap would be reached. It stops at a refused
    page, at the row budget, or when a window cannot be split further; `done_until` then
    says how far it read whole (iterative: an upstream that is always full costs at most
    the budget, never a recursion)."""
    out = Listing(wire.Batch(), start - 1)
    windows = [(start, end, 0)]  # a stack: the earliest window on top
    while windows:
        lo, hi, depth = windows.pop()
        window: wire.Batch[data_api.ActivityRow] = wire.Batch()
        offset = 0
        while True:
            if budget.rows <= 0:
                out.problem = f"more than {budget.limit:,} rows this run (OCULUS_POLL_MAX_ROWS)"
                return _keep_rejects(out, window)
            page = data_api.fetch_activity(
                upstream, wallet, start=lo, end=hi, offset=offset, clock=clock
            )
            budget.rows -= page.raw_count
            window.add(page)
            if page.refused:
                out.problem = f"a page of /activity from {lo} was refused"
                return _keep_rejects(out, window)
            if page.raw_count < data_api.MAX_LIMIT:
                out.rows.add(window)
                out.done_until = hi
                break
            offset += page.raw_count
            if offset + data_api.MAX_LIMIT > data_api.MAX_OFFSET:
                if hi <= lo or depth >= MAX_SPLIT_DEPTH:
                    out.problem = f"more than {offset} rows in [{lo}, {hi}] that cannot be split"
                    return _keep_rejects(out, window)
                middle = (lo + hi) // 2
                windows += [(middle + 1, hi, depth + 1), (lo, middle, depth + 1)]
                out.rows.rejects.extend(window.rejects)  # its rows are read again
                break
    return out


def _keep_rejects(out: Listing, window: wire.Batch[Any]) -> Listing:
    """The rejects of a window not read whole are kept; its rows are read next time."""
    out.rows.rejects.extend(window.rejects)
    return out


def fetch_recent_trades(
    upstream: http.Upstream,
    wallet: str,
    start: int,
    *,
    budget: Budget,
    clock: data_api.Clock | None = None,
) -> tuple[wire.Batch[data_api.TradeRow], str | None]:
    """Returns /trades rows (maker fills included) with timestamp ≥ start, newest first,
    and why it stopped early (a refused page: the listing is then not whole). Rows of
    the oldest second are dropped when the offset cap cut the listing there, so
    identical fills of one transaction are never split."""
    out: wire.Batch[data_api.TradeRow] = wire.Batch()
    offset = 0
    while True:
        page = data_api.fetch_trades(upstream, wallet, offset=offset, clock=clock)
        budget.rows -= page.raw_count
        out.add(page)
        if page.refused:
            return out, f"a page of /trades at offset {offset} was refused"
        out.keep(lambda r: r.timestamp.timestamp() >= start)
        oldest = min((r.timestamp.timestamp() for r in page.items), default=start - 1)
        if page.raw_count < data_api.MAX_LIMIT or oldest < start:
            return out, None
        offset += page.raw_count
        if offset + data_api.MAX_LIMIT > data_api.MAX_OFFSET:
            _keep_seconds(out, after=min(r.timestamp for r in out.items).timestamp())
            return out, None


def _keep_seconds(
    rows: wire.Batch[data_api.TradeRow], *, after: float = -1.0, until: float = float("inf")
) -> None:
    """Keeps the rows whose timestamp is in (after, until]."""
    rows.keep(lambda r: after < r.timestamp.timestamp() <= until)


def normalize(
    user_id: int,
    wallet: str,
    activity: Sequence[tuple[data_api.ActivityRow, datetime, Any]],
    trades: Sequence[tuple[data_api.TradeRow, datetime, Any]],
    assets_by_condition: dict[str, set[str]],
) -> tuple[list[ingest.ApiFill], list[ingest.ApiActivity], list[wire.Reject]]:
    """Returns the fills and activity of one wallet's rows (each row with the time its
    page arrived, its detect time, and the row as received, its payload), and the rows
    refused: another wallet's, or an asset
    that is not an outcome of its market (pure)."""
    rejects: list[wire.Reject] = []

    def check(row: Any, source: str) -> bool:
        reason = None
        if row.proxy_wallet != wallet:
            reason = f"row for wallet {row.proxy_wallet}, polled {wallet}"
        elif row.condition_id not in assets_by_condition:
            reason = f"unknown market {row.condition_id}"
        elif row.asset is not None and row.asset not in assets_by_condition[row.condition_id]:
            reason = f"asset {row.asset} is not an outcome of market {row.condition_id}"
        if reason is not None:
            payload = wire.dump_payload(row.model_dump(mode="json"))
            rejects.append(wire.Reject(source, reason, payload, {"user": wallet}))
        return reason is None

    from_activity = ingest.with_ordinals(
        [
            ingest.fill_from_row(r, user_id, seen, raw)
            for r, seen, raw in activity
            if r.type == "TRADE" and check(r, "data_api/activity")
        ]
    )
    from_trades = ingest.with_ordinals(
        [
            ingest.fill_from_row(r, user_id, seen, raw)
            for r, seen, raw in sorted(trades, key=lambda got: got[0].timestamp)
            if check(r, "data_api/trades")
        ]
    )
    fills: dict[str, ingest.ApiFill] = {}
    for f in [*from_activity, *from_trades]:  # seen in both: the first arrival counts
        first = fills.get(f.source_id)
        fills[f.source_id] = f if first is None else ingest.earliest(first, f)
    others = ingest.with_ordinals(
        [
            ingest.activity_from_row(r, user_id, seen, raw)
            for r, seen, raw in activity
            if r.type != "TRADE" and check(r, "data_api/activity")
        ]
    )
    return list(fills.values()), others, rejects


@dataclass
class Collected:
    fills: list[ingest.ApiFill]
    others: list[ingest.ApiActivity]
    rejected: int
    done_until: datetime  # read whole up to here (the checkpoint moves no further)
    problem: str | None = None

    @property
    def keys(self) -> set[str]:
        return {f.source_id for f in self.fills} | {a.source_id for a in self.others}


def collect(
    conn: db.Conn,
    ups: http.Upstreams,
    user: User,
    start: datetime,
    now: datetime,
    clock: data_api.Clock | None = None,
    with_trades: bool = True,
) -> Collected:
    """Fetches and normalizes one user's rows in [start, now]; bad rows are quarantined.
    `/activity` always (its TRADE rows are the fills); `/trades` too unless not
    `with_trades` (see `Due.trades`).
    A listing that stops early (a refused page, the run's row cap) keeps only the rows up
    to the last second read whole, and says why in `problem`. Rows are stamped with
    `clock()` as their page arrives (default: `now`)."""
    out = Collected([], [], 0, now)
    begin, end = int(start.timestamp()), int(now.timestamp())
    clock = clock or (lambda: now)  # no clock given: the caller's now, never the system's
    budget = Budget.of(settings.get().poll_max_rows)
    for wallet in user.wallets:
        acts = fetch_activity_window(ups.data_api, wallet, begin, end, budget=budget, clock=clock)
        trades: wire.Batch[data_api.TradeRow] = wire.Batch()
        refused = None
        if with_trades:
            trades, refused = fetch_recent_trades(
                ups.data_api, wallet, begin, budget=budget, clock=clock
            )
        done_until = acts.done_until if refused is None else begin - 1
        if done_until < end:
            _keep_seconds(trades, until=done_until)
            out.problem = out.problem or acts.problem or refused
            out.done_until = min(out.done_until, datetime.fromtimestamp(done_until + 1, tz=UTC))
        rows = acts.rows
        conditions = {r.condition_id for r in rows.items} | {r.condition_id for r in trades.items}
        known = markets.ensure(conn, ups.gamma, now, condition_ids=conditions)
        fills, others, rejects = normalize(
            user.id, wallet, rows.received(), trades.received(), known
        )
        all_rejects = rows.rejects + trades.rejects + rejects
        quarantine.record(conn, all_rejects, now)
        out.fills.extend(fills)
        out.others.extend(others)
        out.rejected += len(all_rejects)
    return out


def store(conn: db.Conn, rows: Collected, now: datetime) -> dict[str, int]:
    counts = ingest.store_api_fills(conn, rows.fills, now)
    counts["activity_inserted"] = ingest.store_activities(conn, rows.others, now)
    counts["rows_rejected"] = rows.rejected
    return counts


def seed_user(conn: db.Conn, ups: http.Upstreams, user: User, now: datetime) -> int:
    """Seeds the user's shadow book from the positions its wallets hold now, and marks
    the recent fills already inside that snapshot COVERED_BY_SEED so they are not
    applied twice. The recent rows are read before and after /positions and must agree
    (else it tries again), so the snapshot and the covered set are the same moment.
    Returns the number of positions; raises UpstreamError if the API cannot answer."""
    window = timedelta(seconds=settings.get().seed_window_s)
    before = _whole(collect(conn, ups, user, now - window, now))
    for _ in range(3):
        positions: list[data_api.PositionRow] = []
        for wallet in user.wallets:
            batch = fetch_positions(ups.data_api, wallet)
            quarantine.record(conn, batch.rejects, now)
            if batch.refused:  # a seed from part of the positions would be wrong for good
                raise ListingError(
                    "data_api", f"seed not possible: a /positions page of {wallet} was refused"
                )
            positions.extend(batch.items)
        after = _whole(collect(conn, ups, user, now - window, now))
        if after.keys == before.keys:
            break
        before = after
    else:
        raise http.UpstreamUnavailable("data_api", "activity kept changing while seeding")
    markets.ensure(conn, ups.gamma, now, condition_ids={p.condition_id for p in positions})
    store(conn, after, now)
    entries = ledger.seed_entries(user.id, positions, now)
    with conn.transaction():
        db.lock_ingest(conn, user.id)  # every SHADOW_USER ledger write holds one (a cut)
        if not conn.execute(
            "UPDATE followed_user SET seeded_at = %(now)s, updated_at = %(now)s"
            " WHERE id = %(u)s AND seeded_at IS NULL",
            {"u": user.id, "now": now},
        ).rowcount:
            return 0  # seeded meanwhile by another process
        marks = {
            "now": now,
            "u": user.id,
            "fills": [f.source_id for f in after.fills],
            "acts": [a.source_id for a in after.others],
        }
        conn.execute(
            "UPDATE trade_event SET shadow_applied_at = %(now)s, shadow_state = 'COVERED_BY_SEED'"
            " WHERE followed_user_id = %(u)s AND api_source_id = ANY(%(fills)s)"
            " AND shadow_applied_at IS NULL",
            marks,
        )
        conn.execute(
            "UPDATE activity_event SET shadow_applied_at = %(now)s,"
            " shadow_state = 'COVERED_BY_SEED' WHERE followed_user_id = %(u)s"
            " AND source_id = ANY(%(acts)s) AND shadow_applied_at IS NULL",
            marks,
        )
        shadow.store(conn, user.id, entries)
    return len(entries)


def _whole(rows: Collected) -> Collected:
    """Returns the rows if read whole; raises ListingError (a seed needs all of them)."""
    if rows.problem is not None:
        raise ListingError("data_api", f"seed not possible: {rows.problem}")
    return rows


def fetch_positions(upstream: http.Upstream, wallet: str) -> wire.Batch[data_api.PositionRow]:
    """Returns every position of the wallet (dust included), paging by offset."""
    out: wire.Batch[data_api.PositionRow] = wire.Batch()
    offset = 0
    while True:
        page = data_api.fetch_positions(upstream, wallet, offset=offset)
        out.add(page)
        offset += page.raw_count
        if (
            page.refused
            or page.raw_count < data_api.MAX_LIMIT
            or offset + data_api.MAX_LIMIT > data_api.MAX_OFFSET
        ):
            return out


def poll_user(
    conn: db.Conn,
    ups: http.Upstreams,
    user: User,
    start: datetime,
    now: datetime,
    clock: data_api.Clock | None = None,
    with_trades: bool = True,
) -> tuple[dict[str, int], ListingError | None]:
    """Polls one user's wallets from `start` to `now`, stores what is new, and moves the
    user's checkpoint to `now` — or, when the listing stopped early, stores what was read
    whole and moves the checkpoint only that far. Returns counts, and the error that
    stopped it early (None when read whole)."""
    counts: dict[str, int] = {}
    if not user.seeded:
        counts["seeded_positions"] = seed_user(conn, ups, user, now)
    rows = collect(conn, ups, user, start, now, clock, with_trades)
    counts.update(store(conn, rows, now))
    if rows.done_until > start:
        checkpoints.advance(conn, CHECKPOINT, now, user_id=user.id, time=rows.done_until)
    if rows.problem is None:
        return counts, None
    where = (
        f"read whole up to {rows.done_until.isoformat()}"
        if rows.done_until > start
        else "nothing read whole"
    )
    return counts, ListingError("data_api", f"{rows.problem}; {where}")


LISTENER_FRESH = timedelta(seconds=30)  # a listener heartbeat older is a listener down

_ACTIVE = """
SELECT followed_user_id FROM trade_event WHERE detect_time > %(since)s
UNION
SELECT followed_user_id FROM activity_event WHERE detect_time > %(since)s
UNION
SELECT followed_user_id FROM trade_event
WHERE source = 'CHAIN' AND api_source_id IS NULL AND reorg_state IS NULL
  AND detect_time > %(unconfirmed)s
"""
_WAITING = """
SELECT followed_user_id, min(detect_time) AS oldest FROM trade_event
WHERE source = 'CHAIN' AND api_source_id IS NULL AND reorg_state IS NULL
  AND detect_time > %(reach)s
GROUP BY followed_user_id
"""
LAGGING = timedelta(seconds=30)  # a chain fill unconfirmed this long: read /trades too
_LISTENER = """
SELECT (info->>'connected')::boolean AND beat_at >= %(fresh)s AS ok
FROM process_heartbeat WHERE process = 'listen'
"""


@dataclass(frozen=True)
class Due:
    """Which users a run polls, and how: poll cost follows activity. A user with an event detected
    in the last `poll_active_window_s`, or a chain fill the Data API has not confirmed,
    is polled every run; an idle one every 1 to 1.5 × `poll_idle_every_s` (spread by
    user) — but only while the chain listener is connected (its fills then arrive at
    once anyway): with the listener down, or `poll_idle_every_s` 0, every user is polled
    every run. A chain fill counts as unconfirmed for 4 × `poll_active_window_s`."""

    now_at: datetime
    active: frozenset[int]
    listening: bool
    idle_every: timedelta
    lagging: frozenset[int] = frozenset()
    waiting: frozenset[int] = frozenset()  # a chain fill within the overlap, unconfirmed

    @classmethod
    def read(cls, conn: db.Conn, now: datetime, s: settings.Settings) -> Due:
        window = timedelta(seconds=s.poll_active_window_s)
        params = {"since": now - window, "unconfirmed": now - 4 * window}
        active = frozenset(r["followed_user_id"] for r in conn.execute(_ACTIVE, params))
        beat = conn.execute(_LISTENER, {"fresh": now - LISTENER_FRESH}).fetchone()
        listening = bool(beat and beat["ok"])
        # only while /trades from the checkpoint minus the overlap still reaches the fill
        reach = {"reach": now - timedelta(seconds=s.poll_overlap_s)}
        waiting = {r["followed_user_id"]: r["oldest"] for r in conn.execute(_WAITING, reach)}
        lagging = frozenset(u for u, oldest in waiting.items() if oldest < now - LAGGING)
        idle_every = timedelta(seconds=s.poll_idle_every_s)
        return cls(now, active, listening, idle_every, lagging, frozenset(waiting))

    def rank(self, user: User) -> tuple[int, float, int]:
        """The order of a run: first the users whose chain fill waits for its Data API
        row, then the other active ones, then the idle; in each, the longest unpolled
        first (never polled before all), so a run cut short leaves those first next."""
        group = 0 if user.id in self.waiting else 1 if user.id in self.active else 2
        age = user.checkpoint.timestamp() if user.checkpoint is not None else float("-inf")
        return group, age, user.id

    def now(self, user: User, failing: bool) -> bool:
        """True when `user` is polled this run."""
        if not self.listening or not self.idle_every or failing or user.checkpoint is None:
            return True
        if user.id in self.active:
            return True
        # spread over [1, 1.5) × idle_every by user, so idle users do not all come due
        # in one run (one sweep leaves them all the same checkpoint)
        every = self.idle_every * (1 + (user.id * 2654435761 % 2**32) / 2**33)
        return user.checkpoint <= self.now_at - every

    def trades(self, user: User) -> bool:
        """True when the user's `/trades` is read as well as `/activity`: while the
        listener is down (the Data API is then the only source: whichever indexes a fill
        first counts), or when one of the user's chain fills has waited LAGGING for its
        Data API row. Otherwise `/activity` alone confirms the chain's fills, one request
        per user (`/trades` has the Data API's tightest limit, 200 requests / 10 s)."""
        return not self.listening or user.id in self.lagging


class Confirming:
    """The quick lane of a run: a user whose chain fill waits for its Data API row is
    polled `after` past the listener's detection — once the API has likely indexed it —
    then again after 2×, 4×, … that (each miss doubles the wait, so an API far behind
    costs a few requests per fill, not one per second), ahead of the run's sweep. The
    waiting fills are read again every `REFRESH` while the run goes on, so a fill the
    listener sees mid-run is confirmed mid-run, not a run later."""

    REFRESH = 1.0  # seconds between reads of the waiting fills

    def __init__(self, conn: db.Conn, after: timedelta, reach: timedelta) -> None:
        self.conn, self.after, self.reach = conn, after, reach
        self.waiting: dict[int, datetime] = {}
        self.read_at = float("-inf")
        self.tried: dict[int, datetime] = {}  # user → when this run last polled it

    def refresh(self, now: datetime) -> None:
        if time.monotonic() - self.read_at < self.REFRESH:
            return
        self.read_at = time.monotonic()
        rows = self.conn.execute(_WAITING, {"reach": now - self.reach})
        self.waiting = {int(r["followed_user_id"]): r["oldest"] for r in rows}

    def due_since(self, user: int, now: datetime) -> datetime | None:
        """The latest time ≤ now at which the user's oldest waiting fill was due a look
        (detection + after × 2^k); None while none is."""
        oldest = self.waiting.get(user)
        if oldest is None or not self.after or now - oldest < self.after:
            return None
        k = int(math.log2((now - oldest) / self.after))
        due: datetime = oldest + self.after * 2**k
        return due

    def next(self, users: dict[int, User], now: datetime) -> User | None:
        """The waiting user whose look is due longest, not polled since it fell due."""
        best: tuple[datetime, int] | None = None
        for uid in self.waiting.keys() & users.keys():
            since = self.due_since(uid, now)
            last = max(
                (t for t in (users[uid].checkpoint, self.tried.get(uid)) if t is not None),
                default=None,
            )
            if since is not None and (last is None or last < since):
                best = min(best or (since, uid), (since, uid))
        return None if best is None else users[best[1]]


def poll_all(
    conn: db.Conn,
    ups: http.Upstreams,
    now: datetime,
    *,
    overlap: timedelta,
    reach_back_to: datetime | None,
    counts: dict[str, int],
    clock: data_api.Clock | None = None,
    only: Collection[int] | None = None,
    between: Callable[[], None] | None = None,
    stop_at: float | None = None,
) -> int:
    """Polls the enabled users (or those in `only`: a host's leased ones) that are due
    (`Due`; every one when a backfill reaches back), each up to the time its poll starts
    (`clock()`; without a clock, `now`), rows stamped as their pages arrive; returns how
    many users were polled without error. Users whose chain fill waits for its Data API
    row are polled as that row comes due (`Confirming`, counted `users_confirming`),
    ahead of the others.
    `between` runs before each user (a loop renews its leases there); past `stop_at`
    (time.monotonic()) no further user is started (`users_deferred`). A
    user whose poll fails — the upstream, a listing refused or past its caps, or any
    bug its rows trigger — gets a failed item and its checkpoint stays; the other users
    are polled all the same. Only a lost database connection ends the run.

    A backfill request is served user by user, whoever polls them (one host, or
    several with a share each): each user polled whole from the request's reach is
    marked served (`BACKFILL_SERVED`), and the request is cleared once every enabled
    user is."""
    s = settings.get()
    request = checkpoints.pending_backfill(conn)
    floor = min(
        (t for t in (reach_back_to, request[0] if request else None) if t is not None),
        default=None,
    )
    failing = {r["item_key"] for r in failures.open_items(conn, "poll")}
    outcome: dict[int, bool] = {}  # user → whether its (last) poll this run read it whole
    failed_now: set[str] = set()
    due = Due.read(conn, now, s)
    users = {u.id: u for u in followed_users(conn) if only is None or u.id in only}
    sweep = deque(sorted(users.values(), key=due.rank))
    lane = Confirming(conn, timedelta(seconds=s.poll_confirm_after_s), overlap)
    swept: set[int] = set()

    def bump(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    def take(at: datetime) -> tuple[User, bool] | None:
        """The next user, and whether the lane chose it (None: the sweep is done)."""
        if floor is None and due.listening:  # a backfill or no listener: one sweep of all
            lane.refresh(at)
            if (user := lane.next(users, at)) is not None:
                return user, True
        while sweep and sweep[0].id in swept:
            sweep.popleft()
        return (sweep.popleft(), False) if sweep else None

    while True:
        if stop_at is not None and time.monotonic() >= stop_at:
            left = sum(1 for u in sweep if u.id not in swept)
            counts["users_deferred"] = counts.get("users_deferred", 0) + left
            break
        at = clock() if clock is not None else now
        if (taken := take(at)) is None:
            break
        user, confirming = taken
        if confirming:
            bump("users_confirming")
        key = f"user:{user.id}"
        swept.add(user.id)
        if between is not None:
            between()
        if floor is None and not confirming and not due.now(user, key in failing):
            bump("users_idle")
            continue  # not polled: the lane may still take it for a fill due now
        lane.tried[user.id] = at
        start = (user.checkpoint - overlap) if user.checkpoint else at - overlap
        if floor is not None:
            start = min(start, floor)
        error: Exception | None
        try:
            with_trades = due.trades(user)
            if not with_trades:
                bump("trades_not_read")
            user_counts, error = poll_user(conn, ups, user, start, at, clock, with_trades)
            for name, n in user_counts.items():
                counts[name] = counts.get(name, 0) + n
        except http.UpstreamError as exc:
            error = exc
        except (psycopg.OperationalError, psycopg.InterfaceError, http.Stopped):
            raise  # the database is gone, or a signal: the run ends here
        except Exception as exc:
            log.exception("poll: user %d failed", user.id)
            error = RuntimeError(f"{type(exc).__name__}: {exc}")
        outcome[user.id] = error is None  # the lane may poll a user twice: the last counts
        if error is not None:
            bump("users_failed")
            failed_now.add(key)
            log.warning("poll: user %d not polled whole this time: %s", user.id, error)
            # its checkpoint stays put (or where it read whole): the next run goes on
            payload = {"user_id": user.id, "wallets": list(user.wallets), "from": str(start)}
            failures.record(conn, "poll", key, str(error), at, payload)
    ok = [u for u, good in outcome.items() if good]
    recovered = [f"user:{u}" for u in ok if {f"user:{u}"} & (failing | failed_now)]
    failures.resolve(conn, "poll", recovered, now)
    served = ok if request is not None else []
    done = len(ok)
    if request is not None:
        checkpoints.mark_backfill_served(conn, served, request[1], now)
        if checkpoints.backfill_unserved(conn, request[1]) == 0:
            checkpoints.clear_backfill(conn, request[1])  # served for every user, not a few
    return done


def backfill(
    conn: db.Conn,
    ups: http.Upstreams,
    since: datetime,
    now: datetime,
    clock: data_api.Clock | None = None,
    only: Collection[int] | None = None,
) -> int:
    """Polls every user (or those in `only`) from `since` (e.g. after the listener
    reconnects) and applies the shadow ledger; returns the number of new fills and
    activities."""
    counts: dict[str, int] = {}
    s = settings.get()
    poll_all(
        conn,
        ups,
        now,
        overlap=timedelta(seconds=s.poll_overlap_s),
        reach_back_to=since,
        counts=counts,
        clock=clock,
        only=only,
    )
    apply_shadow(conn, now, ups=ups)
    return counts.get("api_inserted", 0) + counts.get("activity_inserted", 0)


def apply_shadow(
    conn: db.Conn,
    now: datetime,
    s: settings.Settings | None = None,
    ups: http.Upstreams | None = None,
    only: Collection[int] | None = None,
) -> dict[str, int]:
    """Applies the shadow ledger (of every user, or those in `only`); with `ups`, a
    SPLIT / MERGE whose outcomes have no recent mark gets midpoints fetched for its cost
    allocation, and the neg-risk markets
    of pending chain conversions are looked up on Gamma first (while Gamma cannot answer,
    such a conversion, and the user's events after it, wait up to
    `shadow_plan.CONVERSION_WAIT`; then it is refused, the book uncertain)."""
    s = s or settings.get()
    fetch = None if ups is None else midpoints_of(ups)
    if ups is not None:
        markets.probe_neg_risk(conn, ups.gamma, now)
    return shadow.apply_pending(
        conn,
        now,
        timedelta(seconds=s.shadow_chain_grace_s),
        timedelta(seconds=s.seed_window_s),
        fetch,
        from_chain=bool(s.neg_risk_adapters),
        only=only,
    )


def midpoints_of(ups: http.Upstreams) -> marks.Fetch:
    """A fetcher of CLOB midpoints that never raises: an unreachable CLOB means no
    marks (the allocation is then equal), not a stopped ledger."""

    def fetch(assets: list[str]) -> dict[str, int]:
        try:
            mids, _rejects = clob.fetch_midpoints(ups.clob, assets)
        except http.UpstreamError as exc:
            log.warning("midpoints for %d assets failed: %s", len(assets), exc)
            return {}
        return mids

    return fetch
