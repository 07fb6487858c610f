"""functions.notify as an operator runs it (`python -m functions.notify --once`): it
delivers on rules.yaml's channels; killed with SIGKILL after its request reached the
receiver and before it recorded the outcome, the next run sends the message once more
with the same id (the one duplicate) and records it SENT: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.runtime import settings
from common.store import db, outbox
from tests.notify_fakes import FakeReceivers, Received

SECRET = "crash-test-secret"


def rules_yaml(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"""channels:
  ops: {{type: webhook, url: "{base}/webhook/ops", secret_env: OCULUS_TEST_HOOK_SECRET}}
  team: {{type: slack, webhook_url_env: OCULUS_TEST_SLACK}}
rules: []
"""
    )
    return path


def env_for(db_url: str, tmp_path: Path, base: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "OCULUS_VAR_DIR": str(tmp_path),
        "OCULUS_RULES_PATH": str(rules_yaml(tmp_path, base)),
        "OCULUS_NOTIFY_LEASE_S": "1",
        "OCULUS_TEST_HOOK_SECRET": SECRET,
        "OCULUS_TEST_SLACK": f"{base}/slack/T1/B1/x",
    }


def queue(conn: db.Conn, channel: str, transition: int) -> str:
    now = datetime.now(UTC)
    mid = outbox.message_id(1, transition, channel)
    body = outbox.payload(
        message_id=mid,
        rule="listener_down",
        severity="critical",
        state="FIRING",
        labels={},
        value=0,
        message="listener down for 2m",
        at=now,
    )
    assert outbox.enqueue(
        conn, message_id=mid, channel=channel, alert_id=None, payload=body, now=now
    )
    return mid


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "functions.notify", "--once"],
        env=env,
        cwd=settings.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def notification(conn: db.Conn, mid: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM notification WHERE message_id = %s", (mid,)).fetchone()
    assert row is not None
    return row


def test_a_hand_run_delivers_on_the_channels_of_rules_yaml(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    with FakeReceivers(webhook_secret=SECRET.encode()) as fake:
        ids = [queue(conn, "ops", 1), queue(conn, "team", 2), queue(conn, "log", 3)]
        proc = start(env_for(db_url, tmp_path, fake.base))
        _, log = proc.communicate(timeout=60)
        assert proc.returncode == 0, log
        assert [(r.kind, r.problems) for r in fake.received] == [("webhook", []), ("slack", [])]
    assert all(notification(conn, m)["status"] == "SENT" for m in ids)
    (run,) = conn.execute("SELECT * FROM job_run WHERE job = 'notify'").fetchall()
    assert run["status"] == "OK" and run["counts"] == {"sent": 3} and run["items"] == 3
    assert ids[2] in (tmp_path / "log" / "alerts.jsonl").read_text()


def test_killed_between_sending_and_recording_it_sends_once_more_with_the_same_id(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    with FakeReceivers(webhook_secret=SECRET.encode()) as fake:
        env = env_for(db_url, tmp_path, fake.base)
        mid = queue(conn, "ops", 7)
        started: list[subprocess.Popen[str]] = []

        def kill_the_sender(got: Received) -> None:
            # the request has arrived: the notifier dies before it reads the answer
            fake.on_receive = None
            os.kill(started[0].pid, signal.SIGKILL)
            started[0].wait()

        fake.on_receive = kill_the_sender
        proc = start(env)
        started.append(proc)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        row = notification(conn, mid)
        assert (row["status"], row["attempts"]) == ("PENDING", 1)  # claimed, not recorded
        assert conn.execute("SELECT count(*) AS n FROM notification_attempt").fetchone() == {"n": 0}
        time.sleep(max(0.0, (row["next_at"] - datetime.now(UTC)).total_seconds()) + 0.2)
        again = start(env)
        _, log = again.communicate(timeout=60)
        assert again.returncode == 0, log
        copies = fake.of("webhook")
    assert len(copies) == 2 and all(c.problems == [] for c in copies)
    assert {c.json()["id"] for c in copies} == {c.headers["x-oculus-id"] for c in copies} == {mid}
    assert copies[0].body == copies[1].body  # the very same message, recognisable
    row = notification(conn, mid)
    assert (row["status"], row["attempts"]) == ("SENT", 2)
    tries = conn.execute("SELECT ok, error FROM notification_attempt ORDER BY id").fetchall()
    assert [t["ok"] for t in tries] == [False, True]
    assert "may have been delivered" in tries[0]["error"]
    runs = conn.execute("SELECT status FROM job_run WHERE job = 'notify' ORDER BY id").fetchall()
    assert [r["status"] for r in runs] == ["FAILED", "OK"]  # the killed run, abandoned


def test_an_unreadable_rules_file_delivers_on_log_only_and_burns_no_attempt(
    conn: db.Conn, db_url: str, tmp_path: Path
) -> None:
    with FakeReceivers(webhook_secret=SECRET.encode()) as fake:
        env = env_for(db_url, tmp_path, fake.base)
        Path(env["OCULUS_RULES_PATH"]).write_text("channels: {ops: [unclosed\n")
        ops, logged = queue(conn, "ops", 1), queue(conn, "log", 2)
        proc = start(env)
        _, log = proc.communicate(timeout=60)
        assert proc.returncode == 0, log
        assert "rules file unreadable" in log and fake.received == []
    assert notification(conn, logged)["status"] == "SENT"
    untouched = notification(conn, ops)
    assert (untouched["status"], untouched["attempts"]) == ("PENDING", 0)
