"""rules.yaml and the alert lifecycle (SPEC §11): parsing with each error's line, the
`--check` command, PENDING → FIRING → RESOLVED with every transition stored, cooldown,
silences (audited, revertible), SQL rules under the SELECT-only role (writes refused,
5 s timeout, 1,000 rows), template failures, automations and the hot reload."""

from __future__ import annotations

import argparse
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.domain import delivery, rules
from common.runtime import jobs, messages, settings
from common.store import alerts, db, users, writes
from common.store import metrics as metric_store
from functions import rules as rules_job

T0 = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
WALLET = "0x" + "ab" * 20


def parse(text: str) -> rules.RuleSet:
    return rules.parse(textwrap.dedent(text), metric_store.BY_NAME)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def point(conn: db.Conn, name: str, value: float, when: datetime, **labels: str) -> None:
    metric_store.write(conn, [metric_store.Point(name, labels, value)], when)


def evaluate(conn: db.Conn, rs: rules.RuleSet, now: datetime) -> alerts.Outcome:
    return alerts.Evaluator(conn, rs, now).run(alerts.series(conn, now))


def transitions(conn: db.Conn, rule: str) -> list[tuple[str | None, str, str | None]]:
    rows = conn.execute(
        "SELECT t.from_state, t.to_state, t.note FROM alert_transition t"
        " JOIN alert a ON a.id = t.alert_id WHERE a.rule = %s ORDER BY t.id",
        (rule,),
    )
    return [(r["from_state"], r["to_state"], r["note"]) for r in rows]


def outbox(conn: db.Conn) -> list[dict[str, Any]]:
    return [
        r["payload"]
        for r in conn.execute("SELECT payload FROM notification ORDER BY id").fetchall()
    ]


LISTENER = """
channels:
  ops: {type: webhook, url: "http://127.0.0.1:9/hook", secret_env: OCULUS_HOOK_SECRET}
rules:
  - name: listener_down
    metric: listener.connected
    op: "<"
    value: 1
    for: 2m
    cooldown: 10m
    severity: critical
    message: "listener down for {{ for }} ({{ value }})"
    channels: [log, ops]
"""


# --- parsing -----------------------------------------------------------------------------


def test_the_shipped_rules_file_is_sound() -> None:
    loaded = rules_job.check(settings.ROOT / "rules.yaml")
    assert loaded.errors == ()
    names = {r.name for r in loaded.ruleset.rules}
    assert {"listener_down", "job_failing", "detect_lag_high", "low_retention"} <= names
    low = next(r for r in loaded.ruleset.rules if r.name == "low_retention")
    assert low.action == rules.Action("BUY_ONLY", dry_run=True, revert_when_ok=True)


def test_each_bad_rule_is_reported_with_its_line_and_the_others_stand() -> None:
    rs = parse(
        """\
        channels:
          ops: {type: webhook}
          team: {type: slack, webhook_url_env: OCULUS_SLACK}
        rules:
          - name: good
            metric: listener.connected
            op: "<"
            value: 1
          - name: Bad-Name
            metric: listener.connected
          - name: typo
            metric: listener.connected
            op: "<"
            value: 1
            fro: 2m
          - name: nometric
            metric: no.such_metric
            op: ">"
            value: 1
          - name: badop
            metric: listener.connected
            op: "=>"
            value: 1
          - name: good
            metric: listener.connected
            op: ">"
            value: 1
          - name: sqlbad
            sql: "select 1 as key"
            schedule: "*/5 * * *"
          - name: nochan
            metric: listener.connected
            op: "<"
            value: 1
            channels: [pager]
          - name: team_sql
            sql: "select 'x' as key"
            schedule: "* * * * * 0"
            channels: [team]
        """
    )
    assert [r.name for r in rs.rules] == ["good", "team_sql"]
    got = {e.line: str(e) for e in rs.errors}
    assert "needs exactly one of url, webhook_url_env" in got[2]
    assert "must match" in got[9]
    assert "unknown key(s) fro" in got[15]
    assert "unknown metric 'no.such_metric'" in got[17]
    assert "op must be one of" in got[22]
    assert "already defined on line 5" in got[24]
    assert "six cron fields" in got[30]
    assert "no channel 'pager'" in got[35]
    assert len(rs.errors) == 8 and not rs.broken


def test_a_file_that_is_not_yaml_is_one_error_with_its_line() -> None:
    rs = parse("rules:\n  - name: a\n    metric: [unclosed\n")
    assert rs.broken and rs.rules == ()
    assert rs.errors[0].line >= 3 and "not YAML" in str(rs.errors[0])
    assert parse("- just\n- a list\n").broken


def test_durations() -> None:
    assert [rules.duration(v) for v in (0, 90, "90s", "2m", "1h", "15")] == [
        0, 90, 90, 120, 3600, 15,
    ]  # fmt: skip
    for bad in ("2 minutes", "-1", True, "1d", 1.5):
        with pytest.raises(ValueError):
            rules.duration(bad)


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(LISTENER)
    assert rules_job.main(["--check", str(good)]) == 0
    assert "line 3: warning: channel 'ops': environment variable OCULUS_HOOK_SECRET" in (
        capsys.readouterr().err
    )  # a warning: the secret may be set where the scheduler runs
    bad = tmp_path / "bad.yaml"
    bad.write_text(LISTENER.replace('op: "<"', 'op: "<<"') + "  - name: t\n    metric: x\n")
    assert rules_job.main(["--check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 7: rule 'listener_down': op must be one of" in err
    assert "line 15" in err
    assert rules_job.main(["--check", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


# --- the lifecycle -----------------------------------------------------------------------


def test_pending_firing_resolved_with_every_transition_and_notification(conn: db.Conn) -> None:
    rs = parse(LISTENER)
    point(conn, "listener.connected", 0, at(0))
    out = evaluate(conn, rs, at(0))
    assert (out.transitions, out.queued) == (1, 0)
    point(conn, "listener.connected", 0, at(1))
    assert evaluate(conn, rs, at(1)).transitions == 0  # pending, not yet 2 minutes
    point(conn, "listener.connected", 0, at(2))
    out = evaluate(conn, rs, at(2))
    assert (out.transitions, out.queued) == (1, 2)  # FIRING, to log and ops
    fired = outbox(conn)
    assert {p["state"] for p in fired} == {"FIRING"}
    assert fired[0]["message"] == "listener down for 2m (0.0)"
    assert fired[0]["id"] != fired[1]["id"]  # one per channel, each stable
    assert set(fired[0]) == {"id", "rule", "severity", "state", "labels", "value", "message", "at"}
    assert fired[0]["at"] == delivery.iso_utc(at(2))
    point(conn, "listener.connected", 1, at(3))
    out = evaluate(conn, rs, at(3))
    assert (out.transitions, out.queued) == (1, 2)
    assert [p["state"] for p in outbox(conn)[2:]] == ["RESOLVED", "RESOLVED"]
    assert transitions(conn, "listener_down") == [
        (None, "PENDING", None),
        ("PENDING", "FIRING", None),
        ("FIRING", "RESOLVED", None),
    ]
    a = conn.execute("SELECT * FROM alert").fetchone()
    assert a is not None and a["state"] == "RESOLVED" and a["notified"]
    ev = alerts.last_evaluations(conn)["listener_down"]
    assert ev["ok"] and ev["series"] == 1 and ev["holding"] == 0


def test_a_condition_that_clears_before_its_for_resolves_without_a_word(conn: db.Conn) -> None:
    rs = parse(LISTENER)
    point(conn, "listener.connected", 0, at(0))
    evaluate(conn, rs, at(0))
    point(conn, "listener.connected", 1, at(1))
    evaluate(conn, rs, at(1))
    assert transitions(conn, "listener_down") == [
        (None, "PENDING", None),
        ("PENDING", "RESOLVED", None),
    ]
    assert outbox(conn) == []


def test_cooldown_holds_back_a_refire_but_stores_it(conn: db.Conn) -> None:
    rs = parse(LISTENER.replace("for: 2m", "for: 0"))
    for minute, value in enumerate((0, 1, 0, 1)):  # fire, resolve, fire again 2 min later
        point(conn, "listener.connected", value, at(minute))
        evaluate(conn, rs, at(minute))
    states = [p["state"] for p in outbox(conn)]
    assert states == ["FIRING", "FIRING", "RESOLVED", "RESOLVED"]  # the refire: none
    notes = transitions(conn, "listener_down")
    assert notes[2][:2] == ("RESOLVED", "FIRING") or notes[2][:2] == (None, "FIRING")
    assert notes[2][2] is not None and notes[2][2].startswith("cooldown: last sent")
    assert notes[3] == ("FIRING", "RESOLVED", None)
    point(conn, "listener.connected", 0, at(13))  # past the cooldown: sent again
    evaluate(conn, rs, at(13))
    assert [p["state"] for p in outbox(conn)][-2:] == ["FIRING", "FIRING"]


def test_no_fresh_value_leaves_alerts_as_they_are(conn: db.Conn) -> None:
    rs = parse(LISTENER.replace("for: 2m", "for: 0"))
    point(conn, "listener.connected", 0, at(0))
    evaluate(conn, rs, at(0))
    out = evaluate(conn, rs, at(10))  # the metrics job stopped: no point for 10 minutes
    assert out.transitions == 0 and out.errors == []  # no data is not an error ...
    ev = alerts.last_evaluations(conn)["listener_down"]
    assert ev["ok"] and "no value of listener.connected" in ev["error"]  # ... but said
    assert conn.execute("SELECT state FROM alert").fetchone() == {"state": "FIRING"}


def test_label_match_and_series_that_go_away(conn: db.Conn) -> None:
    rs = parse(
        """\
        rules:
          - name: lag
            metric: detect.lag_p95_s
            labels: {source: CHAIN}
            op: ">"
            value: 10
            message: "{{ source }} lag {{ value }}"
        """
    )
    point(conn, "detect.lag_p95_s", 30, at(0), source="CHAIN")
    point(conn, "detect.lag_p95_s", 30, at(0), source="DATA_API")
    evaluate(conn, rs, at(0))
    assert [p["message"] for p in outbox(conn)] == ["CHAIN lag 30.0"]
    point(conn, "detect.lag_p95_s", 30, at(1), source="DATA_API")  # CHAIN: no fills now
    evaluate(conn, rs, at(1))  # its last value still counts for alerts.FRESH
    assert transitions(conn, "lag")[-1] == (None, "FIRING", None)
    point(conn, "detect.lag_p95_s", 30, at(4), source="DATA_API")
    evaluate(conn, rs, at(4))
    assert transitions(conn, "lag")[-1] == ("FIRING", "RESOLVED", "its series is gone")


def test_silence_is_audited_and_revertible(conn: db.Conn) -> None:
    rs = parse(LISTENER.replace("for: 2m", "for: 0").replace("cooldown: 10m", "cooldown: 0"))
    by = writes.By("admin", "req-1")
    until = jobs.utcnow() + timedelta(hours=1)
    done = writes.silence(conn, by, "listener_down", {}, until, "maintenance")
    now = jobs.utcnow()
    point(conn, "listener.connected", 0, now)
    evaluate(conn, rs, now)
    assert outbox(conn) == []
    note = transitions(conn, "listener_down")[0][2]
    assert note is not None and note.startswith("silenced until")
    audit = conn.execute("SELECT * FROM audit_log WHERE id = %s", (done["audit_id"],)).fetchone()
    assert audit is not None and audit["action"] == "alert.silence"
    assert audit["before"]["until"] is None and audit["after"]["reason"] == "maintenance"
    # reverted like any write: the silence is gone, the next fire is sent
    writes.revert(conn, by, done["audit_id"])
    assert conn.execute("SELECT count(*) AS n FROM alert_silence").fetchone() == {"n": 0}
    point(conn, "listener.connected", 1, now + timedelta(minutes=1))
    evaluate(conn, rs, now + timedelta(minutes=1))
    point(conn, "listener.connected", 0, now + timedelta(minutes=2))
    evaluate(conn, rs, now + timedelta(minutes=2))
    assert [p["state"] for p in outbox(conn)] == ["FIRING", "FIRING"]
    with pytest.raises(writes.WriteError):
        writes.silence(conn, by, "listener_down", {}, jobs.utcnow() - timedelta(minutes=1), None)


# --- SQL rules ---------------------------------------------------------------------------


def sql_rule(name: str, sql: str, message: str = "{{ key }}") -> str:
    return textwrap.dedent(
        f"""\
        - name: {name}
          sql: {sql!r}
          schedule: "* * * * * 0"
          severity: error
          message: {message!r}
        """
    )


def sql_rules(*items: str) -> rules.RuleSet:
    body = "".join(textwrap.indent(i, "  ") for i in items)
    return rules.parse("rules:\n" + body)


def test_sql_rule_rows_fire_and_resolve_by_key(conn: db.Conn) -> None:
    rs = sql_rules(
        sql_rule(
            "modes",
            "select copy_mode as key, count(*) as value from followed_user group by 1",
            "{{ value }} leaders {{ key }}",
        )
    )
    users.add(conn, WALLET, "lead", [], T0)
    evaluate(conn, rs, at(0))
    assert [(p["labels"], p["message"], p["value"]) for p in outbox(conn)] == [
        ({"key": "ACTIVE"}, "1 leaders ACTIVE", 1.0)
    ]
    conn.execute("UPDATE followed_user SET copy_mode = 'PAUSED'")
    evaluate(conn, rs, at(0.25))  # not due again until the next minute's second 0
    assert len(outbox(conn)) == 1
    evaluate(conn, rs, at(1))
    got = {(p["labels"]["key"], p["state"]) for p in outbox(conn)}
    assert got == {("ACTIVE", "FIRING"), ("ACTIVE", "RESOLVED"), ("PAUSED", "FIRING")}


def test_long_sql_keys_sharing_a_beginning_stay_two_alerts(conn: db.Conn) -> None:
    rs = sql_rules(
        sql_rule("long", "select repeat('k', 300) || g::text as key from generate_series(1, 2) g")
    )
    evaluate(conn, rs, at(0))
    keys = [p["labels"]["key"] for p in outbox(conn)]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(len(k) == alerts.KEY_CHARS and k.startswith("k" * 150) for k in keys)
    assert alerts.sql_key("short") == "short"


def test_an_sql_rules_session_advisory_locks_are_released_and_the_jobs_kept(
    conn: db.Conn,
) -> None:
    conn.execute("SELECT pg_advisory_lock(424242)")  # the job's own lock on its connection
    taken = (
        "select 'k' as key, pg_advisory_lock(-1), pg_advisory_lock(5), pg_advisory_lock(5),"
        " pg_advisory_lock_shared(9), pg_advisory_lock(7, 8), pg_advisory_lock(-1, -1),"
        " pg_advisory_lock(-5)"
    )
    rows, _ = alerts.run_sql(conn, taken)
    assert rows[0]["key"] == "k"
    left = conn.execute(
        "SELECT (classid::bigint << 32) | objid::bigint AS k, objsubid FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchall()
    assert [(r["k"], r["objsubid"]) for r in left] == [(424242, 1)]
    conn.execute("SELECT pg_advisory_unlock(424242)")


def test_sql_rules_may_only_read_and_a_bad_one_stops_no_other(conn: db.Conn) -> None:
    users.add(conn, WALLET, "lead", [], T0)
    rs = sql_rules(
        sql_rule(
            "writer",
            "with d as (update followed_user set label = 'x' returning id)"
            " select 'k' as key from d",
        ),
        sql_rule("two", "select 'k' as key; delete from followed_user"),
        sql_rule("fn_write", "select 'k' as key, nextval('alert_id_seq')"),
        sql_rule("nokey", "select 1 as n"),
        sql_rule("many", "select g::text as key from generate_series(1, 1500) g"),
        sql_rule("fine", "select 'ok' as key"),
        sql_rule(
            "who",
            "select current_user as key, current_setting('transaction_read_only')"
            " as ro, current_setting('statement_timeout') as t",
        ),
    )
    out = evaluate(conn, rs, at(0))
    who = conn.execute("SELECT labels, message FROM alert WHERE rule = 'who'").fetchone()
    assert who is not None and who["labels"] == {"key": "oculus_rules_reader"}
    ev = alerts.last_evaluations(conn)
    assert "refused, rules may only read" in ev["writer"]["error"]
    assert "cannot insert multiple commands" in ev["two"]["error"]
    assert "refused" in ev["fn_write"]["error"]
    assert "need a `key` column" in ev["nokey"]["error"]
    assert "more than 1000 rows" in ev["many"]["error"] and ev["many"]["series"] == 1000
    assert ev["fine"]["ok"] and ev["fine"]["holding"] == 1
    assert len(out.errors) == 5
    assert conn.execute("SELECT label FROM followed_user").fetchone() == {"label": "lead"}
    assert conn.execute("SELECT count(*) AS n FROM followed_user").fetchone() == {"n": 1}
    assert {p["rule"] for p in outbox(conn)} == {"many", "fine", "who"}


def test_sql_rule_past_five_seconds_is_cancelled(conn: db.Conn) -> None:
    rs = sql_rules(
        sql_rule("slow", "select 'k' as key, pg_sleep(30)"), sql_rule("fine", "select 'k' as key")
    )
    out = evaluate(conn, rs, at(0))
    ev = alerts.last_evaluations(conn)
    assert "cancelled: it ran past 5 s" in ev["slow"]["error"]
    assert ev["fine"]["ok"] and len(out.errors) == 1


# --- templates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ value | no_such_filter }}",  # does not compile
        "{{ 1 / 0 }}",  # fails as it renders
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the sandbox refuses
        "{{ 'x' * 100000000 }}",  # would take the memory
        "{% for i in range(10**9) %}{% endfor %}",
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{% include 'x' %}",
    ],
)
def test_a_failing_template_still_delivers_the_raw_values(conn: db.Conn, template: str) -> None:
    original = 'message: "listener down for {{ for }} ({{ value }})"'
    rs = parse(LISTENER.replace("for: 2m", "for: 0").replace(original, f"message: {template!r}"))
    point(conn, "listener.connected", 0, at(0))
    evaluate(conn, rs, at(0))
    (sent, _) = outbox(conn)
    assert sent["message"].startswith("listener_down: {")
    assert '"value": 0.0' in sent["message"] and "template" in sent["message"]
    assert len(sent["message"]) <= messages.MAX_CHARS


def test_template_syntax_errors_are_reported_by_check(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(LISTENER.replace("({{ value }})", "({{ value )"))
    loaded = rules_job.check(f)
    assert loaded.ruleset.rules and "template:" in loaded.errors[0]
    assert loaded.errors[0].startswith("line 5: rule 'listener_down'")


# --- automations -------------------------------------------------------------------------

AUTOMATION = """
rules:
  - name: demote
    metric: leader.copies_30d
    op: ">"
    value: 5
    message: "leader {{ user }}"
    action: {{set_mode: BUY_ONLY{flags}}}
"""


def automation(flags: str = "") -> rules.RuleSet:
    return rules.parse(AUTOMATION.format(flags=flags))


def test_automation_writes_through_the_audited_path_and_reverts_when_ok(conn: db.Conn) -> None:
    uid = users.add(conn, WALLET, "lead", [], T0)
    rs = automation(", revert_when_ok: true")
    point(conn, "leader.copies_30d", 9, at(0), user=str(uid))
    evaluate(conn, rs, at(0))
    mode = conn.execute("SELECT copy_mode FROM followed_user").fetchone()
    assert mode == {"copy_mode": "BUY_ONLY"}
    a = conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert a is not None and a["actor"] == "rule:demote" and a["action"] == "follow.update"
    (sent,) = outbox(conn)
    assert f"set leader {uid}'s mode → BUY_ONLY (audit {a['id']}" in sent["message"]
    point(conn, "leader.copies_30d", 1, at(1), user=str(uid))
    evaluate(conn, rs, at(1))
    assert conn.execute("SELECT copy_mode FROM followed_user").fetchone() == {"copy_mode": "ACTIVE"}
    last = conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert last is not None and last["action"] == "follow.update.revert"
    assert last["actor"] == "rule:demote" and last["reverts_audit_id"] == a["id"]
    assert "restored the earlier mode" in outbox(conn)[-1]["message"]


def test_revert_when_ok_leaves_a_mode_someone_changed_since(conn: db.Conn) -> None:
    uid = users.add(conn, WALLET, "lead", [], T0)
    rs = automation(", revert_when_ok: true")
    point(conn, "leader.copies_30d", 9, at(0), user=str(uid))
    evaluate(conn, rs, at(0))
    writes.update_user(conn, writes.By("admin"), uid, {"copy_mode": "PAUSED"})
    point(conn, "leader.copies_30d", 1, at(1), user=str(uid))
    evaluate(conn, rs, at(1))
    assert conn.execute("SELECT copy_mode FROM followed_user").fetchone() == {"copy_mode": "PAUSED"}
    assert "changed since" in (transitions(conn, "demote")[-1][2] or "")


def test_dry_run_records_what_it_would_have_done(conn: db.Conn) -> None:
    uid = users.add(conn, WALLET, "lead", [], T0)
    n = conn.execute("SELECT count(*) AS n FROM audit_log").fetchone()
    point(conn, "leader.copies_30d", 9, at(0), user=str(uid))
    evaluate(conn, automation(", dry_run: true"), at(0))
    assert conn.execute("SELECT copy_mode FROM followed_user").fetchone() == {"copy_mode": "ACTIVE"}
    assert conn.execute("SELECT count(*) AS n FROM audit_log").fetchone() == n
    note = f"dry run: would set leader {uid}'s mode ACTIVE → BUY_ONLY"
    assert transitions(conn, "demote")[0][2] == note
    assert note in outbox(conn)[0]["message"]


# --- the job: hot reload -----------------------------------------------------------------


def test_the_job_reloads_the_file_and_keeps_the_last_good_set(
    conn: db.Conn, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(LISTENER.replace("for: 2m", "for: 0"))
    s = settings.Settings(rules_path=path)
    clock = {"now": jobs.utcnow()}
    ctx = jobs.Context(args=argparse.Namespace(), settings=s, clock=lambda: clock["now"])
    point(conn, "listener.connected", 0, clock["now"])
    assert rules_job.run_once(conn, ctx) == 1
    path.write_text("rules: [unclosed\n")  # broken: the last good set keeps running
    point(conn, "listener.connected", 1, clock["now"])
    assert rules_job.run_once(conn, ctx) == 1  # resolved by the kept rule
    ev = conn.execute("SELECT * FROM alert_rule_eval WHERE kind = 'file'").fetchall()
    assert ev and "not YAML" in ev[0]["error"]
    path.write_text(LISTENER.replace("listener_down", "renamed"))  # fixed, renamed
    assert rules_job.run_once(conn, ctx) == 0
    left = {r["rule"] for r in conn.execute("SELECT rule FROM alert_rule_eval")}
    assert left == {"renamed"}


def test_prune_drops_old_resolved_alerts_and_delivered_messages(conn: db.Conn, db_url: str) -> None:
    from functions import prune

    rs = parse(LISTENER.replace("for: 2m", "for: 0"))
    now = jobs.utcnow()
    old = now - timedelta(days=91)
    for i, when in enumerate((old, old + timedelta(minutes=1), now)):  # fire, resolve, fire
        point(conn, "listener.connected", i % 2, when)
        evaluate(conn, rs, when)
    conn.execute("UPDATE notification SET status = 'SENT' WHERE created_at < %s", (now,))
    settings.get.cache_clear()
    assert prune.main(["--once", "--database-url", db_url]) == 0
    left = conn.execute("SELECT state FROM alert").fetchall()
    assert left == [{"state": "FIRING"}]  # the old, resolved one is gone, the open one stays
    assert conn.execute("SELECT count(*) AS n FROM alert_transition").fetchone() == {"n": 1}
    states = [r["payload"]["state"] for r in conn.execute("SELECT payload FROM notification")]
    assert states == ["FIRING", "FIRING"]  # today's, still pending (log and ops)


def test_one_transition_that_cannot_be_stored_does_not_hold_back_the_others(
    conn: db.Conn,
) -> None:
    rs = parse(
        LISTENER.replace("listener.connected", "detect.lag_p95_s").replace("for: 2m", "for: 0")
    )
    for source in ("CHAIN", "DATA_API"):
        point(conn, "detect.lag_p95_s", 0, at(0), source=source)
    evaluator = alerts.Evaluator(conn, rs, at(0))
    conn.execute(  # another evaluator got there first for CHAIN (after this one looked)
        """INSERT INTO alert (rule, labels, severity, state, since, updated_at)
           VALUES ('listener_down', '{"source": "CHAIN"}', 'critical', 'FIRING', %s, %s)""",
        (at(0), at(0)),
    )
    out = evaluator.run(alerts.series(conn, at(0)))
    assert out.transitions == 1 and len(out.errors) == 1
    assert "CHAIN" in out.errors[0] and "alert_open_key" in out.errors[0]
    assert [p["labels"] for p in outbox(conn)] == [{"source": "DATA_API"}] * 2


def test_each_rule_s_definition_is_stored_with_its_evaluation(conn: db.Conn) -> None:
    rs = parse(LISTENER.replace('op: "<"', 'op: "<"\n    labels: {x: "1"}'))
    point(conn, "listener.connected", 1, at(0), x="1")
    evaluate(conn, rs, at(0))
    d = alerts.last_evaluations(conn)["listener_down"]["definition"]
    assert d == {
        "line": 5,
        "condition": "listener.connected{x=1} < 1 for 2m",
        "severity": "critical",
        "cooldown_s": 600,
        "channels": ["log", "ops"],
        "sql": None,
        "action": None,
    }


@pytest.mark.parametrize(
    "text",
    [
        # a billion laughs: nine lines, 10^9 strings once expanded
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "rules:\n  - name: r\n    metric: listener.connected\n    op: '<'\n    value: 1\n"
        "    labels: {x: *i}\n",
        "rules: " + "[" * 5000 + "]" * 5000 + "\n",  # nested deeper than any stack
    ],
)
def test_hostile_yaml_is_refused_quickly(text: str) -> None:
    started = time.monotonic()
    rs = rules.parse(text, metric_store.BY_NAME)
    assert rs.broken and rs.rules == ()
    assert (
        "aliases" in str(rs.errors[0])
        or "nested" in str(rs.errors[0])
        or ("not YAML" in str(rs.errors[0]))
    )
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("rules:\n  - {name: a, metric: listener.connected, op: ['>'], value: 1}\n",
         "op must be one of"),
        ("channels:\n  ops: {type: [webhook], url: x}\nrules: []\n", "type must be one of"),
        ("rules:\n  - {name: a, metric: listener.connected, op: '<', value: 1, 5: x}\n",
         "unknown key(s) 5"),
        ("rules:\n  - {name: a, metric: listener.connected, op: '<', value: " + "9" * 400
         + "}\n", "value must be a number"),
        ("rules:\n  - {name: a, metric: listener.connected, op: '<', value: 1, "
         "cooldown: 100000000000}\n", "longer than 30 days"),
        ("rules:\n  - {name: a, metric: listener.connected, op: '<', value: 1, for: 9999999h}\n",
         "longer than 30 days"),
    ],
)  # fmt: skip
def test_malformed_values_are_errors_not_crashes(text: str, said: str) -> None:
    rs = rules.parse(text, metric_store.BY_NAME)
    assert rs.rules == () and said in str(rs.errors[0])


def test_a_rule_that_fails_at_run_time_stops_no_other(conn: db.Conn) -> None:
    rs = sql_rules(
        sql_rule("feb31", "select 'k' as key").replace('"* * * * * 0"', '"0 0 31 2 * 0"'),
        sql_rule("fine", "select 'k' as key"),
    )
    assert [r.name for r in rs.rules] == ["feb31", "fine"]  # croniter calls it valid
    out = evaluate(conn, rs, at(0))  # never due: its next tick cannot be found
    out = evaluate(conn, rs, at(1))
    ev = alerts.last_evaluations(conn)
    assert ev["fine"]["ok"] and "failed" in ev["feb31"]["error"] and len(out.errors) == 1


def test_a_template_nested_too_deep_is_a_reported_error() -> None:
    deep = "{{ " + "(" * 100 + "1" + ")" * 100 + " }}"
    assert (messages.check(deep) or "").startswith("template: RecursionError")
    for hostile in ("{{ '%0200000000d' % 1 }}", "{{ 'x'|center(200000000) }}",
                    "{{ ((9**64)**64)**64 }}", "{{ '{:>999999999}'.format(1) }}",
                    "{{ '%0200000000d'|format(1) }}"):  # fmt: skip
        text, error = messages.render(hostile, {"rule": "r"})
        assert error is not None and len(text) < 500, hostile
    assert messages.render("{{ '%.2f' % value }} {{ 'ab'|center(6) }}", {"value": 1.5}) == (
        "1.50   ab  ",
        None,
    )


def test_a_fire_held_back_by_its_cooldown_is_sent_once_the_cooldown_is_over(
    conn: db.Conn,
) -> None:
    rs = parse(LISTENER.replace("for: 2m", "for: 0"))  # cooldown 10m
    for minute, value in enumerate((0, 1, 0)):  # fire, resolve, fire again: held back
        point(conn, "listener.connected", value, at(minute))
        evaluate(conn, rs, at(minute))
    assert [p["state"] for p in outbox(conn)] == ["FIRING", "FIRING", "RESOLVED", "RESOLVED"]
    for minute in range(3, 12):  # still down
        point(conn, "listener.connected", 0, at(minute))
        evaluate(conn, rs, at(minute))
    sent = outbox(conn)[4:]
    assert [p["state"] for p in sent] == ["FIRING", "FIRING"]  # 10 minutes after the first
    assert sent[0]["at"] == delivery.iso_utc(at(10))
    assert transitions(conn, "listener_down")[-1] == (
        "FIRING", "FIRING", "sent now: its silence or cooldown is over",
    )  # fmt: skip


def test_a_rule_with_an_error_keeps_its_alerts_open(conn: db.Conn, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(LISTENER.replace("for: 2m", "for: 0"))
    s = settings.Settings(rules_path=path)
    clock = {"now": jobs.utcnow()}
    ctx = jobs.Context(args=argparse.Namespace(), settings=s, clock=lambda: clock["now"])
    point(conn, "listener.connected", 0, clock["now"])
    rules_job.run_once(conn, ctx)
    path.write_text(LISTENER.replace("for: 2m", "for: 0\n    fro: 1m"))  # a typo in an edit
    rules_job.run_once(conn, ctx)
    assert conn.execute("SELECT state FROM alert").fetchone() == {"state": "FIRING"}
    assert "listener_down" in alerts.last_evaluations(conn)


def test_revert_when_ok_does_not_revert_when_the_series_is_gone(conn: db.Conn) -> None:
    uid = users.add(conn, WALLET, "lead", [], T0)
    other = users.add(conn, "0x" + "cd" * 20, "other", [], T0)
    rs = rules.parse(AUTOMATION.format(flags=", revert_when_ok: true").replace(
        "BUY_ONLY", "REMOVED"))  # fmt: skip
    point(conn, "leader.copies_30d", 9, at(0), user=str(uid))
    evaluate(conn, rs, at(0))
    # REMOVED leaders have no series any more; another leader's keeps the metric fresh
    point(conn, "leader.copies_30d", 1, at(4), user=str(other))
    evaluate(conn, rs, at(4))
    mode = conn.execute("SELECT copy_mode FROM followed_user WHERE id = %s", (uid,)).fetchone()
    assert mode == {"copy_mode": "REMOVED"}
    assert "not known to be over" in (transitions(conn, "demote")[-1][2] or "")
