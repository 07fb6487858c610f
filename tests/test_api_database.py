"""The API when the database goes away under it: a restart leaves every pooled
connection dead, and an outage refuses new ones. Never a 500: 503 with the reason, and
back to normal as soon as the database is."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from starlette.exceptions import StarletteDeprecationWarning
from test_api import log_in, make_settings

from api import app
from common.store import db

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def drop_connections(conn: db.Conn) -> int:
    """What a database restart does to the API's pool: ends every other session."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return sum(1 for r in rows if r["ended"])


def allow_connections(server_url: str, name: str, allowed: bool) -> None:
    """Lets the test's database take new connections, or not (an outage)."""
    with psycopg.connect(server_url, autocommit=True) as server:
        server.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allowed else "false")
            )
        )


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    application = app.create_app(make_settings(tmp_path), db_url)
    with TestClient(application, raise_server_exceptions=False) as c:
        log_in(c)
        yield c


def database_check(client: TestClient) -> dict[str, object]:
    r = client.get("/api/ready")
    assert r.status_code in (200, 503), r.text
    (check,) = (c for c in r.json()["checks"] if c["name"] == "database")
    return dict(check)


def test_after_a_database_restart_the_pool_reconnects(client: TestClient, conn: db.Conn) -> None:
    for path in ("/api/ready", "/api/health", "/api/audit"):
        assert client.get(path).status_code in (200, 503)
    assert drop_connections(conn) >= 1
    assert database_check(client)["ok"] is True  # not a 500 on a dead pooled connection
    assert drop_connections(conn) >= 1
    assert client.get("/api/health").status_code == 200
    assert drop_connections(conn) >= 1
    r = client.post("/api/control/pause", json={"paused": True})
    assert r.status_code == 200, r.text


def test_without_the_database_every_route_says_so_with_503(
    client: TestClient, conn: db.Conn, pg_server_url: str
) -> None:
    name = conn.info.dbname
    allow_connections(pg_server_url, name, False)
    try:
        drop_connections(conn)
        r = client.get("/api/ready")
        assert r.status_code == 503
        assert r.json()["ready"] is False
        (check,) = r.json()["checks"]
        assert check["name"] == "database" and check["ok"] is False
        assert "not currently accepting connections" in check["detail"]
        for method, path, body in [
            ("GET", "/api/health", None),
            ("POST", "/api/control/pause", {"paused": True}),
        ]:
            r = client.request(method, path, json=body)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"]
            assert "database" in r.json()["detail"]
        assert client.get("/api/auth/check").status_code == 204  # pages need no database
    finally:
        allow_connections(pg_server_url, name, True)
    # The pool reconnects on its own (its retries back off: the longer the outage, the
    # longer it may take, here a few seconds).
    back = time.monotonic()
    while (r := client.get("/api/health")).status_code != 200:
        assert r.status_code == 503
        assert time.monotonic() - back < 30
    assert database_check(client)["ok"] is True


def test_a_database_error_on_any_route_is_a_503_with_the_reason(
    db_url: str, tmp_path: Path
) -> None:
    application = app.create_app(make_settings(tmp_path), db_url)

    def broken() -> None:  # a route whose connection died mid-query
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    application.add_api_route("/api/broken", broken)
    with TestClient(application, raise_server_exceptions=False) as client:
        r = client.get("/api/broken")
        assert r.status_code == 503
        assert r.json()["detail"] == (
            "database unavailable: server closed the connection unexpectedly"
        )
