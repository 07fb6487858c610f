"""The database side of the write API. Each write runs in one transaction with its
`audit_log` row, whose before/after are what `revert` needs to go back. Config changes
insert a new version of `guardrail_config` / `copy_sizing_config`, never update one.
Errors are WriteError (400), NotFound (404) or Conflict (409), with a message for a
person."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from common.domain import copy_config
from common.runtime import jobs
from common.store import copy_configs, db, locks, users

CONFIG_LOCK = locks.CONFIG  # config writers take turns, so versions differ
CONDITION_ID = re.compile(r"^0x[0-9a-f]{64}$")
TABLES = (
    ("guardrail_config", copy_config.GUARDRAIL_FIELDS, "guardrail_config_id"),
    ("copy_sizing_config", copy_config.SIZING_FIELDS, "copy_sizing_config_id"),
)
FIELDS = (*copy_config.GUARDRAIL_FIELDS, *copy_config.SIZING_FIELDS)
ADDED = {"enabled": True, "copy_mode": "ACTIVE"}  # a user as `users.add` leaves it
REMOVED = {"enabled": False, "copy_mode": "REMOVED"}  # ... and as reverting that does
Row = dict[str, Any]


class WriteError(Exception):
    status = 400


class NotFound(WriteError):
    status = 404


class Conflict(WriteError):
    status = 409


@dataclass(frozen=True)
class By:
    """Who asks: the audit row's actor and request id."""

    actor: str
    request_id: str | None = None


@dataclass(frozen=True)
class Audit:
    """How one write is audited: who, which action, the audit row it reverts, and (for a
    revert without force) the state that row left, which must still hold."""

    by: By
    action: str
    reverts: int | None = None
    expect: Row | None = None

    def check(self, now: Row, what: str) -> None:
        """Conflict unless `now` still holds what the change being reverted left."""
        if self.expect is not None and {k: now.get(k) for k in self.expect} != self.expect:
            raise Conflict(
                f"{what} changed since: it is {now}, that change left {self.expect};"
                " revert with ?force=true to overwrite it anyway"
            )

    def expecting(self, state: Row, force: bool) -> Audit:
        """Returns this audit expecting `state` to hold still (unless forced)."""
        return self if force else dataclasses.replace(self, expect=dict(state))

    def write(self, conn: db.Conn, target: tuple[str, str], before: Any, after: Any) -> int:
        """Inserts the audit row; returns its id."""
        row = conn.execute(
            "INSERT INTO audit_log (actor, action, target_type, target_id, before, after,"
            " request_id, reverts_audit_id) VALUES (%(actor)s, %(action)s, %(type)s, %(id)s,"
            " %(before)s, %(after)s, %(rid)s, %(reverts)s) RETURNING id",
            {
                "actor": self.by.actor,
                "action": self.action,
                "type": target[0],
                "id": target[1],
                "before": Jsonb(before),
                "after": Jsonb(after),
                "rid": self.by.request_id,
                "reverts": self.reverts,
            },
        ).fetchone()
        assert row is not None
        return int(row["id"])


@contextmanager
def _transaction(conn: db.Conn) -> Iterator[None]:
    """One transaction; what the database refuses becomes a 409 / 400, not a 500."""
    try:
        with conn.transaction():
            yield
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(
            f"a concurrent change got there first, try again ({exc.diag.constraint_name})"
        ) from exc
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        raise WriteError(f"the database refused the change: {exc.diag.message_primary}") from exc
    except users.FollowError as exc:
        raise WriteError(str(exc)) from exc


# -- config -------------------------------------------------------------------------


def _latest(conn: db.Conn, table: str, user: int | None) -> Row | None:
    query = sql.SQL(
        "SELECT * FROM {} WHERE scope = %(scope)s AND followed_user_id IS NOT DISTINCT FROM"
        " %(user)s ORDER BY version DESC LIMIT 1"
    ).format(sql.Identifier(table))
    return conn.execute(
        query, {"scope": "GLOBAL" if user is None else "USER", "user": user}
    ).fetchone()


def _insert(conn: db.Conn, table: str, values: Row) -> int:
    cols = list(values)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(map(sql.Placeholder, cols)),
    )
    row = conn.execute(query, values).fetchone()
    assert row is not None
    return int(row["id"])


def effective(cfg: copy_config.Config) -> Row:
    return {f: getattr(cfg, f) for f in FIELDS}


def _state(conn: db.Conn, user: int | None, fields: Iterable[str]) -> Row:
    """The changed fields' effective values (and a user's override values: None =
    inherited) and the ids of the rows in force: what an audit row's before/after hold."""
    cfg = copy_configs.load(conn)
    latest = {t: _latest(conn, t, user) for t, _, _ in TABLES}
    out: Row = {
        "values": {f: getattr(cfg.base if user is None else cfg.for_user(user), f) for f in fields}
    }
    if user is not None:
        out["override"] = {
            f: (latest[t] or {}).get(f) for f in fields for t, names, _ in TABLES if f in names
        }
    out.update({id_name: (latest[t] or {}).get("id") for t, _, id_name in TABLES})
    return out


def check_sane(configs: copy_config.ConfigSet, users: Iterable[int] | None = None) -> None:
    """WriteError if a config (the global one and every user's, or these users') would
    be self-contradictory."""
    scopes = [(f"user {u}'s config", configs.for_user(u)) for u in users or ()]
    if users is None:
        scopes = [("the global config", configs.base)]
        scopes += [(f"user {u}'s config", c) for u, c in sorted(configs.users.items())]
    for name, c in scopes:
        if c.min_trade_notional_micros > c.max_trade_notional_micros:
            raise WriteError(
                f"min_trade_notional_micros ({c.min_trade_notional_micros}) would exceed"
                f" max_trade_notional_micros ({c.max_trade_notional_micros}) in {name}"
            )


def _user_ids(conn: db.Conn, ids: Iterable[int]) -> set[int]:
    rows = conn.execute("SELECT id FROM followed_user WHERE id = ANY(%(ids)s)", {"ids": list(ids)})
    return {int(r["id"]) for r in rows}


def _config(conn: db.Conn, audit: Audit, user: int | None, changes: Row) -> Row:
    try:
        copy_config.check_names(changes)
    except ValueError as exc:
        raise WriteError(str(exc)) from exc
    if not changes:
        raise WriteError("nothing to change")
    if user is None and None in changes.values():
        raise WriteError("the global config has no value to inherit: give values, not null")
    conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": CONFIG_LOCK})
    if user is not None and not _user_ids(conn, [user]):
        raise NotFound(f"no followed user {user}")
    before = _state(conn, user, changes)
    key = "values" if user is None else "override"
    audit.check(before[key], "the config")
    g, u = (changes, None) if user is None else ({}, {user: changes})
    check_sane(copy_configs.propose(conn, g, u), None if user is None else [user])
    out: Row = {}
    for table, fields, id_name in TABLES:
        mine = {k: v for k, v in changes.items() if k in fields}
        if not mine:
            continue
        prev = _latest(conn, table, user)
        if prev is None and user is None:  # the migration seeds version 1; be safe anyway
            prev = {**effective(copy_config.Config()), "version": 0}
        values = {f: (prev or {}).get(f) for f in fields} | mine
        scope = {"scope": "GLOBAL" if user is None else "USER", "followed_user_id": user}
        version = {"version": (prev or {}).get("version", 0) + 1, "created_by": audit.by.actor}
        out[id_name] = _insert(conn, table, {**scope, **version, **values})
    after = _state(conn, user, changes)
    target = ("config", "global") if user is None else ("followed_user", str(user))
    out["audit_id"] = audit.write(conn, target, before, after)
    cfg = copy_configs.load(conn)
    out["effective"] = effective(cfg.base if user is None else cfg.for_user(user))
    return out


def change_config(conn: db.Conn, by: By, user: int | None, changes: Row) -> Row:
    """Inserts the next version of the global config (user None) or of a user's override
    (None values inherit again), of whichever table(s) the changes touch."""
    with _transaction(conn):
        audit = Audit(by, "config.global" if user is None else "config.user")
        return _config(conn, audit, user, changes)


def enqueue_test(conn: db.Conn, by: By, proposal: Row, hours: int) -> Row:
    """Queues a "Test config" run of a proposal that names known users and fields."""
    users = {int(u): v for u, v in proposal["users"].items()}
    with _transaction(conn):
        unknown = sorted(set(users) - _user_ids(conn, users))
        if unknown:
            raise WriteError(f"no followed users {unknown}")
        try:
            proposed = copy_configs.propose(conn, proposal["global"], users)
        except (ValueError, TypeError) as exc:
            raise WriteError(str(exc)) from exc
        check_sane(proposed, None if proposal["global"] else users)
        row = conn.execute(
            "INSERT INTO config_test (requested_by, request_id, proposal, hours)"
            " VALUES (%(by)s, %(rid)s, %(p)s, %(h)s) RETURNING id",
            {"by": by.actor, "rid": by.request_id, "p": Jsonb(proposal), "h": hours},
        ).fetchone()
        assert row is not None
        after = {"proposal": proposal, "hours": hours}
        target = ("config_test", str(row["id"]))
        audit_id = Audit(by, "config.test").write(conn, target, None, after)
        jobs.wake(conn, "config_test")  # delivered at commit: the scheduler starts it now
    return {"id": int(row["id"]), "audit_id": audit_id}


def config_test(conn: db.Conn, test_id: int) -> Row:
    row = conn.execute(
        "SELECT id, state, requested_at, requested_by, proposal, hours, started_at,"
        " finished_at, report, error FROM config_test WHERE id = %(id)s",
        {"id": test_id},
    ).fetchone()
    if row is None:
        raise NotFound(f"no config test {test_id}")
    return row


# -- switches and users ----------------------------------------------------------------


def _pause(conn: db.Conn, audit: Audit, paused: bool, reason: str | None) -> Row:
    before = conn.execute(
        "SELECT paused, reason FROM system_control WHERE id = 1 FOR UPDATE"
    ).fetchone()
    if before is None:
        raise NotFound("system_control has no row: run the migrations")
    audit.check(before, "the pause switch")
    conn.execute(
        "UPDATE system_control SET paused = %(p)s, reason = %(r)s, updated_at = now(),"
        " updated_by = %(by)s WHERE id = 1",
        {"p": paused, "r": reason, "by": audit.by.actor},
    )
    after = {"paused": paused, "reason": reason}
    return {"audit_id": audit.write(conn, ("system_control", "1"), before, after), **after}


def pause(conn: db.Conn, by: By, paused: bool, reason: str | None) -> Row:
    with _transaction(conn):
        return _pause(conn, Audit(by, "control.pause"), paused, reason)


def _blacklist(conn: db.Conn, audit: Audit, condition_id: str, blacklisted: bool) -> Row:
    if not CONDITION_ID.match(condition_id):
        raise WriteError("a condition id is 0x and 64 lowercase hex digits")
    before = conn.execute(
        "SELECT blacklisted FROM market WHERE condition_id = %(c)s FOR UPDATE", {"c": condition_id}
    ).fetchone()
    if before is None:
        raise NotFound(f"no market {condition_id}")
    audit.check(before, f"market {condition_id}")
    conn.execute(
        "UPDATE market SET blacklisted = %(b)s WHERE condition_id = %(c)s",
        {"b": blacklisted, "c": condition_id},
    )
    after = {"blacklisted": blacklisted}
    audit_id = audit.write(conn, ("market", condition_id), before, after)
    return {"audit_id": audit_id, "condition_id": condition_id, **after}


def blacklist(conn: db.Conn, by: By, condition_id: str, blacklisted: bool) -> Row:
    with _transaction(conn):
        return _blacklist(conn, Audit(by, "market.blacklist"), condition_id, blacklisted)


def follow_user(conn: db.Conn, by: By, wallet: str, label: str, proxies: list[str]) -> Row:
    """Follows a wallet (`users.add`, which writes the audit row); seeding is left to
    the next poll."""
    with _transaction(conn):
        user_id = users.add(
            conn, wallet, label, proxies, jobs.utcnow(), actor=by.actor, request_id=by.request_id
        )
        row = conn.execute(
            "SELECT id FROM audit_log WHERE action = 'follow.add' AND target_type = 'followed_user'"
            " AND target_id = %(t)s ORDER BY id DESC LIMIT 1",
            {"t": str(user_id)},
        ).fetchone()
    assert row is not None
    return {"id": user_id, "audit_id": int(row["id"])}


_USER = "SELECT id, label, profile_wallet, enabled, copy_mode FROM followed_user WHERE id = %(id)s"


def _user(conn: db.Conn, audit: Audit, user_id: int, fields: Row) -> Row:
    """Sets enabled / copy_mode; audited like `users.set_fields` (whole rows)."""
    before = conn.execute(_USER + " FOR UPDATE", {"id": user_id}).fetchone()
    if before is None:
        raise NotFound(f"no followed user {user_id}")
    audit.check(before, f"user {user_id}")
    if fields.get("copy_mode", before["copy_mode"]) not in users.MODES:
        raise WriteError(f"copy_mode must be one of {', '.join(users.MODES)}")
    conn.execute(
        "UPDATE followed_user SET enabled = %(enabled)s, copy_mode = %(copy_mode)s,"
        " updated_at = now() WHERE id = %(id)s",
        {**before, **fields},
    )
    after = conn.execute(_USER, {"id": user_id}).fetchone()
    audit_id = audit.write(conn, ("followed_user", str(user_id)), before, after)
    return {"audit_id": audit_id, "user": after}


def update_user(conn: db.Conn, by: By, user_id: int, fields: Row) -> Row:
    with _transaction(conn):
        return _user(conn, Audit(by, "follow.update"), user_id, fields)


def _copy_of(conn: db.Conn, audit: Audit, user_id: int, leader: int | None) -> Row:
    """Marks user `user_id` as the admin's copy wallet of `leader` (None: unmarks)."""
    before = conn.execute(
        "SELECT id, copy_of_user_id FROM followed_user WHERE id = %(id)s FOR UPDATE",
        {"id": user_id},
    ).fetchone()
    if before is None:
        raise NotFound(f"no followed user {user_id}")
    audit.check(before, f"user {user_id}")
    try:
        users.copy_of_check(conn, user_id, leader)
    except users.FollowError as exc:
        raise WriteError(str(exc)) from exc
    conn.execute(
        "UPDATE followed_user SET copy_of_user_id = %(l)s, updated_at = now() WHERE id = %(id)s",
        {"l": leader, "id": user_id},
    )
    after = {"id": user_id, "copy_of_user_id": leader}
    audit_id = audit.write(conn, ("followed_user", str(user_id)), before, after)
    return {"audit_id": audit_id, **after}


def set_copy_of(conn: db.Conn, by: By, user_id: int, leader: int | None) -> Row:
    with _transaction(conn):
        return _copy_of(conn, Audit(by, "follow.copy_of"), user_id, leader)


# -- alert silences (SPEC §11) ----------------------------------------------------------

SILENCE_MAX = timedelta(days=30)
_SILENCE = "SELECT until, reason FROM alert_silence WHERE rule = %(rule)s AND labels = %(labels)s"


def _silence_state(row: Row | None) -> Row:
    if row is None:
        return {"until": None, "reason": None}
    return {"until": row["until"].isoformat(), "reason": row["reason"]}


def _silence(
    conn: db.Conn, audit: Audit, rule: str, labels: dict[str, str], until: str | None,
    reason: str | None,
) -> Row:  # fmt: skip
    """Sets (until: an ISO time) or lifts (None) the silence of `rule`'s alerts whose
    labels include `labels` ({}: all of the rule's)."""
    key = {"rule": rule, "labels": Jsonb(labels)}
    before = _silence_state(conn.execute(_SILENCE + " FOR UPDATE", key).fetchone())
    audit.check(before, f"the silence of {rule} {labels}")
    if until is None:
        conn.execute("DELETE FROM alert_silence WHERE rule = %(rule)s AND labels = %(labels)s", key)
    else:
        conn.execute(
            "INSERT INTO alert_silence (rule, labels, until, reason, created_by, created_at)"
            " VALUES (%(rule)s, %(labels)s, %(until)s, %(reason)s, %(by)s, now())"
            " ON CONFLICT (rule, labels) DO UPDATE SET until = EXCLUDED.until,"
            " reason = EXCLUDED.reason, created_by = EXCLUDED.created_by,"
            " created_at = EXCLUDED.created_at",
            {**key, "until": until, "reason": reason, "by": audit.by.actor},
        )
    after = _silence_state(conn.execute(_SILENCE, key).fetchone())
    target = {"rule": rule, "labels": labels}
    audit_id = audit.write(conn, ("alert_silence", rule), {**target, **before}, {**target, **after})
    return {"audit_id": audit_id, **target, **after}


def silence(
    conn: db.Conn, by: By, rule: str, labels: dict[str, str], until: datetime | None,
    reason: str | None,
) -> Row:  # fmt: skip
    """Silences `rule`'s alerts (those whose labels include `labels`) until `until`, at
    most SILENCE_MAX ahead; None lifts the silence."""
    if until is not None:
        now = jobs.utcnow()
        if not now < until <= now + SILENCE_MAX:
            raise WriteError(f"a silence ends in the future, at most {SILENCE_MAX.days} days ahead")
    with _transaction(conn):
        return _silence(
            conn, Audit(by, "alert.silence"), rule, labels,
            None if until is None else until.isoformat(), reason,
        )  # fmt: skip


# -- revert ---------------------------------------------------------------------------


def _undo_config(conn: db.Conn, row: Row, audit: Audit, force: bool) -> Row:
    user = None if row["target_type"] == "config" else int(row["target_id"])
    key = "values" if user is None else "override"
    audit = audit.expecting(row["after"][key], force)
    return _config(conn, audit, user, dict(row["before"][key]))


def _undo_pause(conn: db.Conn, row: Row, audit: Audit, force: bool) -> Row:
    audit = audit.expecting(row["after"], force)
    return _pause(conn, audit, row["before"]["paused"], row["before"]["reason"])


def _undo_blacklist(conn: db.Conn, row: Row, audit: Audit, force: bool) -> Row:
    audit = audit.expecting(row["after"], force)
    return _blacklist(conn, audit, row["target_id"], row["before"]["blacklisted"])


def _undo_user(conn: db.Conn, row: Row, audit: Audit, force: bool) -> Row:
    # A follow is never deleted (events and ledgers name the user): undoing one removes.
    before, after = (REMOVED, ADDED) if row["before"] is None else (row["before"], row["after"])
    audit = audit.expecting({"enabled": after["enabled"], "copy_mode": after["copy_mode"]}, force)
    fields = {"enabled": before["enabled"], "copy_mode": before["copy_mode"]}
    return _user(conn, audit, int(row["target_id"]), fields)


def _undo_copy_of(conn: db.Conn, row: Row, audit: Audit, force: bool) -> Row:
    audit = audit.expecting({"copy_of_user_id": row["after"]["copy_of_user_id"]}, force)
    return _copy_of(conn, audit, int(row["target_id"]), row["before"]["copy_of_user_id"])


def _undo_silence(conn: db.Conn, row: Row, audit: Audit, force: bool) -> Row:
    after, before = row["after"], row["before"]
    audit = audit.expecting({"until": after["until"], "reason": after["reason"]}, force)
    rule, labels = before["rule"], before["labels"]
    return _silence(conn, audit, rule, labels, before["until"], before["reason"])


_UNDO: dict[str, Callable[[db.Conn, Row, Audit, bool], Row]] = {
    "config.global": _undo_config,
    "config.user": _undo_config,
    "control.pause": _undo_pause,
    "market.blacklist": _undo_blacklist,
    "follow.add": _undo_user,
    "follow.update": _undo_user,
    "follow.copy_of": _undo_copy_of,
    "alert.silence": _undo_silence,
}


def revert(conn: db.Conn, by: By, audit_id: int, force: bool = False) -> Row:
    """Re-applies audit row `audit_id`'s before as a new audited write (`<action>.revert`);
    Conflict if the state is no longer what that row left, unless `force`."""
    with _transaction(conn):
        row = conn.execute(
            "SELECT * FROM audit_log WHERE id = %(id)s FOR UPDATE", {"id": audit_id}
        ).fetchone()
        if row is None:
            raise NotFound(f"no audit row {audit_id}")
        kind = row["action"]
        while kind.endswith(".revert"):  # undoing an undo redoes: same before/after shape
            kind = kind.removesuffix(".revert")
        undo = _UNDO.get(kind)
        if undo is None:
            raise WriteError(f"audit row {audit_id} ({row['action']}) cannot be reverted")
        audit = Audit(by, row["action"] + ".revert", audit_id)
        try:
            result = undo(conn, row, audit, force)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WriteError(
                f"audit row {audit_id} holds no state to go back to ({exc!r})"
            ) from exc
    return {"reverted": audit_id, **result}


def audit_rows(conn: db.Conn, limit: int) -> list[Row]:
    """The newest audit rows, newest first."""
    return conn.execute(
        "SELECT id, at, actor, action, target_type, target_id, before, after, request_id,"
        " reverts_audit_id FROM audit_log ORDER BY id DESC LIMIT %(n)s",
        {"n": limit},
    ).fetchall()
