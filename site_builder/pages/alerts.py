"""The Alerts page (SPEC §11): what is firing (or pending) now, with a silence button;
the silences in force; every rule with its last evaluation (as the rules job evaluated
it: `alert_rule_eval`, with the rule's definition) and rules.yaml's own errors; the
history of transitions; and every delivery attempt of the outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.runtime import settings
from common.store import db
from site_builder.pages import common

Row = dict[str, Any]
HISTORY = 200  # transitions shown
DELIVERIES = 200  # attempts shown
SILENCE_CHOICES = ((60, "1 h"), (240, "4 h"), (1440, "24 h"), (10080, "7 d"))


@dataclass(frozen=True)
class AlertsContext:
    frame: common.Frame
    open: list[Row]  # PENDING and FIRING, worst first
    silences: list[Row]
    rules: list[Row]  # alert_rule_eval rows (with `definition` and `cooldown`), file order
    file_errors: list[Row]
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


def context(conn: db.Conn, now: datetime, rules_path: Path) -> AlertsContext:
    evals = conn.execute("SELECT * FROM alert_rule_eval ORDER BY rule").fetchall()
    rules = [
        {**e, "cooldown": duration_text((e["definition"] or {}).get("cooldown_s", 0))}
        for e in evals
        if e["kind"] != "file"
    ]
    rules.sort(key=lambda e: ((e["definition"] or {}).get("line", 0), e["rule"]))
    return AlertsContext(
        frame=common.frame(conn, now),
        open=conn.execute(_OPEN, {"now": now}).fetchall(),
        silences=conn.execute(
            "SELECT * FROM alert_silence WHERE until > %(now)s ORDER BY until", {"now": now}
        ).fetchall(),
        rules=rules,
        file_errors=[e for e in evals if e["kind"] == "file"],
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
