""" "Test config": the API queues a proposal, `functions.config_test` runs the what-if
and keeps the report; a proposal that cannot run is FAILED, crashed runs are retried."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb
from test_api import WALLET, TestClient, add_user, api_client, last_audit

from common.runtime import jobs, settings
from common.store import db
from functions import config_test

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(db_url, tmp_path) as client:
        yield client


def context(now: datetime = NOW) -> jobs.Context:
    return jobs.Context(args=argparse.Namespace(), settings=settings.Settings(), clock=lambda: now)


def rows(conn: db.Conn) -> list[dict[str, object]]:
    return conn.execute(
        "SELECT id, state, attempts, report, error, started_at, finished_at FROM config_test"
        " ORDER BY id"
    ).fetchall()


def test_queued_proposal_is_run_and_reported(api: TestClient, conn: db.Conn) -> None:
    user = add_user(api, WALLET)
    proposal = {
        "global": {"max_spread_micros": 30_000},
        "users": {str(user): {"copy_pct_bps": 200, "max_spread_micros": None}},
        "hours": 6,
    }
    r = api.post("/api/config/test", json=proposal, headers={"X-Request-Id": "t-1"})
    assert r.status_code == 202, r.text
    test_id = r.json()["id"]
    assert r.json()["page"] == f"/config-test/{test_id}.html"
    stored = conn.execute("SELECT * FROM config_test").fetchone()
    assert stored is not None
    assert stored["proposal"] == {
        "global": {"max_spread_micros": 30_000},
        "users": {str(user): {"copy_pct_bps": 200, "max_spread_micros": None}},
    }
    assert (stored["state"], stored["hours"], stored["requested_by"]) == ("PENDING", 6, "admin")
    assert (last_audit(conn)["action"], last_audit(conn)["request_id"]) == ("config.test", "t-1")
    assert api.get(f"/api/config/test/{test_id}").json()["state"] == "PENDING"

    ctx = context()
    assert config_test.run_once(conn, ctx) == 1
    assert ctx.counts == {"done": 1}
    done = api.get(f"/api/config/test/{test_id}").json()
    assert done["state"] == "DONE" and done["error"] is None and done["hours"] == 6
    assert set(done["report"]["scopes"]) == {"EXEC_USER", "EXEC_GLOBAL"}
    assert done["report"]["end"] == NOW.isoformat()
    assert done["report"]["start"] == (NOW - timedelta(hours=6)).isoformat()

    before = rows(conn)
    assert config_test.run_once(conn, context()) == 0  # nothing pending: a no-op
    assert rows(conn) == before
    assert api.get("/api/config/test/999").status_code == 404


def test_a_proposal_that_fails_is_kept_with_its_error(conn: db.Conn) -> None:
    for proposal in ({"global": {"no_such_field": 1}}, {"users": {"x": {}}}, ["not", "a", "dict"]):
        conn.execute(
            "INSERT INTO config_test (requested_by, proposal) VALUES ('t', %(p)s)",
            {"p": Jsonb(proposal)},
        )
    conn.execute(
        "INSERT INTO config_test (requested_by, proposal) VALUES ('t', %(p)s)",
        {"p": Jsonb({"global": {}})},
    )
    ctx = context()
    assert config_test.run_once(conn, ctx) == 4
    assert ctx.counts == {"failed": 3, "done": 1}
    states = rows(conn)
    assert [r["state"] for r in states] == ["FAILED", "FAILED", "FAILED", "DONE"]
    assert "no_such_field" in str(states[0]["error"])
    assert all(r["finished_at"] == NOW for r in states)
    assert config_test.run_once(conn, context()) == 0


def test_crashed_runs_are_queued_again_then_given_up(conn: db.Conn) -> None:
    for attempts, started in (
        (1, NOW - timedelta(minutes=11)),
        (3, NOW - timedelta(minutes=11)),
        (1, NOW - timedelta(minutes=5)),
    ):
        conn.execute(
            "INSERT INTO config_test (requested_by, proposal, state, attempts, started_at)"
            " VALUES ('t', '{\"global\": {}, \"users\": {}}', 'RUNNING', %(a)s, %(s)s)",
            {"a": attempts, "s": started},
        )
    ctx = context()
    assert config_test.run_once(conn, ctx) == 1
    assert ctx.counts == {"requeued": 2, "done": 1}
    stale, gave_up, running = rows(conn)
    assert (stale["state"], stale["attempts"]) == ("DONE", 2)
    assert gave_up["state"] == "FAILED" and "gave up" in str(gave_up["error"])
    assert running["state"] == "RUNNING"  # another runner may still be on it


def test_runs_from_the_command_line(api: TestClient, conn: db.Conn, db_url: str) -> None:
    test_id = api.post("/api/config/test", json={}).json()["id"]
    assert config_test.main(["--once", "--database-url", db_url]) == 0
    assert api.get(f"/api/config/test/{test_id}").json()["state"] == "DONE"
    assert config_test.main(["--once", "--database-url", db_url]) == 0
    runs = conn.execute(
        "SELECT items FROM job_run WHERE job = 'config_test' ORDER BY id"
    ).fetchall()
    assert [r["items"] for r in runs] == [1, 0]
