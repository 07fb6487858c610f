"""The notification outbox (SPEC §11): `notification` rows queued by the rules job,
delivered by functions.notify, every attempt in `notification_attempt`.

A row is delivered in three steps, each its own transaction:
1. claim: due PENDING rows are locked (FOR UPDATE SKIP LOCKED, so two notifiers never
   take the same row), and the ones to send now get a lease: `attempts + 1` and
   `next_at = now + lease`. Committed before anything is sent.
2. send, outside any transaction (common/upstream/channels.py).
3. record: the attempt row, and the notification SENT, due again later, or DEAD.
A notifier killed between 2 and 3 leaves the row PENDING with its lease: once the lease
ends the row is due again and sent once more with the same `message_id` (the one
duplicate a receiver may see), and the claim that finds `attempts` ahead of the
recorded attempts writes the lost one down. A message is never lost: only step 3
marks it SENT.

Deferring is not attempting: a channel over its `rate_per_min`, or an email channel
gathering its batch, pushes `next_at` without counting an attempt."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from common.domain import delivery, rules
from common.store import db

LOST = (
    "no outcome recorded: the notifier stopped between sending and recording"
    " (the message may have been delivered)"
)
CLAIM_CHUNK = 200  # rows one claim takes at most

message_id = delivery.message_id  # the stable id: oc[-a<alert>]-<transition>-<channel>


def payload(
    *,
    message_id: str,
    rule: str,
    severity: str,
    state: str,
    labels: Mapping[str, Any],
    value: float | None,
    message: str,
    at: datetime,
) -> dict[str, Any]:
    """Returns the outbox payload (the webhook body) of one message; ValueError if a
    field is out of the contract (severity, state, a non-finite value)."""
    return delivery.Message.from_payload(
        {
            "id": message_id,
            "rule": rule,
            "severity": severity,
            "state": state,
            "labels": dict(labels),
            "value": value,
            "message": message,
            "at": delivery.iso_utc(at),
        }
    ).payload()


def enqueue(
    conn: db.Conn,
    *,
    message_id: str,
    channel: str,
    alert_id: int | None,
    payload: dict[str, Any],
    now: datetime,
) -> bool:
    """Queues one message on one channel, due at once; returns False when that
    message_id is queued already (a replayed transition). Raises ValueError when the
    payload is not {id, rule, severity, state, labels, value, message, at} with
    id == message_id. Commits with the caller's transaction."""
    msg = delivery.Message.from_payload(payload)
    if msg.id != message_id:
        raise ValueError(f"payload id {msg.id!r} is not the message_id {message_id!r}")
    row = conn.execute(
        """INSERT INTO notification (message_id, channel, alert_id, payload, created_at, next_at)
           VALUES (%(m)s, %(c)s, %(a)s, %(p)s, %(t)s, %(t)s)
           ON CONFLICT (message_id) DO NOTHING RETURNING id""",
        {"m": message_id, "c": channel, "a": alert_id, "p": Jsonb(msg.payload()), "t": now},
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class Due:
    """A claimed notification: its row, how many attempts it had before this one, how
    many of those are recorded, and its message (None when its payload is bad)."""

    id: int
    message_id: str
    channel: str
    created_at: datetime
    attempts: int
    recorded: int
    message: delivery.Message | None
    bad_payload: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Due:
        try:
            msg, bad = delivery.Message.from_payload(row["payload"]), None
        except ValueError as exc:
            msg, bad = None, str(exc)
        return cls(
            row["id"],
            row["message_id"],
            row["channel"],
            row["created_at"],
            row["attempts"],
            row["recorded"],
            msg,
            bad,
        )


def claim_due(
    conn: db.Conn,
    now: datetime,
    limit: int,
    skip_channels: Sequence[str] = (),
    only_channels: Sequence[str] | None = None,
) -> list[Due]:
    """Locks up to `limit` due PENDING rows (oldest due first), skipping rows another
    notifier holds and the channels in `skip_channels` (and, given `only_channels`,
    those not in it). Call inside a transaction."""
    rows = conn.execute(
        """SELECT n.id, n.message_id, n.channel, n.created_at, n.attempts, n.payload,
                  (SELECT count(*) FROM notification_attempt a
                   WHERE a.notification_id = n.id) AS recorded
           FROM notification n
           WHERE n.status = 'PENDING' AND n.next_at <= %(now)s
             AND NOT (n.channel = ANY(%(skip)s))
             AND (%(all)s OR n.channel = ANY(%(only)s))
           ORDER BY n.next_at, n.id
           LIMIT %(n)s
           FOR UPDATE OF n SKIP LOCKED""",
        {
            "now": now,
            "n": limit,
            "skip": list(skip_channels),
            "all": only_channels is None,
            "only": list(only_channels or ()),
        },
    ).fetchall()
    return [Due.from_row(r) for r in rows]


def used_last_minute(
    conn: db.Conn, channels: Sequence[str], now: datetime
) -> dict[str, tuple[int, datetime]]:
    """Returns, per channel with any, its attempts in the minute up to `now` and the
    oldest of them."""
    rows = conn.execute(
        """SELECT channel, count(*) AS n, min(at) AS oldest FROM notification_attempt
           WHERE channel = ANY(%(c)s) AND at > %(since)s AND at <= %(now)s
           GROUP BY channel""",
        {"c": list(channels), "since": now - delivery.RATE_WINDOW, "now": now},
    ).fetchall()
    return {r["channel"]: (int(r["n"]), r["oldest"]) for r in rows}


def lease(conn: db.Conn, ids: Sequence[int], until: datetime) -> None:
    """Counts an attempt on each row and makes it due again at `until` (the lease)."""
    if ids:
        conn.execute(
            """UPDATE notification SET attempts = attempts + 1, next_at = %(u)s
               WHERE id = ANY(%(ids)s) AND status = 'PENDING'""",
            {"u": until, "ids": list(ids)},
        )


def release(conn: db.Conn, ids: Sequence[int], until: datetime) -> None:
    """Gives leased rows back unsent: their attempt uncounted, due at `until`."""
    if ids:
        conn.execute(
            """UPDATE notification SET attempts = attempts - 1, next_at = %(u)s
               WHERE id = ANY(%(ids)s) AND status = 'PENDING' AND attempts > 0""",
            {"u": until, "ids": list(ids)},
        )


def defer(conn: db.Conn, ids: Sequence[int], until: datetime) -> None:
    """Makes rows due at `until` without counting an attempt (rate cap, email batch)."""
    if ids:
        conn.execute(
            """UPDATE notification SET next_at = %(u)s
               WHERE id = ANY(%(ids)s) AND status = 'PENDING'""",
            {"u": until, "ids": list(ids)},
        )


def record_lost(conn: db.Conn, due: Due, now: datetime) -> None:
    """Writes down the attempts a killed notifier claimed but never recorded."""
    for _ in range(max(0, due.attempts - due.recorded)):
        conn.execute(
            """INSERT INTO notification_attempt (notification_id, channel, at, ok, error)
               VALUES (%(n)s, %(c)s, %(t)s, false, %(e)s)""",
            {"n": due.id, "c": due.channel, "t": now, "e": LOST},
        )


def record(
    conn: db.Conn, due: Due, outcome: delivery.Outcome, at: datetime, retry_at: datetime | None
) -> str:
    """Records one attempt and its row's new state: SENT when ok, else PENDING due at
    `retry_at`, or DEAD when that is None. Returns the status. Own transaction."""
    outcome = outcome.bounded()
    status = "SENT" if outcome.ok else ("PENDING" if retry_at is not None else "DEAD")
    retry_after = outcome.retry_after_s
    with conn.transaction():
        conn.execute(
            """INSERT INTO notification_attempt
                   (notification_id, channel, at, ok, status, error, retry_after_s,
                    duration_micros)
               VALUES (%(n)s, %(c)s, %(t)s, %(ok)s, %(s)s, %(e)s, %(ra)s, %(d)s)""",
            {
                "n": due.id,
                "c": due.channel,
                "t": at,
                "ok": outcome.ok,
                "s": outcome.status,
                "e": outcome.error,
                "ra": None if retry_after is None else round(retry_after),
                "d": max(0, outcome.duration_micros),
            },
        )
        conn.execute(
            """UPDATE notification SET status = %(st)s,
                   sent_at = CASE WHEN %(st)s = 'SENT' THEN %(t)s ELSE sent_at END,
                   next_at = COALESCE(%(next)s, next_at),
                   last_error = CASE WHEN %(st)s = 'SENT' THEN last_error ELSE %(e)s END
               WHERE id = %(id)s AND status = 'PENDING'""",
            {"st": status, "t": at, "next": retry_at, "e": outcome.error, "id": due.id},
        )
    return status


Send = Callable[[rules.Channel, list[delivery.Message]], delivery.Outcome]


@dataclass
class Config:
    """How the outbox is delivered (settings: notify_*)."""

    policy: delivery.Policy = field(default_factory=delivery.Policy)
    lease_s: float = 120.0
    email_batch_s: float = 60.0
    max_rows: int = 1000
    chunk: int = CLAIM_CHUNK
    jitter: Callable[[], float] = random.random
    batched_types: frozenset[str] = frozenset({"email"})


@dataclass
class _Group:
    """One send: a channel and the claimed rows it carries (several: an email batch)."""

    channel: str
    rows: list[Due]


def not_configured(name: str) -> delivery.Outcome:
    return delivery.Outcome(
        ok=False,
        error=f"channel {name!r} is not configured in rules.yaml (channels:)",
        misconfigured=True,
    )


def plan_chunk(
    conn: db.Conn,
    rows: list[Due],
    channels: Mapping[str, rules.Channel],
    now: datetime,
    config: Config,
) -> tuple[list[_Group], list[Due], dict[datetime, list[int]]]:
    """Splits claimed rows into sends (email rows of a channel together), rows whose
    payload is bad (given up at once) and deferrals (time → ids) for the channels over
    their rate cap or gathering an email batch."""
    by_channel: dict[str, list[Due]] = {}
    bad: list[Due] = []
    for due in rows:
        (bad if due.message is None else by_channel.setdefault(due.channel, [])).append(due)
    used = used_last_minute(conn, list(by_channel), now)
    groups: list[_Group] = []
    deferred: dict[datetime, list[int]] = {}
    for name, dues in by_channel.items():
        channel = channels.get(name)
        batched = channel is not None and channel.type in config.batched_types
        if batched:
            oldest = min(d.created_at for d in dues)
            due_at = delivery.batch_due_at(oldest, config.email_batch_s)
            if due_at > now:
                deferred.setdefault(due_at, []).extend(d.id for d in dues)
                continue
        count, oldest_sent = used.get(name, (0, None))
        room = None if channel is None else delivery.rate_room(channel.rate_per_min, count)
        if room is not None and room < len(dues):
            later = dues[room:]
            dues = dues[:room]
            # the window's oldest delivery: an earlier one, or those about to go now
            until = delivery.rate_free_at(oldest_sent or now, now)
            deferred.setdefault(until, []).extend(d.id for d in later)
        if batched:
            for start in range(0, len(dues), delivery.EMAIL_BATCH_MAX):
                groups.append(_Group(name, dues[start : start + delivery.EMAIL_BATCH_MAX]))
        else:
            groups.extend(_Group(name, [d]) for d in dues)
    return groups, bad, deferred


def deliver(
    conn: db.Conn,
    channels: Mapping[str, rules.Channel],
    send: Send,
    clock: Callable[[], datetime],
    config: Config,
    *,
    stop: Callable[[], bool] = lambda: False,
    only_known: bool = False,
) -> dict[str, int]:
    """Delivers due notifications until none is due, `config.max_rows` were handled or
    `stop()`; returns counts (sent, failed, dead, deferred, released, lost). `channels`
    maps names to channels (rules.yaml's, with the built-in log); a row whose channel is
    not there is attempted with a clear error and tried again until DEAD (with
    `only_known`, e.g. while rules.yaml cannot be read, it is left untouched). `conn`
    is in autocommit mode. After a failure a channel rests for the rest of the run:
    its other rows go back, due when the failed one is."""
    counts: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        if n:
            counts[key] = counts.get(key, 0) + n

    resting: dict[str, datetime] = {}
    handled = 0
    while handled < config.max_rows and not stop():
        now = clock()
        lease_until = now + timedelta(seconds=config.lease_s)
        send_by = now + timedelta(seconds=config.lease_s / 2)
        with conn.transaction():
            rows = claim_due(
                conn,
                now,
                min(config.chunk, config.max_rows - handled),
                list(resting),
                list(channels) if only_known else None,
            )
            if not rows:
                break
            for due in rows:
                if due.attempts > due.recorded:
                    record_lost(conn, due, now)
                    count("lost", due.attempts - due.recorded)
            groups, bad, deferred = plan_chunk(conn, rows, channels, now, config)
            for until, ids in deferred.items():
                defer(conn, ids, until)
                count("deferred", len(ids))
            lease(conn, [d.id for g in groups for d in g.rows] + [d.id for d in bad], lease_until)
        handled += len(rows)
        for due in bad:
            outcome = delivery.Outcome(ok=False, error=f"bad payload: {due.bad_payload}")
            record(conn, due, outcome, now, None)
            count("dead")
        for i, group in enumerate(groups):
            left = [d.id for g in groups[i:] for d in g.rows]
            if stop() or clock() >= send_by:
                release(conn, left, clock())
                count("released", len(left))
                return counts
            if group.channel in resting:
                release(conn, [d.id for d in group.rows], resting[group.channel])
                count("released", len(group.rows))
                continue
            _deliver_group(conn, group, channels, send, clock, config, resting, count)
    return counts


def _deliver_group(
    conn: db.Conn,
    group: _Group,
    channels: Mapping[str, rules.Channel],
    send: Send,
    clock: Callable[[], datetime],
    config: Config,
    resting: dict[str, datetime],
    count: Callable[[str, int], None],
) -> None:
    """Sends one group and records each of its rows."""
    channel = channels.get(group.channel)
    at = clock()
    if channel is None:
        outcome = not_configured(group.channel)
    else:
        messages = [d.message for d in group.rows if d.message is not None]
        try:
            outcome = send(channel, messages)
        except Exception as exc:  # a sender's bug must not stop the other channels
            outcome = delivery.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
    for due in group.rows:
        attempts = due.attempts + 1
        retry_at: datetime | None = None
        if not outcome.ok:
            wait = delivery.retry_in(attempts, outcome, config.policy, config.jitter())
            retry_at = None if wait is None else at + timedelta(seconds=wait)
            if retry_at is not None and not outcome.misconfigured:
                resting.setdefault(group.channel, retry_at)
        status = record(conn, due, outcome, at, retry_at)
        count({"SENT": "sent", "PENDING": "failed", "DEAD": "dead"}[status], 1)
