"""Password guessing: failed logins from every address together back off (429 with
Retry-After, for longer each time), and the backoff wears off with time alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_api import PASSWORD, TestClient, make_settings

from api import app, throttle

WRONG = {"user": "admin", "password": "a wrong guess"}
RIGHT = {"user": "admin", "password": PASSWORD}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


def fail(backoff: throttle.LoginBackoff, now: float) -> float:
    """One wrong guess at `now`; returns the wait it was told (0: it was checked)."""
    wait = backoff.admit(now)
    if wait == 0:
        backoff.done(now, ok=False)
    return wait


def test_the_allowed_failures_pass_then_a_lock_that_doubles() -> None:
    b = throttle.LoginBackoff(allowed=5, max_s=900)
    assert [fail(b, 0.0) for _ in range(5)] == [0] * 5
    assert b.admit(0.0) == pytest.approx(30)  # locked: refused, not checked
    assert b.admit(29.0) == pytest.approx(1)
    # After a lock, each failure locks again, twice as long, up to max_s.
    waits = []
    t = 30.0
    for _ in range(7):
        assert fail(b, t) == 0
        waits.append(b.admit(t))
        t += waits[-1]
    assert waits == pytest.approx([60, 120, 240, 480, 900, 900, 900])


def test_a_success_changes_nothing_and_time_alone_forgives() -> None:
    b = throttle.LoginBackoff(allowed=3, max_s=900, window_s=600)
    for _ in range(3):
        fail(b, 0.0)
    assert b.admit(10.0) > 0
    assert b.admit(30.0) == 0
    b.done(30.0, ok=True)  # the right password: no unlock for the next guess either
    assert fail(b, 31.0) == 0
    assert b.admit(31.0) == pytest.approx(60)
    # A quiet window after the lock ends: back to the full allowance.
    assert [fail(b, 91.0 + 600) for _ in range(3)] == [0] * 3
    assert b.admit(691.0) == pytest.approx(30)


def test_failures_older_than_the_window_do_not_count() -> None:
    b = throttle.LoginBackoff(allowed=3, window_s=600)
    fail(b, 0.0)
    fail(b, 100.0)
    assert fail(b, 650.0) == 0  # the first has aged out: two in the window
    assert b.admit(650.0) == 0
    b.done(650.0, ok=False)
    assert b.admit(650.0) > 0


def test_tries_in_flight_count_against_the_allowance() -> None:
    b = throttle.LoginBackoff(allowed=3)
    assert [b.admit(0.0) for _ in range(5)] == [0, 0, 0, 1, 1]  # 3 being checked
    b.done(0.0, ok=True)
    assert b.admit(0.0) == 0  # that one passed: its slot is free again


def test_a_burst_of_wrong_logins_gets_the_allowance_only(db_url: str, tmp_path: Path) -> None:
    s = make_settings(tmp_path).model_copy(
        update={"login_failures_allowed": 4, "login_backoff_max_s": 1.0}
    )
    with TestClient(app.create_app(s, db_url)) as client:
        barrier = threading.Barrier(16)

        def guess(i: int) -> tuple[int, str | None]:
            barrier.wait()
            r = client.post("/api/login", data=WRONG, follow_redirects=False)
            return r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(guess, range(16)))
        assert sorted(a[0] for a in answers).count(303) == 4  # checked, and wrong
        refused = [a for a in answers if a[0] == 429]
        assert len(refused) == 12
        assert all(retry is not None and int(retry) >= 1 for _, retry in refused)
        locked = client.post("/api/login", data=RIGHT, follow_redirects=False)
        assert locked.status_code == 429  # the right password waits too
        assert "try again" in locked.json()["detail"]
        assert "set-cookie" not in locked.headers
        wait = float(locked.headers["retry-after"])
        threading.Event().wait(wait + 0.2)  # no success needed: time unlocks it
        ok = client.post("/api/login", data=RIGHT, follow_redirects=False)
        assert ok.status_code == 303 and "set-cookie" in ok.headers
