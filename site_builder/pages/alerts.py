"""The Alerts page (SPEC §11): what is firing (or pending) now, with a silence button;
the silences in force; every rule of rules.yaml with its last evaluation and the file's
own errors; the history of transitions; and every delivery attempt of the outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.domain import rules
from common.runtime import settings
from common.store import db, metrics
from site_builder.pages import common

Row = dict[str, Any]
HISTORY = 200  # transitions shown
DELIVERIES = 200  # attempts shown
SILENCE_CHOICES = ((60, "1 h"), (240, "4 h"), (1440, "24 h"), (10080, "7 d"))


@dataclass(frozen=True)
class RuleView:
    rule: rules.Rule
    condition: str  # "listener.connected < 1 for 2m" / the SQL's schedule
    cooldown: str  # "10m"
    last: Row | None  # alert_rule_eval


@dataclass(frozen=True)
class AlertsContext:
    frame: common.Frame
    open: list[Row]  # PENDING and FIRING, worst first
    silences: list[Row]
    rules: list[RuleView]
    file_errors: list[Row]
    orphans: list[Row]  # evaluations of rules no longer in the file (until the next run)
    history: list[Row]
    deliveries: list[Row]
    outbox: Row  # counts by status
    rules_path: str
    silence_choices: tuple[tuple[int, str], ...] = SILENCE_CHOICES


_OPEN = """
SELECT a.*, s.until AS silenced_until FROM alert a
LEFT JOIN LATERAL (SELECT max(until) AS until FROM alert_silence s
                   WHERE s.rule = a.rule AND a.labels @> s.labels AND s.until > %(now)s) s ON true
WHERE a.state <> 'RESOLVED'
ORDER BY array_position(ARRAY['critical', 'error', 'warn', 'info'], a.severity), a.since
"""
_HISTORY = """
SELECT t.*, a.rule, a.labels, a.severity FROM alert_transition t JOIN alert a ON a.id = t.alert_id
ORDER BY t.id DESC LIMIT %(n)s
"""
_DELIVERIES = """
SELECT t.*, n.message_id, n.status AS outbox_status, n.payload ->> 'rule' AS rule,
       n.payload ->> 'state' AS state
FROM notification_attempt t JOIN notification n ON n.id = t.notification_id
ORDER BY t.id DESC LIMIT %(n)s
"""
_OUTBOX = """
SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,
       count(*) FILTER (WHERE status = 'SENT') AS sent,
       count(*) FILTER (WHERE status = 'DEAD') AS dead,
       min(next_at) FILTER (WHERE status = 'PENDING') AS next_at
FROM notification
"""


def labels_text(labels: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "–"


def duration_text(seconds: int) -> str:
    """600 → "10m", 3600 → "1h", 90 → "90s", 0 → "none"."""
    if seconds == 0:
        return "none"
    for unit, n in (("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def shown_path(path: Path) -> str:
    """The rules file as the page names it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(settings.ROOT))
    except ValueError:
        return str(path)


def _condition(r: rules.Rule) -> str:
    if r.kind == "sql":
        return f"SQL, schedule {r.schedule}"
    match = f"{{{labels_text(r.labels)}}}" if r.labels else ""
    return f"{r.metric}{match} {r.op} {r.value:g}" + (f" for {r.for_text}" if r.for_s else "")


def load_rules(path: Path) -> rules.RuleSet:
    """The rule set as the file says now (the rules job's last run may be up to a minute
    older); an unreadable file: none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return rules.EMPTY
    return rules.parse(text, metrics.BY_NAME)


def context(conn: db.Conn, now: datetime, rules_path: Path) -> AlertsContext:
    evals = {r["rule"]: r for r in conn.execute("SELECT * FROM alert_rule_eval ORDER BY rule")}
    ruleset = load_rules(rules_path)
    views = [
        RuleView(r, _condition(r), duration_text(r.cooldown_s), evals.get(r.name))
        for r in ruleset.rules
    ]
    named = {r.name for r in ruleset.rules}
    return AlertsContext(
        frame=common.frame(conn, now),
        open=conn.execute(_OPEN, {"now": now}).fetchall(),
        silences=conn.execute(
            "SELECT * FROM alert_silence WHERE until > %(now)s ORDER BY until", {"now": now}
        ).fetchall(),
        rules=views,
        file_errors=[e for e in evals.values() if e["kind"] == "file"],
        orphans=[e for e in evals.values() if e["kind"] != "file" and e["rule"] not in named],
        history=conn.execute(_HISTORY, {"n": HISTORY}).fetchall(),
        deliveries=conn.execute(_DELIVERIES, {"n": DELIVERIES}).fetchall(),
        outbox=conn.execute(_OUTBOX).fetchone() or {},
        rules_path=shown_path(rules_path),
    )


def silence_body(rule: str, labels: dict[str, Any], minutes: int | None = None) -> str:
    """The fixed part of a silence form's body (JSON, for data-fixed); minutes 0 lifts."""
    body: dict[str, Any] = {"rule": rule, "labels": labels}
    if minutes is not None:
        body["minutes"] = minutes
    return json.dumps(body, sort_keys=True)
