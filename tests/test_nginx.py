"""The front door, through a real nginx and the real API: nothing is served without a
session, everything is with one, and the write API's CSRF guards hold behind the proxy."""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.runtime import nginx, settings
from tests import web

pytestmark = pytest.mark.web

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
FILES = {  # path: (content type, file)
    "/index.html": ("text/html; charset=utf-8", "index.html"),
    "/users/1.html": ("text/html; charset=utf-8", "users/1.html"),
    "/charts/x.png": ("image/png", "charts/x.png"),
    "/trades.json": ("application/json; charset=utf-8", "trades.json"),
    "/static/style.css": ("text/css; charset=utf-8", "static/style.css"),
}
PAUSE = "/api/control/pause"


@pytest.fixture
def stack(db_url: str, tmp_path: Path) -> Iterator[web.Stack]:
    with web.running_stack(db_url, tmp_path) as running:
        yield running


@pytest.fixture
def client(stack: web.Stack) -> Iterator[httpx.Client]:
    with stack.client() as c:
        yield c


@pytest.fixture
def session(stack: web.Stack, client: httpx.Client) -> httpx.Client:
    """The client, logged in."""
    assert stack.login(client).status_code == 303
    return client


def raw(
    stack: web.Stack,
    method: str,
    path: str,
    cookie: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """Sends the path and headers exactly as given (httpx would normalize `..` away, and
    merge or reorder cookies); a Host among them replaces the real one."""
    host, port = stack.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = headers or []
    try:
        own_host = any(name.lower() == "host" for name, _ in headers)
        conn.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        sent = [("Cookie", f"oculus_session={cookie}")] if cookie else []
        if body is not None:
            sent.append(("Content-Length", str(len(body))))
        for name, value in [*sent, *headers]:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assert_no_secret(body: bytes) -> None:
    for secret in web.SECRETS:
        assert secret not in body


# -- without a session ----------------------------------------------------------------


@pytest.mark.parametrize("cookie", [None, "v1.99999999999.forged.signature", "garbage"])
def test_nothing_but_the_login_page_without_a_session(
    stack: web.Stack, client: httpx.Client, cookie: str | None
) -> None:
    if cookie:
        client.cookies.set("oculus_session", cookie)
    for path in ["/", *FILES, "/users/", "/missing.html", "/trades.json?x=1"]:
        for method in ("GET", "HEAD"):
            response = client.request(method, path)
            assert response.status_code == 401, (method, path)
            assert_no_secret(response.content)
            if method == "GET":
                assert b"LOGIN-PAGE" in response.content, path
                assert response.headers["content-type"].startswith("text/html")


def test_the_api_answers_401_json_without_a_session(stack: web.Stack, client: httpx.Client) -> None:
    json_write: dict[str, Any] = {"json": {"paused": True}, "headers": {"Origin": stack.url}}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/health", {}),
        ("GET", "/api/auth/check", {}),
        ("POST", PAUSE, json_write),
        ("POST", "/api/config/global", json_write),
        ("DELETE", "/api/anything", {}),
        ("GET", "/metrics", {}),  # Prometheus's, through nginx: the session too
    ]
    for method, path, kwargs in calls:
        response = client.request(method, path, **kwargs)
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"detail": "not logged in"}
    health = httpx.get(f"{stack.api_url}/api/health", timeout=5).json()
    assert health["paused"] is False  # the write never reached the API


def test_logging_out_without_a_session_just_goes_to_the_login_page(
    stack: web.Stack, client: httpx.Client
) -> None:
    for cookie in (None, "garbage", "v1.99999999999.forged.signature"):
        if cookie:
            client.cookies.set("oculus_session", cookie)
        response = client.post("/api/logout", headers={"Origin": stack.url})
        assert response.status_code == 303, cookie
        assert response.headers["location"] == "/login.html"
        assert_no_secret(response.content)
    assert client.post("/api/logout", headers={"Origin": "https://evil.example"}).status_code == 403


def test_after_logout_the_old_cookie_opens_nothing(stack: web.Stack, session: httpx.Client) -> None:
    old = session.cookies["oculus_session"]
    assert raw(stack, "GET", "/index.html", old)[0] == 200  # the check cache holds it now
    assert session.post("/api/logout", headers={"Origin": stack.url}).status_code == 303
    logged_out = time.monotonic()
    # The API refuses it at once, through nginx too.
    assert raw(stack, "GET", "/api/audit", old)[0] == 401
    assert (
        raw(
            stack, "POST", PAUSE, old, [("Content-Type", "application/json"), ("Origin", stack.url)]
        )[0]
        == 401
    )
    # Pages: once nginx's cached answer for it has expired, AUTH_CACHE_S after it was
    # stored (nginx counts whole seconds: up to one more).
    while raw(stack, "GET", "/index.html", old)[0] == 200:
        assert time.monotonic() - logged_out < nginx.AUTH_CACHE_S + 1.5
        time.sleep(0.1)
    for path in FILES:
        status, body = raw(stack, "GET", path, old)
        assert status == 401, path
        assert_no_secret(body)


def test_the_login_page_and_its_stylesheet_are_public(client: httpx.Client) -> None:
    page = client.get("/login.html")
    assert page.status_code == 200
    assert b"LOGIN-PAGE" in page.content
    css = client.get("/static/login.css")
    assert css.status_code == 200
    assert b"LOGIN-CSS" in css.content


# -- the session check's cache -------------------------------------------------------------


def assert_anonymous_gets_nothing(stack: web.Stack) -> None:
    for path in FILES:
        status, body = raw(stack, "GET", path)
        assert status == 401, path
        assert_no_secret(body)


@pytest.mark.parametrize(
    "cookie_headers",
    [
        ["oculus_session=; oculus_session={valid}"],  # nginx keys on the first, empty one
        ["oculus_session=;oculus_session={valid}"],
        ["oculus_session=", "oculus_session={valid}"],  # two Cookie headers
        ["other=1; oculus_session=; x=2; oculus_session={valid}"],
        ["oculus_session={valid}; oculus_session="],
    ],
)
def test_an_empty_session_cookie_cannot_poison_the_check_cache(
    stack: web.Stack, session: httpx.Client, cookie_headers: list[str]
) -> None:
    valid = session.cookies["oculus_session"]
    headers = [("Cookie", h.format(valid=valid)) for h in cookie_headers]
    statuses = {path: raw(stack, "GET", path, headers=headers) for path in FILES}
    assert_anonymous_gets_nothing(stack)  # nothing was kept for "no cookie"
    for path, (status, body) in statuses.items():
        assert status == 401, path  # the session cookie, twice: refused
        assert_no_secret(body)


def test_a_session_cookie_sent_twice_is_refused_everywhere(
    stack: web.Stack, session: httpx.Client
) -> None:
    valid = session.cookies["oculus_session"]
    for twice in (
        f"oculus_session={valid}; oculus_session={valid}",
        f"oculus_session={valid}; oculus_session=x",
    ):
        for path in ("/index.html", "/api/health", "/api/auth/check", "/api/audit"):
            status, body = raw(stack, "GET", path, headers=[("Cookie", twice)])
            assert status == 401, (path, twice)
            assert_no_secret(body)
    assert raw(stack, "GET", "/index.html", valid)[0] == 200  # once is fine


def test_the_check_cache_is_keyed_on_exactly_what_the_api_validated(
    stack: web.Stack, session: httpx.Client
) -> None:
    valid = session.cookies["oculus_session"]
    # Forms of the cookie nginx and Starlette read differently (Starlette unquotes, and
    # skips a name it cannot parse); the API judges the header nginx keys on, as sent.
    for cookie in (f'oculus_session="{valid}"', f"oculus_session={valid}x", "oculus_session="):
        for _ in range(2):  # the second one could come from the cache
            status, body = raw(stack, "GET", "/index.html", headers=[("Cookie", cookie)])
            assert status == 401, cookie
            assert_no_secret(body)
    assert (
        raw(stack, "GET", "/index.html", headers=[("Cookie", f"x=1; oculus_session={valid}")])[0]
        == 200
    )
    assert_anonymous_gets_nothing(stack)


# -- logging in -------------------------------------------------------------------------


def test_login_through_nginx_then_everything_is_served(
    stack: web.Stack, client: httpx.Client
) -> None:
    response = stack.login(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("oculus_session=")
    assert re.search(r"(?i)\bhttponly\b", cookie)
    assert re.search(r"(?i)\bsamesite=strict\b", cookie)
    assert re.search(r"(?i)\bpath=/(;|$)", cookie)
    for path, (kind, name) in FILES.items():
        got = client.get(path)
        assert got.status_code == 200, path
        assert got.headers["content-type"] == kind
        assert got.content == web.SAMPLE_SITE[name]
    assert client.get("/").content == web.SAMPLE_SITE["index.html"]
    assert client.get("/api/auth/check").status_code == 204
    assert client.get("/api/health").json() == {"ok": True, "paused": False}
    metrics = client.get("/metrics")  # the catalogue for Prometheus, with the session
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE oculus_queue_groups_undecided gauge" in metrics.text


def test_a_wrong_password_or_user_sets_no_cookie(stack: web.Stack, client: httpx.Client) -> None:
    wrong = stack.login(client, password="not the password")
    assert wrong.status_code == 303
    assert wrong.headers["location"] == "/login.html?failed=1"
    assert "set-cookie" not in wrong.headers
    other_user = client.post(
        "/api/login",
        data={"user": "root", "password": web.PASSWORD},
        headers={"Origin": stack.url},
    )
    assert "set-cookie" not in other_user.headers
    assert client.get("/index.html").status_code == 401


def test_logins_are_rate_limited_per_address(stack: web.Stack, client: httpx.Client) -> None:
    statuses = [stack.login(client, password=f"guess {i}").status_code for i in range(12)]
    # 10 a minute with a burst of 5: the first six pass, the rest are refused at once.
    assert statuses[:6] == [303] * 6
    assert set(statuses[6:]) == {429}
    assert stack.login(client).status_code == 429  # the right password waits too
    assert "set-cookie" not in stack.login(client).headers


def test_failed_logins_from_many_addresses_back_off_together(stack: web.Stack) -> None:
    """Five loopback addresses, six guesses each (what nginx's per-address limit lets
    through at once): only the API's global allowance of failures is checked."""
    addresses = [f"127.0.0.{i}" for i in range(2, 7)]

    def guesses(address: str) -> list[httpx.Response]:
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(base_url=stack.url, transport=transport, timeout=10) as c:
            return [stack.login(c, password=f"guess {address} {i}") for i in range(6)]

    with ThreadPoolExecutor(len(addresses)) as pool:
        answers = [r for rs in pool.map(guesses, addresses) for r in rs]
    checked = [r for r in answers if r.status_code == 303]
    assert all(r.headers["location"] == "/login.html?failed=1" for r in checked)
    assert len(checked) == settings.Settings().login_failures_allowed
    backed_off = [r for r in answers if r.status_code == 429 and "retry-after" in r.headers]
    assert len(backed_off) == len(answers) - len(checked)
    assert all(int(r.headers["retry-after"]) >= 1 for r in backed_off)
    with stack.client() as fresh:  # from yet another address, with the right password
        assert stack.login(fresh).status_code == 429


# -- writes -----------------------------------------------------------------------------


def test_a_same_origin_json_write_passes_through_nginx(
    stack: web.Stack, session: httpx.Client
) -> None:
    response = session.post(PAUSE, json={"paused": True}, headers={"Origin": stack.url})
    assert response.status_code == 200, response.text
    assert session.get("/api/health").json()["paused"] is True


def test_a_cross_site_write_is_refused_even_with_the_cookie(
    stack: web.Stack, session: httpx.Client
) -> None:
    evil = {"Origin": "https://evil.example"}
    assert session.post(PAUSE, json={"paused": True}, headers=evil).status_code == 403
    no_origin_cross_site = {"Sec-Fetch-Site": "cross-site"}
    response = session.post(PAUSE, json={"paused": True}, headers=no_origin_cross_site)
    assert response.status_code == 403
    assert session.post("/api/logout", headers=evil).status_code == 403
    assert session.get("/api/health").json()["paused"] is False


def test_a_form_encoded_write_is_refused(stack: web.Stack, session: httpx.Client) -> None:
    response = session.post(PAUSE, data={"paused": "true"}, headers={"Origin": stack.url})
    assert response.status_code == 415
    assert session.get("/api/health").json()["paused"] is False


def test_a_body_over_64k_is_refused(stack: web.Stack, client: httpx.Client) -> None:
    body = b'{"reason": "' + b"x" * 70_000 + b'"}'
    headers = {"Content-Type": "application/json", "Origin": stack.url}
    assert client.post(PAUSE, content=body, headers=headers).status_code == 413
    assert stack.login(client).status_code == 303
    assert client.post(PAUSE, content=body, headers=headers).status_code == 413
    small = client.post(PAUSE, json={"paused": False, "reason": "x" * 400}, headers=headers)
    assert small.status_code == 200, small.text


def test_pages_cannot_be_written(stack: web.Stack, client: httpx.Client) -> None:
    def statuses() -> set[int]:
        return {
            client.request(method, path, content=b"x").status_code
            for method in ("POST", "PUT", "DELETE", "PATCH")
            for path in ("/index.html", "/new.html", "/login.html", "/static/login.css")
        }

    assert statuses() <= {401, 405}
    assert stack.login(client).status_code == 303
    assert statuses() == {405}
    assert (stack.public_dir / "index.html").read_bytes() == web.SAMPLE_SITE["index.html"]


# -- which host -------------------------------------------------------------------------


def test_other_host_names_are_refused(stack: web.Stack, session: httpx.Client) -> None:
    cookie = session.cookies["oculus_session"]
    for host in ("evil.example", "evil.example:80", "127.0.0.2", "oculus.localhost"):
        for method, path in (
            ("GET", "/index.html"),
            ("GET", "/login.html"),
            ("POST", "/api/login"),
        ):
            status, body = raw(stack, method, path, cookie, [("Host", host)])
            assert status == 421, (host, path)
            assert_no_secret(body)
        # The cross-site check no longer trusts a Host that matches a forged Origin.
        write = [("Host", host), ("Origin", f"http://{host}"), ("Content-Type", "application/json")]
        assert raw(stack, "POST", PAUSE, cookie, write)[0] == 421
    assert session.get("/api/health").json()["paused"] is False


def test_the_loopback_names_both_work(stack: web.Stack, session: httpx.Client) -> None:
    port = stack.url.rsplit(":", 1)[1]
    cookie = session.cookies["oculus_session"]
    for name in ("127.0.0.1", "localhost"):
        origin = f"http://{name}:{port}"
        status, _ = raw(stack, "GET", "/index.html", cookie, [("Host", f"{name}:{port}")])
        assert status == 200, name
        headers = [
            ("Host", f"{name}:{port}"),
            ("Origin", origin),
            ("Content-Type", "application/json"),
        ]
        status, body = raw(stack, "POST", PAUSE, cookie, headers, b'{"paused": false}')
        assert status == 200, (name, body)


# -- what is never served -----------------------------------------------------------------


def test_no_escape_from_the_public_dir_no_dotfiles_no_listings(
    stack: web.Stack, session: httpx.Client
) -> None:
    cookie = session.cookies["oculus_session"]
    for path in ("/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/users/../../etc/hostname"):
        status, body = raw(stack, "GET", path, cookie)
        assert status == 400, path
        assert b"root:" not in body
    for path in ("/.hidden", "/charts/.env", "/users/..%2f.hidden", "/%2ehidden"):
        status, body = raw(stack, "GET", path, cookie)
        assert status == 404, path
        assert_no_secret(body)
    for path in ("/users/", "/charts/", "/static/"):
        status, body = raw(stack, "GET", path, cookie)
        assert status == 403, path
        assert b"Index of" not in body
        assert b"x.png" not in body
    assert raw(stack, "GET", "/_oculus_auth", cookie)[0] == 404


def test_security_and_cache_headers(stack: web.Stack, session: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=stack.url, timeout=5)
    responses = {
        "page": session.get("/index.html"),
        "png": session.get("/charts/x.png"),
        "json": session.get("/trades.json"),
        "css": session.get("/static/style.css"),
        "api": session.get("/api/health"),
        "missing": session.get("/missing.html"),
        "login page": anonymous.get("/index.html"),
        "api 401": anonymous.get("/api/health"),
        "405": session.post("/index.html"),
    }
    anonymous.close()
    for name, response in responses.items():
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["x-frame-options"] == "DENY", name
        assert headers["referrer-policy"] == "same-origin", name
        assert headers["content-security-policy"] == CSP, name
        assert headers["server"] == "nginx", name  # no version
    for name in ("page", "png", "json"):
        assert responses[name].headers["cache-control"] == "no-cache", name
    assert responses["css"].headers["cache-control"] == "max-age=300"
    page = responses["page"]
    again = session.get("/index.html", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    assert page.headers["content-encoding"] == "gzip"  # httpx asked for it, and decoded it
    assert "content-encoding" not in responses["png"].headers


def test_pages_fail_closed_when_the_api_is_down(stack: web.Stack, client: httpx.Client) -> None:
    stack.api.terminate()
    stack.api.wait(timeout=web.STOP_TIMEOUT_S)
    client.cookies.set("oculus_session", "v1.99999999999.never.checked")
    for path in ("/index.html", "/charts/x.png", "/api/health"):
        response = client.get(path)
        assert response.status_code >= 500, path
        assert_no_secret(response.content)


# -- the config itself ---------------------------------------------------------------------


def test_render_fills_every_placeholder(tmp_path: Path) -> None:
    s = settings.Settings(var_dir=tmp_path / "var", http_host="::1", api_port=9999)
    conf = nginx.render(s, public_dir=tmp_path / "public", listen_port=8123)
    text = conf.read_text()
    assert re.search(r"\$\{[A-Z]", text) is None
    assert "listen [::1]:8123;" in text
    assert "listen [::1]:8123 default_server;" in text  # any other host name: 421
    assert "server_name [::1] localhost;" in text
    assert "server 127.0.0.1:9999;" in text
    assert f"root {(tmp_path / 'public').resolve()};" in text
    assert "$binary_remote_addr" in text  # nginx's own variables are left alone
    assert (tmp_path / "var" / "nginx" / "tmp" / "client_body").is_dir()
    assert ("user root root;" in text) == (os.geteuid() == 0)


def test_render_needs_the_public_origin_when_listening_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCULUS_HTTP_HOST", "0.0.0.0")
    monkeypatch.setattr(settings, "get", lambda: settings.Settings())
    argv = ["render", "--prefix", str(tmp_path / "ngx"), "--public-dir", str(tmp_path)]
    assert nginx.main(argv) == 2
    assert "set OCULUS_PUBLIC_ORIGIN" in capsys.readouterr().err
    monkeypatch.setenv("OCULUS_PUBLIC_ORIGIN", "https://oculus.example.com")
    assert nginx.main(argv) == 0
    assert "server_name oculus.example.com;" in (tmp_path / "ngx" / "nginx.conf").read_text()


def test_render_refuses_a_path_nginx_would_misread(tmp_path: Path) -> None:
    s = settings.Settings(var_dir=tmp_path / "var")
    with pytest.raises(ValueError, match="special characters"):
        nginx.render(s, public_dir=tmp_path / "my $site")


def test_the_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    web.require_nginx()
    argv = ["check", "--prefix", str(tmp_path / "ngx"), "--public-dir", str(tmp_path)]
    assert nginx.main(argv) == 0


def test_without_nginx_the_operator_is_told_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(nginx, "find", lambda: None)
    assert nginx.main(["run", "--prefix", str(tmp_path), "--public-dir", str(tmp_path)]) == 2
    assert "make system-deps" in capsys.readouterr().err
