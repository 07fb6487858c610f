"""`python -m functions.follow add`: when it cannot seed the new user it says from which
host and why (the next poll seeds it), and a demo database (the sandbox's leaders) is
never seeded from the real Polymarket just because the base URLs were left unset."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from common.runtime import settings
from common.store import db, users

WALLET = "0x" + "ab" * 20
BASE_URLS = ("OCULUS_DATA_API_URL", "OCULUS_CLOB_URL", "OCULUS_GAMMA_URL", "OCULUS_CHAIN_WS_URL")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def proxy() -> Iterator[list[str]]:
    """A stand-in HTTPS proxy on loopback that records what is asked of it: with
    HTTPS_PROXY pointing here, any call to the real hosts shows up, and none leaves."""
    asked: list[str] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(2)
                asked.append(client.recv(4096).decode(errors="replace").split("\r\n")[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    asked.append(f"http://127.0.0.1:{server.getsockname()[1]}")  # [0]: the proxy's URL
    try:
        yield asked
    finally:
        done.set()
        thread.join(5)
        server.close()


def follow_add(db_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in BASE_URLS}
    argv = ["--database-url", db_url, "add", WALLET, "--label", "someone"]
    return subprocess.run(
        [sys.executable, "-m", "functions.follow", *argv],
        env={**base, "OCULUS_HTTP_MAX_RETRIES": "0", **env},
        cwd=settings.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_failed_seed_names_the_host_and_the_reason(db_url: str, conn: db.Conn) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = follow_add(db_url, OCULUS_DATA_API_URL=url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"followed {WALLET} as user ")
    assert lines[1].startswith(f"could not seed from {url} (")
    assert "ConnectError" in lines[1]
    assert lines[1].endswith("); the next poll will seed it")
    user = conn.execute("SELECT seeded_at FROM followed_user").fetchone()
    assert user == {"seeded_at": None}


def test_a_demo_database_is_not_seeded_from_the_real_polymarket(
    db_url: str, conn: db.Conn, proxy: list[str]
) -> None:
    users.add(conn, "0x" + "cd" * 20, "sandbox-leader-1", [], datetime.now(tz=UTC))
    done = follow_add(db_url, HTTPS_PROXY=proxy[0], HTTP_PROXY=proxy[0], NO_PROXY="")
    assert done.returncode == 0, done.stderr
    assert proxy[1:] == []  # nothing asked of the real hosts
    lines = done.stdout.splitlines()
    assert "https://data-api.polymarket.com" in lines[1]
    assert "sandbox" in lines[1] and "OCULUS_DATA_API_URL" in lines[1]
    assert lines[1].endswith("the next poll will seed it")


def test_the_zero_address_is_refused_by_the_command_too(conn: db.Conn) -> None:
    with pytest.raises(users.FollowError, match="zero address"):
        users.add(conn, "0x" + "0" * 40, "nobody", [], datetime.now(UTC))
    with pytest.raises(users.FollowError, match="zero address"):
        users.add(conn, "0x" + "ab" * 20, "proxy", ["0x" + "0" * 40], datetime.now(UTC))
    assert conn.execute("SELECT count(*) AS n FROM followed_user").fetchone() == {"n": 0}
