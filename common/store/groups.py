"""Group (SPEC §4 "Aggregation"): a followed user's fills of one asset and side — and
their MERGEs or SPLITs of one market — within a window of the leader's event time
become one group, the unit the copy engine decides on.

- A group's window is [its first event's time, + group_window_ms (2,000 ms)).
- Events are taken in the order we saw them (detect time, then event time, then id).
  An event joins the open group of its (user, asset, side) whose window holds its time,
  if that group was still open when the event was seen; otherwise it starts a group.
- A group closes when its window has passed on our clock: at its first detect time +
  the window (the leader-time window shifted by the lag at which we saw it; with instant
  detection that is the window's end). At close its totals are fixed and its decision
  time is set: close + decision_delay_ms + a jitter in [0, decision_jitter_ms] derived
  from the key, so a replay decides at the same instant.
- The key is derived from the first event (user, action, asset or market, its time and
  source identity), so a rerun or a replay forms the same groups.

Not grouped (and marked why, so nothing waits forever): events before the user was
seeded or inside the seed (HISTORY), REDEEM and CONVERSION (NOT_COPIED: resolution is
settled by the price job, not copied) and every event of the admin's own copy wallets
(NOT_COPIED too: they are the real copy, SPEC §10), reorged-out fills (REMOVED). Users not yet
seeded wait. `simulate` runs this step before each batch; run alone
(`python -m functions.group --once`) it is safe too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from common.domain import copy_config, money
from common.store import copy_configs, db, locks

BATCH = 5000
GROUP_LOCK = locks.GROUP  # one grouper at a time


@dataclass(frozen=True)
class Event:
    kind: str  # "trade" or "activity"
    id: int
    user_id: int
    action: str  # BUY / SELL / MERGE / SPLIT
    asset_id: str | None
    condition_id: str | None
    event_time: datetime
    detect_time: datetime
    identity: str  # source:source_id of the row

    @property
    def bucket(self) -> tuple[int, str, str | None]:
        """What groups together: (user, action, asset) — or (user, action, market)."""
        target = self.asset_id if self.kind == "trade" else self.condition_id
        return (self.user_id, self.action, target)


@dataclass
class OpenGroup:
    key: str
    bucket: tuple[int, str, str | None]
    window_start: datetime
    window_end: datetime
    first_detect_time: datetime
    close_time: datetime
    condition_id: str | None
    asset_id: str | None
    id: int | None = None
    members: list[Event] = field(default_factory=list)


def group_key(e: Event) -> str:
    """Returns the key of a group whose first event is `e`."""
    ms = int(e.event_time.timestamp() * 1000)
    digest = hashlib.sha256(f"{e.bucket[2]}|{e.identity}".encode()).hexdigest()[:16]
    return f"u{e.user_id}:{e.action}:{ms}:{digest}"


def jitter_ms(key: str, jitter_max_ms: int) -> int:
    """Returns the decision jitter of a group in [0, jitter_max_ms], derived from its key."""
    if jitter_max_ms <= 0:
        return 0
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % (jitter_max_ms + 1)


def plan(
    events: list[Event], open_groups: list[OpenGroup], window: dict[int, timedelta]
) -> list[OpenGroup]:
    """Assigns each event to an open group or a new one (pure); returns the groups it
    created. `events` must be in detect order; `window` is each user's group window."""
    by_bucket: dict[tuple[int, str, str | None], list[OpenGroup]] = {}
    for g in open_groups:
        by_bucket.setdefault(g.bucket, []).append(g)
    created: list[OpenGroup] = []
    for e in events:
        home = next(
            (
                g
                for g in by_bucket.get(e.bucket, [])
                if g.window_start <= e.event_time < g.window_end and e.detect_time < g.close_time
            ),
            None,
        )
        if home is None:
            w = window[e.user_id]
            home = OpenGroup(
                key=group_key(e),
                bucket=e.bucket,
                window_start=e.event_time,
                window_end=e.event_time + w,
                first_detect_time=e.detect_time,
                close_time=e.detect_time + w,
                condition_id=e.condition_id,
                asset_id=e.asset_id,
            )
            by_bucket.setdefault(e.bucket, []).append(home)
            created.append(home)
        home.members.append(e)
    return created


_MARK_SKIPPED = [
    # Reorged out before it was grouped.
    """UPDATE trade_event SET group_state = 'REMOVED'
       WHERE group_state IS NULL AND reorg_state IS NOT NULL""",
    # Before the seed, or inside it: history, not a signal.
    """UPDATE trade_event t SET group_state = 'HISTORY' FROM followed_user u
       WHERE t.group_state IS NULL AND u.id = t.followed_user_id AND u.seeded_at IS NOT NULL
         AND (t.event_time < u.seeded_at OR t.shadow_state = 'COVERED_BY_SEED')""",
    """UPDATE activity_event a SET group_state = 'HISTORY' FROM followed_user u
       WHERE a.group_state IS NULL AND u.id = a.followed_user_id AND u.seeded_at IS NOT NULL
         AND (a.event_time < u.seeded_at OR a.shadow_state = 'COVERED_BY_SEED')""",
    """UPDATE activity_event SET group_state = 'NOT_COPIED'
       WHERE group_state IS NULL AND activity_type NOT IN ('MERGE', 'SPLIT')""",
    # The admin's own copy wallets: their fills are the real copy, not a leader's signal.
    """UPDATE trade_event t SET group_state = 'NOT_COPIED' FROM followed_user u
       WHERE t.group_state IS NULL AND u.id = t.followed_user_id
         AND u.copy_of_user_id IS NOT NULL""",
    """UPDATE activity_event a SET group_state = 'NOT_COPIED' FROM followed_user u
       WHERE a.group_state IS NULL AND u.id = a.followed_user_id
         AND u.copy_of_user_id IS NOT NULL""",
]
_PENDING = """
SELECT * FROM (
  SELECT 'trade' AS kind, t.id, t.followed_user_id, t.side AS action, t.asset_id,
         t.condition_id, t.event_time, t.detect_time, t.source || ':' || t.source_id AS identity
  FROM trade_event t JOIN followed_user u ON u.id = t.followed_user_id
  WHERE t.group_state IS NULL AND u.seeded_at IS NOT NULL AND t.detect_time <= %(now)s
    -- an RTDS trade seen again (ordinal > 0: a repeated message, or a twin fill of one
    -- transaction) is copied only once the chain or the Data API confirmed it
    AND NOT (t.source = 'RTDS' AND t.confirmed_at IS NULL AND t.rtds_source_id !~ ':0$')
  UNION ALL
  SELECT 'activity', a.id, a.followed_user_id, a.activity_type, NULL, a.condition_id,
         a.event_time, a.detect_time, a.source || ':' || a.source_id
  FROM activity_event a JOIN followed_user u ON u.id = a.followed_user_id
  WHERE a.group_state IS NULL AND u.seeded_at IS NOT NULL AND a.detect_time <= %(now)s
) pending
ORDER BY detect_time, event_time, kind DESC, id
LIMIT %(limit)s
"""
_OPEN = """
SELECT id, group_key, followed_user_id, action, asset_id, condition_id, window_start,
       window_end, first_detect_time, close_time
FROM copy_group WHERE state = 'OPEN'
"""
_INSERT = """
INSERT INTO copy_group (group_key, followed_user_id, action, condition_id, asset_id,
    window_start, window_end, first_detect_time, close_time)
VALUES (%(key)s, %(u)s, %(action)s, %(cond)s, %(asset)s, %(start)s, %(end)s, %(detect)s,
    %(close)s)
ON CONFLICT (group_key) DO UPDATE SET group_key = EXCLUDED.group_key
RETURNING id
"""
_JOIN_TRADE = """UPDATE trade_event t SET copy_group_id = v.g, group_state = 'GROUPED'
FROM unnest(%(g)s::bigint[], %(e)s::bigint[]) AS v(g, e)
WHERE t.id = v.e AND t.group_state IS NULL"""
_JOIN_ACTIVITY = """UPDATE activity_event t SET copy_group_id = v.g, group_state = 'GROUPED'
FROM unnest(%(g)s::bigint[], %(e)s::bigint[]) AS v(g, e)
WHERE t.id = v.e AND t.group_state IS NULL"""


def _open_groups(conn: db.Conn) -> list[OpenGroup]:
    out = []
    for r in conn.execute(_OPEN):
        target = r["asset_id"] if r["action"] in ("BUY", "SELL") else r["condition_id"]
        out.append(
            OpenGroup(
                key=r["group_key"],
                bucket=(r["followed_user_id"], r["action"], target),
                window_start=r["window_start"],
                window_end=r["window_end"],
                first_detect_time=r["first_detect_time"],
                close_time=r["close_time"],
                condition_id=r["condition_id"],
                asset_id=r["asset_id"],
                id=r["id"],
            )
        )
    return out


def assign(conn: db.Conn, now: datetime, configs: copy_config.ConfigSet) -> int:
    """Groups the events seen up to `now` (one batch); returns how many were grouped."""
    for sql in _MARK_SKIPPED:
        conn.execute(sql)
    rows = conn.execute(_PENDING, {"now": now, "limit": BATCH}).fetchall()
    if not rows:
        return 0
    events = [
        Event(
            r["kind"],
            r["id"],
            r["followed_user_id"],
            r["action"],
            r["asset_id"],
            r["condition_id"],
            r["event_time"],
            r["detect_time"],
            r["identity"],
        )
        for r in rows
    ]
    opened = _open_groups(conn)
    windows = {
        e.user_id: timedelta(milliseconds=configs.for_user(e.user_id).group_window_ms)
        for e in events
    }
    created = plan(events, opened, windows)
    if created:
        with conn.cursor() as cur:
            cur.executemany(
                _INSERT,
                [
                    {
                        "key": g.key,
                        "u": g.bucket[0],
                        "action": g.bucket[1],
                        "cond": g.condition_id,
                        "asset": g.asset_id,
                        "start": g.window_start,
                        "end": g.window_end,
                        "detect": g.first_detect_time,
                        "close": g.close_time,
                    }
                    for g in created
                ],
                returning=True,
            )
            for g in created:
                row = cur.fetchone()
                assert row is not None
                g.id = row["id"]
                cur.nextset()
    for kind, sql in (("trade", _JOIN_TRADE), ("activity", _JOIN_ACTIVITY)):
        pairs = [(g.id, e.id) for g in opened + created for e in g.members if e.kind == kind]
        if pairs:
            conn.execute(sql, {"g": [p[0] for p in pairs], "e": [p[1] for p in pairs]})
    return len(events)


_TOTALS = """
SELECT g.id, g.group_key, g.followed_user_id, g.close_time, g.action,
  coalesce(t.n, 0) + coalesce(a.n, 0) AS n,
  coalesce(t.shares, a.shares, 0) AS shares,
  coalesce(t.notional, a.notional, 0) AS notional
FROM copy_group g
LEFT JOIN LATERAL (
  SELECT count(*) AS n, sum(share_micros)::bigint AS shares,
         sum(usdc_notional_micros)::bigint AS notional
  FROM trade_event WHERE copy_group_id = g.id AND reorg_state IS NULL) t ON true
LEFT JOIN LATERAL (
  SELECT count(*) AS n, sum(share_micros)::bigint AS shares, sum(usdc_micros)::bigint AS notional
  FROM activity_event WHERE copy_group_id = g.id) a ON a.n > 0
WHERE g.state = 'OPEN' AND g.close_time <= %(now)s
"""
_CLOSE = """
UPDATE copy_group g SET state = 'CLOSED', closed_at = %(now)s, event_count = v.n,
    their_share_micros = v.shares, their_notional_micros = v.notional,
    their_price_micros = v.price, decide_at = v.at
FROM unnest(%(id)s::bigint[], %(n)s::int[], %(shares)s::bigint[], %(notional)s::bigint[],
            %(price)s::bigint[], %(at)s::timestamptz[]) AS v(id, n, shares, notional, price, at)
WHERE g.id = v.id AND g.state = 'OPEN'
"""
_VOID = """UPDATE copy_group SET state = 'VOID', closed_at = %(now)s
WHERE id = ANY(%(id)s) AND state = 'OPEN'"""


def close_due(conn: db.Conn, now: datetime, configs: copy_config.ConfigSet) -> dict[str, int]:
    """Closes the groups whose window has passed by `now`: fixes their totals and their
    decision time (set-based: a backlog of thousands closes in two statements). Returns
    counts."""
    rows = conn.execute(_TOTALS, {"now": now}).fetchall()
    void = [r["id"] for r in rows if not r["n"] or not r["shares"]]
    close = [r for r in rows if r["n"] and r["shares"]]
    if void:
        conn.execute(_VOID, {"now": now, "id": void})
    if close:
        cols: dict[str, list[Any]] = {
            k: [] for k in ("id", "n", "shares", "notional", "price", "at")
        }
        for r in close:
            cfg = configs.for_user(r["followed_user_id"])
            delay = cfg.decision_delay_ms + jitter_ms(r["group_key"], cfg.decision_jitter_ms)
            price = (
                money.price_micros(r["notional"], r["shares"])
                if r["action"] in ("BUY", "SELL")
                else money.MICROS
            )
            for k, v in (
                ("id", r["id"]),
                ("n", r["n"]),
                ("shares", r["shares"]),
                ("notional", r["notional"]),
                ("price", min(price, money.MICROS)),
                ("at", r["close_time"] + timedelta(milliseconds=delay)),
            ):
                cols[k].append(v)
        conn.execute(_CLOSE, {"now": now, **cols})
    return {"closed": len(close), "void": len(void)}


def step(conn: db.Conn, now: datetime) -> dict[str, int]:
    """Groups everything seen up to `now` and closes what is due, under the group lock,
    in one transaction per batch. Returns counts."""
    counts: dict[str, int] = {"grouped": 0, "closed": 0, "void": 0}
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (GROUP_LOCK,))
            configs = copy_configs.load(conn)
            n = assign(conn, now, configs)
            counts["grouped"] += n
            if n < BATCH:
                for k, v in close_due(conn, now, configs).items():
                    counts[k] += v
                return counts
