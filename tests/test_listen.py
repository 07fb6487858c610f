"""The chain listener against real Postgres and the sandbox's chain WebSocket: every
followed fill exactly once, reorgs undone, drops survived, junk quarantined, reruns
harmless."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.runtime import clock as clocks
from common.runtime import jobs, settings
from common.store import checkpoints, db
from common.upstream import chain
from functions import listen
from sandbox import testing

ANCHOR = 1_790_000_000_000
OPTIONS: dict[str, Any] = {
    "clock": "manual",
    "anchor_ms": ANCHOR,
    "duration": "2h",
    "history": "20m",
}
DELAY_MS = 2_000  # the sandbox's default chain delay
ROOT = Path(listen.__file__).resolve().parents[1]

Key = tuple[str, int, str, str, int, int]


# --- helpers -----------------------------------------------------------------------------


def follow(conn: db.Conn, wallet: str, *, enabled: bool = True) -> int:
    row = conn.execute(
        """INSERT INTO followed_user (label, profile_wallet, enabled, followed_at, seeded_at)
           VALUES (%(l)s, %(w)s, %(e)s, now(), now()) RETURNING id""",
        {"l": "leader " + wallet[:8], "w": wallet.lower(), "e": enabled},
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO followed_user_proxy_wallet (followed_user_id, wallet) VALUES (%(u)s, %(w)s)",
        {"u": row["id"], "w": wallet.lower()},
    )
    return int(row["id"])


def wait_for(what: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def wait_quiet(listener: listen.Listener, quiet: float = 0.6, timeout: float = 10.0) -> None:
    """Waits until the listener has received nothing for `quiet` seconds."""
    wait_for(lambda: time.monotonic() - listener.last_frame >= quiet, timeout)


@contextlib.contextmanager
def listening(db_url: str, sb: testing.RunningSandbox, **options: Any) -> Iterator[listen.Listener]:
    """Runs a listener in a thread until the block ends; asserts it stops within ~1 s."""
    stop = jobs.StopFlag()
    s = settings.get().model_copy(update={"chain_ws_url": sb.chain_ws_url})
    listener = listen.Listener(db_url, s, stop=stop, refresh_s=0.3, **options)
    failures: list[BaseException] = []

    def target() -> None:
        try:
            listener.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name="test-listener", daemon=True)
    thread.start()
    try:
        wait_for(lambda: listener.sub_id is not None or failures)
        yield listener
        assert thread.is_alive(), failures
    finally:
        stop.stopped = True
        began = time.monotonic()
        thread.join(5)
    assert not thread.is_alive() and time.monotonic() - began < 1.5
    assert not failures, failures


def advance(sb: testing.RunningSandbox, listener: listen.Listener, ms: int) -> int:
    """Moves the sandbox clock in 30 s steps, then waits for the listener to go quiet."""
    now = sb.now_ms()
    for _ in range(ms // 30_000):
        now = sb.advance(30_000)
        time.sleep(0.03)
    wait_quiet(listener)
    return now


def expected(
    sb: testing.RunningSandbox, after_ms: int, until_ms: int, wallets: set[str] | None = None
) -> set[Key]:
    """Truth TRADE events delivered by the chain between the two sandbox times."""
    return {
        (e["tx_hash"], e["log_index"], e["asset"], e["side"], e["shares_micros"], e["fee_micros"])
        for e in sb.truth(until_ms)["events"]
        if e["type"] == "TRADE"
        and after_ms - DELAY_MS < e["t_ms"] <= until_ms - DELAY_MS
        and (wallets is None or e["wallet"] in wallets)
    }


def stored(conn: db.Conn, *, live: bool = True, wallet: str | None = None) -> list[Key]:
    rows = conn.execute(
        """SELECT tx_hash, log_index, asset_id, side, share_micros, fee_micros FROM trade_event
           WHERE (reorg_state IS NULL) = %(live)s AND (%(w)s::text IS NULL OR wallet = %(w)s)
           ORDER BY id""",
        {"live": live, "w": wallet},
    ).fetchall()
    return [tuple(r.values()) for r in rows]  # type: ignore[misc]


def snapshot(conn: db.Conn) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM trade_event ORDER BY id").fetchall()


def heartbeat(conn: db.Conn) -> dict[str, Any]:
    row = conn.execute("SELECT info FROM process_heartbeat WHERE process = 'listen'").fetchone()
    assert row is not None
    info: dict[str, Any] = row["info"]
    return info


def checkpoint(conn: db.Conn, name: str) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT * FROM system_checkpoint WHERE name = %(n)s AND followed_user_id IS NULL",
        {"n": name},
    ).fetchone()


# --- pure helpers ------------------------------------------------------------------------


@given(st.integers(0, 200), st.floats(0, 0.999))
def test_backoff_grows_to_a_cap_with_jitter_in_the_upper_half(attempt: int, jitter: float) -> None:
    delay = jobs.backoff_delay(attempt, jitter)
    ceiling = min(30.0, 0.5 * 2**attempt)
    assert ceiling / 2 <= delay <= ceiling
    assert jobs.backoff_delay(attempt + 1, 0.0) >= jobs.backoff_delay(attempt, 0.0)


def test_backoff_schedule() -> None:
    assert [jobs.backoff_delay(a, 0.0) for a in range(8)] == [
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        15.0,
        15.0,
    ]
    assert jobs.backoff_delay(100, 0.999) < 30.0


def test_wallet_changes_and_catchup_range() -> None:
    a, b, c = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
    assert listen.wallet_changes({a: 1, b: 2}, {b: 3, c: 4}) == ({c}, {a})
    assert listen.wallet_changes({a: 1}, {a: 2}) == (set(), set())  # same topics
    assert listen.catchup_from(None, 100) is None
    assert listen.catchup_from(101, 100) is None
    assert listen.catchup_from(90, 100) == 90
    assert listen.catchup_from(10, 5_000, most=900) == 4_100


def test_log_filter_matches_the_subscription() -> None:
    s = settings.get()
    spec = chain.log_filter(["0x" + "A1" * 20], s)
    request = json.loads(chain.subscribe_request(1, ["0x" + "A1" * 20], s))
    assert request["params"] == ["logs", spec]
    assert spec["topics"][0] == [s.order_filled_topic_v1, s.order_filled_topic_v2]
    assert spec["topics"][2] == [chain.pad_address("0x" + "a1" * 20)]


# --- frames, without a socket ------------------------------------------------------------

LEADER = "0x" + "5a" * 20
STRANGER = "0x" + "0b" * 20
TOKEN = 71321045679252212594626385532706912750332728571942532289631379312455583992563


def frame(owner: str, log_index: int, *, removed: bool = False, words: int = 7) -> str:
    s = settings.get()
    data = [0, TOKEN, 5_000_000, 7_575_758, 85_000, 0, 0][:words]
    result = {
        "address": s.exchange_addresses_v2[0],
        "topics": [
            s.order_filled_topic_v2,
            "0x" + "ee" * 32,
            chain.pad_address(owner),
            chain.pad_address(s.exchange_addresses_v2[0]),
        ],
        "data": "0x" + "".join(f"{w:064x}" for w in data),
        "blockNumber": "0x4c4b40",
        "blockTimestamp": "0x6a8ca000",
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": hex(log_index),
        "removed": removed,
    }
    message = {"jsonrpc": "2.0", "method": "eth_subscription"}
    return json.dumps({**message, "params": {"subscription": "0x1", "result": result}})


def test_frames_are_stored_ignored_or_quarantined(db_url: str, conn: db.Conn) -> None:
    user = follow(conn, LEADER)
    listener = listen.Listener(db_url, settings.get(), stop=jobs.StopFlag())
    listener.wallets = listen.load_wallets(conn)
    now = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
    good = frame(LEADER, 7)
    listener.handle(good, now)
    listener.handle(good, now + timedelta(seconds=1))  # a resent log is one event
    listener.handle(frame(STRANGER, 8), now)
    listener.handle(good[: len(good) // 2], now)  # truncated frame
    listener.handle(frame(LEADER, 9, words=5), now)  # V2 layout with V1 word count
    listener.handle(b"\xff\xfe", now)
    rows = conn.execute("SELECT * FROM trade_event").fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert (row["source"], row["followed_user_id"], row["wallet"], row["side"]) == (
        "CHAIN",
        user,
        LEADER,
        "BUY",
    )
    assert (row["share_micros"], row["price_micros"], row["fee_micros"]) == (
        7_575_758,
        660_000,
        85_000,
    )
    assert row["role"] == "TAKER" and row["detect_time"] == now and row["reorg_state"] is None
    reasons = [
        r["reason"] for r in conn.execute("SELECT reason FROM quarantine ORDER BY id").fetchall()
    ]
    assert len(reasons) == 3
    assert reasons[0].startswith("not JSON") and "7 data words" in reasons[1]
    assert listener.counts["ignored"] == 1 and listener.counts["quarantined"] == 3
    assert listener.counts["insert"] == 1 and listener.counts["duplicate"] == 1

    listener.handle(frame(LEADER, 7, removed=True), now + timedelta(seconds=2))
    listener.close()
    state = conn.execute("SELECT reorg_state FROM trade_event").fetchone()
    assert state == {"reorg_state": "REMOVED"}
    assert listener.last_block == 5_000_000


# --- against the sandbox -----------------------------------------------------------------


@pytest.mark.sandbox
def test_every_followed_fill_once_and_a_rerun_changes_nothing(db_url: str, conn: db.Conn) -> None:
    began = datetime.now(tz=UTC)
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        for wallet in sb.leaders:
            follow(conn, wallet)
        with listening(db_url, sb) as listener:
            end = advance(sb, listener, 600_000)
            want = expected(sb, ANCHOR, end)
            got = stored(conn)
            assert len(want) > 20
            assert len(got) == len(set(got)) and set(got) == want
            assert not stored(conn, live=False)
            beat = heartbeat(conn)
            assert beat["connected"] and beat["wallets"] == 3 and beat["reconnects"] == 0
            assert beat["subscription"] == listener.sub_id
        beat = heartbeat(conn)  # the last beat, written on the way out
        assert not beat["connected"] and beat["last_log_at"]
        conversions = conn.execute(
            "SELECT wallet, tx_hash, share_micros FROM activity_event WHERE source = 'CHAIN'"
        ).fetchall()
        assert beat["logs"] == len(want) + beat["conversions"] == len(want) + len(conversions)
        truth = {(e["tx_hash"], e["log_index"]): e for e in sb.truth(end)["events"]}
    rows = snapshot(conn)
    assert all(r["source"] == "CHAIN" and began <= r["detect_time"] for r in rows)
    for r in rows:
        event = truth[(r["tx_hash"], r["log_index"])]
        assert r["event_time"] == datetime.fromtimestamp(event["t_ms"] // 1000, tz=UTC)
        assert r["block_number"] == event["block_number"] and r["role"] == event["role"].upper()
    assert checkpoint(conn, listen.LAST_BLOCK)["cursor_int"] == max(  # type: ignore[index]
        r["block_number"] for r in rows
    )
    assert checkpoint(conn, listen.BACKFILL_REQUEST) is None  # a first start asks for none

    with (
        testing.running_sandbox(seed=7, **OPTIONS) as again,  # the same chain, replayed
        listening(db_url, again) as listener,
    ):
        advance(again, listener, 600_000)
        assert listener.counts["duplicate"] == len(rows) and not listener.counts["insert"]
    assert snapshot(conn) == rows


@pytest.mark.sandbox
def test_reorged_logs_are_undone_and_reincluded_ones_stay(db_url: str, conn: db.Conn) -> None:
    window_ms = 900_000
    with testing.running_sandbox(seed=9, reorg_rate=1.0, **OPTIONS) as sb:
        for wallet in sb.leaders:
            follow(conn, wallet)
        with listening(db_url, sb) as listener:
            end = advance(sb, listener, window_ms)
        want = expected(sb, ANCHOR, end)
        txs = [tx for tx in sb.scenario()["txs"] if tx["kind"] == "match" and tx["reorg"]]
    last = end - ANCHOR - DELAY_MS  # the latest offset the chain has delivered

    def delivered(offset: int) -> bool:
        return -DELAY_MS < offset <= last

    unsettled, dropped, reincluded = set(), set(), set()
    for tx in txs:
        again = tx["reorg"]["reinclude"]
        times = [tx["t_ms"], tx["reorg"]["removed_ms"]] + ([again["t_ms"]] if again else [])
        if any(delivered(t) for t in times) and any(t > last for t in times):
            unsettled.add(tx["hash"])
        elif delivered(tx["t_ms"]):
            (reincluded if again else dropped).add((tx["hash"], tx["block"]))
    assert dropped and reincluded
    live = [k for k in stored(conn) if k[0] not in unsettled]
    assert len(live) == len(set(live)) and set(live) == {k for k in want if k[0] not in unsettled}
    gone = conn.execute(
        "SELECT DISTINCT tx_hash, block_number FROM trade_event WHERE reorg_state IS NOT NULL"
    ).fetchall()
    removed = {(r["tx_hash"], r["block_number"]) for r in gone if r["tx_hash"] not in unsettled}
    assert removed == dropped | reincluded
    states = conn.execute("SELECT DISTINCT reorg_state FROM trade_event").fetchall()
    assert {r["reorg_state"] for r in states} == {None, "REMOVED"}
    assert listener.counts["remove"] == len(stored(conn, live=False))


@pytest.mark.sandbox
def test_a_drop_reconnects_requests_a_backfill_and_replays_the_gap(
    db_url: str, conn: db.Conn
) -> None:
    calls: list[tuple[datetime, int]] = []
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        for wallet in sb.leaders:
            follow(conn, wallet)
        with listening(db_url, sb, backfill=lambda since, seq: calls.append((since, seq))) as ls:
            advance(sb, ls, 120_000)
            assert not calls and ls.reconnects == 0
            dropped_at = datetime.now(tz=UTC)
            assert sb.drop_ws() == 1
            sb.advance(90_000)  # delivered while the socket is down: lost to the stream
            wait_for(lambda: ls.reconnects == 1 and ls.sub_id is not None)
            reconnected_at = datetime.now(tz=UTC)
            end = advance(sb, ls, 180_000)
            wait_for(lambda: heartbeat(conn)["reconnects"] == 1)
        want = expected(sb, ANCHOR, end)
    got = stored(conn)
    assert len(got) == len(set(got)) and set(got) == want
    assert ls.sessions == 2 and ls.counts["logs"] >= len(want)
    assert len(calls) == 1
    since, seq = calls[0]
    window = listen.BACKFILL_WINDOW
    assert dropped_at - window <= since <= reconnected_at - window
    request = checkpoint(conn, listen.BACKFILL_REQUEST)
    assert request is not None
    assert (request["cursor_time"], request["cursor_int"]) == (since, seq)
    assert not checkpoints.clear_backfill(conn, seq + 1)  # not the one asked for
    assert checkpoints.clear_backfill(conn, seq)
    assert checkpoint(conn, listen.BACKFILL_REQUEST) is None


@pytest.mark.sandbox
def test_a_restart_replays_what_the_stream_sent_while_down(db_url: str, conn: db.Conn) -> None:
    with testing.running_sandbox(seed=11, **OPTIONS) as sb:
        for wallet in sb.leaders:
            follow(conn, wallet)
        with listening(db_url, sb) as listener:
            advance(sb, listener, 180_000)
        before = len(stored(conn))
        sb.advance(240_000)  # nobody listening
        missed = expected(sb, ANCHOR, sb.now_ms())
        assert len(missed) > before
        with listening(db_url, sb) as listener:
            wait_for(lambda: set(stored(conn)) == missed)
            end = advance(sb, listener, 120_000)
        want = expected(sb, ANCHOR, end)
    got = stored(conn)
    assert len(got) == len(set(got)) and set(got) == want


@pytest.mark.sandbox
def test_truncated_frames_are_quarantined_and_the_listener_goes_on(
    db_url: str, conn: db.Conn
) -> None:
    with testing.running_sandbox(seed=7, malformed_rate=0.5, **OPTIONS) as sb:
        for wallet in sb.leaders:
            follow(conn, wallet)
        with listening(db_url, sb) as listener:
            end = advance(sb, listener, 600_000)
            assert heartbeat(conn)["connected"]
        want = expected(sb, ANCHOR, end)
    got = stored(conn)
    assert len(got) == len(set(got)) and set(got) == want
    junk = conn.execute("SELECT source, reason, seen_count FROM quarantine").fetchall()
    assert junk and all(r["source"] == "chain/ws" for r in junk)
    assert all(r["reason"].startswith("not JSON") for r in junk)
    assert listener.counts["quarantined"] == sum(r["seen_count"] for r in junk)
    assert listener.counts["quarantined"] < len(want)  # about half of the frames


@pytest.mark.sandbox
def test_a_change_of_the_followed_set_resubscribes(db_url: str, conn: db.Conn) -> None:
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        first, second = sb.leaders[0], sb.leaders[1]
        user = follow(conn, first)
        follow(conn, sb.leaders[2], enabled=False)
        with listening(db_url, sb) as listener:
            old_sub = listener.sub_id
            changed = advance(sb, listener, 240_000)
            follow(conn, second)
            conn.execute("UPDATE followed_user SET enabled = false WHERE id = %(u)s", {"u": user})
            wait_for(lambda: set(listener.wallets) == {second} and listener.sub_id != old_sub)
            wait_for(lambda: listener.sub_id is not None and heartbeat(conn)["wallets"] == 1)
            # the old pair (fills, conversions) unsubscribed, the new pair live
            assert sb.state()["counts"]["ws_subscriptions"] == 2
            end = advance(sb, listener, 240_000)
        before = expected(sb, ANCHOR, changed, {first})
        after = expected(sb, changed, end, {second})
    assert before and after
    assert set(stored(conn, wallet=first)) == before
    assert set(stored(conn, wallet=second)) == after
    assert not stored(conn, wallet=sb.leaders[2])


@pytest.mark.sandbox
def test_command_line_runs_until_sigterm_and_once_exits_when_quiet(
    db_url: str, conn: db.Conn
) -> None:
    python = sys.executable
    helped = subprocess.run(
        [python, "-m", "functions.listen", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--once" in helped.stdout
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        follow(conn, sb.leaders[0])
        env = {**os.environ, "OCULUS_CHAIN_WS_URL": sb.chain_ws_url, "OCULUS_LOG_LEVEL": "WARNING"}
        argv = [python, "-m", "functions.listen", "--database-url", db_url]
        with subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as proc:
            try:
                wait_for(
                    lambda: conn.execute(
                        "SELECT 1 FROM process_heartbeat WHERE info->>'subscription' IS NOT NULL"
                    ).fetchone(),
                    20,
                )
                sb.advance(300_000)
                wait_for(lambda: stored(conn), 10)
                proc.send_signal(signal.SIGTERM)
                began = time.monotonic()
                assert proc.wait(timeout=5) == 0
                assert time.monotonic() - began < 2.0
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert set(stored(conn)) == expected(sb, ANCHOR, sb.now_ms(), {sb.leaders[0]})
        once = subprocess.run(
            [*argv, "--once", "--idle-seconds", "1"], cwd=ROOT, env=env, timeout=20
        )
        assert once.returncode == 0
    runs = conn.execute("SELECT status, finished_at FROM job_run WHERE job = 'listen'").fetchall()
    assert len(runs) == 2 and all(r["status"] == "OK" and r["finished_at"] for r in runs)
    assert heartbeat(conn)["connected"] is False


def test_an_unreachable_node_is_retried_until_the_run_ends(db_url: str, conn: db.Conn) -> None:
    s = settings.get().model_copy(update={"chain_ws_url": "ws://127.0.0.1:9/chain"})
    listener = listen.Listener(db_url, s, stop=jobs.StopFlag(), jitter=lambda: 0.0)
    listener.run(idle_s=1.2)  # returns: the quiet time ends the run (pytest's timeout guards)
    assert listener.attempts >= 2  # retried, not given up after the first refusal
    assert listener.sessions == 0 and not listener.connected
    run = conn.execute("SELECT status FROM job_run WHERE job = 'listen'").fetchone()
    assert run == {"status": "OK"}


def test_the_poller_backfill_hook_runs_and_clears_the_request(
    db_url: str, conn: db.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, datetime, datetime]] = []

    def backfill(c: db.Conn, ups: Any, since: datetime, now: datetime) -> int:
        calls.append((ups, since, now))
        return 3

    fake = types.ModuleType("common.store.polling")
    fake.backfill = backfill  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "common.store.polling", fake)
    hook = listen.poll_backfill(db_url, settings.get(), 0.0, jobs.StopFlag())
    assert hook is not None
    now = datetime.now(tz=UTC)
    seq = checkpoints.request_backfill(conn, now - listen.BACKFILL_WINDOW, now)
    hook(now - listen.BACKFILL_WINDOW, seq)
    assert len(calls) == 1 and calls[0][1] == now - listen.BACKFILL_WINDOW
    assert calls[0][2] >= now and hasattr(calls[0][0], "data_api")
    assert checkpoint(conn, listen.BACKFILL_REQUEST) is None  # served: the poller skips it

    monkeypatch.setitem(
        sys.modules, "common.store.polling", types.ModuleType("common.store.polling")
    )
    assert listen.poll_backfill(db_url, settings.get(), 0.0, jobs.StopFlag()) is None


def test_a_second_copy_exits_busy_and_records_nothing(db_url: str, conn: db.Conn) -> None:
    """One listener per database: a `--once` copy started beside a running one (here: its
    role, held by this live process) exits 75 at once, as the scheduled jobs do."""
    env = {**os.environ, "OCULUS_CHAIN_WS_URL": "ws://127.0.0.1:9/chain"}  # never reached
    argv = [sys.executable, "-m", "functions.listen", "--database-url", db_url]
    with db.connect(db_url, autocommit=True) as first:
        assert jobs.role(first, listen.PROCESS).take()
        second = subprocess.run(
            [*argv, "--once", "--idle-seconds", "1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert second.returncode == jobs.EXIT_BUSY, second.stderr
    assert "another copy is running" in second.stderr
    assert conn.execute("SELECT count(*) AS n FROM job_run").fetchone() == {"n": 0}
    assert conn.execute("SELECT count(*) AS n FROM process_heartbeat").fetchone() == {"n": 0}


def test_the_listener_reads_the_clock_oculus_clock_url_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As every job: with OCULUS_CLOCK_URL the listener's time (its heartbeats, the
    detect time it stamps, its backfill) is the sandbox's clock, not the system's."""
    fixed = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    asked: list[str | None] = []

    def configured(url: str | None) -> clocks.Clock:
        asked.append(url)
        return clocks.Clock(lambda: fixed, lambda t: None)

    seen: dict[str, datetime] = {}

    def run(self: listen.Listener, **_: Any) -> None:
        seen["now"] = self.clock()

    url = "http://127.0.0.1:9/clock"
    monkeypatch.setattr(listen.settings_mod, "get", lambda: settings.Settings(clock_url=url))
    monkeypatch.setattr(clocks, "configured", configured)
    monkeypatch.setattr(listen.Listener, "run", run)
    listen.main(["--once"])
    assert seen["now"] == fixed and asked == [url]
