"""Every audited write can be reverted: the revert re-applies the row's before as a new
audited write, refuses (409) when the state moved on since, unless forced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api import (
    MARKET,
    TestClient,
    add_market,
    add_user,
    api_client,
    audit_count,
    last_audit,
)

from common.store import copy_configs, db, writes


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(db_url, tmp_path) as client:
        yield client


def revert(api: TestClient, audit_id: int, **params: Any) -> httpx.Response:
    return api.post(f"/api/audit/{audit_id}/revert", params=params, json={})


def test_config_change_then_revert_restores_the_old_values(api: TestClient, conn: db.Conn) -> None:
    before = copy_configs.load(conn).base
    r = api.post(
        "/api/config/global",
        json={"max_spread_micros": 30_000, "copy_pct_bps": 500, "allow_partial_fills": False},
    )
    changed = r.json()
    undo = revert(api, changed["audit_id"])
    assert undo.status_code == 200, undo.text
    assert undo.json()["reverted"] == changed["audit_id"]
    after = copy_configs.load(conn).base
    assert writes.effective(after) == writes.effective(before)
    # ... as new versions (3 writes: v1 seed, v2 change, v3 revert), never an UPDATE.
    assert after.guardrail_id not in (before.guardrail_id, changed["guardrail_config_id"])
    g = conn.execute("SELECT version FROM guardrail_config ORDER BY version").fetchall()
    assert [v["version"] for v in g] == [1, 2, 3]
    a = last_audit(conn)
    assert (a["action"], a["reverts_audit_id"]) == ("config.global.revert", changed["audit_id"])
    assert a["after"]["values"] == {
        "allow_partial_fills": True,
        "copy_pct_bps": 100,
        "max_spread_micros": 20_000,
    }
    # Reverting the revert redoes the change.
    redo = revert(api, a["id"])
    assert redo.status_code == 200, redo.text
    assert copy_configs.load(conn).base.max_spread_micros == 30_000
    assert last_audit(conn)["action"] == "config.global.revert.revert"


def test_revert_after_an_intervening_change_is_a_conflict(api: TestClient, conn: db.Conn) -> None:
    first = api.post("/api/config/global", json={"max_spread_micros": 30_000}).json()
    api.post("/api/config/global", json={"max_spread_micros": 40_000})
    n = audit_count(conn)
    r = revert(api, first["audit_id"])
    assert r.status_code == 409
    assert "force=true" in r.json()["detail"]
    assert audit_count(conn) == n
    assert copy_configs.load(conn).base.max_spread_micros == 40_000
    # A change to another field does not stand in the way.
    api.post("/api/config/global", json={"max_spread_micros": 30_000, "copy_pct_bps": 5})
    assert revert(api, first["audit_id"]).status_code == 200
    assert copy_configs.load(conn).base.max_spread_micros == 20_000
    # A second revert of the same row finds the state moved on; force overrides.
    api.post("/api/config/global", json={"max_spread_micros": 50_000})
    assert revert(api, first["audit_id"]).status_code == 409
    assert revert(api, first["audit_id"], force="true").status_code == 200
    assert copy_configs.load(conn).base.max_spread_micros == 20_000


def test_user_override_revert_goes_back_to_inheriting(api: TestClient, conn: db.Conn) -> None:
    user = add_user(api)
    r = api.post(f"/api/config/user/{user}", json={"max_spread_micros": 1})
    api.post("/api/config/global", json={"max_spread_micros": 25_000})
    assert revert(api, r.json()["audit_id"]).status_code == 200
    cfg = copy_configs.load(conn)
    assert cfg.for_user(user).max_spread_micros == 25_000  # inherits, not a copy of 20 000
    a = last_audit(conn)
    assert a["after"]["override"] == {"max_spread_micros": None}


def test_pause_revert(api: TestClient, conn: db.Conn) -> None:
    r = api.post("/api/control/pause", json={"paused": True, "reason": "x"})
    assert revert(api, r.json()["audit_id"]).status_code == 200
    row = conn.execute("SELECT paused, reason FROM system_control").fetchone()
    assert row == {"paused": False, "reason": None}
    api.post("/api/control/pause", json={"paused": True, "reason": "y"})
    assert revert(api, r.json()["audit_id"]).status_code == 409


def test_blacklist_revert(api: TestClient, conn: db.Conn) -> None:
    add_market(conn)
    r = api.post(f"/api/markets/{MARKET}/blacklist", json={"blacklisted": True})
    assert revert(api, r.json()["audit_id"]).status_code == 200
    assert conn.execute("SELECT blacklisted FROM market").fetchone() == {"blacklisted": False}
    a = last_audit(conn)
    assert (a["action"], a["target_id"]) == ("market.blacklist.revert", MARKET)


def test_follow_revert_removes_and_keeps_the_rows(api: TestClient, conn: db.Conn) -> None:
    r = api.post("/api/users", json={"wallet": "0x" + "ab" * 20, "label": "w"})
    undo = revert(api, r.json()["audit_id"])
    assert undo.status_code == 200, undo.text
    row = conn.execute("SELECT enabled, copy_mode FROM followed_user").fetchone()
    assert row == {"enabled": False, "copy_mode": "REMOVED"}
    assert revert(api, r.json()["audit_id"]).status_code == 409  # already removed
    redo = revert(api, last_audit(conn)["id"])  # un-remove
    assert redo.status_code == 200, redo.text
    row = conn.execute("SELECT enabled, copy_mode FROM followed_user").fetchone()
    assert row == {"enabled": True, "copy_mode": "ACTIVE"}


def test_user_update_revert(api: TestClient, conn: db.Conn) -> None:
    user = add_user(api)
    r = api.post(f"/api/users/{user}", json={"copy_mode": "SELL_ONLY"})
    assert revert(api, r.json()["audit_id"]).status_code == 200
    row = conn.execute("SELECT enabled, copy_mode FROM followed_user").fetchone()
    assert row == {"enabled": True, "copy_mode": "ACTIVE"}


def test_cli_written_rows_revert_too(api: TestClient, conn: db.Conn) -> None:
    from common.store import users

    user = add_user(api)
    users.set_fields(conn, str(user), copy_mode="PAUSED")
    assert revert(api, last_audit(conn)["id"]).status_code == 200
    row = conn.execute("SELECT copy_mode FROM followed_user").fetchone()
    assert row == {"copy_mode": "ACTIVE"}


def test_what_cannot_be_reverted(api: TestClient, conn: db.Conn) -> None:
    assert revert(api, 999).status_code == 404
    test = api.post("/api/config/test", json={}).json()
    r = revert(api, test["audit_id"])
    assert r.status_code == 400 and "cannot be reverted" in r.json()["detail"]
    # A row without the state to go back to (written by hand) is refused, not a 500.
    conn.execute(
        "INSERT INTO audit_log (actor, action, target_type, target_id, before, after)"
        " VALUES ('x', 'control.pause', 'system_control', '1', '[1]', '{\"a\": 1}')"
    )
    r = revert(api, last_audit(conn)["id"])
    assert r.status_code == 400 and "no state" in r.json()["detail"]
    # The revert body must say nothing.
    r = api.post(f"/api/audit/{test['audit_id']}/revert", json={"force": True})
    assert r.status_code == 422


def test_a_copy_wallet_is_marked_and_unmarked_audited_and_reverted(
    api: TestClient, conn: db.Conn
) -> None:
    leader, mine = add_user(api), add_user(api, "0x" + "77" * 20)
    r = api.post(f"/api/users/{mine}/copy-of", json={"leader": leader})
    assert r.status_code == 200, r.text
    marked = r.json()
    assert marked["copy_of_user_id"] == leader
    a = last_audit(conn)
    assert (a["action"], a["actor"], a["before"]["copy_of_user_id"]) == (
        "follow.copy_of", "admin", None,
    )  # fmt: skip
    # a chain is refused with its reason, and nothing is written
    n = audit_count(conn)
    r = api.post(f"/api/users/{leader}/copy-of", json={"leader": mine})
    assert r.status_code == 400 and "itself a copy wallet" in r.json()["detail"]
    assert api.post(f"/api/users/{mine}/copy-of", json={}).status_code == 422
    assert api.post("/api/users/999/copy-of", json={"leader": leader}).status_code == 404
    assert audit_count(conn) == n
    undo = revert(api, marked["audit_id"])
    assert undo.status_code == 200, undo.text
    row = conn.execute(
        "SELECT copy_of_user_id FROM followed_user WHERE id = %s", (mine,)
    ).fetchone()
    assert row is not None and row["copy_of_user_id"] is None
    assert api.post(f"/api/users/{mine}/copy-of", json={"leader": None}).status_code == 200
    assert last_audit(conn)["action"] == "follow.copy_of"
