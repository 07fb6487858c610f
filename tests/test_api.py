"""The write API against a real database: the session and CSRF guards on every route,
each write doing what it says with exactly one audit row, config versions, and login.
Reverts are in test_api_revert.py, hostile bodies in test_api_validation.py."""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from api import app, auth
from common.runtime import settings
from common.store import copy_configs, db, writes

with warnings.catch_warnings():
    # Starlette's test client prefers the httpx2 fork; the project pins httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PASSWORD = "pw-for-tests"
PASSWORD_HASH = auth.hash_password(PASSWORD)  # scrypt is slow on purpose: hash once
WALLET = "0x" + "ab" * 20
MARKET = "0x" + "cd" * 32

# Every route, with a body that would be fine once logged in.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/config/global", {"max_spread_micros": 30_000}),
    ("POST", "/api/config/user/1", {"max_spread_micros": 30_000}),
    ("POST", "/api/control/pause", {"paused": True}),
    ("POST", "/api/users", {"wallet": WALLET, "label": "w"}),
    ("POST", "/api/users/1", {"enabled": False}),
    ("POST", f"/api/markets/{MARKET}/blacklist", {"blacklisted": True}),
    ("POST", "/api/config/test", {}),
    ("POST", "/api/audit/1/revert", {}),
    ("GET", "/api/config/test/1", None),
    ("GET", "/api/audit", None),
]
WRITES = [r for r in ROUTES if r[0] == "POST"]


def make_settings(tmp_path: Path) -> settings.Settings:
    return settings.Settings(
        var_dir=tmp_path,
        admin_password_hash=PASSWORD_HASH,
        secret_key="k",
        public_origin=("http://testserver",),  # the test client's
    )


def log_in(client: TestClient) -> None:
    r = client.post(
        "/api/login", data={"user": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303 and auth.COOKIE in client.cookies


@contextlib.contextmanager
def api_client(db_url: str, tmp_path: Path, *, login: bool = True) -> Iterator[TestClient]:
    """A client of a fresh app on the test's database, logged in unless told not to."""
    with TestClient(app.create_app(make_settings(tmp_path), db_url)) as client:
        if login:
            log_in(client)
        yield client


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(db_url, tmp_path) as client:
        yield client


def audit_count(conn: db.Conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM audit_log").fetchone()
    assert row is not None
    return int(row["n"])


def last_audit(conn: db.Conn) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return row


def add_user(api: TestClient, wallet: str = WALLET) -> int:
    r = api.post("/api/users", json={"wallet": wallet, "label": "whale"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def add_market(conn: db.Conn, condition_id: str = MARKET) -> None:
    conn.execute("INSERT INTO market (condition_id) VALUES (%(c)s)", {"c": condition_id})


# -- guards ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_a_session(
    db_url: str, tmp_path: Path, method: str, path: str, body: Any, conn: db.Conn
) -> None:
    with api_client(db_url, tmp_path, login=False) as client:
        r = client.request(method, path, json=body)
        assert r.status_code == 401
        assert r.json() == {"detail": "not logged in"}
        # A body is read only after the session check: junk is still just a 401.
        junk = b"[" * 10_000 + b"]" * 10_000
        r = client.request(method, path, content=junk, headers={"content-type": "text/plain"})
        assert r.status_code == 401
    assert audit_count(conn) == 0


def cookie_twice_variants(token: str) -> list[list[tuple[str, str]]]:
    """Cookie headers that name the session cookie more than once (as one header or two,
    valid value first or last, names in other cases): nginx and Starlette would each
    pick a different one."""
    return [
        [("cookie", f"oculus_session={token}; oculus_session={token}")],
        [("cookie", f"oculus_session=; oculus_session={token}")],
        [("cookie", f"oculus_session={token}; oculus_session=x")],
        [("cookie", "oculus_session="), ("cookie", f"oculus_session={token}")],
        [("cookie", f"OCULUS_SESSION=x; oculus_session={token}")],
        [("cookie", f"a=1, oculus_session=x; oculus_session={token}")],
    ]


@pytest.mark.parametrize(("method", "path", "body"), [*ROUTES, ("GET", "/api/auth/check", None)])
def test_every_route_refuses_the_session_cookie_twice(
    db_url: str, tmp_path: Path, method: str, path: str, body: Any, conn: db.Conn
) -> None:
    with api_client(db_url, tmp_path) as client:
        token = client.cookies[auth.COOKIE]
        client.cookies.clear()
        for headers in cookie_twice_variants(token):
            r = client.request(method, path, json=body, headers=httpx.Headers(headers))
            assert r.status_code == 401, headers
            assert "more than once" in r.json()["detail"]
        once = client.request(method, path, json=body, headers={"cookie": f"{auth.COOKIE}={token}"})
        assert once.status_code not in (401, 403)
    assert audit_count(conn) <= 1  # only the one single-cookie write


def test_the_session_is_the_cookie_value_as_sent(db_url: str, tmp_path: Path) -> None:
    """What nginx keys its cache on is what the API checks: no unquoting, no other cookie."""
    with api_client(db_url, tmp_path) as client:
        token = client.cookies[auth.COOKIE]
        client.cookies.clear()
        for header in (f'oculus_session="{token}"', f"oculus_session={token}x", f"x{token}"):
            r = client.get("/api/auth/check", headers={"cookie": header})
            assert r.status_code == 401, header
        for header in (f"oculus_session={token}", f"a=1; oculus_session={token} ; b=2"):
            assert client.get("/api/auth/check", headers={"cookie": header}).status_code == 204


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_refuse_other_sites_and_forms(
    api: TestClient, method: str, path: str, body: Any, conn: db.Conn
) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = api.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, headers
        assert "cross-site" in r.json()["detail"]
    form = api.request(method, path, data={"paused": "true"})
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    assert audit_count(conn) == 0


def test_same_origin_write_passes(api: TestClient) -> None:
    r = api.post(
        "/api/control/pause", json={"paused": True}, headers={"Origin": "http://testserver"}
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example", "evil.example"),  # a Host to match: it proves nothing
        ("https://testserver", "testserver"),  # another scheme is another origin
        ("http://testserver:8080", "testserver:8080"),
        ("http://testserver.evil.example", "testserver"),
        ("null", "testserver"),
    ],
)
def test_writes_must_come_from_the_configured_origin(
    api: TestClient, conn: db.Conn, origin: str, host: str
) -> None:
    for path in ("/api/control/pause", "/api/logout", "/api/login"):
        r = api.post(path, json={"paused": True}, headers={"Origin": origin, "Host": host})
        assert r.status_code == 403, path
    assert audit_count(conn) == 0
    # The configured origin passes whatever Host the client names.
    ours = {"Origin": "HTTP://TestServer", "Host": "evil.example"}
    assert api.post("/api/control/pause", json={"paused": True}, headers=ours).status_code == 200


# -- writes ---------------------------------------------------------------------------


def test_global_config_change_inserts_a_version_and_one_audit_row(
    api: TestClient, conn: db.Conn
) -> None:
    r = api.post(
        "/api/config/global",
        json={"max_spread_micros": 30_000, "allow_partial_fills": False},
        headers={"X-Request-Id": "req-1"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert "copy_sizing_config_id" not in out  # no sizing field changed: no sizing version
    assert out["effective"]["max_spread_micros"] == 30_000
    cfg = copy_configs.load(conn)
    assert cfg.base.max_spread_micros == 30_000 and cfg.base.allow_partial_fills is False
    assert cfg.base.guardrail_id == out["guardrail_config_id"]
    assert cfg.base.max_chase_vs_mid_micros == 15_000  # the rest carried over
    rows = conn.execute("SELECT version, created_by FROM guardrail_config ORDER BY id").fetchall()
    assert rows == [{"version": 1, "created_by": "system"}, {"version": 2, "created_by": "admin"}]
    assert audit_count(conn) == 1
    a = last_audit(conn)
    assert (a["actor"], a["action"], a["request_id"]) == ("admin", "config.global", "req-1")
    assert a["id"] == out["audit_id"]
    assert a["before"]["values"] == {"allow_partial_fills": True, "max_spread_micros": 20_000}
    assert a["after"]["values"] == {"allow_partial_fills": False, "max_spread_micros": 30_000}
    assert a["after"]["guardrail_config_id"] == out["guardrail_config_id"]
    assert a["before"]["guardrail_config_id"] != a["after"]["guardrail_config_id"]

    r = api.post("/api/config/global", json={"copy_pct_bps": 250})
    assert r.status_code == 200
    assert "guardrail_config_id" not in r.json()
    assert copy_configs.load(conn).base.copy_pct_bps == 250
    assert copy_configs.load(conn).base.max_spread_micros == 30_000


def test_user_override_sets_and_null_inherits_again(api: TestClient, conn: db.Conn) -> None:
    user = add_user(api)
    r = api.post(f"/api/config/user/{user}", json={"max_spread_micros": 1, "copy_pct_bps": 7})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["max_spread_micros"] == 1
    cfg = copy_configs.load(conn)
    assert cfg.for_user(user).max_spread_micros == 1 and cfg.for_user(user).copy_pct_bps == 7
    assert cfg.base.max_spread_micros == 20_000
    a = last_audit(conn)
    assert (a["action"], a["target_id"]) == ("config.user", str(user))
    assert a["before"]["override"] == {"copy_pct_bps": None, "max_spread_micros": None}
    assert a["before"]["values"] == {"copy_pct_bps": 100, "max_spread_micros": 20_000}

    r = api.post(f"/api/config/user/{user}", json={"max_spread_micros": None})
    assert r.status_code == 200, r.text
    cfg = copy_configs.load(conn)
    assert cfg.for_user(user).max_spread_micros == 20_000  # inherits the global value again
    assert cfg.for_user(user).copy_pct_bps == 7  # the other override stays
    api.post("/api/config/global", json={"max_spread_micros": 40_000})
    assert copy_configs.load(conn).for_user(user).max_spread_micros == 40_000
    versions = conn.execute(
        "SELECT version, max_spread_micros FROM guardrail_config WHERE scope = 'USER' ORDER BY id"
    ).fetchall()
    assert versions == [
        {"version": 1, "max_spread_micros": 1},
        {"version": 2, "max_spread_micros": None},
    ]


def test_config_refusals(api: TestClient, conn: db.Conn) -> None:
    assert api.post("/api/config/user/999", json={"copy_pct_bps": 1}).status_code == 404
    r = api.post("/api/config/global", json={"min_trade_notional_micros": 300_000_000})
    assert r.status_code == 400
    assert "min_trade_notional_micros (300000000) would exceed" in r.json()["detail"]
    user = add_user(api)
    r = api.post(f"/api/config/user/{user}", json={"max_trade_notional_micros": 1})
    assert r.status_code == 400 and f"user {user}" in r.json()["detail"]
    api.post(f"/api/config/user/{user}", json={"max_trade_notional_micros": 6_000_000})
    # A global change that would contradict a user's override is refused too.
    r = api.post("/api/config/global", json={"min_trade_notional_micros": 7_000_000})
    assert r.status_code == 400 and f"user {user}" in r.json()["detail"]
    assert copy_configs.load(conn).base.min_trade_notional_micros == 5_000_000


def test_pause_and_unpause(api: TestClient, conn: db.Conn) -> None:
    r = api.post("/api/control/pause", json={"paused": True, "reason": "maintenance"})
    assert r.status_code == 200 and r.json()["paused"] is True
    row = conn.execute("SELECT * FROM system_control").fetchone()
    assert row is not None
    assert (row["paused"], row["reason"], row["updated_by"]) == (True, "maintenance", "admin")
    assert api.get("/api/health").json()["paused"] is True
    a = last_audit(conn)
    assert a["before"] == {"paused": False, "reason": None}
    assert a["after"] == {"paused": True, "reason": "maintenance"}
    assert api.post("/api/control/pause", json={"paused": False}).status_code == 200
    assert api.get("/api/health").json()["paused"] is False
    assert audit_count(conn) == 2


def test_follow_and_update_a_user(api: TestClient, conn: db.Conn) -> None:
    proxy = "0x" + "12" * 20
    r = api.post(
        "/api/users",
        json={"wallet": WALLET.upper().replace("0X", "0x"), "label": "whale", "proxies": [proxy]},
        headers={"X-Request-Id": "add-1"},
    )
    assert r.status_code == 201, r.text
    user = r.json()["id"]
    wallets = conn.execute("SELECT wallet FROM followed_user_proxy_wallet ORDER BY id").fetchall()
    assert [w["wallet"] for w in wallets] == [WALLET, proxy]
    a = last_audit(conn)
    assert (a["actor"], a["action"], a["request_id"]) == ("admin", "follow.add", "add-1")
    assert a["id"] == r.json()["audit_id"]

    again = api.post("/api/users", json={"wallet": WALLET, "label": "again"})
    assert again.status_code == 400 and "already followed" in again.json()["detail"]
    bad = api.post("/api/users", json={"wallet": "0x1234", "label": "x"})
    assert bad.status_code == 400 and "wallet address" in bad.json()["detail"]

    r = api.post(f"/api/users/{user}", json={"enabled": False, "copy_mode": "BUY_ONLY"})
    assert r.status_code == 200, r.text
    assert (r.json()["user"]["enabled"], r.json()["user"]["copy_mode"]) == (False, "BUY_ONLY")
    a = last_audit(conn)
    assert a["action"] == "follow.update"
    assert (a["before"]["enabled"], a["before"]["copy_mode"]) == (True, "ACTIVE")
    assert (a["after"]["enabled"], a["after"]["copy_mode"]) == (False, "BUY_ONLY")
    r = api.post(f"/api/users/{user}", json={"enabled": True})
    assert r.json()["user"]["copy_mode"] == "BUY_ONLY"  # untouched
    assert api.post("/api/users/999", json={"enabled": True}).status_code == 404
    assert audit_count(conn) == 3


def test_blacklist_a_market(api: TestClient, conn: db.Conn) -> None:
    add_market(conn)
    r = api.post(
        f"/api/markets/{MARKET.upper().replace('0X', '0x')}/blacklist", json={"blacklisted": True}
    )
    assert r.status_code == 200, r.text
    row = conn.execute("SELECT blacklisted FROM market").fetchone()
    assert row == {"blacklisted": True}
    a = last_audit(conn)
    assert (a["action"], a["target_id"], a["before"], a["after"]) == (
        "market.blacklist",
        MARKET,
        {"blacklisted": False},
        {"blacklisted": True},
    )
    unknown = "0x" + "ef" * 32
    r = api.post(f"/api/markets/{unknown}/blacklist", json={"blacklisted": True})
    assert r.status_code == 404 and unknown in r.json()["detail"]
    assert api.post("/api/markets/0x12/blacklist", json={"blacklisted": True}).status_code == 422
    assert audit_count(conn) == 1


def test_audit_listing(api: TestClient) -> None:
    for paused in (True, False, True):
        api.post("/api/control/pause", json={"paused": paused})
    items = api.get("/api/audit", params={"limit": 2}).json()["items"]
    assert [i["after"]["paused"] for i in items] == [True, False]
    assert items[0]["id"] > items[1]["id"]
    for limit in (0, 501, -1, "x", 2**70):
        assert api.get("/api/audit", params={"limit": limit}).status_code == 422


def test_concurrent_config_writes_get_distinct_versions(api: TestClient, conn: db.Conn) -> None:
    def post(i: int) -> int:
        r = api.post("/api/config/global", json={"max_spread_micros": 1_000 + i})
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(16)))
    assert codes == [200] * 16
    versions = conn.execute(
        "SELECT version FROM guardrail_config WHERE scope = 'GLOBAL' ORDER BY version"
    ).fetchall()
    assert [v["version"] for v in versions] == list(range(1, 18))
    assert audit_count(conn) == 16


def test_concurrent_config_writers_on_their_own_connections(db_url: str, conn: db.Conn) -> None:
    # Eight real connections at once (the app's pool only has two).
    def write(i: int) -> int:
        with db.connect(db_url, autocommit=True) as mine:
            out = writes.change_config(mine, writes.By("t"), None, {"copy_pct_bps": i})
            return int(out["copy_sizing_config_id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(write, range(1, 25)))
    assert len(set(ids)) == 24
    versions = conn.execute(
        "SELECT version FROM copy_sizing_config WHERE scope = 'GLOBAL' ORDER BY version"
    ).fetchall()
    assert [v["version"] for v in versions] == list(range(1, 26))


# -- login ----------------------------------------------------------------------------


def test_wrong_password_sets_no_cookie(db_url: str, tmp_path: Path) -> None:
    with api_client(db_url, tmp_path, login=False) as client:
        r = client.post(
            "/api/login", data={"user": "admin", "password": "nope"}, follow_redirects=False
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/login.html?failed=1"
        assert "set-cookie" not in r.headers and auth.COOKIE not in client.cookies
        assert client.get("/api/auth/check").status_code == 401


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/users/1.html", "/users/1.html"),
    ],
)
def test_login_goes_only_to_local_pages(
    db_url: str, tmp_path: Path, target: str, expected: str
) -> None:
    with api_client(db_url, tmp_path, login=False) as client:
        r = client.post(
            "/api/login",
            data={"user": "admin", "password": PASSWORD, "next": target},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == expected
        assert client.get("/api/auth/check").status_code == 204


def test_logout_clears_the_cookie(api: TestClient) -> None:
    assert api.get("/api/audit").status_code == 200
    r = api.post("/api/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login.html"
    assert auth.COOKIE not in api.cookies
    assert api.get("/api/audit").status_code == 401


def check(client: TestClient, token: str) -> int:
    """The session check's status for exactly this cookie."""
    return client.get("/api/auth/check", headers={"cookie": f"{auth.COOKIE}={token}"}).status_code


def log_out(client: TestClient, cookie_header: str | None) -> Any:
    headers = {"cookie": cookie_header} if cookie_header is not None else {}
    return client.post("/api/logout", headers=headers, follow_redirects=False)


def test_logout_ends_that_session_at_once_and_for_good(
    db_url: str, tmp_path: Path, conn: db.Conn
) -> None:
    with api_client(db_url, tmp_path) as client:
        mine = client.cookies[auth.COOKIE]
        log_in(client)
        other = client.cookies[auth.COOKIE]  # the same admin on another device
        client.cookies.clear()
        assert check(client, mine) == check(client, other) == 204
        r = log_out(client, f"{auth.COOKIE}={mine}")
        assert r.status_code == 303 and r.headers["location"] == "/login.html"
        assert re.search(rf"{auth.COOKIE}=.*(?i:max-age=0)", r.headers["set-cookie"])
        # Refused at once, on every route, though the cookie itself is still unexpired.
        assert check(client, mine) == 401
        for method, path, body in ROUTES:
            headers = {"cookie": f"{auth.COOKIE}={mine}"}
            assert client.request(method, path, json=body, headers=headers).status_code == 401
        assert check(client, other) == 204  # the other session goes on
    with api_client(db_url, tmp_path, login=False) as restarted:  # a new API process
        assert check(restarted, mine) == 401
        assert check(restarted, other) == 204
    assert audit_count(conn) == 0  # the refused writes wrote nothing


def test_ended_sessions_stay_ended_when_the_database_cannot_be_read(
    db_url: str, tmp_path: Path
) -> None:
    application = app.create_app(make_settings(tmp_path), db_url)
    with TestClient(application) as client:
        log_in(client)
        ended = client.cookies[auth.COOKIE]
        log_in(client)
        live = client.cookies[auth.COOKIE]
        client.cookies.clear()
        assert log_out(client, f"{auth.COOKIE}={ended}").status_code == 303
        st = application.state.oculus
        st.revoked.refresh_s = 0.0  # reread on every check: each one fails now
        st.pool.close()
        assert check(client, ended) == 401
        assert check(client, live) == 204


def test_logout_works_whatever_the_cookie_says(db_url: str, tmp_path: Path, conn: db.Conn) -> None:
    with api_client(db_url, tmp_path) as client:
        a = client.cookies[auth.COOKIE]
        log_in(client)
        b = client.cookies[auth.COOKIE]
        client.cookies.clear()
        # A forged, tampered or absent cookie: nothing to end, the cookie is cleared anyway.
        for header in (None, "", f"{auth.COOKIE}=garbage", f"{auth.COOKIE}={a[:-2]}xx"):
            r = log_out(client, header)
            assert r.status_code == 303, header
            assert "max-age=0" in r.headers["set-cookie"].lower()
        assert check(client, a) == check(client, b) == 204
        # The cookie twice (say one planted by a neighbouring site): every session it
        # names is ended.
        r = log_out(client, f'{auth.COOKIE}=junk; {auth.COOKIE}="{a}"; {auth.COOKIE}={b}')
        assert r.status_code == 303
        assert check(client, a) == 204  # a quoted value is not the session cookie
        assert check(client, b) == 401
        assert log_out(client, f"{auth.COOKIE}={a}, x=1").status_code == 303
        assert check(client, a) == 401
        assert log_out(client, f"{auth.COOKIE}={a}").status_code == 303  # again: no error
        other_site = client.post(
            "/api/logout",
            headers={"cookie": f"{auth.COOKIE}={a}", "origin": "https://evil.example"},
        )
        assert other_site.status_code == 403
    rows = conn.execute("SELECT session_id FROM session_revoked ORDER BY session_id").fetchall()
    assert sorted(r["session_id"] for r in rows) == sorted(t.split(".")[2] for t in (a, b))


def test_expired_or_tampered_sessions_are_refused(db_url: str, tmp_path: Path) -> None:
    application = app.create_app(make_settings(tmp_path), db_url)
    admin: auth.Admin = application.state.oculus.admin
    other = auth.Admin.from_settings(
        settings.Settings(var_dir=tmp_path, admin_password_hash=PASSWORD_HASH, secret_key="x")
    )
    now = time.time()
    good = admin.issue(now)
    body, _, sig = good.rpartition(".")
    tokens = [
        admin.issue(now - admin.ttl_s - 1),  # expired
        f"{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",  # signature changed
        f"v1.{int(now) + 10**6}.{body.split('.')[2]}.{sig}",  # expiry pushed out
        other.issue(now),  # another key
        "garbage",
    ]
    with TestClient(application) as client:
        client.cookies.set(auth.COOKIE, good)
        assert client.get("/api/audit").status_code == 200
        for token in tokens:
            client.cookies.set(auth.COOKIE, token)
            r = client.get("/api/audit")
            assert r.status_code == 401, token
            assert client.post("/api/control/pause", json={"paused": True}).status_code == 401
