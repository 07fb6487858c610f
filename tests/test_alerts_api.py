"""Alerts through the operator's entry points: `python -m functions.rules --once` runs an
automation, the write API reverts it and silences alerts, and the audit shows each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import TestClient, add_user, api_client, last_audit

from common.runtime import jobs, settings
from common.store import db
from common.store import metrics as metric_store
from functions import rules as rules_job

RULES = """
rules:
  - name: demote
    metric: leader.copies_30d
    op: ">"
    value: 5
    message: "leader {{ user }}: {{ value }} copies"
    action: {set_mode: SELL_ONLY, revert_when_ok: true}
"""


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(db_url, tmp_path) as client:
        yield client


def run_rules(db_url: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCULUS_RULES_PATH", str(path))
    settings.get.cache_clear()
    try:
        assert rules_job.main(["--once", "--database-url", db_url]) == 0
    finally:
        settings.get.cache_clear()


def test_an_automation_is_audited_and_reverted_from_the_api(
    api: TestClient, conn: db.Conn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = add_user(api)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    now = jobs.utcnow()
    metric_store.write(conn, [metric_store.Point("leader.copies_30d", {"user": str(uid)}, 9)], now)
    run_rules(db_url, path, monkeypatch)
    auto = last_audit(conn)
    assert (auto["actor"], auto["action"]) == ("rule:demote", "follow.update")
    assert auto["after"]["copy_mode"] == "SELL_ONLY"
    r = api.post(f"/api/audit/{auto['id']}/revert", json={})
    assert r.status_code == 200, r.text
    undo = last_audit(conn)
    assert (undo["actor"], undo["action"], undo["reverts_audit_id"]) == (
        "admin", "follow.update.revert", auto["id"],
    )  # fmt: skip
    mode = conn.execute("SELECT copy_mode FROM followed_user WHERE id = %s", (uid,)).fetchone()
    assert mode == {"copy_mode": "ACTIVE"}
    # it resolves: revert_when_ok finds the admin already changed the mode, and leaves it
    metric_store.write(conn, [metric_store.Point("leader.copies_30d", {"user": str(uid)}, 1)], now)
    run_rules(db_url, path, monkeypatch)
    assert last_audit(conn)["id"] == undo["id"]
    note = conn.execute("SELECT note FROM alert_transition ORDER BY id DESC LIMIT 1").fetchone()
    assert note is not None and "changed since" in note["note"]
    sent = conn.execute("SELECT payload FROM notification ORDER BY id").fetchall()
    assert [p["payload"]["state"] for p in sent] == ["FIRING", "RESOLVED"]
    assert "set leader" in sent[0]["payload"]["message"]


def test_silence_from_the_api_is_audited_and_lifted(api: TestClient, conn: db.Conn) -> None:
    r = api.post(
        "/api/alerts/silence",
        json={"rule": "demote", "labels": {"user": "1"}, "minutes": 60, "reason": "on it"},
    )
    assert r.status_code == 200, r.text
    a = last_audit(conn)
    assert (a["action"], a["target_type"], a["actor"]) == (
        "alert.silence",
        "alert_silence",
        "admin",
    )
    row = conn.execute("SELECT * FROM alert_silence").fetchone()
    assert row is not None and row["reason"] == "on it" and row["labels"] == {"user": "1"}
    assert api.post(f"/api/audit/{a['id']}/revert", json={}).status_code == 200
    assert conn.execute("SELECT count(*) AS n FROM alert_silence").fetchone() == {"n": 0}
    again = api.post("/api/alerts/silence", json={"rule": "demote", "minutes": 30}).json()
    lift = api.post("/api/alerts/silence", json={"rule": "demote", "minutes": 0})
    assert lift.status_code == 200 and lift.json()["until"] is None
    assert conn.execute("SELECT count(*) AS n FROM alert_silence").fetchone() == {"n": 0}
    assert last_audit(conn)["before"]["until"] == again["until"]


@pytest.mark.parametrize(
    "body",
    [
        {"rule": "Bad Name", "minutes": 10},
        {"rule": "demote", "minutes": -1},
        {"rule": "demote", "minutes": 60 * 24 * 31},
        {"rule": "demote", "minutes": 10, "labels": {"k" * 65: "v"}},
        {"rule": "demote", "minutes": 10, "extra": 1},
        {"rule": "demote"},
    ],
)
def test_a_bad_silence_is_refused(api: TestClient, conn: db.Conn, body: dict[str, object]) -> None:
    r = api.post("/api/alerts/silence", json=body)
    assert r.status_code == 422, r.text
    assert conn.execute("SELECT count(*) AS n FROM alert_silence").fetchone() == {"n": 0}
