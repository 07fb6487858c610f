"""The web stack for tests: the write API (`python -m api serve`) behind the private
nginx (`python -m common.runtime.nginx run`), both on loopback, over a sample public dir.

    with web.running_stack(db_url, tmp_path) as stack:
        with stack.client() as client:
            stack.login(client)
            client.get("/index.html")

tests/test_nginx.py uses it, and tests/test_browser.py over a site the builder wrote.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api import auth
from common.runtime import nginx, settings

PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-key-not-for-production"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

# A 1×1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
_FILLER = "<p>" + "Oculus overview, regenerated every few seconds. " * 20 + "</p>"

# Each file carries a marker no error page contains, so a test can tell whether the
# file itself was served.
SAMPLE_SITE: dict[str, bytes] = {
    "index.html": f"<!doctype html><title>Overview</title>SECRET-INDEX{_FILLER}".encode(),
    "users/1.html": b"<!doctype html><title>User 1</title>SECRET-USER",
    "charts/x.png": PNG,
    "trades.json": b'{"trades": ["SECRET-TRADES"]}',
    "static/style.css": b"body { color: #123 } /* SECRET-CSS */",
    "static/login.css": b"form { margin: auto } /* LOGIN-CSS */",
    "login.html": b'<!doctype html><title>Log in</title><form method="post" '
    b'action="/api/login">LOGIN-PAGE</form>',
    ".hidden": b"SECRET-DOTFILE",
    "charts/.env": b"SECRET-DOTENV",
}
SECRETS = (b"SECRET-INDEX", b"SECRET-USER", b"SECRET-TRADES", b"SECRET-CSS", b"SECRET-DOT")


def require_nginx() -> str:
    """Returns the nginx binary; without one the test fails under CI, else is skipped."""
    binary = nginx.find()
    if binary is None:
        message = f"{nginx.INSTALL_HINT} (needed by the web tests)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


def require_browser() -> tuple[str, str]:
    """Returns (chromium, chromedriver); without them the test fails under CI, else is
    skipped."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/lib/chromium")
    if chromium is None or driver is None:
        missing = " and ".join(
            n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None
        )
        message = f"{missing} not installed: run `make system-deps` (needed by the browser tests)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return chromium, driver


@functools.cache
def password_hash() -> str:
    return auth.hash_password(PASSWORD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_site(public: Path, files: dict[str, bytes] = SAMPLE_SITE) -> None:
    for name, content in files.items():
        path = public / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs argv with its output in `log`; terminates it (then kills it) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=settings.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, status: int) -> None:
    """Returns once GET url answers `status`; fails if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            got = httpx.get(url, timeout=1.0).status_code
            if got == status:
                return
            last = f"status {got}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.05)
    output = log.read_text(errors="replace")[-3000:]
    exited = process.poll()
    raise RuntimeError(f"{url} not up ({last}; exit code {exited}); log:\n{output}")


@dataclass
class Stack:
    """A running API behind nginx."""

    url: str  # nginx
    api_url: str  # the API itself, bypassing nginx
    public_dir: Path
    api: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]
    api_log: Path
    nginx_log: Path

    def client(self) -> httpx.Client:
        """Returns a client of the nginx front (no redirects followed)."""
        return httpx.Client(base_url=self.url, timeout=5.0)

    def login(self, client: httpx.Client, password: str = PASSWORD) -> httpx.Response:
        """Logs in through nginx like the login form does; returns the response."""
        return client.post(
            "/api/login",
            data={"user": "admin", "password": password, "next": "/"},
            headers={"Origin": self.url},
        )


def api_environment(db_url: str, var_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": db_url,
        "OCULUS_VAR_DIR": str(var_dir),
        "OCULUS_API_HOST": "127.0.0.1",
        "OCULUS_API_PORT": str(port),
        "OCULUS_HTTP_HOST": "127.0.0.1",
        "OCULUS_ADMIN_USER": "admin",
        "OCULUS_ADMIN_PASSWORD_HASH": password_hash(),
        "OCULUS_SECRET_KEY": SECRET_KEY,
        "OCULUS_COOKIE_SECURE": "false",
        "OCULUS_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def running_stack(
    db_url: str, tmp: Path, site: dict[str, bytes] | None = SAMPLE_SITE
) -> Iterator[Stack]:
    """Starts the API and nginx over tmp/public (with `site` written into it; None leaves
    it as it is, e.g. built by the site builder); stops both after."""
    require_nginx()
    public, var_dir = tmp / "public", tmp / "var"
    public.mkdir(parents=True, exist_ok=True)
    if site is not None:
        write_site(public, site)
    var_dir.mkdir(parents=True, exist_ok=True)
    api_port, http_port = free_port(), free_port()
    env = {**api_environment(db_url, var_dir, api_port), "OCULUS_HTTP_PORT": str(http_port)}
    api_url, url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{http_port}"
    api_log, nginx_log = tmp / "api.log", tmp / "nginx.log"
    nginx_argv = [sys.executable, "-m", "common.runtime.nginx", "run", "--public-dir", str(public)]
    with running([sys.executable, "-m", "api", "serve"], env, api_log) as api:
        wait_for(f"{api_url}/api/health", api, api_log, 200)
        with running(nginx_argv, env, nginx_log) as front:
            wait_for(f"{url}/login.html", front, nginx_log, 200)
            yield Stack(url, api_url, public, api, front, api_log, nginx_log)
