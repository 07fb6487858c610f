"""The README's run command (`make run` = `python -m run_local`) end to end: it
prepares the database, starts every process under supervisord, says when the dashboard
answers and when the first fill and copy attempt land, is ready by `/api/ready`, and
Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import web

from common.runtime import settings
from common.store import db

pytestmark = [pytest.mark.web, pytest.mark.sandbox]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_brings_everything_up_and_ctrl_c_stops_it(db_url: str, tmp_path: Path) -> None:
    web.require_nginx()
    http_port, api_port, sandbox_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "OCULUS_VAR_DIR": str(tmp_path / "var"),
        "OCULUS_PUBLIC_DIR": str(tmp_path / "public"),
        "OCULUS_HTTP_PORT": str(http_port),
        "OCULUS_API_PORT": str(api_port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "run_local", "--sandbox-port", str(sandbox_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=settings.ROOT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 150
        while not any("first copy attempt after" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert f"dashboard: http://127.0.0.1:{http_port}/ — user admin, password in " in text
        assert "dashboard answering at" in text and "first leader fill stored after" in text
        password = (tmp_path / "var" / "admin.password").read_text().strip()
        assert len(password) >= 12
        page = httpx.get(f"http://127.0.0.1:{http_port}/login.html", timeout=5)
        assert page.status_code == 200
        ready = None
        while ready is None or ready.status_code != 200:  # the heartbeats come in
            assert time.monotonic() < deadline, ready.text if ready else "no answer"
            time.sleep(1)
            ready = httpx.get(f"http://127.0.0.1:{api_port}/api/ready", timeout=5)
        with db.connect(db_url, autocommit=True) as conn:
            pids = [int(r["pid"]) for r in conn.execute("SELECT pid FROM process_heartbeat")]
            assert conn.execute("SELECT count(*) AS n FROM copy_attempt").fetchone()["n"] > 0  # type: ignore[index]
        pids.append(int((tmp_path / "var" / "supervisord.pid").read_text()))
        assert all(alive(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopping every process" in out and out.rstrip().endswith("[oculus] stopped")
    assert "stopping the embedded Postgres" not in out  # DATABASE_URL's server is not ours
    assert [pid for pid in pids if alive(pid)] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{http_port}/login.html", timeout=2)
