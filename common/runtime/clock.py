"""Where jobs read the time. Production: the system clock. With `OCULUS_CLOCK_URL` set
(the sandbox exchange's `/_sandbox` control URL), time is the sandbox's: a manual
sandbox clock makes a whole run reproducible, and `wait_until` moves it straight to the
instant asked for (the copy engine's decision times) instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(tz=UTC)


def sleep_until(t: datetime) -> None:
    """Sleeps until the system clock reaches `t`."""
    while (left := (t - utcnow()).total_seconds()) > 0:
        time.sleep(min(left, 0.2))


@dataclass
class Clock:
    now: Callable[[], datetime]
    wait_until: Callable[[datetime], None]
    close: Callable[[], None] = lambda: None


SYSTEM = Clock(utcnow, sleep_until)


def sandbox(url: str, timeout_s: float = 5.0) -> Clock:
    """Returns a clock that reads (and, when manual, sets) the sandbox's clock."""
    import httpx  # tests and demos only: a job on the system clock never loads it

    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)

    def now() -> datetime:
        ms = client.get("/state").raise_for_status().json()["now_ms"]
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    def wait_until(t: datetime) -> None:
        if now() >= t:
            return
        ms = int(t.timestamp() * 1000) + (1 if t.microsecond % 1000 else 0)
        reply = client.post("/clock", json={"set_ms": ms})
        if reply.status_code >= 400:  # a real-time sandbox: wait for it
            while now() < t:
                time.sleep(0.05)

    return Clock(now, wait_until, client.close)


def configured(url: str | None) -> Clock:
    """The clock OCULUS_CLOCK_URL names: the sandbox's when set, else the system's."""
    return sandbox(url) if url else SYSTEM
