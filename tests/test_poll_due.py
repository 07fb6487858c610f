"""Poll cost follows activity (`polling.Due`), against Postgres: with the listener
connected, active users (an event detected lately, a chain fill not yet confirmed) are
polled every run and idle ones every `poll_idle_every_s`; with the listener down, or a
backfill reaching back, every user is polled."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from common.runtime import jobs, settings
from common.store import checkpoints, db, failures, polling, users

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
S = settings.Settings(poll_active_window_s=900, poll_idle_every_s=60)


def add(conn: db.Conn, i: int, polled_ago_s: float | None) -> int:
    user = users.add(conn, "0x" + f"{i:040x}", f"u{i}", [], NOW - timedelta(days=1))
    if polled_ago_s is not None:
        at = NOW - timedelta(seconds=polled_ago_s)
        checkpoints.advance(conn, polling.CHECKPOINT, at, user_id=user, time=at)
    return user


def trade(conn: db.Conn, user: int, detected_ago_s: float, source: str = "DATA_API") -> None:
    t = NOW - timedelta(seconds=detected_ago_s)
    conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, asset_id, side,
               price_micros, share_micros, usdc_notional_micros, event_time, detect_time)
           VALUES (%(s)s, %(sid)s, %(u)s, %(w)s, '1', 'BUY', 500000, 1000000, 500000, %(t)s,
               %(t)s)""",
        {"s": source, "sid": f"{user}-{detected_ago_s}", "u": user, "w": "0x" + "0" * 40, "t": t},
    )


def listener(conn: db.Conn, connected: bool, beat_ago_s: float) -> None:
    at = NOW - timedelta(seconds=beat_ago_s)
    jobs.heartbeat(conn, "listen", at, {"connected": connected})


@pytest.fixture
def population(conn: db.Conn) -> dict[str, int]:
    ids = {
        "active": add(conn, 1, 10),  # polled 10 s ago, traded 5 min ago
        "unconfirmed": add(conn, 2, 10),  # a chain fill the API has not confirmed (30 min ago)
        "idle_fresh": add(conn, 3, 30),  # idle, polled 30 s ago
        "idle_stale": add(conn, 4, 90),  # idle, polled 90 s ago
        "old_trade": add(conn, 5, 10),  # traded an hour ago: idle now
        "never": add(conn, 6, None),  # never polled
    }
    trade(conn, ids["active"], 300)
    trade(conn, ids["unconfirmed"], 1800, source="CHAIN")
    trade(conn, ids["old_trade"], 3600)
    return ids


def due(conn: db.Conn, ids: dict[str, int], failing: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    d = polling.Due.read(conn, NOW, S)
    by_id = {u.id: u for u in polling.followed_users(conn)}
    return {name for name, i in ids.items() if d.now(by_id[i], name in failing)}


def test_with_the_listener_connected_idle_users_wait_their_turn(
    conn: db.Conn, population: dict[str, int]
) -> None:
    listener(conn, True, 5)
    assert due(conn, population) == {"active", "unconfirmed", "idle_stale", "never"}
    assert "idle_fresh" in due(conn, population, failing={"idle_fresh"})  # retried at once


@pytest.mark.parametrize(("connected", "beat_ago_s"), [(False, 5), (True, 31)])
def test_with_the_listener_down_every_user_is_polled(
    conn: db.Conn, population: dict[str, int], connected: bool, beat_ago_s: float
) -> None:
    listener(conn, connected, beat_ago_s)
    assert due(conn, population) == set(population)


def test_idle_every_zero_polls_everyone(conn: db.Conn, population: dict[str, int]) -> None:
    listener(conn, True, 5)
    d = polling.Due.read(conn, NOW, settings.Settings(poll_idle_every_s=0))
    assert all(d.now(u, False) for u in polling.followed_users(conn))


def test_trades_are_read_while_the_listener_is_down_or_a_chain_fill_waits(
    conn: db.Conn, population: dict[str, int]
) -> None:
    lagging = add(conn, 7, 10)
    trade(conn, lagging, 45, source="CHAIN")  # unconfirmed for 45 s (past LAGGING)
    trade(conn, population["idle_fresh"], 10, source="CHAIN")  # unconfirmed for 10 s only
    by_id = {u.id: u for u in polling.followed_users(conn)}
    listener(conn, True, 5)
    up = polling.Due.read(conn, NOW, S)
    # the 30-minute-old one is past /trades' reach (checkpoint − overlap): not read for it
    assert {i for i, u in by_id.items() if up.trades(u)} == {lagging}
    listener(conn, False, 5)
    down = polling.Due.read(conn, NOW, S)
    assert all(down.trades(u) for u in by_id.values())


def test_a_run_cut_short_leaves_the_longest_unpolled_first_for_the_next(
    conn: db.Conn, population: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    polled: list[int] = []
    stop_at = time.monotonic() + 0.05

    def fake_poll_user(*args: object, **kwargs: object) -> tuple[dict[str, int], None]:
        user = args[2]
        assert isinstance(user, polling.User)
        polled.append(user.id)
        if len(polled) == 3:
            time.sleep(max(0.0, stop_at - time.monotonic()) + 0.01)  # a long third user
        return {}, None

    monkeypatch.setattr(polling, "poll_user", fake_poll_user)
    counts: dict[str, int] = {}
    done = polling.poll_all(
        conn, None, NOW, overlap=timedelta(0), reach_back_to=None, counts=counts, stop_at=stop_at
    )  # type: ignore[arg-type]
    names = {i: name for name, i in population.items()}
    # the listener is down: everyone is due; the active first, then the never polled,
    # then the idle by their checkpoint, oldest first; the run stopped after the third
    assert [names[i] for i in polled] == ["active", "unconfirmed", "never"]
    assert done == 3 and counts["users_deferred"] == 3
    polled.clear()
    polling.poll_all(conn, None, NOW, overlap=timedelta(0), reach_back_to=None, counts={})  # type: ignore[arg-type]
    assert [names[i] for i in polled] == [
        "active", "unconfirmed", "never", "idle_stale", "idle_fresh", "old_trade"
    ]  # fmt: skip
    # a chain fill a minute ago the Data API has not confirmed: that user goes first
    trade(conn, population["old_trade"], 60, source="CHAIN")
    polled.clear()
    polling.poll_all(conn, None, NOW, overlap=timedelta(0), reach_back_to=None, counts={})  # type: ignore[arg-type]
    assert [names[i] for i in polled][:3] == ["old_trade", "active", "unconfirmed"]


def test_a_lane_look_falls_due_after_detection_then_twice_as_late_each_miss(
    conn: db.Conn,
) -> None:
    lane = polling.Confirming(conn, timedelta(seconds=3), timedelta(seconds=120))
    for ago, since in [(2, None), (3, 0), (4, 1), (7, 1), (13, 1), (24, 0), (30, 6)]:
        lane.waiting = {1: NOW - timedelta(seconds=ago)}
        want = None if since is None else NOW - timedelta(seconds=since)
        assert lane.due_since(1, NOW) == want, ago
    assert polling.Confirming(conn, timedelta(0), timedelta(60)).due_since(1, NOW) is None


def test_a_chain_fill_seen_mid_run_is_confirmed_mid_run_ahead_of_the_sweep(
    conn: db.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve active users take a run of 12 s (1 s each); a chain fill of an idle user
    detected 2 s in is looked for 3 s after its detection, and — its row still missing —
    again 6 s and 12 s after it, while the sweep goes on; the idle user is not polled
    otherwise."""
    active = [add(conn, i, 10 + i) for i in range(1, 13)]
    for u in active:
        trade(conn, u, 300)
    waiter = add(conn, 99, 30)  # idle, polled 30 s ago: not due in this run's sweep
    listener(conn, True, 1)
    monkeypatch.setattr(polling.Confirming, "REFRESH", 0.0)
    t = [NOW]
    polled: list[tuple[int, float]] = []

    def fake_poll_user(*args: object, **kwargs: object) -> tuple[dict[str, int], None]:
        user = args[2]
        assert isinstance(user, polling.User)
        polled.append((user.id, (t[0] - NOW).total_seconds()))
        if len(polled) == 2:  # the listener sees the waiter's fill now, unconfirmed
            trade(conn, waiter, -2, source="CHAIN")
        t[0] += timedelta(seconds=1)
        return {}, None

    monkeypatch.setattr(polling, "poll_user", fake_poll_user)
    counts: dict[str, int] = {}
    s = settings.Settings(poll_confirm_after_s=3.0, poll_idle_every_s=60)
    monkeypatch.setattr(settings, "get", lambda: s)
    polling.poll_all(
        conn,
        None,  # type: ignore[arg-type]
        NOW,
        overlap=timedelta(seconds=120),
        reach_back_to=None,
        counts=counts,
        clock=lambda: t[0],
    )
    looks = [at for u, at in polled if u == waiter]
    # detected at 2 s: due at 5 s, then at 2 + 6 = 8 s and 2 + 12 = 14 s (the run's end)
    assert looks == [5.0, 8.0, 14.0]
    assert sorted(u for u, _ in polled if u != waiter) == sorted(active)  # each once
    assert counts["users_confirming"] == 3 and "users_idle" not in counts


@pytest.mark.parametrize("last_ok", [False, True])
def test_a_user_polled_twice_in_a_run_keeps_the_state_of_its_last_poll(
    conn: db.Conn, monkeypatch: pytest.MonkeyPatch, last_ok: bool
) -> None:
    """The lane polls a waiting user again within one run: its failed item follows the
    last poll (a success then a failure stays failed; a failure then a success is
    resolved), and `done` counts users, not polls."""
    busy = [add(conn, i, 10 + i) for i in range(1, 13)]
    for u in busy:
        trade(conn, u, 300)
    waiter = add(conn, 99, 30)
    listener(conn, True, 1)
    monkeypatch.setattr(polling.Confirming, "REFRESH", 0.0)
    t = [NOW]
    looks = [0]

    def fake_poll_user(*args: object, **kwargs: object) -> tuple[dict[str, int], Exception | None]:
        user = args[2]
        assert isinstance(user, polling.User)
        if t[0] == NOW:  # the listener sees the waiter's fill at the run's first poll
            trade(conn, waiter, 0, source="CHAIN")
        t[0] += timedelta(seconds=1)
        if user.id != waiter:
            return {}, None
        looks[0] += 1
        good = last_ok if looks[0] >= 2 else not last_ok  # the first look the other way
        return {}, None if good else polling.ListingError("data_api", "refused")

    monkeypatch.setattr(polling, "poll_user", fake_poll_user)
    s = settings.Settings(poll_confirm_after_s=3.0, poll_idle_every_s=60)
    monkeypatch.setattr(settings, "get", lambda: s)
    done = polling.poll_all(
        conn, None, NOW, overlap=timedelta(seconds=120), reach_back_to=None, counts={},  # type: ignore[arg-type]
        clock=lambda: t[0], stop_at=time.monotonic() + 60,
    )  # fmt: skip
    assert looks[0] >= 2
    still = {r["item_key"] for r in failures.open_items(conn, "poll")}
    assert (f"user:{waiter}" in still) is (not last_ok)
    assert done == len(busy) + (1 if last_ok else 0)
