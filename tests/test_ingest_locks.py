"""The ingest locks (`db.lock_ingest`): writers of different followed users go side by
side, one user's writers take turns, a writer of several users waits for them all, and
the consistent-cut reader never reads past a row a writer has not committed."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common.domain import ledger
from common.store import checkpoints, db, ingest, locks, shadow, users
from functions import price, reconcile
from tests.test_ingest import api_fill, chain_fill

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WALLET_A, WALLET_B = "0x" + "5a" * 20, "0x" + "6b" * 20  # WALLET_A: test_ingest's fills'
WAIT = "300ms"  # how long a blocked lock is waited for before the test calls it blocked


@contextlib.contextmanager
def holding(db_url: str, user_id: int | None) -> Iterator[db.Conn]:
    """A transaction on its own connection holding the ingest lock (a user's, or the
    exclusive one) until the block ends, then committed. It never waits for long either:
    a holder that would wait is a failure (LockNotAvailable), not a hung test."""
    with db.connect(db_url, autocommit=True) as other:
        other.execute(f"SET lock_timeout = '{WAIT}'")
        with other.transaction():
            db.lock_ingest(other, user_id)
            yield other


def impatient(db_url: str) -> db.Conn:
    """A connection that gives up on a lock after WAIT (LockNotAvailable)."""
    conn = db.connect(db_url, autocommit=True)
    conn.execute(f"SET lock_timeout = '{WAIT}'")
    return conn


def can_lock(conn: db.Conn, user_id: int | None) -> bool:
    """Whether `conn` gets the ingest lock within WAIT (released again at once)."""
    try:
        with conn.transaction():
            db.lock_ingest(conn, user_id)
    except psycopg.errors.LockNotAvailable:
        return False
    return True


def two_users(conn: db.Conn) -> tuple[int, int]:
    a = users.add(conn, WALLET_A, "a", [], NOW - timedelta(hours=1))
    b = users.add(conn, WALLET_B, "b", [], NOW - timedelta(hours=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    return a, b


def seed_entry(user_id: int, asset: str) -> ledger.Entry:
    return ledger.Entry(asset, None, "SEED", 1_000_000, 0, 500_000, f"seed:{user_id}:{asset}", NOW)


def test_a_users_lock_holds_the_global_key_shared_and_the_users_key(
    db_url: str, conn: db.Conn
) -> None:
    with holding(db_url, 7) as other:
        rows = conn.execute(
            """SELECT classid::bigint, objid::bigint, objsubid, mode FROM pg_locks
               WHERE locktype = 'advisory' AND pid = %(p)s AND granted
               ORDER BY objsubid""",
            {"p": other.info.backend_pid},
        ).fetchall()
    assert [(r["objsubid"], r["mode"]) for r in rows] == [(1, "ShareLock"), (2, "ExclusiveLock")]
    assert (rows[0]["classid"] << 32) + rows[0]["objid"] == locks.INGEST
    assert (rows[1]["classid"], rows[1]["objid"]) == (locks.INGEST_USER_CLASS, 7)


def test_writers_of_different_users_go_side_by_side(db_url: str) -> None:
    with holding(db_url, 1), impatient(db_url) as conn:
        assert can_lock(conn, 2)
        with holding(db_url, 3):  # three at once
            assert can_lock(conn, 2)


def test_writers_of_one_user_take_turns(db_url: str) -> None:
    with impatient(db_url) as conn:
        with holding(db_url, 1):
            assert not can_lock(conn, 1)
            assert can_lock(conn, 2)
        assert can_lock(conn, 1)  # committed: the next one goes


def test_the_exclusive_lock_and_users_locks_wait_for_each_other(db_url: str) -> None:
    with impatient(db_url) as conn:
        with holding(db_url, None):
            assert not can_lock(conn, 1)
            assert not can_lock(conn, 2)
            assert not can_lock(conn, None)
        with holding(db_url, 1):
            assert not can_lock(conn, None)
        assert can_lock(conn, None)


def test_a_user_lock_after_the_exclusive_one_in_one_transaction_is_had(db_url: str) -> None:
    with impatient(db_url) as conn, conn.transaction():
        db.lock_ingest(conn)
        db.lock_ingest(conn, 1)  # no wait on itself


def test_ids_past_int4_fold_onto_a_key_of_their_own_range(db_url: str) -> None:
    assert db.ingest_user_key(5) == (locks.INGEST_USER_CLASS, 5)
    big = 2**31 + 5
    cls, obj = db.ingest_user_key(big)
    assert cls == locks.INGEST_USER_CLASS and -(2**31) <= obj < 2**31
    with impatient(db_url) as conn:
        assert can_lock(conn, big)
        with holding(db_url, big):
            assert not can_lock(conn, big)
            assert can_lock(conn, 5)


def test_the_cut_waits_for_an_open_user_writer_below_a_committed_one(
    db_url: str, conn: db.Conn
) -> None:
    """User a's writer holds an entry it has not committed; user b's writer, alongside,
    commits a newer one. A cut now would skip a's entry for good: it is refused until a
    commits, and then covers both."""
    a, b = two_users(conn)
    with db.connect(db_url, autocommit=True) as reader:
        with holding(db_url, a) as writer_a:
            shadow.store(writer_a, a, [seed_entry(a, "1")])
            with holding(db_url, b) as writer_b:
                shadow.store(writer_b, b, [seed_entry(b, "2")])
            committed = conn.execute("SELECT followed_user_id AS u FROM ledger_entry")
            assert committed.fetchall() == [{"u": b}]  # b's only: a's is still open
            assert checkpoints.committed_max_ids(reader, ("ledger_entry",), wait_s=0.3) is None
        cut = checkpoints.committed_max_ids(reader, ("ledger_entry",), wait_s=0.3)
    rows = conn.execute("SELECT id, followed_user_id AS u FROM ledger_entry ORDER BY id")
    entries = rows.fetchall()
    assert [r["u"] for r in entries] == [a, b]  # a's entry is below b's
    assert cut == {"ledger_entry": entries[-1]["id"]}


def test_the_cut_waits_out_a_user_writer_that_commits_in_time(db_url: str) -> None:
    with db.connect(db_url, autocommit=True) as reader, db.connect(db_url) as writer:
        db.lock_ingest(writer, 1)  # opens a transaction (not autocommit)
        thread = threading.Timer(0.3, writer.commit)
        thread.start()
        started = time.monotonic()
        cut = checkpoints.committed_max_ids(reader, ("ledger_entry",), wait_s=5.0)
        waited = time.monotonic() - started
        thread.join()
    assert cut == {"ledger_entry": 0}
    assert 0.2 < waited < 5.0


# --- the callers ----------------------------------------------------------------------


def test_one_users_writes_wait_only_for_that_users_writer(db_url: str, conn: db.Conn) -> None:
    """Storing fills (poll), a chain log (listen) and applying the shadow ledger hold
    their user's lock; a batch of fills of two users holds the exclusive one."""
    a, b = two_users(conn)
    fill_a = api_fill(user=a)
    fill_b = replace(api_fill(user=b), wallet=WALLET_B)
    grace, since = timedelta(0), NOW - timedelta(hours=2)
    with impatient(db_url) as mine:
        with holding(db_url, a):
            assert ingest.store_api_fills(mine, [fill_b], NOW)["api_inserted"] == 1
            with pytest.raises(psycopg.errors.LockNotAvailable):
                ingest.store_api_fills(mine, [fill_a], NOW)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                ingest.store_api_fills(mine, [fill_b, fill_a], NOW)
            log_b = replace(chain_fill(3), owner=WALLET_B)
            assert ingest.store_chain_fill(mine, log_b, b, NOW) == "confirm"
            with pytest.raises(psycopg.errors.LockNotAvailable):
                ingest.store_chain_fill(mine, chain_fill(4), a, NOW)
            assert shadow.apply_user(mine, b, since, NOW, grace)["trades_applied"] == 1
            with pytest.raises(psycopg.errors.LockNotAvailable):
                shadow.apply_user(mine, a, since, NOW, grace)
        assert ingest.store_api_fills(mine, [fill_a], NOW)["api_inserted"] == 1
        assert ingest.store_chain_fill(mine, chain_fill(4), a, NOW) == "confirm"


def test_writers_of_several_users_wait_for_any_users_writer(db_url: str, conn: db.Conn) -> None:
    """Reconcile's voiding and the price job's shadow settlement touch several users'
    books: they hold the exclusive lock."""
    a, _ = two_users(conn)
    with impatient(db_url) as mine:
        with holding(db_url, a):
            with pytest.raises(psycopg.errors.LockNotAvailable):
                reconcile.void_contradicted(mine, NOW)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                price.settle_unredeemed(mine, NOW, timedelta(days=1))
        assert reconcile.void_contradicted(mine, NOW) == 0
        assert price.settle_unredeemed(mine, NOW, timedelta(days=1)) == 0
