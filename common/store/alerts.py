"""Alerts (SPEC §11): evaluating rules.yaml's rules against the metrics (threshold) or
the database (SQL, read-only), moving each (rule, labels) instance through PENDING →
FIRING → RESOLVED with every transition stored, running a rule's automation through the
audited write path (actor `rule:<name>`), and queueing each notification in the outbox
(`notification`), which functions.notify delivers.

Each transition is one transaction: the alert row, its transition, the automation's
write and the outbox rows commit together or not at all."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from common.domain import rules
from common.runtime import messages
from common.store import db, outbox, writes

log = logging.getLogger("oculus.rules")

FRESH = timedelta(minutes=3)  # a series with no newer point has no value now
SQL_ROLE = "oculus_rules_reader"  # migrations/0022_alerts.sql
SQL_TIMEOUT_MS = 5_000
SQL_MAX_ROWS = 1_000
ERROR_CHARS = 500
VALUE_CHARS = 1_000  # an SQL rule's text column, as a message variable
MAX_COLUMNS = 50  # an SQL rule's columns kept as message variables
GONE = "its series is gone"  # a label set with no fresh value while others have one
NO_VALUE = "no value of"  # a threshold rule's metric has no fresh series at all
Row = dict[str, Any]


def labels_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


KEY_CHARS = 200  # an SQL rule's `key`, as the alert's label


def sql_key(value: Any) -> str:
    """An SQL rule row's `key` as a label: whole up to KEY_CHARS; a longer one cut and
    ended with a digest of the whole, so two keys sharing a beginning stay two alerts."""
    text = str(value)
    if len(text) <= KEY_CHARS:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: KEY_CHARS - 18]}…#{digest}"


@dataclass
class Outcome:
    """What one evaluation of the rule set did."""

    transitions: int = 0
    queued: int = 0
    errors: list[str] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------


def series(conn: db.Conn, now: datetime) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each metric's series with a point in the last FRESH: (labels, newest value)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for r in conn.execute(
        """SELECT DISTINCT ON (name, labels) name, labels, value_micros FROM metric_point
           WHERE at >= %(since)s AND at <= %(now)s ORDER BY name, labels, at DESC""",
        {"since": now - FRESH, "now": now},
    ):
        labels = {str(k): str(v) for k, v in (r["labels"] or {}).items()}
        out.setdefault(r["name"], []).append((labels, r["value_micros"] / 1_000_000))
    return out


def _open(conn: db.Conn) -> dict[tuple[str, str], Row]:
    rows = conn.execute("SELECT * FROM alert WHERE state <> 'RESOLVED'").fetchall()
    return {(r["rule"], labels_key(r["labels"])): r for r in rows}


def _silences(conn: db.Conn, now: datetime) -> list[Row]:
    return conn.execute(
        "SELECT rule, labels, until FROM alert_silence WHERE until > %(now)s", {"now": now}
    ).fetchall()


def silenced_until(silences: Iterable[Row], rule: str, labels: dict[str, str]) -> datetime | None:
    """The latest end of the silences covering the instance (their labels ⊆ its labels)."""
    ends = [
        s["until"]
        for s in silences
        if s["rule"] == rule and all(labels.get(k) == v for k, v in s["labels"].items())
    ]
    return max(ends) if ends else None


def _last_sent_fires(conn: db.Conn, since: datetime) -> dict[tuple[str, str], datetime]:
    """When each (rule, labels) last had a FIRING sent, since `since` (the longest
    cooldown back: older ones cool nothing)."""
    rows = conn.execute(
        "SELECT rule, labels, max(fired_at) AS at FROM alert"
        " WHERE notified AND fired_at >= %(since)s GROUP BY rule, labels",
        {"since": since},
    )
    return {(r["rule"], labels_key(r["labels"])): r["at"] for r in rows}


def last_evaluations(conn: db.Conn) -> dict[str, Row]:
    return {r["rule"]: r for r in conn.execute("SELECT * FROM alert_rule_eval")}


# --- SQL rules ---------------------------------------------------------------------------


class SqlRuleError(Exception):
    pass


_ADVISORY = """
SELECT classid::bigint AS a, objid::bigint AS b, objsubid, mode FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
"""
_UNLOCK = {  # (objsubid, mode) → the unlock call for that lock's key
    (1, "ExclusiveLock"): "SELECT pg_advisory_unlock((%(a)s << 32) | %(b)s)",
    (1, "ShareLock"): "SELECT pg_advisory_unlock_shared((%(a)s << 32) | %(b)s)",
    (2, "ExclusiveLock"): "SELECT pg_advisory_unlock(%(a)s::int, %(b)s::int)",
    (2, "ShareLock"): "SELECT pg_advisory_unlock_shared(%(a)s::int, %(b)s::int)",
}


def _advisory(conn: db.Conn) -> set[tuple[int, int, int, str]]:
    return {(r["a"], r["b"], r["objsubid"], r["mode"]) for r in conn.execute(_ADVISORY)}


def run_sql(conn: db.Conn, sql: str) -> tuple[list[Row], bool]:
    """Runs a rule's SELECT as the SELECT-only role, in a read-only transaction that is
    rolled back, with a 5 s statement timeout; at most SQL_MAX_ROWS rows (and whether
    there were more). One statement only (it is prepared). SqlRuleError says why not.
    A session advisory lock the statement took (a rollback keeps those) is released, and
    only those: the job's own locks on this connection stay."""
    held = _advisory(conn)
    try:
        return _run_sql(conn, sql)
    finally:
        _release(conn, held)


def _signed(oid: int) -> int:
    """A lock key's half as pg_locks shows it (an oid, unsigned) back to the int4 given."""
    return oid - 2**32 if oid >= 2**31 else oid


def _release(conn: db.Conn, held: set[tuple[int, int, int, str]]) -> None:
    """Releases the session advisory locks taken since `held` was read. A failure is
    logged, never raised: the rule's own result or error stands. (A lock the job held
    already and the rule took again is not seen here, and stays taken once more.)"""
    try:
        for a, b, sub, mode in _advisory(conn) - held:
            unlock = _UNLOCK.get((sub, mode))
            if unlock is None:
                continue
            key = {"a": a, "b": b} if sub == 1 else {"a": _signed(a), "b": _signed(b)}
            with conn.transaction():
                for _ in range(1000):  # a session lock taken n times is held until n unlocks
                    row = conn.execute(unlock, key).fetchone()
                    if row is None or not next(iter(row.values())):
                        break
    except psycopg.Error as exc:
        log.warning("an SQL rule's advisory lock could not be released: %s", exc)


def _run_sql(conn: db.Conn, sql: str) -> tuple[list[Row], bool]:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL ROLE {SQL_ROLE}")
            except psycopg.Error as exc:
                raise SqlRuleError(
                    f"cannot take the role {SQL_ROLE} ({exc.diag.message_primary}): "
                    f"GRANT {SQL_ROLE} TO the user Oculus connects as"
                ) from None
            conn.execute(f"SET LOCAL statement_timeout = {SQL_TIMEOUT_MS}")
            # a server-side cursor (DECLARE: one query, no writes): the server keeps what
            # is not fetched, so 1,000 rows is also the memory bound here
            with conn.cursor(name="oculus_rule") as cur:
                cur.execute(sql.encode())
                if cur.description is None:
                    raise SqlRuleError("the statement returned no rows (it must be a SELECT)")
                rows = cur.fetchmany(SQL_MAX_ROWS + 1)
    except psycopg.errors.QueryCanceled:
        raise SqlRuleError(f"cancelled: it ran past {SQL_TIMEOUT_MS // 1000} s") from None
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.ReadOnlySqlTransaction,
        psycopg.errors.FeatureNotSupported,  # DECLARE refuses a writing WITH
    ) as exc:
        raise SqlRuleError(f"refused, rules may only read: {exc.diag.message_primary}") from None
    except psycopg.Error as exc:
        raise SqlRuleError(f"{type(exc).__name__}: {exc}".strip()[:ERROR_CHARS]) from None
    return list(rows[:SQL_MAX_ROWS]), len(rows) > SQL_MAX_ROWS


def _plain(value: Any) -> Any:
    """A row's value as JSON can carry it, a text cut to VALUE_CHARS."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:VALUE_CHARS]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


# --- the evaluation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One instance of a rule as evaluated now."""

    labels: dict[str, str]
    holds: bool
    value: float | None
    values: dict[str, Any]  # the message template's variables


class Evaluator:
    """One pass over the rule set at `now` (functions.rules runs one a minute)."""

    def __init__(self, conn: db.Conn, ruleset: rules.RuleSet, now: datetime) -> None:
        self.conn = conn
        self.ruleset = ruleset
        self.now = now
        self.out = Outcome()
        self.open = _open(conn)
        self.open_by_rule: dict[str, dict[str, Row]] = {}
        for (name, key), row in self.open.items():
            self.open_by_rule.setdefault(name, {})[key] = row
        self.silences = _silences(conn, now)
        self.evals = last_evaluations(conn)
        longest = max((r.cooldown_s for r in ruleset.rules), default=0)
        self.last_sent = _last_sent_fires(conn, now - timedelta(seconds=longest))
        self.values: list[tuple[int, int]] = []  # (alert id, value) of alerts staying put

    # each rule ------------------------------------------------------------------------

    def run(self, metrics: dict[str, list[tuple[dict[str, str], float]]]) -> Outcome:
        for rule in self.ruleset.rules:
            started = time.thread_time()
            try:
                if rule.kind == "sql" and not rule.due(self._last_eval(rule), self.now):
                    continue
                error, seen = self._seen(rule, metrics)
                template_error = messages.check(rule.message)
                if seen is not None:
                    self._apply(rule, seen)
                error = error or template_error
            except Exception as exc:  # one rule's trouble stops no other rule
                log.exception("rule %s failed", rule.name)
                error, seen = f"failed: {type(exc).__name__}: {str(exc)[:300]}", None
            # no data is not the rule's fault: said on its row, not an error
            quiet = error is not None and error.startswith(NO_VALUE)
            self._record(rule, error, seen, time.thread_time() - started, ok=quiet)
            if error and not quiet:
                self.out.errors.append(f"rule {rule.name} (line {rule.line}): {error}")
        self._flush_values()
        if not self.ruleset.broken:
            self._retire()
        self._record_file_errors()
        return self.out

    def _flush_values(self) -> None:
        """Stores the newest value of the alerts that stayed as they were, in one go."""
        if self.values:
            self.conn.execute(
                """UPDATE alert a SET value_micros = v.value, updated_at = %(now)s
                   FROM unnest(%(ids)s::bigint[], %(vs)s::bigint[]) AS v(id, value)
                   WHERE a.id = v.id""",
                {"now": self.now, "ids": [i for i, _ in self.values],
                 "vs": [v for _, v in self.values]},
            )  # fmt: skip
            self.values.clear()

    def _last_eval(self, rule: rules.Rule) -> datetime | None:
        row = self.evals.get(rule.name)
        return None if row is None or row["kind"] != rule.kind else row["evaluated_at"]

    def _seen(
        self, rule: rules.Rule, metrics: dict[str, list[tuple[dict[str, str], float]]]
    ) -> tuple[str | None, list[Seen] | None]:
        """(an error, the instances now); None instances: leave the open ones as they are
        (no fresh value of the metric at all, or the SQL failed)."""
        base = {"rule": rule.name, "severity": rule.severity}
        if rule.kind == "threshold":
            points = metrics.get(rule.metric)
            if not points:
                return f"{NO_VALUE} {rule.metric} in the last {FRESH.seconds // 60} min", None
            out = []
            for labels, value in points:
                if rule.matches(labels):
                    values = {**labels, **base, "labels": labels, "value": value,
                              "metric": rule.metric, "op": rule.op, "threshold": rule.value,
                              "for": rule.for_text}  # fmt: skip
                    out.append(Seen(labels, rule.holds(value), value, values))
            return None, out
        try:
            rows, more = run_sql(self.conn, rule.sql)
        except SqlRuleError as exc:
            return str(exc), None
        out, error = [], None
        for row in rows:
            if "key" not in row:
                return "its rows need a `key` column (one alert per key)", None
            values = {k: _plain(v) for k, v in list(row.items())[:MAX_COLUMNS]}
            labels = {"key": sql_key(row["key"])}
            out.append(Seen(labels, True, _number(row.get("value")),
                            {**values, **base, "labels": labels}))  # fmt: skip
        if more:
            error = f"returned more than {SQL_MAX_ROWS} rows; the first {SQL_MAX_ROWS} count"
        return error, out

    # transitions ---------------------------------------------------------------------------

    def _apply(self, rule: rules.Rule, seen: list[Seen]) -> None:
        moves: list[tuple[Seen, Row | None, str, str]] = []
        keys = set()
        for s in seen:
            key = labels_key(s.labels)
            if key in keys:
                continue
            keys.add(key)
            moves += self._step(rule, s, self.open.get((rule.name, key)))
        for key, row in self.open_by_rule.get(rule.name, {}).items():
            if key not in keys:
                gone = Seen(row["labels"], False, None, {"rule": rule.name, **row["labels"]})
                note = GONE if rule.kind == "threshold" else ""
                moves += self._step(rule, gone, row, note)
        if not moves:
            return
        # The rule's transitions in one transaction (an alert storm is one commit); if
        # one of them fails, each again in its own, so the others are still stored.
        done = (self.out.transitions, self.out.queued, dict(self.last_sent))
        try:
            with self.conn.transaction():
                for s, was, new, note in moves:
                    self._move(rule, s, was, new, note)
            return
        except (psycopg.Error, ValueError):
            self.out.transitions, self.out.queued, self.last_sent = done
        for s, was, new, note in moves:
            try:
                with self.conn.transaction():
                    self._move(rule, s, was, new, note)
            except (psycopg.Error, ValueError) as exc:
                self.out.errors.append(
                    f"rule {rule.name} {s.labels}: could not record {new}: {exc}"
                )
                log.exception("rule %s: could not record %s", rule.name, new)

    def _step(
        self, rule: rules.Rule, s: Seen, row: Row | None, note: str = ""
    ) -> list[tuple[Seen, Row | None, str, str]]:
        """The instance's move now, if any (an alert staying put keeps its newest value)."""
        o = None if row is None else rules.Open(row["id"], row["state"], row["since"])
        new = rules.step(o, s.holds, self.now, rule.for_s)
        if new is None:
            value = _micros(s.value)
            if row is not None and value is not None and value != row["value_micros"]:
                self.values.append((row["id"], value))
            if row is not None and row["state"] == "FIRING" and not row["notified"]:
                # held back by a silence or the cooldown: sent once neither holds it
                key = (rule.name, labels_key(s.labels))
                last = self.last_sent.get(key)
                if silenced_until(self.silences, rule.name, s.labels) is None and not (
                    last is not None and rules.cooling(last, self.now, rule.cooldown_s)
                ):
                    return [(s, row, "FIRING", "sent now: its silence or cooldown is over")]
            return []
        return [(s, row, new, note)]

    def _move(self, rule: rules.Rule, s: Seen, row: Row | None, new: str, note: str) -> None:
        now, values = self.now, {**s.values, "state": new}
        message, _ = messages.render(rule.message, values)
        if row is None:
            created = self.conn.execute(
                """INSERT INTO alert (rule, labels, severity, state, since, fired_at,
                                      value_micros, message, updated_at)
                   VALUES (%(r)s, %(l)s, %(sev)s, %(st)s, %(now)s, %(fired)s, %(v)s, %(m)s,
                           %(now)s) RETURNING *""",
                {"r": rule.name, "l": Jsonb(s.labels), "sev": rule.severity, "st": new,
                 "now": now, "fired": now if new == "FIRING" else None,
                 "v": _micros(s.value), "m": message},
            ).fetchone()  # fmt: skip
            assert created is not None
            alert, before = created, None
        else:
            alert, before = row, row["state"]
        notes = [note] if note else []
        notify = False
        if new == "FIRING":
            until = silenced_until(self.silences, rule.name, s.labels)
            last = self.last_sent.get((rule.name, labels_key(s.labels)))
            if until is not None:
                notes.append(f"silenced until {until.isoformat(timespec='seconds')}")
            elif last is not None and rules.cooling(last, now, rule.cooldown_s):
                notes.append(f"cooldown: last sent {last.isoformat(timespec='seconds')}")
            else:
                notify = True
                self.last_sent[(rule.name, labels_key(s.labels))] = now
            resent = before == "FIRING"  # held back earlier: its automation ran then
            action_note, audit_id = ("", None) if resent else self._act(rule, s.labels, alert["id"])
            if action_note:
                notes.append(action_note)
            self.conn.execute(
                """UPDATE alert SET state = 'FIRING', fired_at = %(now)s, notified = %(n)s,
                       action_audit_id = coalesce(%(a)s, action_audit_id), message = %(m)s,
                       value_micros = coalesce(%(v)s, value_micros), updated_at = %(now)s
                   WHERE id = %(id)s""",
                {"now": now, "n": notify, "a": audit_id, "m": message,
                 "v": _micros(s.value), "id": alert["id"]},
            )  # fmt: skip
        elif new == "RESOLVED":
            if alert["action_audit_id"] is not None and rule.action and rule.action.revert_when_ok:
                if note == GONE:  # e.g. REMOVED drops the leader's series: not "ok"
                    notes.append("the mode is left as it is: with no value, the condition "
                                 "is not known to be over")  # fmt: skip
                else:
                    notes.append(self._revert(rule, alert["action_audit_id"]))
            notify = bool(alert["notified"]) and (
                silenced_until(self.silences, rule.name, s.labels) is None
            )
            self.conn.execute(
                """UPDATE alert SET state = 'RESOLVED', resolved_at = %(now)s,
                       updated_at = %(now)s WHERE id = %(id)s""",
                {"now": now, "id": alert["id"]},
            )
        text = "; ".join(notes) or None
        t = self.conn.execute(
            """INSERT INTO alert_transition (alert_id, at, from_state, to_state, value_micros, note)
               VALUES (%(a)s, %(now)s, %(f)s, %(t)s, %(v)s, %(note)s) RETURNING id""",
            {"a": alert["id"], "now": now, "f": before, "t": new, "v": _micros(s.value),
             "note": text},
        ).fetchone()  # fmt: skip
        assert t is not None
        self.out.transitions += 1
        if notify:
            body = message if text is None else f"{message}\n[{text}]"
            self._enqueue(rule, s, alert["id"], int(t["id"]), new, body)

    def _act(self, rule: rules.Rule, labels: dict[str, str], alert_id: int) -> tuple[str, Any]:
        """Runs the rule's automation for a FIRING: (a note, the audit row's id or None)."""
        action = rule.action
        if action is None:
            return "", None
        user = labels.get("user", "")
        if not user.isdigit():
            return f"action set_mode {action.set_mode}: no leader (no `user` label)", None
        if action.dry_run:
            row = self.conn.execute(
                "SELECT copy_mode FROM followed_user WHERE id = %(id)s", {"id": int(user)}
            ).fetchone()
            was = "?" if row is None else row["copy_mode"]
            return f"dry run: would set leader {user}'s mode {was} → {action.set_mode}", None
        by = writes.By(f"rule:{rule.name}", f"alert-{alert_id}")
        try:
            done = writes.update_user(self.conn, by, int(user), {"copy_mode": action.set_mode})
        except writes.WriteError as exc:
            return f"action set_mode {action.set_mode} on leader {user} failed: {exc}", None
        return (
            f"set leader {user}'s mode → {action.set_mode} (audit {done['audit_id']}; "
            f"revert it like any write)",
            done["audit_id"],
        )

    def _revert(self, rule: rules.Rule, audit_id: int) -> str:
        by = writes.By(f"rule:{rule.name}", f"revert-{audit_id}")
        try:
            done = writes.revert(self.conn, by, audit_id)
        except writes.Conflict:
            return f"the mode was changed since audit {audit_id}: left as it is"
        except writes.WriteError as exc:
            return f"could not restore the mode of audit {audit_id}: {exc}"
        return f"restored the earlier mode (audit {done['audit_id']})"

    def _enqueue(
        self, rule: rules.Rule, s: Seen, alert_id: int, transition_id: int, state: str, text: str
    ) -> None:
        for channel in rule.channels:
            mid = outbox.message_id(alert_id, transition_id, channel)
            body = outbox.payload(
                message_id=mid,
                rule=rule.name,
                severity=rule.severity,
                state=state,
                labels=s.labels,
                value=s.value,
                message=text,
                at=self.now,
            )
            new = outbox.enqueue(
                self.conn, message_id=mid, channel=channel, alert_id=alert_id, payload=body,
                now=self.now,
            )  # fmt: skip
            self.out.queued += int(new)

    # bookkeeping ---------------------------------------------------------------------------

    def _retire(self) -> None:
        """Open alerts of rules no longer in the file resolve (no notification: their
        channels may be gone with them)."""
        names = {r.name for r in self.ruleset.rules}
        kept = names | self.ruleset.failed  # a rule with an error is not a rule removed
        for (name, _), row in self.open.items():
            if name in kept:
                continue
            with self.conn.transaction():
                self.conn.execute(
                    "UPDATE alert SET state = 'RESOLVED', resolved_at = %(now)s,"
                    " updated_at = %(now)s WHERE id = %(id)s",
                    {"now": self.now, "id": row["id"]},
                )
                self.conn.execute(
                    "INSERT INTO alert_transition (alert_id, at, from_state, to_state, note)"
                    " VALUES (%(a)s, %(now)s, %(f)s, 'RESOLVED', 'its rule was removed')",
                    {"a": row["id"], "now": self.now, "f": row["state"]},
                )
            self.out.transitions += 1
        self.conn.execute(
            "DELETE FROM alert_rule_eval WHERE kind <> 'file' AND NOT rule = ANY(%(n)s)",
            {"n": list(kept)},
        )

    def _record(
        self,
        rule: rules.Rule,
        error: str | None,
        seen: list[Seen] | None,
        cpu_s: float,
        ok: bool = False,
    ) -> None:
        """Stores the rule's evaluation; `error` is a note only when `ok`."""
        self.conn.execute(
            """INSERT INTO alert_rule_eval (rule, kind, evaluated_at, ok, error, series, holding,
                                            cpu_micros, definition)
               VALUES (%(r)s, %(k)s, %(now)s, %(ok)s, %(e)s, %(n)s, %(h)s, %(cpu)s, %(d)s)
               ON CONFLICT (rule) DO UPDATE SET kind = EXCLUDED.kind,
                   evaluated_at = EXCLUDED.evaluated_at, ok = EXCLUDED.ok,
                   error = EXCLUDED.error, series = EXCLUDED.series,
                   holding = EXCLUDED.holding, cpu_micros = EXCLUDED.cpu_micros,
                   definition = EXCLUDED.definition""",
            {"r": rule.name, "k": rule.kind, "now": self.now, "ok": ok or error is None,
             "d": Jsonb(rule.definition()),
             "e": None if error is None else error[:ERROR_CHARS],
             "n": len(seen or ()), "h": sum(s.holds for s in seen or ()),
             "cpu": round(cpu_s * 1_000_000)},
        )  # fmt: skip

    def _record_file_errors(self) -> None:
        """rules.yaml's own errors (bad rules, bad channels), one row each, as of now."""
        self.conn.execute("DELETE FROM alert_rule_eval WHERE kind = 'file'")
        for i, e in enumerate(self.ruleset.errors):
            self.conn.execute(
                """INSERT INTO alert_rule_eval (rule, kind, evaluated_at, ok, error)
                   VALUES (%(r)s, 'file', %(now)s, false, %(e)s)""",
                {"r": f"rules.yaml #{i + 1}", "now": self.now, "e": str(e)[:ERROR_CHARS]},
            )


def _micros(value: float | None) -> int | None:
    if value is None:
        return None
    return max(min(round(value * 1_000_000), 2**63 - 1), -(2**63))
