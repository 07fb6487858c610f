"""Work shared across hosts (common/store/leases.py): poll loops on several hosts split
the users by leases, a host that joins gets its share, a host that dies has its users
taken over once its leases expire, and claims never wait on each other (SKIP LOCKED).
Each host here is a connection of its own, as it would be."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from common.runtime import jobs
from common.store import checkpoints, db, leases, polling, users

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=20)


def wallet(i: int) -> str:
    return f"0x{i:040x}"


@pytest.fixture
def hosts(db_url: str) -> Iterator[tuple[db.Conn, db.Conn]]:
    with db.connect(db_url, autocommit=True) as a, db.connect(db_url, autocommit=True) as b:
        for i in range(1, 11):
            users.add(a, wallet(i), f"u{i}", [], T0)
        yield a, b


def beat(conn: db.Conn, host: str, at: datetime) -> None:
    jobs.heartbeat(conn, f"poll@{host}", at, {})


def test_hosts_split_the_users_and_a_dead_host_s_users_are_taken_over(
    hosts: tuple[db.Conn, db.Conn],
) -> None:
    a, b = hosts
    first = leases.claim(a, "host-a", T0, TTL)
    assert len(first.held) == 10 and first.hosts == 1  # alone: every user
    beat(a, "host-a", T0)
    # host-b joins: nothing is free yet, and it beats
    joined = leases.claim(b, "host-b", T0 + timedelta(seconds=1), TTL)
    assert joined.held == frozenset() and joined.share == 5
    beat(b, "host-b", T0 + timedelta(seconds=1))
    # host-a's next run gives back its extra half; host-b's takes it
    again = leases.claim(a, "host-a", T0 + timedelta(seconds=5), TTL)
    assert len(again.held) == 5 and again.freed == 5 and again.hosts == 2
    taken = leases.claim(b, "host-b", T0 + timedelta(seconds=6), TTL)
    assert len(taken.held) == 5 and taken.taken == 5
    assert again.held.isdisjoint(taken.held)
    beat(a, "host-a", T0 + timedelta(seconds=6))
    beat(b, "host-b", T0 + timedelta(seconds=6))
    # host-b dies after its run at +6 s; before its leases expire nothing moves
    at = T0 + timedelta(seconds=20)
    beat(a, "host-a", at)
    assert len(leases.claim(a, "host-a", at, TTL).held) == 5
    # 20 s after its last renewal its heartbeat is stale and its leases expired
    at = T0 + timedelta(seconds=27)
    beat(a, "host-a", at)
    over = leases.claim(a, "host-a", at, TTL)
    assert len(over.held) == 10 and over.taken_over == 5 and over.hosts == 1


def test_a_disabled_user_s_lease_is_freed_and_renewal_extends(
    hosts: tuple[db.Conn, db.Conn],
) -> None:
    a, _ = hosts
    leases.claim(a, "host-a", T0, TTL)
    a.execute("UPDATE followed_user SET enabled = false WHERE profile_wallet = %s", (wallet(3),))
    got = leases.claim(a, "host-a", T0 + timedelta(seconds=5), TTL)
    assert len(got.held) == 9
    row = a.execute(
        "SELECT count(*) FILTER (WHERE holder IS NULL AND expires_at IS NULL) AS free"
        " FROM poll_lease"
    ).fetchone()
    assert row is not None and row["free"] == 1
    kept = leases.Lease(
        a, "host-a", TTL, lambda: T0 + timedelta(seconds=12), renewed_at=T0 + timedelta(seconds=5)
    )
    kept.keep()  # 7 s > a third of 20 s: renewed
    latest = a.execute("SELECT max(expires_at) AS t FROM poll_lease").fetchone()
    assert latest is not None and latest["t"] == T0 + timedelta(seconds=32)
    assert leases.release(a, "host-a") == 9


def test_claims_skip_the_users_another_claim_is_taking_instead_of_waiting(
    hosts: tuple[db.Conn, db.Conn],
) -> None:
    a, b = hosts
    leases.claim(a, "host-a", T0, TTL)
    leases.release(a, "host-a")  # every row exists and is free
    with a.transaction():  # host-a's claim in flight: it holds the rows it is taking
        a.execute(
            "SELECT followed_user_id FROM poll_lease ORDER BY followed_user_id LIMIT 4 FOR UPDATE"
        )
        b.execute("SET lock_timeout = '2s'")
        started = time.monotonic()
        got = leases.claim(b, "host-b", T0, TTL)
        assert time.monotonic() - started < 1.0
        locked = {
            r["followed_user_id"]
            for r in a.execute("SELECT followed_user_id FROM poll_lease ORDER BY 1 LIMIT 4")
        }
    assert len(got.held) == 6 and got.held.isdisjoint(locked)


def test_a_backfill_request_is_cleared_once_every_host_served_its_users(
    hosts: tuple[db.Conn, db.Conn],
) -> None:
    a, _ = hosts
    ids = [u.id for u in polling.followed_users(a)]
    number = checkpoints.request_backfill(a, T0 - timedelta(hours=1), T0)
    checkpoints.mark_backfill_served(a, ids[:5], number, T0)  # host-a's share
    assert checkpoints.backfill_unserved(a, number) == 5
    assert checkpoints.pending_backfill(a) is not None
    checkpoints.mark_backfill_served(a, ids[5:], number, T0)  # host-b's
    assert checkpoints.backfill_unserved(a, number) == 0
    # widened meanwhile (a listener reconnected): the marks no longer count
    widened = checkpoints.request_backfill(a, T0 - timedelta(hours=2), T0)
    assert widened == number + 1 and checkpoints.backfill_unserved(a, widened) == 10
    checkpoints.mark_backfill_served(a, ids, widened, T0)
    assert checkpoints.clear_backfill(a, widened)
    # the next request is numbered 1 again; old marks were dropped with the request
    fresh = checkpoints.request_backfill(a, T0 - timedelta(minutes=5), T0)
    assert fresh == 1 and checkpoints.backfill_unserved(a, fresh) == 10


def test_a_host_id_that_could_not_name_a_heartbeat_is_refused() -> None:
    from pydantic import ValidationError

    from common.runtime import settings

    assert settings.Settings(host_id="web-1.eu_2").host_id == "web-1.eu_2"
    for bad in ("", "two words", "a/b", "x" * 101, "poll@a"):
        with pytest.raises(ValidationError, match="host_id"):
            settings.Settings(host_id=bad)


# Elected roles (leases.Role): one holder across hosts, by the database's clock.


def role(conn: db.Conn, host: str, ttl_s: float = 30.0, **kw: object) -> leases.Role:
    return leases.Role(conn, "scheduler", host, ttl_s, **kw)  # type: ignore[arg-type]


def test_a_role_has_one_holder_and_a_released_one_is_taken_at_once(
    hosts: tuple[db.Conn, db.Conn],
) -> None:
    a, b = hosts
    first, second = role(a, "host-a"), role(b, "host-b")
    assert first.take() and first.take()  # its own: renewed
    assert not second.take()
    assert second.describe().startswith(f"held by {first.me} since ")
    first.release()
    assert second.take() and not first.take()


def test_a_silent_host_loses_its_role_when_it_expires(hosts: tuple[db.Conn, db.Conn]) -> None:
    a, b = hosts
    first, second = role(a, "host-a", ttl_s=1.0), role(b, "host-b")
    assert first.take() and not second.take()
    time.sleep(1.2)  # host-a stopped renewing (its session is still open)
    assert second.take()
    assert not first.take()


def test_a_dead_holder_of_this_host_is_replaced_at_once_another_host_s_is_not(
    hosts: tuple[db.Conn, db.Conn],
) -> None:
    a, _ = hosts
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for holder, taken in [(f"here/{dead.pid}/x", True), (f"there/{dead.pid}/x", False)]:
        a.execute("DELETE FROM role_lease")
        a.execute(
            "INSERT INTO role_lease VALUES ('scheduler', %s, now(), now(), now() + interval '1h')",
            (holder,),
        )
        assert role(a, "here").take() is taken, holder


def test_a_kept_role_is_renewed_and_a_holder_that_loses_it_is_fenced_off(
    hosts: tuple[db.Conn, db.Conn], db_url: str
) -> None:
    a, b = hosts
    lost: list[str] = []
    first = role(a, "host-a", ttl_s=0.9, url=db_url, on_lost=lost.append)
    assert first.take()
    first.keep()  # renewed every 0.3 s on a connection of its own
    try:
        time.sleep(1.5)
        assert not role(b, "host-b").take() and not lost
        # someone takes it from under it (a stall past its expiry, say): it stops itself
        b.execute("UPDATE role_lease SET holder = 'thief/1/x'")
        deadline = time.monotonic() + 3
        while not lost:
            assert time.monotonic() < deadline, "the holder never noticed"
            time.sleep(0.05)
        assert "taken by another holder" in lost[0] and not first.held
    finally:
        first.release()
    assert b.execute("SELECT holder FROM role_lease").fetchone() == {"holder": "thief/1/x"}


def test_a_standby_takes_over_once_the_holder_stops(hosts: tuple[db.Conn, db.Conn]) -> None:
    a, b = hosts
    first, second = role(a, "host-a", ttl_s=2.0), role(b, "host-b", ttl_s=2.0)
    assert first.take()
    started = time.monotonic()
    assert second.wait(lambda: time.monotonic() - started > 10, time.sleep)  # it expires
    assert 1.5 < time.monotonic() - started < 5
    assert not second.wait(lambda: True, time.sleep)  # stopped: gives up at once
